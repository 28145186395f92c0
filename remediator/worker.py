"""The worker: takes recorded alerts from the store and runs them through the pipeline.

The webhook only records and wakes the worker; remediation never runs inside an
HTTP request.  An alert is marked processed only after all its decisions are
recorded, so a crash in between simply processes it again (decisions are
idempotent) and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket

import structlog

from remediator.core.errors import StoreUnavailable
from remediator.pipeline import Pipeline
from remediator.settings import WorkerSettings


class Worker:
    def __init__(self, pipeline: Pipeline, settings: WorkerSettings, name: str | None = None) -> None:
        self.pipeline = pipeline
        self.settings = settings
        # Unique per instance: a worker takes back claims under its own name (see Store.claim_alerts).
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._log = structlog.get_logger("remediator.worker").bind(worker=self.name)
        self.processed = 0

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Process everything claimable now; return how many alerts were handled."""
        handled = 0
        while not self._stopping:
            batch = await self.pipeline.store.claim_alerts(self.name, self.settings.batch, self.settings.lease)
            if not batch:
                break
            for item in batch:
                if self._stopping:
                    return handled  # the claim lease expires; the alert stays durably pending
                outcome = await self.pipeline.process(item.received)
                if outcome.defer_until is not None:
                    await self.pipeline.store.defer_alert(item.id, outcome.defer_until)
                else:
                    await self.pipeline.store.mark_processed(item.id)
                handled += 1
                self.processed += 1
        return handled

    async def run(self) -> None:
        while not self._stopping:
            try:
                # Every round, not only at start: another replica may have died mid-execution.
                resumed = await self.pipeline.resume_unfinished()
                if resumed:
                    self._log.warning("resumed interrupted executions", count=resumed)
                await self.drain()
            except StoreUnavailable as exc:
                self.pipeline.metrics.store_unavailable.inc()
                self._log.error("store unavailable; will retry", error=str(exc))
            except Exception:
                self._log.exception("worker iteration failed; will retry")
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
