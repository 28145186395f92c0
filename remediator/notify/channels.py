"""Configured channels: destinations and keys resolved once from settings and secret files.

A channel turns a :class:`Notice` into an :class:`Outgoing` request body.  Its URL and
keys come only from here (config, secret files), never from anything an alert carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from remediator.core.errors import ConfigError
from remediator.notify.events import EVENTS, MESSAGE, Notice, check_message_template, render_text
from remediator.notify.pagerduty import DEFAULT_URL, STARTED_ACTIONS, event_action, pagerduty_payload
from remediator.notify.slack import slack_payload
from remediator.notify.webhook import webhook_payload
from remediator.settings import ChannelSettings, Settings, read_secret


@dataclass(frozen=True)
class Outgoing:
    """One request to send: the body is fixed, signing happens per attempt."""

    channel: str
    notice_id: str
    event: str
    execution_id: str
    body: bytes
    headers: Mapping[str, str]
    template_error: str = ""


@dataclass(frozen=True)
class Channel:
    name: str
    type: str
    url: str
    secret: str = ""
    routing_key: str = ""
    events: tuple[str, ...] = ()
    template: str = ""
    timeout: float = 10.0
    attempts: int = 5
    on_started: str = "acknowledge"

    def wants(self, event: str) -> bool:
        return event == MESSAGE or event in self.events

    def encode(self, notice: Notice) -> Outgoing | None:
        """The request for this notice, or None when this channel has nothing to say about it."""
        text, error = render_text(self.template, notice)
        payload: dict[str, Any]
        if self.type == "slack":
            payload = slack_payload(notice, text)
        elif self.type == "pagerduty":
            action = event_action(notice.event, dry_run=notice.dry_run, on_started=self.on_started)
            if action is None:
                return None
            payload = pagerduty_payload(notice, text, self.routing_key, action)
        else:
            payload = webhook_payload(notice, text, self.name)
        headers = {"Content-Type": "application/json"}
        if self.type == "webhook":
            headers |= {"X-Remediator-Event": notice.event, "X-Remediator-Delivery": notice.id}
        return Outgoing(
            channel=self.name,
            notice_id=notice.id,
            event=notice.event,
            execution_id=notice.decision.execution_id or "",
            body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
            headers=headers,
            template_error=error,
        )


def _channel(name: str, cfg: ChannelSettings) -> Channel:
    where = f"channels.{name}"
    url = read_secret(cfg.url, cfg.url_file)
    if cfg.type == "pagerduty":
        url = url or DEFAULT_URL
        routing_key = read_secret(cfg.routing_key, cfg.routing_key_file)
        if not routing_key:
            raise ConfigError(f"{where}: a pagerduty channel needs routing_key or routing_key_file")
        if cfg.on_started not in STARTED_ACTIONS:
            raise ConfigError(f"{where}.on_started: expected acknowledge or trigger, got {cfg.on_started!r}")
    else:
        routing_key = ""
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"{where}: url (or url_file) must be an http(s) URL")
    unknown = sorted(set(cfg.events) - set(EVENTS))
    if unknown:
        raise ConfigError(f"{where}.events: unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}")
    if cfg.template:
        check_message_template(cfg.template, f"{where}.template")
    if cfg.request_timeout <= 0 or cfg.max_attempts < 1:
        raise ConfigError(f"{where}: request_timeout must be positive and max_attempts at least 1")
    return Channel(
        name=name,
        type=cfg.type,
        url=url,
        secret=read_secret(cfg.secret, cfg.secret_file),
        routing_key=routing_key,
        events=cfg.events,
        template=cfg.template,
        timeout=cfg.request_timeout,
        attempts=cfg.max_attempts,
        on_started=cfg.on_started,
    )


def channels_from_settings(settings: Settings) -> dict[str, Channel]:
    """Every configured channel, or ConfigError naming the first one that is unusable."""
    return {name: _channel(name, cfg) for name, cfg in settings.channels.items()}
