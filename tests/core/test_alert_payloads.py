"""Alertmanager webhook payloads (version 4): what is accepted, kept, and refused, and why."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from remediator.core.alerts import (
    MAX_ALERTS,
    ZERO_TIME,
    Alert,
    format_time,
    labels_fingerprint,
    parse_webhook,
    validate_payload,
)
from remediator.core.errors import PayloadError
from tests.core.malformed import CASES, Case, refusal, valid_body
from tests.payloads import alert_json, payload

LABELS = {"alertname": "HighDatabaseConnectionUsage", "severity": "warning", "namespace": "shop", "deployment": "api"}


def parse(body: dict[str, Any]) -> Any:
    return parse_webhook(json.dumps(body).encode())


def test_a_firing_alert_is_read_completely(example_payload: dict[str, Any]) -> None:
    p = parse(example_payload)
    assert (p.version, p.status, p.receiver, p.truncated_alerts) == ("4", "firing", "remediator", 0)
    assert p.group_key == '{}:{alertname="HighDatabaseConnectionUsage"}'
    assert p.external_url == "http://alertmanager:9093"
    assert dict(p.group_labels) == {"alertname": "HighDatabaseConnectionUsage"}
    assert dict(p.common_labels) == {"alertname": "HighDatabaseConnectionUsage", "severity": "warning"}
    (a,) = p.alerts
    assert a.status == "firing" and a.alertname == "HighDatabaseConnectionUsage"
    assert a.fingerprint == "8a7c2f0e5b1d3c4a"
    assert dict(a.labels) == {"alertname": "HighDatabaseConnectionUsage", "severity": "warning",
                              "namespace": "shop", "deployment": "orders-api"}
    assert dict(a.annotations) == {"summary": "Connection pool 92% used"}
    assert a.starts_at == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert a.ends_at is None  # "0001-01-01T00:00:00Z": Go's zero time, no known end
    assert a.generator_url == "http://prometheus:9090/graph"


def test_a_resolved_alert_keeps_its_end() -> None:
    p = parse(payload(alert_json(LABELS, status="resolved", ends_at="2026-11-22T10:05:00Z")))
    assert p.status == "resolved"
    (a,) = p.alerts
    assert a.status == "resolved"
    assert a.ends_at == datetime(2026, 11, 22, 10, 5, tzinfo=UTC)


def test_a_grouped_notification_keeps_every_alert_in_order() -> None:
    alerts = [alert_json({**LABELS, "deployment": f"api-{i}"}) for i in range(5)]
    p = parse(payload(*alerts))
    assert [a.labels["deployment"] for a in p.alerts] == [f"api-{i}" for i in range(5)]
    assert len({a.fingerprint for a in p.alerts}) == 5


def test_mixed_status_each_alert_keeps_its_own() -> None:
    """A group is "firing" while any alert fires; its resolved alerts are still resolved."""
    body = payload(alert_json(LABELS), alert_json({**LABELS, "deployment": "web"}, status="resolved",
                                                  ends_at="2026-11-22T10:03:00Z"))
    p = parse(body)
    assert p.status == "firing"
    assert [a.status for a in p.alerts] == ["firing", "resolved"]
    assert p.alerts[0].ends_at is None and p.alerts[1].ends_at == datetime(2026, 11, 22, 10, 3, tzinfo=UTC)


def test_truncated_groups_say_how_many_alerts_are_missing() -> None:
    p = parse(payload(alert_json(LABELS), truncated=7))
    assert p.truncated_alerts == 7 and isinstance(p.truncated_alerts, int)
    assert len(p.alerts) == 1
    assert parse(payload()).truncated_alerts == 0  # an empty group is valid too


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T10:00:00.123456789Z", datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)),
        # truncated, never rounded: rounding .9999999 up would move the alert into the next day
        ("2026-12-31T23:59:59.999999999Z", datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2026-11-22T10:00:00.1Z", datetime(2026, 11, 22, 10, 0, 0, 100000, tzinfo=UTC)),
        ("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)),
        ("2026-11-22t10:00:00.5z", datetime(2026, 11, 22, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-22T12:00:00.000000001+02:00", datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)),
        ("2026-11-22T05:30:00.25-04:30", datetime(2026, 11, 22, 10, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_nanosecond_timestamps_and_offsets(text: str, expected: datetime) -> None:
    (a,) = parse(payload(alert_json(LABELS, starts_at=text))).alerts
    assert a.starts_at == expected and a.starts_at.tzinfo is UTC


@pytest.mark.parametrize("ends_at", [
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000000Z", "0001-01-01T00:00:00+00:00"
])
def test_zero_end_time_means_no_end(ends_at: str) -> None:
    (a,) = parse(payload(alert_json(LABELS, ends_at=ends_at))).alerts
    assert a.ends_at is None
    assert a.to_json()["endsAt"] == "0001-01-01T00:00:00Z"
    assert format_time(ZERO_TIME) == "0001-01-01T00:00:00Z"


def test_ends_at_may_be_left_out() -> None:
    raw = alert_json(LABELS)
    del raw["endsAt"]
    (a,) = parse(payload(raw)).alerts
    assert a.ends_at is None


def test_a_missing_fingerprint_is_computed_as_alertmanager_computes_it() -> None:
    """Prometheus' label-set fingerprint (FNV-1a 64 over sorted names and values).

    Reference values: Prometheus' ``LabelSet.Fingerprint()`` for these label sets.
    """
    assert labels_fingerprint({}) == "cbf29ce484222325"
    assert labels_fingerprint({"foo": "bar"}) == "3fff2c2d7595e046"
    assert labels_fingerprint({"foo": "bar", "baz": "qux"}) == "e4d83091cd448e77"
    (a,) = parse(payload(alert_json({"baz": "qux", "foo": "bar"}))).alerts
    assert a.fingerprint == "e4d83091cd448e77"


def test_a_computed_fingerprint_depends_on_every_label_and_nothing_else() -> None:
    base = labels_fingerprint(LABELS)
    assert labels_fingerprint(dict(reversed(list(LABELS.items())))) == base
    assert labels_fingerprint({**LABELS, "severity": "critical"}) != base
    assert labels_fingerprint({**LABELS, "extra": ""}) != base
    # name/value boundaries are part of the hash: {"ab": "c"} and {"a": "bc"} differ
    assert labels_fingerprint({"ab": "c"}) != labels_fingerprint({"a": "bc"})
    first = parse(payload(alert_json(LABELS, starts_at="2026-11-22T10:00:00Z"))).alerts[0]
    again = parse(payload(alert_json(LABELS, starts_at="2026-11-22T11:00:00Z"))).alerts[0]
    assert first.fingerprint == again.fingerprint == base
    assert first.dedup_key != again.dedup_key  # a new firing episode is a new record


def test_a_sent_fingerprint_wins_over_the_computed_one() -> None:
    (a,) = parse(payload(alert_json(LABELS, fingerprint="abc123"))).alerts
    assert a.fingerprint == "abc123"


def test_every_v4_field_is_preserved() -> None:
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}/{severity=~"warning|critical"}:{alertname="HighLatency"}',
        "truncatedAlerts": 3,
        "status": "firing",
        "receiver": "remediator-webhook",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "severity": "critical"},
        "commonAnnotations": {"runbook_url": "https://runbooks/high-latency"},
        "externalURL": "https://alertmanager.example:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighLatency", "severity": "critical", "pod": "api-7d4b9"},
                "annotations": {"summary": "p99 above 2s", "description": "multi\nline"},
                "startsAt": "2026-11-22T10:00:00.5Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
                "fingerprint": "b2a1c3d4e5f60718",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "HighLatency", "severity": "critical", "pod": "api-9x8z7"},
                "annotations": {},
                "startsAt": "2026-11-22T09:00:00Z",
                "endsAt": "2026-11-22T09:30:00.25Z",
                "generatorURL": "",
                "fingerprint": "0718b2a1c3d4e5f6",
            },
        ],
    }
    p = parse(body)
    expected = copy.deepcopy(body)
    expected["alerts"][0]["startsAt"] = "2026-11-22T10:00:00.500000Z"  # Python keeps microseconds
    expected["alerts"][1]["endsAt"] = "2026-11-22T09:30:00.250000Z"
    assert p.to_json() == expected
    assert validate_payload(p.to_json()) == p  # what is stored parses back to the same payload
    assert all(Alert.from_json(a.to_json()) == a for a in p.alerts)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    body = valid_body()
    body["futureField"] = {"nested": [1, 2, 3]}
    body["alerts"][0]["silencedBy"] = []
    assert len(parse(body).alerts) == 2


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_malformed_body_is_refused_with_a_reason_naming_where(case: Case) -> None:
    message, taken = refusal(case.body)
    assert message.startswith(case.reason), message
    assert len(message) < 400  # a reason, never the offending value echoed back in full
    assert taken == (1 if case.one_alert else 0)  # one bad alert of two: the other is taken


def test_an_alert_is_taken_from_a_delivery_exactly_when_it_would_be_taken_alone() -> None:
    # One alert with a label past the limits refused the whole delivery: Alertmanager does not retry
    # a 4xx and re-sends the group at each interval, so every alert grouped with it was never remediated.
    good = [alert_json({"alertname": "Down", "deployment": f"web-{i}"}, fingerprint=f"{i:016x}") for i in range(3)]
    long_label = alert_json({"alertname": "Down", "path": "x" * 4097})
    bad_time = {**good[0], "startsAt": "yesterday", "fingerprint": "badbadbadbadbad0"}
    no_labels = {"status": "firing", "startsAt": "2026-11-01T00:00:00Z"}
    body = payload(good[0], long_label, good[1], bad_time, no_labels, good[2])
    taken = parse_webhook(json.dumps(body).encode())
    assert [a.fingerprint for a in taken.alerts] == [f"{i:016x}" for i in range(3)]
    assert taken.refused == (
        "body.alerts[1].labels.path: too long (4097 characters; at most 4096)",
        refusal(json.dumps(payload(bad_time)).encode())[0].replace("alerts[0]", "alerts[3]"),
        "body.alerts[4]: 'labels' is a required property",
    )
    # a bad envelope, too many alerts, or no alert that can be taken: the whole delivery, as ever
    for whole in ({**body, "version": "3"}, payload(long_label, no_labels),
                  payload(*(good * (MAX_ALERTS // 3 + 1)), long_label)):
        with pytest.raises(PayloadError):
            parse_webhook(json.dumps(whole).encode())


def test_the_cases_cover_what_the_contract_lists() -> None:
    ids = {c.id for c in CASES}
    assert {"bad-json", "labels-not-a-map", "label-value-number", "status-broken", "version-3", "alerts-not-a-list",
            "no-alerts", "no-status", "alert-without-labels", "alert-without-starts-at", "starts-at-words",
            "too-many-labels", "label-value-too-long", "deep-nesting", "non-utf8"} <= ids
    assert len(ids) == len(CASES)


def test_validate_payload_takes_decoded_json_too() -> None:
    assert len(validate_payload(valid_body()).alerts) == 2
    with pytest.raises(PayloadError, match=r"^body\.alerts\[0\]\.labels: expected an object, got a string$"):
        validate_payload({**valid_body(), "alerts": [{**valid_body()["alerts"][0], "labels": "x"}]})


def test_payload_errors_are_value_errors() -> None:
    """Generic callers that catch ValueError still see malformed input as input errors."""
    with pytest.raises(ValueError):
        parse_webhook(b"{")
