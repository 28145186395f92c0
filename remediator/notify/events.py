"""What a notification says, built once per event and shared by every channel.

Pure: a :class:`Notice` is made from the pipeline's decision, the alert and the step
results, and rendered through the same sandboxed Jinja engine as playbooks.  Alert
content only ever reaches message *text*; where a notification is sent comes from
the channel's configuration alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.meta

from remediator.core.alerts import Alert, format_time
from remediator.core.decisions import Decision, PlannedStep
from remediator.core.errors import ConfigError, TemplateError
from remediator.core.templates import cost_problem, environment, render
from remediator.ports import StepResult

#: Events a channel can subscribe to (``channels.<name>.events``); ``message`` (a playbook's
#: ``notify`` step) is always delivered to the channel it names.
EVENTS = ("started", "succeeded", "failed", "superseded", "skipped", "dry_run", "resolved",
          "approval_requested", "approval_denied", "approval_expired", "approval_refused")
MESSAGE = "message"
#: The approval gate's events (a playbook with ``approval:``): asked, and each way it can end unrun.
APPROVAL_EVENTS = ("approval_requested", "approval_denied", "approval_expired", "approval_refused")

HEADLINES = {
    "started": "Remediation started",
    "succeeded": "Remediation succeeded",
    "failed": "Remediation failed: manual intervention required",
    "superseded": "Remediation stopped: the target changed since it was planned",
    "skipped": "Remediation skipped",
    "dry_run": "Dry run: remediation planned, nothing was changed",
    "resolved": "Alert resolved after remediation",
    "approval_requested": "Approval requested: remediation waits for a human",
    "approval_denied": "Remediation denied: nothing was changed",
    "approval_expired": "Approval expired: nothing was changed",
    "approval_refused": "Remediation approved but refused by the guardrails: nothing was changed",
    MESSAGE: "Message from playbook",
}

#: The names a channel's ``template`` may use.
NOTICE_NAMES = frozenset(
    {
        "event",
        "headline",
        "dry_run",
        "playbook",
        "execution_id",
        "execution_url",
        "approval_url",
        "decision",
        "reason",
        "result",
        "target",
        "alertname",
        "labels",
        "annotations",
        "status",
        "fingerprint",
        "startsAt",
        "generatorURL",
        "steps",
        "failed_step",
        "message",
    }
)

DEFAULT_TEMPLATE = (
    "{% if dry_run and event != 'dry_run' %}[DRY RUN] {% endif %}"
    "{% if event == 'message' %}{{ message or headline }}{% else %}{{ headline }}{% endif %}"
    " | alert {{ alertname or fingerprint }}"
    "{% if target.key %} on {{ target.kind }} {{ target.namespace }}/{{ target.name }}{% endif %}"
    " | playbook {{ playbook }}"
    "{% if event == 'skipped' %} | {{ decision }}: {{ reason }}{% endif %}"
    "{% if event == 'failed' and failed_step %} | {{ failed_step }}{% endif %}"
    "{% if event.startswith('approval_') and message %} | {{ message }}{% endif %}"
    "{% if approval_url and event == 'approval_requested' %}: {{ approval_url }}{% endif %}"
)


@dataclass(frozen=True)
class StepLine:
    phase: str
    index: int
    action: str
    status: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "index": self.index,
            "action": self.action,
            "status": self.status,
            "message": self.message,
        }


@dataclass(frozen=True)
class Notice:
    """One event about one execution (or skipped decision), independent of any channel."""

    id: str
    event: str
    at: datetime
    decision: Decision
    alert: Alert
    steps: tuple[StepLine, ...]
    message: str = ""
    execution_url: str = ""
    #: The execution's web page, where an admin approves or denies it (approval events only): under
    #: ``public_url`` when it is set, else the bare path.
    approval_url: str = ""

    @property
    def dry_run(self) -> bool:
        return self.decision.dry_run

    @property
    def result(self) -> str:
        """The outcome in a word or three, for the ``result`` field of every channel."""
        if self.event == "skipped":
            return f"skipped ({self.decision.kind.value})"
        return {
            "started": "in progress",
            "succeeded": "succeeded",
            "failed": "failed",
            "superseded": "stopped: target changed since",
            "dry_run": "dry run: nothing changed",
            "resolved": "alert resolved",
            "approval_requested": "awaiting approval",
            "approval_denied": "denied",
            "approval_expired": "approval expired",
            "approval_refused": "refused at approval",
            MESSAGE: "message",
        }.get(self.event, self.event)

    @property
    def failed_step(self) -> str:
        failed = next((s for s in self.steps if s.status == "failed"), None)
        return f"step {failed.action} failed: {failed.message}" if failed else ""

    @property
    def severity(self) -> str:
        return self.alert.labels.get("severity", "")

    def context(self) -> dict[str, Any]:
        d = self.decision
        t = d.target
        return {
            "event": self.event,
            "headline": HEADLINES.get(self.event, self.event),
            "dry_run": self.dry_run,
            "playbook": d.playbook,
            "execution_id": d.execution_id or "",
            "execution_url": self.execution_url,
            "approval_url": self.approval_url,
            "decision": d.kind.value,
            "reason": d.reason,
            "result": self.result,
            "target": {
                "kind": t.kind if t else "",
                "namespace": t.namespace if t else "",
                "name": t.name if t else "",
                "key": t.key if t else "",
            },
            "alertname": self.alert.alertname,
            "labels": dict(self.alert.labels),
            "annotations": dict(self.alert.annotations),
            "status": self.alert.status,
            "fingerprint": self.alert.fingerprint,
            "startsAt": format_time(self.alert.starts_at),
            "generatorURL": self.alert.generator_url,
            "steps": [s.to_json() for s in self.steps],
            "failed_step": self.failed_step,
            "message": self.message,
        }


def _lines(decision: Decision, results: Mapping[tuple[str, int], StepResult]) -> tuple[StepLine, ...]:
    out = []
    for step in decision.steps + decision.on_failure:
        result = results.get((step.phase, step.index))
        if step.phase == "on_failure" and result is None:
            continue  # on_failure steps that never ran are noise in a message
        status, message = (result.status, result.message) if result is not None else ("pending", "")
        out.append(StepLine(step.phase, step.index, step.action, status, message))
    return tuple(out)


def notice_id(execution: str, event: str, step: PlannedStep | None = None) -> str:
    """Stable per (execution, event[, step]) so receivers can drop a retried duplicate."""
    suffix = f"|{step.phase}|{step.index}" if step is not None else ""
    return "nt-" + hashlib.sha256(f"{execution}|{event}{suffix}".encode()).hexdigest()[:24]


def execution_url(public_url: str, execution: str | None) -> str:
    if not public_url or not execution:
        return ""
    return f"{public_url.rstrip('/')}/api/v1/executions/{execution}"


def approval_url(public_url: str, execution: str | None) -> str:
    if not execution:
        return ""
    return f"{public_url.rstrip('/')}/ui/executions/{execution}"


def build_notice(
    event: str, decision: Decision, detail: Mapping[str, Any], *, at: datetime, public_url: str = ""
) -> Notice:
    """The notice for a pipeline event; ``detail`` may carry ``alert``, ``results``, ``message``, ``step``.

    A ``message`` (a notify step, sent mid-execution) lists no steps: their results are not known yet.
    """
    alert = detail.get("alert")
    if not isinstance(alert, Alert):
        alert = Alert(decision.fingerprint, "firing", {})
    step = detail.get("step")
    step = step if isinstance(step, PlannedStep) else None
    execution = decision.execution_id or decision.alert_key
    return Notice(
        id=notice_id(execution, event, step),
        event=event,
        at=at,
        decision=decision,
        alert=alert,
        steps=() if event == MESSAGE else _lines(decision, detail.get("results") or {}),
        message=str(detail.get("message") or ""),
        execution_url=execution_url(public_url, decision.execution_id),
        approval_url=approval_url(public_url, decision.execution_id) if event in APPROVAL_EVENTS else "",
    )


def check_message_template(source: str, where: str) -> None:
    """Reject a channel template that cannot parse or names something notices do not have."""
    try:
        ast = environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: template syntax error: {exc.message}") from None
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - NOTICE_NAMES)
    if unknown:
        raise ConfigError(
            f"{where}: template uses unknown name(s) {', '.join(unknown)}; available: {', '.join(sorted(NOTICE_NAMES))}"
        )
    problem = cost_problem(ast)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")


def render_text(template: str, notice: Notice) -> tuple[str, str]:
    """(text, error): the channel's template, or the default when it fails for this alert.

    A custom template that references a label this alert lacks must not cost the
    on-call the message, so the default text goes out and the error is reported.
    """
    context = notice.context()
    if template:
        try:
            text = render(template, context)
        except TemplateError as exc:
            return render(DEFAULT_TEMPLATE, context), str(exc)
        if text.strip():
            return text, ""
        # Rendered to nothing for this alert (a label it has empty, say): Slack refuses an empty section
        # and PagerDuty an empty summary, both as permanent errors, so the message would be lost.
        return render(DEFAULT_TEMPLATE, context), "the template rendered to no text for this notice"
    return render(DEFAULT_TEMPLATE, context), ""
