"""PagerDuty Events API v2: one incident per execution, opened by its failure, closed by the alert.

What an on-call human expects, and what PagerDuty does with each event
(https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):

* A failed remediation pages.  Each execution has its own ``dedup_key``, so a failure
  opens an incident of its own and notifies, whatever the state of an earlier one.  With
  one key per alert + playbook, a later episode's failure only added to the earlier
  incident, and an incident a human (or, before, this daemon) had acknowledged "won't
  generate any additional notifications, even if it receives new trigger events".
* The daemon never acknowledges.  Acknowledging means "a human is on it" and stops the
  escalation: ``started`` used to acknowledge the incident an earlier episode's failure
  had opened, silencing a page nobody had answered.  ``on_started: trigger`` pages as
  soon as automation acts (that execution's incident); with the default
  (``acknowledge``, kept as the name of "do not page") ``started`` sends nothing: the
  execution has no incident yet, and nobody else's may be touched.
* An incident is resolved by its execution's success, and by the alert resolving: then
  every incident the alert's executions opened since its previous resolve (a flapping
  alert fires new episodes without one) is resolved, see ``Pipeline._notify_resolved``.

Dry runs and guardrail skips never page: nothing happened that a human must act on.

``acknowledge`` and ``resolve`` carry only ``routing_key``, ``event_action`` and
``dedup_key``.  A trigger fits PagerDuty's limits (:func:`fit`): the body is at most
:data:`BODY_MAX` bytes (PagerDuty refuses more than 512 KB with a 400, never retried, and
the page was lost to one large alert label), the summary at most 1024 characters, the
``dedup_key`` 64 and the other short fields :data:`FIELD_MAX`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from remediator.core.alerts import format_time
from remediator.notify.events import MESSAGE, Notice

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_MAX = 1024
#: source, component, group and class: PagerDuty documents no bound; these show in one line.
FIELD_MAX = 255
#: PagerDuty refuses an event over 512 KB (524,288 bytes); kept well under it.
BODY_MAX = 500_000
#: The length to which alert label values and step messages are cut, in turn, while a trigger is too large.
TRIM_STEPS = (2048, 256, 32)
STARTED_ACTIONS = ("acknowledge", "trigger")


def dedup_key(fingerprint: str, playbook: str, execution: str) -> str:
    """The incident of one execution (64 hex digits, within PagerDuty's 255)."""
    return hashlib.sha256(f"remediator|{fingerprint}|{playbook}|{execution}".encode()).hexdigest()


def notice_dedup_key(notice: Notice) -> str:
    d = notice.decision
    return dedup_key(d.fingerprint, d.playbook, d.execution_id or d.alert_key)


def event_action(event: str, *, dry_run: bool, on_started: str = "acknowledge") -> str | None:
    """The Events v2 action for a pipeline event, or None when this event must not reach PagerDuty."""
    if dry_run:
        return None
    if event == "started":
        return "trigger" if on_started == "trigger" else None  # never an acknowledge: see the module
    return {"failed": "trigger", MESSAGE: "trigger", "succeeded": "resolve", "resolved": "resolve"}.get(event)


def _severity(notice: Notice) -> str:
    label = notice.severity.lower()
    return label if label in SEVERITIES else "error"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pagerduty_payload(notice: Notice, text: str, routing_key: str, action: str) -> dict[str, Any]:
    d = notice.decision
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": notice_dedup_key(notice),
    }
    if action != "trigger":
        return body
    target = d.target
    body["payload"] = {
        "summary": _cut(text, SUMMARY_MAX),
        "source": _cut(target.key if target else "remediator", FIELD_MAX),
        "severity": _severity(notice),
        "timestamp": format_time(notice.at),
        "component": _cut(target.name if target else d.playbook, FIELD_MAX),
        "class": _cut(notice.alert.alertname or d.playbook, FIELD_MAX),
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
        body["payload"]["group"] = _cut(target.namespace, FIELD_MAX)
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
    return fit(body)


def encoded_size(body: dict[str, Any]) -> int:
    """The bytes ``body`` is sent as (as :meth:`Channel.encode` writes it)."""
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def fit(body: dict[str, Any], limit: int = BODY_MAX) -> dict[str, Any]:
    """``body`` within ``limit`` bytes: what a human needs to act (summary, source, severity, the
    execution's id and link) is kept, the details go first.

    Alert label values and step messages (and the failure and playbook messages) are cut to
    each of :data:`TRIM_STEPS` in turn, then the labels and steps are left out, then the links;
    ``custom_details.trimmed`` says what was done.  A page cut short beats a page refused.
    """
    if encoded_size(body) <= limit:
        return body
    details: dict[str, Any] = body["payload"]["custom_details"]
    labels, steps = dict(details["alert_labels"]), list(details["steps"])
    failed, message = details["failed_step"], details["message"]
    for cap in TRIM_STEPS:
        details["alert_labels"] = {_cut(k, cap): _cut(str(v), cap) for k, v in labels.items()}
        details["steps"] = [{**s, "message": _cut(str(s.get("message", "")), cap)} for s in steps]
        details["failed_step"] = _cut(failed, cap) if failed else failed
        details["message"] = _cut(message, cap) if message else message
        details["trimmed"] = (f"alert labels and messages cut to {cap} characters each: the event was over"
                              " PagerDuty's 512 KB limit; the execution's page has them in full")
        if encoded_size(body) <= limit:
            return body
    details["alert_labels"], details["steps"] = {}, []
    details["trimmed"] = ("alert labels and steps left out: the event was over PagerDuty's 512 KB limit;"
                          " the execution's page has them")
    if encoded_size(body) <= limit:
        return body
    body.pop("links", None)
    body.pop("client_url", None)
    details["execution_url"] = None
    return body
