"""Slack incoming-webhook messages: Block Kit blocks plus a plain ``text`` fallback.

Slack shows ``text`` in push notifications and in clients that cannot draw blocks, so
it carries the whole rendered message.  Everything from the alert is escaped for
mrkdwn (``&``, ``<``, ``>``), so a label value cannot ping ``<!channel>`` or forge a
link; links are buttons whose URLs must be http(s).
"""

from __future__ import annotations

from typing import Any

from remediator.notify.events import HEADLINES, MESSAGE, Notice

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
BUTTON_URL_MAX = 3000


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(title: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(f"*{title}*\n{escape(value) or '-'}", FIELD_MAX)}


def _actions(notice: Notice) -> str:
    if not notice.steps:
        return "-"
    if notice.event == "started" or all(s.status == "pending" for s in notice.steps):
        return ", ".join(s.action for s in notice.steps)
    return "\n".join(
        f"{s.action}{' (on failure)' if s.phase == 'on_failure' else ''}: {s.status}" for s in notice.steps
    )


def _alert(notice: Notice) -> str:
    name = notice.alert.alertname or notice.alert.fingerprint
    return f"{name} ({notice.severity})" if notice.severity else name


def _button(text: str, url: str) -> dict[str, Any] | None:
    if not url.startswith(("https://", "http://")) or len(url) > BUTTON_URL_MAX:
        return None
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "url": url}


def slack_payload(notice: Notice, text: str) -> dict[str, Any]:
    d = notice.decision
    if notice.dry_run and "DRY RUN" not in text:
        # ``text`` is all a phone's notification shows (Slack: mobile notifications use the message's
        # text, not its blocks): a channel template that does not say so made a dry run read as real.
        text = f"[DRY RUN] {text}"
    headline = HEADLINES.get(notice.event, notice.event)
    if notice.event == MESSAGE:
        headline = f"{headline} {d.playbook}"
    if notice.dry_run and notice.event != "dry_run":
        headline = f"[DRY RUN] {headline}"
    target = f"{d.target.kind} {d.target.namespace}/{d.target.name}" if d.target else ""
    context = f"playbook `{escape(d.playbook)}` · execution `{escape(d.execution_id or '-')}`"
    if notice.dry_run:
        context += " · *DRY RUN*: nothing was changed"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(text), SECTION_MAX)}},
        {
            "type": "section",
            "fields": [
                _field("Alert", _alert(notice)),
                _field("Target", target),
                _field("Actions", _actions(notice)),
                _field("Result", notice.result if notice.event != "skipped" else f"{notice.result}: {d.reason}"),
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
    ]
    buttons = [
        b
        for b in (_button("Alert source", notice.alert.generator_url), _button("Execution", notice.execution_url),
                  _button("Approve or deny", notice.approval_url))
        if b is not None
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return {"text": escape(text), "blocks": blocks}
