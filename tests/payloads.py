"""Builders for Alertmanager v4 payloads used across the suite."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "playbooks"
EXAMPLE = ROOT / "examples" / "alert-firing.json"
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


def alert_json(
    labels: dict[str, str],
    *,
    status: str = "firing",
    starts_at: str = "2026-11-22T10:00:00Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    fingerprint: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph",
    }
    if fingerprint:
        out["fingerprint"] = fingerprint
    return out


def payload(*alerts: dict[str, Any], status: str | None = None, truncated: int = 0) -> dict[str, Any]:
    statuses = {a["status"] for a in alerts}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": truncated,
        "status": status or ("firing" if "firing" in statuses else "resolved"),
        "receiver": "remediator",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def db_pool_alert(**labels: str) -> dict[str, Any]:
    base = {"alertname": "HighDatabaseConnectionUsage", "severity": "warning", "namespace": "shop",
            "deployment": "orders-api"}
    base.update(labels)
    return alert_json(base)


