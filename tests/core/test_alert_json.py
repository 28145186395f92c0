"""An alert's stored JSON text (``Alert.json_text``, msgspec-encoded) reads back to the same alert,
whatever its labels hold, and ``Alert.from_json_text`` reads any stored text as ``from_json(json.loads())``
does; the dedup key, computed once, still follows the fields."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from remediator.core.alerts import Alert

ODD = ["plain", "ünïcödé ✓", "emoji 😀", 'quote " and backslash \\', "control \x00\x01\x1f\x7f", "line\nbreak\ttab",
       "</script>", "\u2028\u2029", ""]


def alert(value: str, ends_at: datetime | None = None) -> Alert:
    return Alert(
        fingerprint="abc123",
        status="firing",
        labels=MappingProxyType({"alertname": "Odd", "value": value, value or "empty": "key"}),
        annotations=MappingProxyType({"summary": value}),
        starts_at=datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC),
        ends_at=ends_at,
        generator_url=f"http://prometheus/graph?g0.expr={value}",
    )


@pytest.mark.parametrize("value", ODD)
@pytest.mark.parametrize("ends_at", [None, datetime(2026, 11, 29, 11, tzinfo=UTC)])
def test_the_stored_text_reads_back_to_the_same_alert(value: str, ends_at: datetime | None) -> None:
    a = alert(value, ends_at)
    text = a.json_text()
    assert isinstance(text, str)
    assert not any(ord(c) < 0x20 for c in text)  # control characters escaped (PostgreSQL text holds no NUL)
    assert json.loads(text) == a.to_json() == json.loads(json.dumps(a.to_json()))
    assert Alert.from_json(json.loads(text)) == a
    assert Alert.from_json_text(text) == a
    assert Alert.from_json_text(json.dumps(a.to_json())) == a  # rows written before json_text
    assert Alert.from_json_text(text.encode()) == a


@pytest.mark.parametrize("raw", [
    {"status": "firing", "labels": {"a": "b"}, "startsAt": "2026-11-29T10:00:00Z"},  # the rest left out
    {"status": "firing", "labels": {"a": "b"}, "startsAt": "2026-11-29T10:00:00Z", "annotations": None,
     "endsAt": None, "generatorURL": None, "fingerprint": None},
    {"status": "resolved", "labels": {"a": 1, "b": True}, "annotations": {"n": 2.5}, "startsAt": "2026-11-29T10:00:00Z",
     "endsAt": "2026-11-29T11:00:00+02:00", "fingerprint": "", "extra": [1, 2]},
    {"status": "firing", "labels": {"a": "lone \udc00"}, "startsAt": "2026-11-29t10:00:00.123456789z",
     "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "f1"},
], ids=["fields-left-out", "nulls", "not-strings", "lone-surrogate"])
def test_stored_text_of_any_shape_reads_as_from_json_does(raw: dict[str, object]) -> None:
    text = json.dumps(raw)
    assert Alert.from_json_text(text) == Alert.from_json(json.loads(text))


def test_a_string_that_is_not_unicode_is_escaped_as_json_dumps_would() -> None:
    a = alert("lone \udc00 surrogate")
    assert a.json_text() == json.dumps(a.to_json())
    assert json.loads(a.json_text()) == a.to_json()


def test_the_dedup_key_follows_the_fields() -> None:
    a = alert("x")
    assert a.dedup_key == "abc123|2026-11-29T10:00:00.123456Z|firing"
    resolved = replace(a, status="resolved")
    assert resolved.dedup_key == "abc123|2026-11-29T10:00:00.123456Z|resolved"
    assert a.dedup_key.endswith("|firing")
    later = replace(a, starts_at=datetime(2026, 11, 29, 12, tzinfo=UTC))
    assert later.dedup_key == "abc123|2026-11-29T12:00:00Z|firing"
    assert later.to_json()["startsAt"] == "2026-11-29T12:00:00Z"
