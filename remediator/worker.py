"""The worker: two loops, deciding and executing, each on its own.

The webhook only records and wakes the worker; remediation never runs inside an
HTTP request.  The decision loop claims recorded alerts, decides them (matching,
planning, guardrails) and marks them processed once all their decisions are
recorded, so a crash in between simply decides them again (decisions are idempotent)
and nothing acknowledged is lost.  Admitted executions are left to the
:class:`~remediator.queue.ExecutionQueue`, which runs them concurrently: deciding
never waits on executing.  Both loops run in one TaskGroup: if either dies, the
worker fails as a whole (and the daemon stops) instead of running half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections import Counter
from datetime import timedelta

import structlog

from remediator.core.errors import StoreUnavailable
from remediator.pipeline import Pipeline
from remediator.ports import IntakeQueue, StoredAlert
from remediator.queue import ExecutionQueue
from remediator.settings import WorkerSettings


class Worker:
    def __init__(
        self,
        pipeline: Pipeline,
        settings: WorkerSettings,
        name: str | None = None,
        *,
        inline: bool = False,
        intake: IntakeQueue | None = None,
    ) -> None:
        # inline (replay): each alert's executions run to their end before the next alert is
        # decided, as a queue with no delay would on a virtual clock that only moves between events.
        self.inline = inline
        self.pipeline = pipeline
        # The alerts to decide.  Default: the pipeline's store, when it holds the intake too
        # (the daemon's one store does); the pipeline itself only reads the alert history.
        if intake is None:
            if not isinstance(pipeline.store, IntakeQueue):
                raise TypeError("the pipeline's store is no intake queue: pass intake=")
            intake = pipeline.store
        self.intake: IntakeQueue = intake
        self.settings = settings
        # Unique per instance: a worker takes back claims under its own name (see IntakeQueue.claim_alerts).
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._log = structlog.get_logger("remediator.worker").bind(worker=self.name)
        self.processed = 0
        self.queue = ExecutionQueue(pipeline, settings)
        pipeline.on_executable = self.queue.wake

    def wake(self) -> None:
        self._wake.set()

    async def decide_all(self) -> int:
        """Decide everything claimable now; return how many alerts were handled."""
        handled = 0
        while not self._stopping:
            batch = await self.intake.claim_alerts(self.name, self.settings.batch, self.settings.lease)
            if not batch:
                break
            summary: Counter[str] = Counter()  # decision kinds (and deferrals) of this batch, for its log line
            for item in batch:
                if self._stopping:
                    return handled  # the claim lease expires; the alert stays durably pending
                try:
                    if self.inline:
                        outcome = await self.pipeline.process(item.received)
                    else:  # claimed before: its decider may have died between admission and decision
                        outcome = await self.pipeline.decide(item.received, retried=item.attempts > 1)
                except StoreUnavailable:
                    raise  # not the alert's fault: the claim stays ours and is taken back, uncounted
                except Exception as exc:
                    await self._failed(item, exc)
                    continue
                if outcome.defer_until is not None:
                    await self.intake.defer_alert(item.id, outcome.defer_until)
                    self.pipeline.events.alert_deferred(item.received, outcome.defer_until)
                    summary["deferred"] += 1
                else:
                    await self.intake.mark_processed(item.id)
                    self.pipeline.events.alert_processed(item.received, outcome.decisions)
                summary.update(d.kind.value for d in outcome.decisions)
                handled += 1
                self.processed += 1
            # One line per batch at INFO (each decision is at DEBUG): a storm is not a storm of log lines.
            self._log.info("alerts decided", alerts=len(batch), **dict(sorted(summary.items())))
        return handled

    async def _failed(self, item: StoredAlert, exc: Exception) -> None:
        """An alert whose processing raised: retried after a backoff, parked after ``max_tries``.

        One poison alert must not hold up intake: it would be claimed first, forever.
        """
        error = f"{type(exc).__name__}: {exc}"
        if item.attempts >= self.settings.max_tries:
            await self.intake.park_alert(item.id, error)
            self.pipeline.metrics.alerts_parked.inc()
            self._log.error("alert parked: its processing failed every time", alert_id=item.id,
                            attempts=item.attempts, error=error, exc_info=exc)
            return
        retry_at = self.pipeline.clock.now() + timedelta(seconds=min(2.0 ** item.attempts, 300.0))
        await self.intake.release_alert(item.id, retry_at)
        self._log.warning("alert processing failed; will retry", alert_id=item.id, attempts=item.attempts,
                          retry_at=retry_at.isoformat(), error=error)

    async def drain(self) -> int:
        """Decide everything claimable, then run every execution that left to its end; return
        how many alerts were decided.  Both stages once, in order: for tests and tools."""
        handled = await self.decide_all()
        await self.queue.drain()
        return handled

    async def _decide_loop(self) -> None:
        while not self._stopping:
            try:
                await self.decide_all()
            except StoreUnavailable as exc:
                self.pipeline.metrics.store_unavailable.inc()
                self._log.error("store unavailable; will retry", error=str(exc))
            except Exception:
                self._log.exception("decision round failed; will retry")
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)
            self._wake.clear()

    async def _execution_loop(self) -> None:
        while not self._stopping:
            try:
                await self.queue.run()
            except Exception:  # the queue's own round failed unexpectedly: log, and go on
                self._log.exception("execution round failed; will retry")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)

    async def run(self) -> None:
        """Both loops until stopped.  One that dies takes the other down and raises."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._decide_loop(), name="remediator-decide")
            group.create_task(self._execution_loop(), name="remediator-execute")

    def stop(self) -> None:
        """Stop deciding and starting executions; running ones are left to :meth:`finish`."""
        self._stopping = True
        self._wake.set()
        self.queue.halt()

    async def finish(self, grace: float) -> None:
        """Give running executions ``grace`` seconds to end, then hand them over (ExecutionQueue.stop)."""
        await self.queue.stop(grace)
