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
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

import structlog

from remediator.core.errors import StoreUnavailable
from remediator.inflight import InFlight
from remediator.logs import writes
from remediator.pipeline import BatchFacts, Pipeline
from remediator.ports import IntakeQueue, StoredAlert
from remediator.queue import ExecutionQueue
from remediator.settings import WorkerSettings


@runtime_checkable
class DecisionBatches(Protocol):
    """An intake that can commit a decided batch at once (the embedded SQLite store)."""

    def decision_batch(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Writes of the calling task inside are committed together when it leaves."""

    def decision_unit(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Writes inside land in one transaction (no commit splits them)."""


@runtime_checkable
class CountsBacklog(Protocol):
    """An intake that can say how many alerts wait to be decided (both stores)."""

    async def undecided(self) -> int:
        """Alerts recorded and not yet processed (parked ones are processed)."""


#: The longest a decider rests between two batches for intake's sake (see :class:`Pacer`).
MAX_REST = 0.5
#: The longest a decision batch keeps the loop at a stretch (see :meth:`Pacer.turn`).
SLICE = 0.002


class Pacer:
    """Deciding gives way to webhooks in progress: after a batch, while deliveries are being taken
    in, the decider waits for them, up to a share of the time the batch took.

    Why: both run on one event loop, and whichever has more ready work takes it.  On PostgreSQL
    a decision costs several times an alert's intake, so under saturated intake deciding took
    most of the loop and intake ran at a quarter of its speed: answering Alertmanager slowly
    backs up its queue and its retries.  With a share of ``s``, a batch that kept the loop ``t``
    seconds is followed by up to ``t * (1 - s) / s`` seconds (at most :data:`MAX_REST`) in which
    deciding waits while a webhook is in progress, and goes on as soon as none is: so under
    saturation deciding keeps at least ``s`` of the loop and intake gets the rest, and when
    webhooks come now and then (1,000 alerts/s in 20s is 50 short requests a second) deciding
    hardly waits at all.  The backlog stays bounded by ``max_backlog``: above it the webhook
    answers 503 at once, and deciding has the loop to itself.

    ``now`` is the loop's busy time source (real time: this is scheduling, not waiting for
    something to happen); tests give their own.
    """

    def __init__(self, share: float, now: Callable[[], float] = time.perf_counter) -> None:
        self.share = share
        self._now = now
        self._taken_in = InFlight()
        self._started: float | None = None
        self._slice = 0.0  # when the decider last let the loop go (turn)

    def receiving(self) -> contextlib.AbstractContextManager[None]:
        """Around a webhook delivery being taken in (parsed, recorded, answered)."""
        return self._taken_in.inside()

    @property
    def in_progress(self) -> int:
        """Deliveries being taken in now."""
        return self._taken_in.count

    def started(self) -> None:
        """A batch starts."""
        self._started = self._slice = self._now()

    def turn(self) -> bool:
        """Whether the decider should let the loop run other work now, between two alerts of a batch.

        Why: a batch whose statements never suspend (PostgreSQL: what it asks the store fetched up
        front, its writes deferred to its end; SQLite: statements run inline, and a write that finds
        the connection free does not suspend either, see ``shared_tx.complete``) would keep the loop
        for the whole batch: 4-8 ms, at times 30, at 1,000 alerts/s, 100 ms for a storm's batch of
        500, and every webhook answer waited behind it.  So the decider yields once :data:`SLICE`
        has passed since its last turn, whether or not a delivery is in progress: one that arrives
        meanwhile is only read (and counted in progress) once the loop polls its socket.  A yield
        is one trip round the loop every 2 ms, about 1 % of the batch's time.
        """
        now = self._now()
        if now - self._slice < SLICE:
            return False
        self._slice = now
        return True

    def budget(self) -> float:
        """The longest the decider may give way after the batch begun at the last :meth:`started`."""
        if self._started is None or self.share >= 1.0:
            return 0.0
        busy, self._started = self._now() - self._started, None
        return min(busy * (1.0 - self.share) / self.share, MAX_REST)

    async def rest(self) -> None:
        """Give way to the webhooks in progress, for at most :meth:`budget`; at once if none is."""
        budget = self.budget()
        if budget > 0 and self._taken_in.count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._taken_in.none_left(), budget)


