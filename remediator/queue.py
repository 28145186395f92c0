"""The execution queue: admitted executions, run concurrently, each claimed by one replica.

Deciding and executing are apart.  A decision that admits an execution records it
unfinished in the store (durable, like the alert before it); this queue, a loop of its
own, claims unfinished executions (``ExecutionLedger.claim_unfinished``: fresh ones, and those
whose replica died, alike) and runs each as its own task.  So one slow ``wait_healthy``
never holds back the remediation of another target, and an interrupted execution is
taken over within a lease period whatever the alert backlog.

How many run at once is bounded twice: by the guardrails (``max_running`` and
``max_running_per_namespace`` count admitted executions), and here by
``worker.max_executions`` tasks per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import structlog

from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.pipeline import Pipeline
from remediator.settings import WorkerSettings

#: Seconds a paused execution's backoff is remembered after it has run out.
PAUSED_KEPT = 600.0


class ExecutionQueue:
    def __init__(self, pipeline: Pipeline, settings: WorkerSettings) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self._running: dict[str, asyncio.Task[str | None]] = {}
        # Executions that paused here (guardrail state or store unreachable): not retried by this
        # replica before their time (clock.monotonic()), so a lasting outage is no busy loop;
        # meanwhile another replica, which may reach what this one cannot, is free to take them.
        self._paused: dict[str, tuple[float, int]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._swept: float | None = None  # when (clock.monotonic()) overdue approvals were last expired
        self._asked = True  # woken since the last round began (at first: whatever the store holds)
        self._log = structlog.get_logger("remediator.queue").bind(owner=pipeline.owner)

    @property
    def running(self) -> int:
        return len(self._running)

    def wake(self) -> None:
        """Look for work now (a decision just admitted an execution, or one finished)."""
        self._asked = True
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Whether a round would surely find nothing, where this process is the store's only user
        (replay): nothing runs or backs off here, nothing was made executable since the last
        round began (:meth:`wake`), and no approval can pass a deadline (nobody is asked: the
        answers are simulated).  Why: replay drains after every event, and the round that finds
        nothing (a sweep, a ping, a claim) was a tenth of its time.  With other replicas, or
        leases that lapse, work appears unannounced: the daemon never asks this."""
        return not (self._asked or self._running or self._paused) and self.pipeline.settings.approvals != "ask"

    async def fill(self) -> int:
        """Claim what there is room for and start it; return how many started.  Executions awaiting
        approval are never claimed (see :class:`~remediator.ports.ApprovalLedger`).

        Nothing is claimed while guardrail state is unreachable: the executions are left to
        a replica that can hold their locks (fail closed), and wait durably meanwhile.
        """
        if self._stopping:
            return 0
        self._asked = False  # what wakes the queue from here on is looked for in the next round
        # Rounds also sweep, at most once per poll interval (a round runs at every decision and every
        # finished execution): executions whose approval deadline passed are expired here, on the
        # pipeline's clock, by whichever replica gets to each first.
        now = self.pipeline.clock.monotonic()
        if self._swept is None or now - self._swept >= self.settings.poll_interval:
            self._swept = now
            await self.pipeline.expire_approvals()
        if len(self._running) >= self.settings.max_executions:
            return 0
        try:
            await self.pipeline.guardrails.ping()
        except GuardrailUnavailable:
            self._asked = True  # nothing was looked for: still to do
            return 0
        # The store also returns (and renews) executions this replica already runs: ask for
        # enough that those can never crowd out the new ones (room + running = the bound).
        # Nor can those backing off after a pause: the store hands out the oldest first, and as many of them
        # as the bound were claimed, given back, and a newer execution (another playbook's, healthy) never
        # came up for as long as they kept pausing.  Claimed past them, and given back with them.
        now = self.pipeline.clock.monotonic()
        backing_off = sum(1 for until, _ in self._paused.values() if now < until)
        claimed = await self.pipeline.store.claim_unfinished(
            self.pipeline.owner, self.pipeline.settings.execution_lease,
            limit=self.settings.max_executions + backing_off,
        )
        # The room is counted now, not before the awaits: executions that ended meanwhile made
        # room, and counting it stale gave claims back only to leave those slots empty.
        free = self.settings.max_executions - len(self._running)
        started = 0
        now = self.pipeline.clock.monotonic()
        self._forget_paused(now)
        for did in claimed:
            if did in self._running:
                continue
            if self._stopping or started >= free or (did in self._paused and now < self._paused[did][0]):
                # claimed, but not to be run here now (a stop came while the claim was on its way,
                # no room, backing off): give it back at once
                await self.pipeline.store.release_execution(did, self.pipeline.owner)
                continue
            task = asyncio.create_task(self.pipeline.run_claimed(did), name=f"execution-{did}")
            self._running[did] = task
            task.add_done_callback(functools.partial(self._finished, did))
            started += 1
        return started

    def _forget_paused(self, now: float) -> None:
        """Drop backoffs long past their time: the execution was finished by another replica, or
        will simply start its backoff over (this map must not grow with every pause ever seen)."""
        if not self._paused:  # the usual case, at every round
            return
        for did in [d for d, (until, _) in self._paused.items() if now - until > PAUSED_KEPT]:
            del self._paused[did]

    def _finished(self, did: str, task: asyncio.Task[str | None]) -> None:
        self._running.pop(did, None)
        if task.cancelled():
            return
        # Bookkeeping first: if logging itself fails below, the backoff must still hold (without
        # it a failing execution would be claimed again at once, for ever).
        if task.exception() is not None or task.result() == "interrupted":
            tries = self._paused.get(did, (0.0, 0))[1] + 1
            self._paused[did] = (self.pipeline.clock.monotonic() + min(2.0 ** tries, 60.0), tries)
        else:
            self._paused.pop(did, None)
        self.wake()
        if task.exception() is not None:
            # Recorded, not fatal: the execution stays unfinished and is claimed again later.
            self._log.error("execution task failed", execution_id=did, error=repr(task.exception()))

    async def run(self) -> None:
        """Claim and start executions until stopped; woken by new decisions and finished runs."""
        while not self._stopping:
            try:
                await self.fill()
            except StoreUnavailable as exc:
                self.pipeline.metrics.store_unavailable.inc()
                self._log.error("store unavailable; will retry", error=str(exc))
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)
            self._wake.clear()

    async def drain(self) -> int:
        """Run every claimable execution to its end (and any that those make claimable);
        return how many ran.  The one-shot form of :meth:`run`, for tests and tools."""
        ran = 0
        try:
            while not self._stopping:
                started = await self.fill()
                ran += started
                if not self._running:
                    if started:  # all of them ended while fill still gave back the extra claims: look again
                        continue
                    return ran
                await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the executions it started are its own: they end with it
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return ran

    def halt(self) -> None:
        """Start nothing new (running executions go on)."""
        self._stopping = True
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Staged: start nothing new, give running executions ``grace`` seconds to finish, then cancel
        them and hand their leases back, so another replica takes them over at once rather
        than after the lease (each resumes from its write-ahead record)."""
        self.halt()
        tasks = dict(self._running)
        if not tasks:
            return
        _done, pending = await asyncio.wait(list(tasks.values()), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for did, task in tasks.items():
            if task in pending:
                self._log.warning("execution did not finish before shutdown: handed over", execution_id=did)
                with contextlib.suppress(StoreUnavailable):
                    await self.pipeline.store.release_execution(did, self.pipeline.owner)
