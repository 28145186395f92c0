"""``parse_time`` reads Alertmanager's own shape (``...Z``) straight with ``fromisoformat``; every
text, valid or not, must get the answer the general RFC 3339 path gives: the same instant, in
UTC, or the same reason."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from remediator.core.alerts import _UTC_RFC3339, Alert, _parse_rfc3339, format_time, parse_time
from remediator.core.errors import PayloadError


def outcome(parse: Any, text: str) -> Any:
    try:
        value = parse(text)
    except PayloadError as exc:
        return f"PayloadError: {exc}"
    assert value.tzinfo is UTC
    return value


def _texts(rng: random.Random) -> list[str]:
    """Zulu timestamps at and beyond every field's range, fractions of 0 to 15 digits, and near misses."""
    out = []
    for _ in range(3000):
        year = rng.choice([0, 1, 1970, 2024, 2026, 9999])
        month, day = rng.choice([1, 2, 6, 12, 0, 13]), rng.choice([1, 15, 28, 29, 30, 31, 0, 32])
        hour, minute, second = (rng.choice([0, 12, 23, 24]), rng.choice([0, 30, 59, 60]),
                                rng.choice([0, 30, 59, 60]))
        digits = rng.randrange(16)
        fraction = "." + "".join(rng.choice("0123456789") for _ in range(digits)) if digits else ""
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}Z"
        out.append(rng.choice([text, text, text, text.lower(), text.replace("T", " "), text + "\n",
                               text[:-1] + "+00:00", text[:-1], text[1:]]))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_the_fast_shape_reads_as_the_general_path_does(seed: int) -> None:
    texts = _texts(random.Random(seed))
    outcomes = []
    for text in texts:
        outcomes.append(outcome(parse_time, text))
        assert outcomes[-1] == outcome(_parse_rfc3339, text), text
    fast = [o for t, o in zip(texts, outcomes, strict=True) if _UTC_RFC3339.match(t)]
    assert sum(isinstance(o, datetime) for o in fast) > 100  # the fast shape is exercised, read and refused
    assert sum(isinstance(o, str) for o in fast) > 100


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-29T10:00:00Z", datetime(2026, 11, 29, 10, tzinfo=UTC)),
    ("2026-11-29T10:00:00.999999999Z", datetime(2026, 11, 29, 10, 0, 0, 999999, tzinfo=UTC)),  # truncated
    ("2024-02-29T23:59:59.5Z", datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC)),
])
def test_alertmanagers_shape(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected and parse_time(text).tzinfo is UTC


@pytest.mark.parametrize("text", ["2026-02-29T00:00:00Z", "2026-11-29T24:00:00Z", "2026-11-29T10:00:60Z"])
def test_a_field_out_of_range_keeps_its_reason(text: str) -> None:
    with pytest.raises(PayloadError, match="invalid timestamp"):
        parse_time(text)


@pytest.mark.parametrize("seed", range(3))
def test_an_alert_writes_its_start_as_format_time_does_however_it_was_sent(seed: int) -> None:
    """A start sent exactly as format_time writes it is kept as sent; any other is written anew."""
    for text in _texts(random.Random(seed)):
        try:
            a = Alert.of(status="firing", labels={"a": "b"}, annotations={}, starts_at=text, ends_at=None,
                         generator_url="", fingerprint="f")
        except PayloadError:
            continue
        written = format_time(a.starts_at)
        assert a.to_json()["startsAt"] == written, text
        assert a.dedup_key == f"f|{written}|firing", text
    for text in ["2026-11-29T10:00:00.000000Z", "2026-11-29T10:00:00.100000Z", "2026-11-29T10:00:00.1Z"]:
        a = Alert.of(status="firing", labels={}, annotations={}, starts_at=text, ends_at=None, generator_url="",
                     fingerprint="f")
        assert a.to_json()["startsAt"] == format_time(a.starts_at)
