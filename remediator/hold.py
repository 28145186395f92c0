"""One running execution's claim on the world: its store lease and its target lock.

Two things keep an execution safe while it runs.  The *lease* in the store says which
replica runs it (another replica resumes it only once the lease has lapsed).  The
*lock* in the guardrail state says which execution may act on the target (and counts
its concurrency slot).  Both lapse unless renewed, so that a dead replica frees them.

A :class:`Hold` owns both for one execution: one object, renewed by its own tasks,
asked before every step (:meth:`Hold.confirm`), and ended exactly one way:
:meth:`record_end` then :meth:`release` (finished: the end recorded, then the lock
freed, the cooldown restarted, the breaker fed), :meth:`release_for_approval` (stopped
at a step's gate), :meth:`hand_back` (paused: another replica, or a later round, takes
it over), or :meth:`close` (cut off: keep nothing, let the lease lapse).  The pipeline
keeps one map of holds instead of parallel per-execution tables.

An execution's end must outlive a moment's outage: a release the guardrail state did
not answer is retried by :class:`Releases`, and an end the store did not acknowledge
is retried by :meth:`Hold.record_end` before anything follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from remediator.core.alerts import format_time
from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.core.guardrails import Request
from remediator.metrics import Metrics
from remediator.ports import Clock, GuardrailStore, PipelineStore
from remediator.ports import LeaseLost as LeaseLost  # raised by the store's fenced writes too

T = TypeVar("T")

#: The longest wait, in seconds on the clock, between two tries of an execution's end (recording
#: it in the store, releasing its guardrails) that was not answered; the first comes after one.
RETRY_MAX = 30.0


def _backoff(delay: float) -> float:
    return min(2 * delay, RETRY_MAX)


class LockUnconfirmed(Exception):
    """The target's lock could not be confirmed (guardrail state or store unreachable): stop before
    the next step and leave the execution unfinished; it resumes once the lock is confirmed."""


class Releases:
    """Finished executions' guardrail releases that the guardrail state did not answer, retried in
    the background until applied.

    Why: a release is more than the lock (which lapses by its TTL anyway).  It feeds the breaker the
    execution's outcome and starts the cooldown from its end, and nothing else ever records either:
    lost, a playbook that keeps failing while Redis flaps never trips its breaker.  In the background,
    not in the execution's task: the final notification is not held back by the outage, nor is the
    execution queue's slot.

    One with an outcome for the breaker is retried for as long as the daemon runs; one without
    (``succeeded=None``) only until all it would do has lapsed by itself (the lock by its TTL, the
    cooldown at its end).  The cooldown is counted from the execution's end, not from when the retry
    lands.  Repeating is safe: the guardrail state applies one owner's release once, and the id of a
    finished execution never holds its lock again (so a late release frees nobody else's).  Not
    durable: at shutdown each is tried once more (:meth:`flush`), and one still unanswered is lost
    (the lock still lapses by its TTL).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # kept (the loop holds only weak references), each with what it retries
        self._tasks: dict[asyncio.Task[None], _Release] = {}

    def __len__(self) -> int:
        """How many releases are waiting for the guardrail state."""
        return len(self._tasks)

    def retry(self, guardrails: GuardrailStore, req: Request, *, succeeded: bool | None, ended: float,
              log: Any) -> None:
        """Retry ``req``'s release until applied; ``ended``: ``clock.monotonic()`` at the execution's end."""
        release = _Release(guardrails, req, succeeded, ended, log)
        task = asyncio.create_task(self._retry(release), name=f"release-{req.owner}")
        self._tasks[task] = release
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def flush(self, within: float) -> int:
        """At shutdown: every release still waiting is tried once more, now, all of them within
        ``within`` seconds; return how many were applied.  Those still unanswered are given up, said
        in the log (their locks lapse by their TTL; a breaker outcome among them is lost)."""
        waiting = list(self._tasks.items())
        for task, _release in waiting:
            task.cancel()
        await asyncio.gather(*(t for t, _ in waiting), return_exceptions=True)
        tries = [asyncio.ensure_future(self._attempt(r)) for _, r in waiting]
        if tries:
            await asyncio.wait(tries, timeout=within)
        applied = 0
        for attempt, (_, release) in zip(tries, waiting, strict=True):
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None and attempt.result():
                applied += 1
            else:
                attempt.cancel()
                release.log.warning("guardrail release given up at shutdown: the guardrail state did not answer",
                                    target=release.req.target_key, outcome=release.succeeded)
        return applied

    async def _retry(self, release: _Release) -> None:
        delay = 1.0
        while True:
            await self._clock.sleep(delay)
            delay = _backoff(delay)
            if await self._attempt(release):
                return

    async def _attempt(self, release: _Release) -> bool:
        """One try; True when there is nothing more to do (applied, or lapsed by itself)."""
        req, log = release.req, release.log
        elapsed = self._clock.monotonic() - release.ended
        if release.succeeded is None and elapsed >= max(req.lock_ttl, req.cooldown):
            log.warning("guardrail release dropped: the lock has lapsed and the cooldown ended meanwhile",
                        target=req.target_key)
            return True
        # What is left of the cooldown, so that it ends where it would have had the release landed at once.
        late = replace(req, cooldown=max(0.0, req.cooldown - elapsed))
        try:
            await release.guardrails.release(late, succeeded=release.succeeded)
        except GuardrailUnavailable:
            return False
        except Exception:  # kept alive: a lost release is what this exists to prevent
            log.exception("guardrail release retry failed")
            return False
        log.warning("guardrails released after the guardrail state came back", target=req.target_key,
                    late_seconds=round(elapsed, 3))
        return True


@dataclass(frozen=True)
class _Release:
    guardrails: GuardrailStore
    req: Request
    succeeded: bool | None
    ended: float  # clock.monotonic() at the execution's end
    log: Any


class Hold:
    def __init__(
        self,
        execution_id: str,
        *,
        owner: str,
        store: PipelineStore,
        guardrails: GuardrailStore,
        clock: Clock,
        lease: float,
        request: Request | None,
        metrics: Metrics,
        log: Any,
        releases: Releases,
    ) -> None:
        self.execution_id = execution_id
        self.owner = owner  # this replica: whose lease it is
        self.request = request  # the guardrail request whose lock the execution holds (None: no target)
        self._store = store
        self._guardrails = guardrails
        self._clock = clock
        self._lease = lease
        self._metrics = metrics
        self._releases = releases
        self._log = log.bind(execution_id=execution_id)
        self._lease_at: float | None = None  # clock.monotonic() of the last lease renewal
        self._lock_at: float | None = None  # clock.monotonic() of the last lock confirmation
        self.lost = False  # another execution holds, or has held, the target's lock since ours
        # Set once this replica cannot count on the execution's lease any more (another replica holds it,
        # or renewals have failed for so long that it may): the step under way is stopped (pipeline).
        self.lease_lost = asyncio.Event()
        self._active = request is not None  # False once released: nothing may take the lock back
        self._tasks: list[asyncio.Task[None]] = []

    # -- the lease ------------------------------------------------------------------------

    async def take_lease(self, *, force: bool = False) -> None:
        """Take or renew the lease, unless renewed within the last third of it (``force``: now).
        Raises LeaseLost when another replica holds it, StoreUnavailable when unknown."""
        now = self._clock.monotonic()
        if not force and self._lease_at is not None and now - self._lease_at < self._lease / 3:
            return
        if not await self._store.claim_execution(self.execution_id, self.owner, self._lease):
            raise LeaseLost(self.execution_id)
        self._lease_at = self._clock.monotonic()

    async def _keep_lease(self) -> None:
        """Renew while a long step (wait_healthy can take minutes) keeps the step loop away.

        When the lease is another replica's, or renewals have failed for two thirds of it (so that it
        lapses in the store within the next third, when another replica may resume the execution),
        :attr:`lease_lost` is set: the step under way must stop before the other replica can start it
        again, not run on beside it until this one next looks."""
        while True:
            await self._clock.sleep(self._lease / 3)
            try:
                await self.take_lease()
            except LeaseLost:
                self._lose_lease("the store gives it to this replica no more (another replica holds it, or it ended)")
                return
            except StoreUnavailable as exc:
                at = self._lease_at
                if at is not None and self._clock.monotonic() - at >= self._lease * 2 / 3:
                    self._lose_lease(f"its renewal failed for two thirds of the lease ({exc})")
                    return
            except Exception:  # kept alive: a dead heartbeat would lose the lease unnoticed
                self._log.exception("execution lease renewal failed")

    async def while_leased(self, step: Awaitable[T]) -> T:
        """The step's outcome, unless the lease is lost first (:attr:`lease_lost`): then the step is
        cancelled and LeaseLost raised, so that it never runs on here beside the replica that resumes
        the execution.  Nothing is recorded of it: that replica re-checks it from its intent, as after
        a crash."""
        if self.lease_lost.is_set():
            raise LeaseLost(self.execution_id)
        running = asyncio.ensure_future(step)
        lost = asyncio.ensure_future(self.lease_lost.wait())
        try:
            await asyncio.wait((running, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # this task's own cancellation (a shutdown): the step's too
            running.cancel()
            raise
        finally:
            lost.cancel()
        if running.done():
            return running.result()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
        raise LeaseLost(self.execution_id)

    def _lose_lease(self, why: str) -> None:
        self._log.error("execution lease lost: stopping the step under way", reason=why)
        self.lease_lost.set()

    def _leased(self) -> bool:
        """Whether no other replica can have claimed the execution by now: the lease was renewed
        within two thirds of it (the last third is left to the replicas' clocks, as in _keep_lease)."""
        at = self._lease_at
        return at is not None and self._clock.monotonic() - at < self._lease * 2 / 3

    # -- the end --------------------------------------------------------------------------

    async def record_end(self, status: str, at: datetime) -> None:
        """Record the execution's end (``finish_execution``) under its lease, whatever the store's outage.

        What follows an end (free the lock, feed the breaker, tell the channels) must follow it
        exactly once, and only once it is recorded: nothing resumes a finished execution, so an end
        recorded and then forgotten here leaves its lock held until its TTL and its outcome untold.

        Unreachable before anything was sent (taking the lease): StoreUnavailable, nothing recorded;
        the execution pauses and, resumed, comes straight back here (its steps are recorded).  Once
        the end was sent its reply may be lost after it landed, so it is not given up: the hold is
        kept (lease and lock renewed) and, with backoff on the clock, the store is asked whether the
        execution is finished (then the end is this replica's: done), else the lease is taken again
        and the end written again (the write is idempotent).  Neither the kill switch nor a breaker
        stops this: nothing acts on the cluster any more.  A shutdown cancels it; the execution,
        unless its end had landed, is resumed by whoever claims it next.

        Raises LeaseLost when the execution is, or was meanwhile, another replica's: it holds it
        unfinished (our lease lapsed during the outage), or it ended it (it released the lock and
        told the channels: this replica must do neither).
        """
        did = self.execution_id
        await self.take_lease(force=True)
        try:
            await self._store.finish_execution(did, status, at, owner=self.owner)
            return
        except StoreUnavailable as exc:
            self._metrics.store_unavailable.inc()
            self._log.error("could not record the execution's end: retrying until the store answers; "
                            "its lock is kept meanwhile", result=status, error=str(exc))
        delay = 1.0
        while True:
            await self._clock.sleep(delay)
            delay = _backoff(delay)
            try:
                if not await self._store.unfinished(did):
                    if self._leased() or await self._ended_as(status, at):
                        self._log.warning("the execution's end was recorded after all", result=status)
                        return
                    raise LeaseLost(did)
                await self.take_lease(force=True)
                await self._store.finish_execution(did, status, at, owner=self.owner)
            except StoreUnavailable:
                continue
            self._log.warning("the execution's end is recorded now that the store is back", result=status)
            return

    async def _ended_as(self, status: str, at: datetime) -> bool:
        """Whether the execution's recorded end is the one this replica wrote (its status and time):
        asked only when the lease may have lapsed meanwhile, and another replica ended it instead."""
        doc = await self._store.get_execution(self.execution_id)
        return doc is not None and doc.get("status") == status and doc.get("finished_at") == format_time(at)

    # -- the lock -------------------------------------------------------------------------

    async def hold_lock(self) -> bool:
        """Renew the lock or, if it lapsed and this execution was its last holder, take it back
        (only while this replica still holds the execution's lease: else another replica resumed,
        or finished, it).  False: another execution holds, or has held, it.  Raises
        GuardrailUnavailable or StoreUnavailable when that cannot be known."""
        req = self.request
        if req is None:
            return True
        held = await self._guardrails.renew(req)
        if not held and self._active and await self._still_ours() and await self._guardrails.reacquire(req):
            self._log.warning("the guardrail lock had lapsed: taken back", target=req.target_key)
            held = True
        if held:
            self._lock_at = self._clock.monotonic()
        return held

    async def _still_ours(self) -> bool:
        return await self._store.claim_execution(self.execution_id, self.owner, self._lease)

    async def _keep_lock(self) -> None:
        """Renew the lock (and concurrency slot) every third of its TTL while the execution runs.

        Only a holder that stopped renewing (crashed, cut off) loses its lock to the TTL.
        """
        req = self.request
        assert req is not None
        while self._active and not self.lost:
            await self._clock.sleep(req.lock_ttl / 3)
            if not self._active:  # released meanwhile
                return
            try:
                if not await self.hold_lock():
                    self._mark_lost()
                    return
            except (GuardrailUnavailable, StoreUnavailable) as exc:  # retried next round; the TTL leaves two more
                self._log.warning("could not renew the guardrail lock", error=str(exc))
            except Exception:  # kept alive: the next step's lock check still applies
                self._log.exception("guardrail lock renewal failed")

    def _mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            self._metrics.guardrail_locks_lost.inc()
            self._log.error("another execution has held the target's guardrail lock since: stopping before "
                            "the next step", target=self.request.target_key if self.request else None)

    async def confirm(self, *, mutating: bool) -> bool:
        """Whether the execution may start its next step: its lock is known to be its own.

        Before a step that writes to the cluster the lock is confirmed with the guardrail
        state itself, a round trip every time: a renewal from a moment ago says nothing
        about a state that has since gone away, and a write made without a confirmed lock
        is exactly what the lock exists to prevent.  Other steps (waiting, notifying) accept
        a renewal from within half the TTL.  False: another execution holds, or has held,
        the lock.  Unreachable state raises LockUnconfirmed (fail closed, but not a failure
        of the remediation: the execution pauses and resumes once the lock is confirmed).
        """
        req = self.request
        if req is None:
            return True
        if self.lost:
            return False
        fresh = self._lock_at is not None and self._clock.monotonic() - self._lock_at < req.lock_ttl / 2
        if not mutating and fresh:
            return True
        try:
            if await self.hold_lock():
                return True
        except (GuardrailUnavailable, StoreUnavailable) as exc:
            self._metrics.guardrail_unavailable.inc()
            raise LockUnconfirmed(str(exc)) from exc
        self._mark_lost()
        return False

    # -- the life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start renewing the lease, and the lock if there is one."""
        self._tasks.append(asyncio.create_task(self._keep_lease(), name=f"lease-{self.execution_id}"))
        if self.request is not None:
            self._tasks.append(asyncio.create_task(self._keep_lock(), name=f"lock-{self.execution_id}"))

    async def _stop(self) -> None:
        """Stop renewing, and wait until no renewal is in flight: one landing after a release
        would take the lock back, one landing after a hand-back would extend the lease again."""
        self._active = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def release(self, *, succeeded: bool | None) -> None:
        """The execution finished (its end recorded): free the lock and slot, restart the cooldown,
        feed the breaker (``None``: it tried nothing that tells).  Unreachable guardrail state: retried
        in the background (:class:`Releases`) until applied; the caller goes on meanwhile."""
        await self._stop()
        req = self.request
        if req is None:
            return
        ended = self._clock.monotonic()
        try:
            await self._guardrails.release(req, succeeded=succeeded)
        except GuardrailUnavailable as exc:
            self._log.error("could not release guardrails: retrying until the guardrail state answers",
                            error=str(exc), target=req.target_key)
            self._releases.retry(self._guardrails, req, succeeded=succeeded, ended=ended, log=self._log)

    async def release_for_approval(self) -> None:
        """Stopped before a step that waits for approval: free the lock and slot, start the cooldown.
        Unreachable state: not retried, the lock and slot lapse by their TTL.  The execution goes on
        once approved, under the same id taking its lock back, which a late release would free."""
        await self._stop()
        if self.request is None:
            return
        try:
            await self._guardrails.release(self.request, succeeded=None)
        except GuardrailUnavailable as exc:
            self._log.error("could not release guardrails: the lock lapses by its TTL", error=str(exc))

    async def hand_back(self) -> None:
        """Paused: give the lease up at once, so a replica that can confirm the lock takes the
        execution over without waiting for the lease to lapse (the lock stays the execution's)."""
        await self._stop()
        with contextlib.suppress(StoreUnavailable):  # then the lease lapses by itself
            await self._store.release_execution(self.execution_id, self.owner)

    async def close(self) -> None:
        """Keep nothing (cut off, or ended another way): stop renewing."""
        await self._stop()
