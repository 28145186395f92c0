"""PagerDuty Events API v2: trigger, acknowledge and resolve one incident per alert + playbook.

The ``dedup_key`` depends only on the alert fingerprint and the playbook, so a failed
remediation's incident is acknowledged when a later firing of the same alert starts
another attempt and resolved when one succeeds or the alert resolves.  Dry runs and
guardrail skips never page: nothing happened that a human must act on.

Body shape per https://developer.pagerduty.com/docs/events-api-v2/trigger-events/ :
``acknowledge`` and ``resolve`` carry only ``routing_key``, ``event_action`` and ``dedup_key``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from remediator.core.alerts import format_time
from remediator.notify.events import MESSAGE, Notice

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_MAX = 1024
STARTED_ACTIONS = ("acknowledge", "trigger")


def dedup_key(fingerprint: str, playbook: str) -> str:
    return hashlib.sha256(f"remediator|{fingerprint}|{playbook}".encode()).hexdigest()


def event_action(event: str, *, dry_run: bool, on_started: str = "acknowledge") -> str | None:
    """The Events v2 action for a pipeline event, or None when this event must not reach PagerDuty."""
    if dry_run:
        return None
    if event == "started":
        return on_started
    return {"failed": "trigger", MESSAGE: "trigger", "succeeded": "resolve", "resolved": "resolve"}.get(event)


def _severity(notice: Notice) -> str:
    label = notice.severity.lower()
    return label if label in SEVERITIES else "error"


def pagerduty_payload(notice: Notice, text: str, routing_key: str, action: str) -> dict[str, Any]:
    d = notice.decision
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(d.fingerprint, d.playbook),
    }
    if action != "trigger":
        return body
    target = d.target
    body["payload"] = {
        "summary": text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…",
        "source": target.key if target else "remediator",
        "severity": _severity(notice),
        "timestamp": format_time(notice.at),
        "component": target.name if target else d.playbook,
        "class": notice.alert.alertname or d.playbook,
        "custom_details": {
            "event": notice.event,
            "playbook": d.playbook,
            "execution_id": d.execution_id,
            "execution_url": notice.execution_url or None,
            "result": notice.result,
            "failed_step": notice.failed_step or None,
            "message": notice.message or None,
            "steps": [s.to_json() for s in notice.steps],
            "alert_labels": dict(notice.alert.labels),
            "alert_fingerprint": d.fingerprint,
        },
    }
    if target:
        body["payload"]["group"] = target.namespace
    body["client"] = "remediator"
    if notice.execution_url:
        body["client_url"] = notice.execution_url
    links = [
        {"href": href, "text": label}
        for href, label in ((notice.alert.generator_url, "Alert source"), (notice.execution_url, "Execution"))
        if href.startswith(("https://", "http://"))
    ]
    if links:
        body["links"] = links
    return body
