"""The kill switch, durable: recorded in the store, enforced through the guardrail state.

Every admission reads the switch from the guardrail state (it answers in the same round
trip as the rest of the checks), and that state may live in a Redis that restarts
without persistence.  Had the switch lived only there, such a restart would silently
resume automation an operator had paused.  So the store, which is durable, keeps the
switch too, and the guardrail state is re-armed from it whenever they disagree.

Usage (the runtime builds one per replica; the HTTP API and the pipeline share it)::

    switch = KillSwitch(store, guardrails, clock=clock)
    await switch.pause(by="alice")      # POST /api/v1/pause
    await switch.resume(by="alice")     # POST /api/v1/resume
    if await switch.paused(): ...       # before every step; re-arms a state that lost the pause
    await switch.record()               # who set it last, and when (None: never set)
    await switch.close()                # at shutdown: stops re-arming a pause Redis did not take

What each call does when a side is unreachable:

- :meth:`pause` writes the store first, then the guardrail state.  Store unreachable:
  the guardrail state is paused all the same (stopping is always allowed), then
  StoreUnavailable is raised: the pause holds, but would not survive a Redis restart.
  Both unreachable (the embedded default keeps both in one database): :class:`NotPaused`,
  a StoreUnavailable that says nothing was paused.
  Guardrail state unreachable: the pause is recorded and GuardrailUnavailable raised;
  nothing runs meanwhile anyway (unreachable state fails closed), and this replica keeps
  trying to set it (every :data:`REARM_EVERY` seconds, reading the store's setting before
  each try: a resume recorded meanwhile ends the tries) until it has, is resumed or closed;
  any replica's :meth:`paused` that reads the store re-arms it too.
- :meth:`resume` writes the store first: if that fails nothing changes (otherwise the
  store's old "paused" would re-arm the state at once).  Then the guardrail state; if
  that fails GuardrailUnavailable is raised, and the state stays paused until a
  resume reaches it (paused is paused if either side says so).
- :meth:`paused` is True when either side says paused.  Store unreachable: the guardrail
  state's answer.  Guardrail state unreachable: the store's.  Neither: True (fail closed).

Only the direction store -> guardrail state is repaired automatically: a resume is always
an operator's act, never inferred.  The store keeps the last setting (who, when) for the API,
and every setting in its history (:class:`~remediator.ports.KillSwitchHistory`, written with it)
for ``remediator export``, whose control lines let a replay pause where the daemon paused.

:meth:`paused` runs before every admission and every step, so it must not cost a store
round trip each time (in a storm of 10,000 alerts that was most of the deciding).  It
keeps what it last read from (or wrote to) the store for :data:`STORE_READ_EVERY` seconds
and uses it only where a stale reading cannot do harm: "not paused" when the guardrail
state agrees.  A pause set meanwhile, by any replica, is in the guardrail state that is
read every time, unless it could not reach it: a pause asked for while Redis was
unreachable is in the store only.  So a kept reading is dropped as soon as this replica's
connection to the guardrail state was interrupted after it was taken (the adapter's
:class:`~remediator.ports.Interruptions` count moved: a reconnection, an error, a timeout),
and whenever the guardrail state does not answer.  Redis down or restarted for everyone,
every replica reads the store at its first check once it is back, and answers paused.

What is left: a replica whose connection did not break while the pause could not reach
Redis (the pausing replica alone cut off from it, or a Redis that stalled while this one asked
it nothing) does not see that pause for up to :data:`STORE_READ_EVERY` seconds after the store
committed it (its kept reading is still fresh), or until the pausing replica's re-arm reaches
Redis, whichever comes first.  And the re-arm reads the store, then sets the guardrail state: a
resume by another replica landing between the two leaves the state paused (safe: paused is
paused if either side says so; resuming again lifts it).  Re-arming is never done from a
kept reading (a resume may have landed since), and with the guardrail state unreachable the
store is always asked.
"""

from __future__ import annotations

import asyncio

import structlog

from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.ports import Clock, Interruptions, KillSwitchRecord, KillSwitchStore, PauseState

#: Seconds a reading of the store's switch is kept (see the module docstring for where it is used, and
#: the window it leaves).  One store read a second per replica costs nothing measurable in a storm.
STORE_READ_EVERY = 1.0
#: Seconds between two tries to set a pause that could not reach the guardrail state.
REARM_EVERY = 0.5


class NotPaused(StoreUnavailable):
    """A pause that neither home of the switch took (both unreachable: the embedded default keeps them
    in one database): nothing is paused, and the operator must be told so, and retry."""


