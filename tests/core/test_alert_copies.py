"""The alert's own copies (``with_status``, ``restorable``/``restored``) carry every field, as
``dataclasses.replace`` would: a field added to Alert must be added to them too."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from remediator.core.alerts import Alert


def _alert() -> Alert:
    return Alert.of(status="resolved", labels={"alertname": "Down", "pod": "p-1"}, annotations={"summary": "s"},
                    starts_at="2026-11-01T00:00:00Z", ends_at="2026-11-01T00:05:00.5Z",
                    generator_url="http://prometheus/graph", fingerprint="")


def test_every_field_of_alert_is_one_the_copies_know() -> None:
    assert [f.name for f in dataclasses.fields(Alert)] == [
        "fingerprint", "status", "labels", "annotations", "starts_at", "ends_at", "generator_url"]


def test_with_status_is_replace() -> None:
    alert = _alert()
    firing = alert.with_status("firing")
    assert firing == dataclasses.replace(alert, status="firing") and firing.status == "firing"
    assert firing.dedup_key == dataclasses.replace(alert, status="firing").dedup_key


def test_restored_from_restorable_is_the_same_alert_with_its_kept_text() -> None:
    alert = _alert()
    copy = Alert.restored(*alert.restorable())
    assert copy == alert and copy.__dict__ == alert.__dict__
    assert copy.starts_at == datetime(2026, 11, 1, tzinfo=UTC) and copy.dedup_key == alert.dedup_key
