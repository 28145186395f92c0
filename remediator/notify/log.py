"""The notifier used when no channel is configured: a structured log line per event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from remediator.core.decisions import Decision


class LogNotifier:
    def __init__(self) -> None:
        self._log = structlog.get_logger("remediator.notify")

    async def notify(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        self._log.info(
            "notification",
            notice=event,
            playbook=decision.playbook,
            execution_id=decision.execution_id,
            channels=list(detail.get("channels", [])),
        )