class KillSwitch:
    """The kill switch as one object over its two homes: the store (durable) and the guardrail
    state (what admissions read).  See the module docstring for the failure cases."""

    def __init__(self, store: KillSwitchStore, guardrails: PauseState, *, clock: Clock) -> None:
        self._store = store
        self._guardrails = guardrails
        self._watched = guardrails if isinstance(guardrails, Interruptions) else None  # checked once, not per call
        self._clock = clock
        self._log = structlog.get_logger("remediator.killswitch")
        self._rearmed = False  # warned about the current loss already (once per loss, not per check)
        # (when, the store's paused, the guardrail state's interruptions then) last read or written
        self._kept: tuple[float, bool, int] | None = None
        self._rearming: asyncio.Task[None] | None = None  # setting a pause that could not reach the state

    async def pause(self, by: str) -> None:
        """Stop automation: no new execution is admitted, running ones stop before their next step."""
        try:
            await self._store.set_kill_switch(True, by, self._clock.now())
        except StoreUnavailable as exc:
            try:
                await self._guardrails.set_paused(True)
            except GuardrailUnavailable as state:  # the embedded default: both live in one database
                self._log.error("NOT paused: neither the store nor the guardrail state is reachable", by=by,
                                store=str(exc), guardrails=str(state))
                raise NotPaused(f"{exc}; {state}") from exc
            self._log.error("paused, but not durably: the store is unreachable", by=by)
            raise
        self._keep(True)
        try:
            await self._guardrails.set_paused(True)
        except GuardrailUnavailable:
            self._log.error("paused in the store, not yet in the guardrail state (unreachable): setting it "
                            "as soon as it answers", by=by)
            self._keep_rearming()
            raise
        self._stop_rearming()
        self._log.warning("remediation paused (kill switch)", by=by)

    async def resume(self, by: str) -> None:
        """Let automation go on; paused executions resume at their next claim."""
        rearming = await self._stop_rearming_now()  # before the store says resumed: never re-armed over it
        try:
            await self._store.set_kill_switch(False, by, self._clock.now())
        except StoreUnavailable:
            if rearming:  # nothing changed: the pause still has to reach the guardrail state
                self._keep_rearming()
            raise
        self._keep(False)
        await self._guardrails.set_paused(False)
        self._rearmed = False
        self._log.warning("remediation resumed (kill switch)", by=by)

    async def record(self) -> KillSwitchRecord | None:
        """The last setting the store holds (None: never set).  Raises StoreUnavailable."""
        return await self._store.kill_switch()

    async def paused(self) -> bool:
        """Whether remediation is paused; re-arms a guardrail state that lost a recorded pause."""
        try:
            state = await self._guardrails.paused()
        except GuardrailUnavailable:
            self._kept = None  # a pause set meanwhile may reach the store only: read it again once back
            record, known = await self._read(keep=False)
            return not known or (record is not None and record.paused)  # neither side answers: fail closed
        if state:
            self._rearmed = False  # both agree again: a later loss is news
            return True
        kept = self._kept
        if (kept is not None and not kept[1] and self._clock.monotonic() - kept[0] < STORE_READ_EVERY
                and kept[2] == self._interruptions()):
            return False  # the store said "not paused" a moment ago, and the guardrail state agrees
        record, _ = await self._read()
        if record is not None and record.paused:
            await self._rearm(record)
            return True
        return False

    async def _read(self, *, keep: bool = True) -> tuple[KillSwitchRecord | None, bool]:
        """(the store's record, whether the store answered); keeps the reading unless told not to."""
        interruptions = self._interruptions()  # taken before the read: a break during it drops the reading
        try:
            record = await self._store.kill_switch()
        except StoreUnavailable:
            return None, False
        if keep:
            self._keep(record is not None and record.paused, interruptions)
        return record, True

    def _keep(self, paused: bool, interruptions: int | None = None) -> None:
        counted = self._interruptions() if interruptions is None else interruptions
        self._kept = (self._clock.monotonic(), paused, counted)

    def _interruptions(self) -> int:
        """How many times the guardrail state's connection broke so far (0: it has none to break)."""
        return 0 if self._watched is None else self._watched.interruptions

    # -- a pause that could not reach the guardrail state ----------------------------------------

    def _keep_rearming(self) -> None:
        if self._rearming is None or self._rearming.done():
            self._rearming = asyncio.get_running_loop().create_task(self._rearm_until_set(),
                                                                    name="remediator-kill-switch-rearm")
            self._rearming.add_done_callback(self._rearm_ended)

    async def _rearm_until_set(self) -> None:
        """Every :data:`REARM_EVERY` seconds: the store's setting, and if it is still a pause, the
        guardrail state set paused; until that succeeds or the store says resumed."""
        while True:
            await self._clock.sleep(REARM_EVERY)
            try:
                record = await self._store.kill_switch()
            except StoreUnavailable:
                continue
            if record is None or not record.paused:
                self._log.info("a resume was recorded before the pause reached the guardrail state: not re-armed")
                return
            try:
                await self._guardrails.set_paused(True)
            except GuardrailUnavailable:
                continue
            self._log.warning("the pause recorded while the guardrail state was unreachable is set there now",
                              paused_by=record.by, paused_at=record.at.isoformat())
            return

    def _rearm_ended(self, task: asyncio.Task[None]) -> None:
        if self._rearming is task:
            self._rearming = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error("could not keep setting the pause in the guardrail state: it is set at the next "
                            "check that reads the store", error=repr(exc), exc_info=exc)

    def _stop_rearming(self) -> asyncio.Task[None] | None:
        task, self._rearming = self._rearming, None
        if task is not None:
            task.cancel()
        return task

    async def _stop_rearming_now(self) -> bool:
        """Stop the tries and wait until they have; True if they were under way."""
        task = self._stop_rearming()
        if task is None:
            return False
        await asyncio.wait({task})  # its cancellation is not raised here (ours would be)
        return True

    async def close(self) -> None:
        """Stop setting a pause that could not reach the guardrail state (the runtime closes it before
        the store and the guardrail state; the store keeps the pause, any replica re-arms it)."""
        await self._stop_rearming_now()

    async def _rearm(self, record: KillSwitchRecord) -> None:
        """The guardrail state lost a pause the store holds (a Redis restart without persistence):
        set it again.  Failing that, the answer is still "paused"."""
        try:
            await self._guardrails.set_paused(True)
        except GuardrailUnavailable:
            return
        if not self._rearmed:
            self._rearmed = True
            self._log.warning(
                "the guardrail state had lost the kill switch (a restart without persistence?): re-armed",
                paused_by=record.by,
                paused_at=record.at.isoformat(),
            )