#: Seconds a backlog count is reused: counting is a query, and the webhook asks on every POST.
BACKLOG_FRESH = 0.5
#: What a webhook refused for the backlog is told to wait before retrying (``Retry-After``).
BACKLOG_RETRY_AFTER = 5


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
        # Decided once here: isinstance against a runtime-checkable Protocol inspects every member,
        # and asked twice per alert it was an eighth of a replay's CPU.  Inline (replay) runs
        # executions inside the decision: their writes must not be deferred to a batch commit.
        self._batches: DecisionBatches | None = (
            intake if not inline and isinstance(intake, DecisionBatches) else None
        )
        self._counts = intake if isinstance(intake, CountsBacklog) else None  # asked at every POST: decided once
        self.settings = settings
        # Unique per instance: a worker takes back claims under its own name (see IntakeQueue.claim_alerts).
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._log = structlog.get_logger("remediator.worker").bind(worker=self.name)
        # Asked once (the bound logger's level is fixed): replay decides each event as a batch of its own.
        self._log_batches = writes(self._log, logging.INFO)
        self.processed = 0
        self.queue = ExecutionQueue(pipeline, settings)
        self._backlog: tuple[float, int] | None = None  # (clock.monotonic() when counted, undecided alerts)
        self._counting = False  # a backlog count is in flight
        self.pacer = Pacer(settings.decide_share)
        pipeline.on_executable = self.queue.wake

    def wake(self) -> None:
        self._wake.set()

    async def backlog_over(self) -> int | None:
        """The undecided backlog when it is above ``max_backlog`` (the webhook then answers 503 and
        Alertmanager retries later), else None.  Counted at most every :data:`BACKLOG_FRESH` seconds;
        a store that cannot count says nothing here (recording will tell).

        One count at a time: the webhooks that come while it runs go by the count before it (or,
        before the first, by none) rather than each starting its own.  Under saturated intake every
        POST in flight found the count stale at once, and the same query went out up to as many
        times as there were POSTs, each a round trip and a scan of the backlog."""
        bound = self.settings.max_backlog
        if not bound or self._counts is None:
            return None
        now = self.pipeline.clock.monotonic()
        if not self._counting and (self._backlog is None or now - self._backlog[0] >= BACKLOG_FRESH):
            self._counting = True
            try:
                self._backlog = (now, await self._counts.undecided())
            except StoreUnavailable:
                self._backlog = None
            finally:
                self._counting = False
        if self._backlog is None:
            return None
        count = self._backlog[1]
        return count if count > bound else None

    async def decide_all(self, *, pace: bool = False) -> int:
        """Decide everything claimable now; return how many alerts were handled.

        ``pace`` (the daemon's decision loop): rest after each batch as the :class:`Pacer` says.

        A claimed batch is decided as one unit of storage where the intake offers it
        (:class:`DecisionBatches`): its decisions, the guardrail changes they made and the
        alerts marked processed are committed together once the batch is done, rather than
        each write on its own (one fsync per batch, not five per alert); each alert's writes
        land in one transaction, never split by a commit.
        """
        handled = 0
        while not self._stopping:
            self.pacer.started()
            async with self._batch():
                batch = await self.intake.claim_alerts(self.name, self.settings.batch, self.settings.lease)
                if not batch:
                    break
                last = len(batch) < self.settings.batch  # nothing more was claimable: no empty round after it
                # Decision kinds (and deferrals) of this batch, for its log line: counted only if it is written.
                summary: Counter[str] | None = Counter() if self._log_batches else None
                # What every alert's decision asks the store, asked once for the batch (PostgreSQL).
                facts = None if self.inline else await self._facts(batch)
                unit = self._batches.decision_unit if self._batches is not None else None
                for item in batch:
                    if self._stopping:
                        return handled  # the claim lease expires; the alert stays durably pending
                    if pace and self.pacer.turn():
                        await asyncio.sleep(0)  # between two alerts' units, never inside one
                    if unit is None:  # replay: no context to enter for each event's alert
                        handled += await self._decide_one(item, summary, facts)
                        continue
                    async with unit():
                        handled += await self._decide_one(item, summary, facts)
            # One line per batch at INFO (each decision is at DEBUG): a storm is not a storm of log lines.
            if summary is not None:
                self._log.info("alerts decided", alerts=len(batch), **dict(sorted(summary.items())))
            if pace:
                await self.pacer.rest()
            if last:  # what arrived meanwhile woke the loop (wake()): it is claimed in the next round
                break
        return handled

    async def _facts(self, batch: Sequence[StoredAlert]) -> BatchFacts | None:
        """What the batch's decisions will ask the store, asked at once; None if that fails for an
        alert's sake.  It matches and plans every alert before any is decided, outside the per-alert
        handling: one alert that makes that raise (a bug it triggers) would fail the whole batch,
        claimed again at the lease's end and failing again for ever, no attempt counted.  Without
        the lookups each decision asks for itself, and that alert fails alone: retried, then parked."""
        try:
            return await self.pipeline.facts([item.received for item in batch])
        except StoreUnavailable:
            raise  # not an alert's doing: the claim is taken back, uncounted
        except Exception:
            self._log.exception("a decision batch's lookups failed; each alert is decided on its own")
            return None

    def _batch(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._batches.decision_batch() if self._batches is not None else contextlib.nullcontext()

    async def _decide_one(self, item: StoredAlert, summary: Counter[str] | None,
                          facts: BatchFacts | None = None) -> bool:
        """Decide one claimed alert; False if its processing failed (see :meth:`_failed`)."""
        try:
            if self.inline:
                outcome = await self.pipeline.process(item.received)
            else:  # claimed before: its decider may have died between admission and decision
                outcome = await self.pipeline.decide(item.received, retried=item.attempts > 1, facts=facts)
        except StoreUnavailable:
            raise  # not the alert's fault: the claim stays ours and is taken back, uncounted
        except Exception as exc:
            await self._failed(item, exc)
            if summary is not None:
                summary["failed"] += 1
            return False
        if outcome.defer_until is not None:
            await self.intake.defer_alert(item.id, outcome.defer_until)
            self.pipeline.events.alert_deferred(item.received, outcome.defer_until)
            if summary is not None:
                summary["deferred"] += 1
        else:
            await self.intake.mark_processed(item.id)
            self.pipeline.events.alert_processed(item.received, outcome.decisions)
        if summary is not None:
            summary.update(d.kind.value for d in outcome.decisions)
        self.processed += 1
        return True

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
        if not (self.inline and self.queue.idle):  # replay: see ExecutionQueue.idle
            await self.queue.drain()
        return handled

    async def _decide_loop(self) -> None:
        while not self._stopping:
            try:
                await self.decide_all(pace=True)
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
