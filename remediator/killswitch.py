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

What each call does when a side is unreachable:

- :meth:`pause` writes the store first, then the guardrail state.  Store unreachable:
  the guardrail state is paused all the same (stopping is always allowed), then
  StoreUnavailable is raised: the pause holds, but would not survive a Redis restart.
  Both unreachable (the embedded default keeps both in one database): :class:`NotPaused`,
  a StoreUnavailable that says nothing was paused.
  Guardrail state unreachable: the pause is recorded and GuardrailUnavailable raised;
  nothing runs meanwhile anyway (unreachable state fails closed), and the state is
  re-armed at the first :meth:`paused` that reaches it.
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
state agrees (a pause set meanwhile, by any replica, is in the guardrail state that is
read every time).  Re-arming is never done from a kept reading (a resume may have landed
since), and with the guardrail state unreachable the store is always asked.
"""

from __future__ import annotations

import structlog

from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.ports import Clock, KillSwitchRecord, KillSwitchStore, PauseState

#: Seconds a reading of the store's switch is kept (see the module docstring for where it is used).
STORE_READ_EVERY = 5.0


class NotPaused(StoreUnavailable):
    """A pause that neither home of the switch took (both unreachable: the embedded default keeps them
    in one database): nothing is paused, and the operator must be told so, and retry."""


class KillSwitch:
    """The kill switch as one object over its two homes: the store (durable) and the guardrail
    state (what admissions read).  See the module docstring for the failure cases."""

    def __init__(self, store: KillSwitchStore, guardrails: PauseState, *, clock: Clock) -> None:
        self._store = store
        self._guardrails = guardrails
        self._clock = clock
        self._log = structlog.get_logger("remediator.killswitch")
        self._rearmed = False  # warned about the current loss already (once per loss, not per check)
        self._kept: tuple[float, bool] | None = None  # (when, the store's paused) last read or written

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
        await self._guardrails.set_paused(True)
        self._log.warning("remediation paused (kill switch)", by=by)

    async def resume(self, by: str) -> None:
        """Let automation go on; paused executions resume at their next claim."""
        await self._store.set_kill_switch(False, by, self._clock.now())
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
            record, known = await self._read()
            return not known or (record is not None and record.paused)  # neither side answers: fail closed
        if state:
            self._rearmed = False  # both agree again: a later loss is news
            return True
        kept = self._kept
        if kept is not None and not kept[1] and self._clock.monotonic() - kept[0] < STORE_READ_EVERY:
            return False  # the store said "not paused" a moment ago, and the guardrail state agrees
        record, _ = await self._read()
        if record is not None and record.paused:
            await self._rearm(record)
            return True
        return False

    async def _read(self) -> tuple[KillSwitchRecord | None, bool]:
        """(the store's record, whether the store answered); keeps the reading."""
        try:
            record = await self._store.kill_switch()
        except StoreUnavailable:
            return None, False
        self._keep(record is not None and record.paused)
        return record, True

    def _keep(self, paused: bool) -> None:
        self._kept = (self._clock.monotonic(), paused)

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
