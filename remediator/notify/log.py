"""The notifier used when no channel is configured: a structured log line per event.

An event for a playbook that names no channel is told to nobody: it is logged at DEBUG, so a
storm of dry-run executions is not a storm of INFO lines (the decision loop's summary counts them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from remediator.core.decisions import Decision
from remediator.logs import writes_debug


class LogNotifier:
    def __init__(self) -> None:
        self._log = structlog.get_logger("remediator.notify")
        # Asked once: each call on the lazy logger binds a new one, some 2 µs for a line that is
        # most often not written (three per plan-only execution in a storm).
        self._debug = writes_debug(self._log)

    async def notify(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        channels = list(detail.get("channels", []))
        if not channels and not self._debug:
            return
        (self._log.info if channels else self._log.debug)(
            "notification",
            notice=event,
            playbook=decision.playbook,
            execution_id=decision.execution_id,
            channels=channels,
        )
