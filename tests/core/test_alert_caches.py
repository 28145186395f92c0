"""The caches in front of pure functions on the hot path give what the functions give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from remediator.core.alerts import format_time, labels_fingerprint, parse_time
from remediator.core.errors import PayloadError


def test_fingerprint_does_not_depend_on_label_order() -> None:
    labels = {"alertname": "HighLatency", "namespace": "shop", "deployment": "web"}
    shuffled = dict(reversed(list(labels.items())))
    assert labels_fingerprint(labels) == labels_fingerprint(shuffled)
    assert labels_fingerprint(labels) == labels_fingerprint(dict(sorted(labels.items())))
    assert labels_fingerprint(labels) != labels_fingerprint({**labels, "deployment": "api"})


def test_a_refused_time_is_refused_every_time() -> None:
    for _ in range(2):  # an exception is not kept: the second call fails the same way
        with pytest.raises(PayloadError, match="invalid RFC 3339"):
            parse_time("yesterday")
    assert parse_time("2026-11-01T00:00:12Z") == datetime(2026, 11, 1, 0, 0, 12, tzinfo=UTC)


def test_equal_instants_in_other_zones_format_alike() -> None:
    utc = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    plus_one = utc.astimezone(timezone(timedelta(hours=1)))
    assert format_time(plus_one) == format_time(utc) == "2026-11-01T12:00:00Z"
    assert format_time(utc + timedelta(microseconds=5)) == "2026-11-01T12:00:00.000005Z"
