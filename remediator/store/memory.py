"""Every store role in this process's memory: replay's store.

Replay is the store's only client, runs in one event loop and throws the store away at
the end, so nothing needs to be durable, shared or serialised: the embedded store's SQL,
its JSON round trips and its thread hops were a third of a long replay's time.  This
adapter keeps the same promises as the SQL stores (the contract tests in
``tests/store/test_contract.py`` run on it too) with plain dictionaries and heaps.

Memory.  With ``streaming=True`` (replay) the store forgets what can no longer matter:
once an alert is processed and none of its executions is unfinished, its record, its
decisions, their steps and journal are dropped.  What it keeps of every alert is the one
thing that can still matter, the ``(fingerprint, startsAt, status)`` it was recorded
under, packed into 8 bytes in a sorted array per fingerprint.  That answers, exactly:
whether a later delivery is a duplicate (the only way an alert could be decided again),
``resolved_for`` and ``firing_count``.  A million alerts cost some 8 MB of keys, plus the
fingerprints themselves, rather than a growing heap of records.  Without ``streaming``
the store keeps everything, as the SQL stores do until retention.

Nothing here awaits: each call is atomic on the event loop, as a transaction would be.
The store hands back the objects it was given (alerts, decisions and step results are
frozen dataclasses), never copies, and each call returns a container of its own.
"""

from __future__ import annotations

import heapq
import json
from array import array
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from remediator.core.alerts import Alert, format_time
from remediator.core.decisions import Decision, PlannedStep, execution_id
from remediator.core.errors import StoreUnavailable
from remediator.ports import (
    AWAITING_APPROVAL,
    ApprovalState,
    Clock,
    DecisionCount,
    DecisionQuery,
    KillSwitchRecord,
    LeaseLost,
    ReceivedAlert,
    StepRecord,
    StepResult,
    StoredAlert,
    journal_entry,
)
from remediator.store import rows as json_rows

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Execution statuses of an execution that is not over: never forgotten, never deleted by retention.
_OPEN = frozenset(("pending", "running", AWAITING_APPROVAL))
_RUNNABLE = frozenset(("pending", "running"))


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _code(alert: Alert) -> int:
    """An alert's record key within its fingerprint: startsAt to the microsecond, then the status.

    ``Alert.dedup_key`` is ``fingerprint|format_time(startsAt)|status``; ``format_time`` is
    one-to-one on instants at microsecond precision and the status is firing or resolved, so
    two alerts of one fingerprint have the same code exactly when they have the same key.
    """
    return _micros(alert.starts_at) * 2 + (alert.status == "resolved")


@dataclass(eq=False, slots=True)
class _Alert:
    id: int
    received: ReceivedAlert
    key: str
    attempts: int = 0
    claimed_by: str | None = None
    claimed_until: float | None = None
    processed: bool = False
    parked_at: float | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        """As the SQL stores' alerts row, for :mod:`remediator.store.rows`."""
        r = self.received
        return {"id": self.id, "status": r.alert.status, "alert": json.dumps(r.alert.to_json()),
                "receiver": r.receiver, "received_at": format_time(r.received_at), "attempts": self.attempts,
                "parked_at": self.parked_at, "error": self.error}


@dataclass(eq=False, slots=True)
class _Decision:
    decision: Decision
    id: str
    seq: int  # the order recorded in: breaks ties between decisions at the same time
    status: str | None  # the execution's, None when the decision admitted none
    approval_deadline: float | None = None
    finished_at: datetime | None = None  # formatted only for a row, as a step's times
    claimed_by: str | None = None
    claimed_until: float | None = None

    @property
    def order(self) -> tuple[datetime, int]:
        return self.decision.at, self.seq

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "body": json.dumps(self.decision.to_json()), "exec_status": self.status,
                "finished_at": format_time(self.finished_at) if self.finished_at else None,
                "approval_deadline": self.approval_deadline}

    def free_for(self, worker: str, now: float) -> bool:
        return self.claimed_by in (None, worker) or self.claimed_until is None or self.claimed_until <= now


@dataclass(eq=False, slots=True)
class _Step:
    step: PlannedStep
    result: StepResult
    started: datetime  # formatted only when a row is asked for: most steps are forgotten unread
    finished: datetime

    def row(self) -> dict[str, Any]:
        s = self.step
        return {"phase": s.phase, "idx": s.index, "action": s.action, "params": json.dumps(s.params, default=str),
                "result": json.dumps(self.result.to_json(), default=str), "started_at": format_time(self.started),
                "finished_at": format_time(self.finished)}


@dataclass
class _Keys:
    """Every alert key ever recorded, 8 bytes each: fingerprint -> sorted codes (:func:`_code`)."""

    by_fingerprint: dict[str, array[int]] = field(default_factory=dict)

    def add(self, alert: Alert) -> bool:
        """Add the alert's key; False if it was there already."""
        code = _code(alert)
        codes = self.by_fingerprint.get(alert.fingerprint)
        if codes is None:
            self.by_fingerprint[alert.fingerprint] = array("q", (code,))
            return True
        if code > codes[-1]:  # the usual case: history comes in time order
            codes.append(code)
            return True
        at = bisect_left(codes, code)
        if codes[at] == code:
            return False
        codes.insert(at, code)
        return True

    def has(self, fingerprint: str, code: int) -> bool:
        codes = self.by_fingerprint.get(fingerprint)
        if codes is None:
            return False
        at = bisect_left(codes, code)
        return at < len(codes) and codes[at] == code

    def discard(self, alert: Alert) -> None:
        codes = self.by_fingerprint.get(alert.fingerprint)
        code = _code(alert)
        if codes is not None and self.has(alert.fingerprint, code):
            del codes[bisect_left(codes, code)]
            if not codes:
                del self.by_fingerprint[alert.fingerprint]

    def firing_since(self, fingerprint: str, since: datetime) -> int:
        codes = self.by_fingerprint.get(fingerprint)
        if codes is None:
            return 0
        return sum(1 for c in codes[bisect_left(codes, _micros(since) * 2):] if not c & 1)


class MemoryStore:
    """Intake, alert history, execution ledger, approvals, audit and kill switch, in memory.

    ``streaming``: forget each alert's record and decisions once it is processed and its
    executions are over (replay); see the module's docstring.
    """

    def __init__(self, clock: Clock, *, streaming: bool = False) -> None:
        self._clock = clock
        self._streaming = streaming
        self._closed = False
        self._keys = _Keys()
        self._alerts: dict[int, _Alert] = {}  # the records kept, by id
        self._by_key: dict[str, int] = {}
        self._last_id = 0
        self._pending: dict[int, _Alert] = {}  # unprocessed
        self._ready: list[int] = []  # heap of ids that may be claimable now (checked when taken)
        self._timed: list[tuple[float, int]] = []  # heap of (claimed_until, id): claimable from then on
        self._held: dict[str, set[int]] = {}  # worker -> ids it holds a claim on
        self._decisions: dict[str, _Decision] = {}
        self._by_alert: dict[str, list[str]] = {}  # alert key -> its decisions' ids
        # Executions not over, kept apart by what may happen to them next, so that neither the
        # execution queue's claim nor the approval sweep (both asked at every event in replay)
        # reads the others: a long ``--approve none`` replay piles up executions awaiting an
        # answer, and scanning them all at every event made it quadratic.
        self._runnable_ids: dict[str, None] = {}  # pending or running, as an ordered set
        self._awaiting: dict[str, None] = {}  # awaiting approval, as an ordered set
        self._deadlines: list[tuple[float, int, str]] = []  # heap of (deadline, seq, id) of those with one
        self._steps: dict[str, dict[tuple[str, int], _Step]] = {}
        self._journal: dict[str, list[str]] = {}
        self._seq = 0
        self._switch: KillSwitchRecord | None = None
        self._switches: list[KillSwitchRecord] = []  # every setting, in the order set (the history)

    def _check(self) -> None:
        if self._closed:
            raise StoreUnavailable("in-memory store: closed")

    async def ping(self) -> None:
        self._check()

    async def close(self) -> None:
        self._closed = True

    # -- intake ---------------------------------------------------------------------------

    async def record_alerts(self, alerts: Sequence[ReceivedAlert]) -> int:
        self._check()
        new = 0
        for received in alerts:
            if not self._keys.add(received.alert):
                continue
            self._last_id += 1
            rec = _Alert(self._last_id, received, received.alert.dedup_key)
            self._alerts[rec.id] = self._pending[rec.id] = rec
            self._by_key[rec.key] = rec.id
            heapq.heappush(self._ready, rec.id)
            new += 1
        return new

    async def claim_alerts(self, worker: str, limit: int, lease: float) -> list[StoredAlert]:
        self._check()
        now = self._clock.now().timestamp()
        timed, ready, pending = self._timed, self._ready, self._pending
        while timed and timed[0][0] <= now:
            until, aid = heapq.heappop(timed)
            rec = pending.get(aid)
            if rec is not None and rec.claimed_until == until:
                heapq.heappush(ready, aid)
        held_before = self._held.get(worker)
        if not held_before:  # the usual case: no batch of this worker's was cut short
            if not ready:
                return []  # the usual answer of every round's last claim: nothing left
            picked: list[_Alert] = []
            while ready and len(picked) < limit:
                aid = heapq.heappop(ready)
                rec = pending.get(aid)
                if (rec is not None and (rec.claimed_until is None or rec.claimed_until <= now)
                        and (not picked or picked[-1].id != aid)):
                    picked.append(rec)
            return self._claim(picked, worker, now + lease)

        def claimable(aid: int) -> bool:
            rec = pending.get(aid)
            return rec is not None and (rec.claimed_until is None or rec.claimed_until <= now
                                        or rec.claimed_by == worker)

        own = sorted(held_before)  # a batch cut short: taken back at once
        picked = []
        i = 0
        while len(picked) < limit:
            while ready and not claimable(ready[0]):
                heapq.heappop(ready)  # claimed or processed since it was pushed
            if not ready and i >= len(own):
                break
            if i >= len(own) or (ready and ready[0] < own[i]):
                aid = heapq.heappop(ready)
            else:
                aid, i = own[i], i + 1
            rec = pending[aid]
            if not picked or picked[-1].id != aid:
                picked.append(rec)
        return self._claim(picked, worker, now + lease)

    def _claim(self, picked: list[_Alert], worker: str, until: float) -> list[StoredAlert]:
        timed = self._timed
        held = self._held.setdefault(worker, set())
        for rec in picked:
            if rec.claimed_by != worker:
                rec.attempts += 1
                if rec.claimed_by is not None:
                    self._held.get(rec.claimed_by, set()).discard(rec.id)
            rec.claimed_by, rec.claimed_until = worker, until
            held.add(rec.id)
            heapq.heappush(timed, (until, rec.id))
        return [StoredAlert(r.id, r.received, r.attempts) for r in picked]

    def _unclaim(self, rec: _Alert, until: float | None) -> None:
        if rec.claimed_by is not None:
            self._held.get(rec.claimed_by, set()).discard(rec.id)
        rec.claimed_by, rec.claimed_until = None, until
        if until is not None and rec.id in self._pending:
            heapq.heappush(self._timed, (until, rec.id))

    async def mark_processed(self, alert_id: int) -> None:
        self._check()
        rec = self._alerts.get(alert_id)
        if rec is None:
            return
        self._done(rec)
        rec.claimed_until = None
        self._forget(rec.key)

    def _done(self, rec: _Alert) -> None:
        if rec.claimed_by is not None:
            self._held.get(rec.claimed_by, set()).discard(rec.id)
        rec.processed = True
        self._pending.pop(rec.id, None)

    async def defer_alert(self, alert_id: int, until: datetime) -> None:
        self._check()
        rec = self._alerts.get(alert_id)
        if rec is not None:  # an outcome, not a failure: its attempts start over, at one (IntakeQueue.defer_alert)
            rec.attempts = 1
            self._unclaim(rec, until.timestamp())

    async def release_alert(self, alert_id: int, retry_at: datetime) -> None:
        self._check()
        rec = self._pending.get(alert_id)
        if rec is not None:
            self._unclaim(rec, retry_at.timestamp())

    async def park_alert(self, alert_id: int, error: str) -> None:
        self._check()
        rec = self._alerts.get(alert_id)
        if rec is not None:  # kept, streaming or not: a parked alert is for a human to look at
            self._done(rec)
            rec.claimed_until = None
            rec.parked_at = self._clock.now().timestamp()
            rec.error = json_rows.park_error(error)

    async def count_alerts(self) -> int:
        self._check()
        return len(self._alerts)

    # -- alert history --------------------------------------------------------------------

    async def resolved_for(self, fingerprint: str, starts_at: datetime) -> bool:
        self._check()
        return self._keys.has(fingerprint, _micros(starts_at) * 2 + 1)

    async def firing_count(self, fingerprint: str, since: datetime) -> int:
        self._check()
        return self._keys.firing_since(fingerprint, since)

    async def recorded_alert(self, alert_key: str) -> Alert | None:
        self._check()
        aid = self._by_key.get(alert_key)
        return self._alerts[aid].received.alert if aid is not None else None

    async def alerts_between(self, since: datetime, until: datetime, *, batch: int = 500) -> AsyncIterator[StoredAlert]:
        """The records kept with ``since <= received_at < until``, oldest first (``batch``: as the
        SQL stores page; all here at once)."""
        self._check()
        chosen = [r for r in self._alerts.values() if since <= r.received.received_at < until]
        for r in sorted(chosen, key=lambda r: (r.received.received_at, r.id)):
            yield StoredAlert(r.id, r.received)

    async def deliveries(self, fingerprint: str, *, limit: int = 100) -> list[dict[str, Any]]:
        self._check()
        mine = [r for r in self._alerts.values() if r.received.alert.fingerprint == fingerprint]
        return [json_rows.delivery(r.row()) for r in sorted(mine, key=lambda r: -r.id)[:limit]]

    # -- decisions and the execution ledger ---------------------------------------------

    async def record_decision(self, decision: Decision, *, approval_deadline: datetime | None = None) -> bool:
        self._check()
        return self._add_decision(decision, json_rows.execution_status(decision),
                                  approval_deadline.timestamp() if approval_deadline else None) is not None

    async def record_planned(
        self, decision: Decision, steps: Sequence[StepRecord], *, status: str, finished: datetime
    ) -> bool:
        """A plan-only execution recorded with its decision and steps, already ``status`` (see
        :class:`~remediator.ports.PlannedExecutions`); False, and nothing changed, when decided before."""
        self._check()
        d = self._add_decision(decision, status, None, finished)
        if d is None:
            return False
        for s in steps:
            self._put_step(d.id, _Step(s.step, s.result, s.started, s.finished))
        return True

    def _add_decision(
        self, decision: Decision, status: str | None, deadline: float | None, finished: datetime | None = None
    ) -> _Decision | None:
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        if did in self._decisions:
            return None
        self._seq += 1
        d = self._decisions[did] = _Decision(decision, did, self._seq, status, deadline, finished)
        self._by_alert.setdefault(decision.alert_key, []).append(did)
        self._file(d)
        return d

    def _file(self, d: _Decision) -> None:
        """Put an execution among the runnable or the awaiting ones by its status (or neither: over)."""
        self._runnable_ids.pop(d.id, None)
        self._awaiting.pop(d.id, None)
        if d.status in _RUNNABLE:
            self._runnable_ids[d.id] = None
        elif d.status == AWAITING_APPROVAL:
            self._awaiting[d.id] = None
            if d.approval_deadline is not None:  # stale entries are skipped when they come due
                heapq.heappush(self._deadlines, (d.approval_deadline, d.seq, d.id))

    def _is_open(self, did: str) -> bool:
        return did in self._runnable_ids or did in self._awaiting

    async def decision(self, decision_id: str) -> Decision | None:
        self._check()
        d = self._decisions.get(decision_id)
        return d.decision if d is not None else None

    async def record_step(
        self, execution_id: str, step: PlannedStep, result: StepResult, *, started: datetime, finished: datetime,
        owner: str | None = None,
    ) -> None:
        self._check()
        self._fence(execution_id, owner)
        self._put_step(execution_id, _Step(step, result, started, finished))

    async def begin_step(
        self, execution_id: str, step: PlannedStep, intent: Mapping[str, Any], *, started: datetime,
        owner: str | None = None,
    ) -> None:
        self._check()
        self._fence(execution_id, owner)
        self._put_step(execution_id, _Step(step, json_rows.started_result(intent), started, started))

    def _fence(self, execution_id: str, owner: str | None) -> None:
        """A fenced write (``owner`` given, see ExecutionLedger.begin_step) lands only on an unfinished
        execution that ``owner`` still claims, its claim not run out: else LeaseLost."""
        if owner is None:
            return
        d = self._decisions.get(execution_id)
        if d is None or d.status not in _RUNNABLE or d.claimed_by != owner or d.claimed_until is None \
                or d.claimed_until <= self._clock.now().timestamp():
            raise LeaseLost(execution_id)

    def _put_step(self, execution_id: str, record: _Step) -> None:
        if self._forgotten(execution_id):
            return
        self._steps.setdefault(execution_id, {})[(record.step.phase, record.step.index)] = record
        d = self._decisions.get(execution_id)
        if d is not None and d.status == "pending":
            d.status = "running"

    async def step_results(self, execution_id: str) -> dict[tuple[str, int], StepResult]:
        self._check()
        return {k: s.result for k, s in self._steps.get(execution_id, {}).items()}

    def _forgotten(self, execution_id: str) -> bool:
        """Streaming: a step or journal entry for an execution no longer kept is dropped, not kept
        alone for ever.  Its execution ended and was forgotten in the same call that ended it (an
        execution ending unrun still has its audit written after: see ``Pipeline._unrun``)."""
        return self._streaming and execution_id not in self._decisions

    async def record_notification(self, execution_id: str, outcome: Mapping[str, Any]) -> None:
        self._check()
        if self._forgotten(execution_id):
            return
        self._journal.setdefault(execution_id, []).append(json.dumps(dict(outcome), default=str))

    async def record_event(self, execution_id: str, event: str, at: datetime, **detail: Any) -> None:
        await self.record_notification(execution_id, journal_entry(event, format_time(at), **detail))

    def _finish(self, d: _Decision, status: str, finished: datetime | None) -> None:
        d.status, d.finished_at, d.claimed_by, d.claimed_until = status, finished, None, None
        self._file(d)
        if status not in _OPEN:
            self._forget(d.decision.alert_key)

    async def finish_execution(
        self, execution_id: str, status: str, finished: datetime, *, owner: str | None = None
    ) -> None:
        self._check()
        self._fence(execution_id, owner)
        d = self._decisions.get(execution_id)
        if d is not None:
            self._finish(d, status, finished)

    async def unfinished(self, execution_id: str) -> bool:
        self._check()
        d = self._decisions.get(execution_id)
        return d is not None and d.status in _RUNNABLE

    def _runnable(self) -> list[_Decision]:
        if not self._runnable_ids:  # the usual case between alerts: nothing to sort
            return []
        return sorted((self._decisions[did] for did in self._runnable_ids), key=lambda d: d.order)

    async def unfinished_executions(self) -> list[str]:
        self._check()
        return [d.id for d in self._runnable()]

    async def claim_execution(self, execution_id: str, worker: str, lease: float) -> bool:
        self._check()
        now = self._clock.now().timestamp()
        d = self._decisions.get(execution_id)
        if d is None or d.status not in _RUNNABLE or not d.free_for(worker, now):
            return False
        d.claimed_by, d.claimed_until = worker, now + lease
        return True

    async def release_execution(self, execution_id: str, worker: str) -> None:
        self._check()
        d = self._decisions.get(execution_id)
        if d is not None and d.claimed_by == worker:
            d.claimed_by = d.claimed_until = None

    async def claim_unfinished(self, worker: str, lease: float, *, limit: int = 20) -> list[str]:
        self._check()
        if not self._runnable_ids:  # the usual answer between alerts (asked at every round): nothing
            return []
        now = self._clock.now().timestamp()
        claimed = [d for d in self._runnable() if d.free_for(worker, now)][:limit]
        for d in claimed:
            d.claimed_by, d.claimed_until = worker, now + lease
        return [d.id for d in claimed]

    # -- approvals ------------------------------------------------------------------------

    async def approval(self, execution_id: str) -> ApprovalState | None:
        self._check()
        d = self._decisions.get(execution_id)
        if d is None or d.status is None:
            return None
        deadline = d.approval_deadline
        return ApprovalState(
            d.status,
            datetime.fromtimestamp(deadline, UTC) if deadline is not None else None,
            d.status == AWAITING_APPROVAL and d.claimed_by is not None
            and (d.claimed_until or 0) > self._clock.now().timestamp(),
        )

    async def claim_approval(self, execution_id: str, worker: str, lease: float) -> bool:
        """As the SQL stores, an execution with no deadline (nobody was asked: replay's ``--approve
        none``) cannot be claimed to be answered, except when streaming: replay has no one to answer,
        so its only claimant is the alert's resolve ending it (``Pipeline._cancel_awaiting``), and
        refused, it stayed open (kept, and read at every event) until the end of the replay."""
        self._check()
        now = self._clock.now().timestamp()
        d = self._decisions.get(execution_id)
        deadline = d.approval_deadline if d is not None else None
        if (d is None or d.status != AWAITING_APPROVAL
                or (deadline is None and not self._streaming) or (deadline is not None and deadline <= now)
                or not (d.claimed_by is None or d.claimed_until is None or d.claimed_until <= now)):
            return False
        d.claimed_by, d.claimed_until = worker, now + lease
        return True

    async def settle_approval(self, execution_id: str, worker: str, status: str, at: datetime) -> bool:
        self._check()
        d = self._decisions.get(execution_id)
        if d is None or d.status != AWAITING_APPROVAL or d.claimed_by != worker:
            return False
        self._finish(d, status, None if status == "pending" else at)
        return True

    async def await_approval(self, execution_id: str, worker: str, deadline: datetime | None) -> bool:
        self._check()
        d = self._decisions.get(execution_id)
        if d is None or d.status not in _RUNNABLE or d.claimed_by != worker:
            return False
        d.approval_deadline = deadline.timestamp() if deadline is not None else None
        self._finish(d, AWAITING_APPROVAL, None)
        return True

    async def expire_approvals(self, now: datetime, *, limit: int = 100) -> list[str]:
        self._check()
        stamp = now.timestamp()
        heap = self._deadlines  # no deadline: never in it, it never expires (as in SQL)
        due: dict[str, _Decision] = {}
        answering: list[tuple[float, int, str]] = []  # due, but being answered right now: looked at again later
        while heap and heap[0][0] <= stamp and len(due) < limit:
            entry = heapq.heappop(heap)
            d = self._decisions.get(entry[2])
            if d is None or d.status != AWAITING_APPROVAL or d.approval_deadline != entry[0] or d.id in due:
                continue  # forgotten, answered or awaiting again since it was pushed
            if d.claimed_until is not None and d.claimed_until > stamp:
                answering.append(entry)
            else:
                due[d.id] = d
        for entry in answering:
            heapq.heappush(heap, entry)
        for d in due.values():
            self._finish(d, "expired", now)
        return list(due)

    # -- streaming: forgetting what is over -------------------------------------------------

    def _forget(self, alert_key: str) -> None:
        """Streaming: drop a processed alert's record and decisions once none of its executions is
        open.  Its key stays (see :class:`_Keys`): a redelivery is still a duplicate."""
        if not self._streaming:
            return
        aid = self._by_key.get(alert_key)
        rec = self._alerts.get(aid) if aid is not None else None
        if rec is None or not rec.processed or rec.parked_at is not None:
            return  # unknown (a decision recorded on its own is kept), still to decide, or parked
        if any(self._is_open(did) for did in self._by_alert.get(alert_key, ())):
            return
        del self._alerts[rec.id], self._by_key[alert_key]
        for did in self._by_alert.pop(alert_key, ()):
            self._drop_decision(did)

    def _drop_decision(self, did: str) -> tuple[int, int]:
        """Remove a decision with its steps and journal; (steps, journal entries) removed."""
        self._decisions.pop(did, None)
        self._runnable_ids.pop(did, None)
        self._awaiting.pop(did, None)
        return len(self._steps.pop(did, {})), len(self._journal.pop(did, []))

    # -- the audit's documents ------------------------------------------------------------

    def _alert_json(self, alert_key: str) -> str | None:
        aid = self._by_key.get(alert_key)
        return json.dumps(self._alerts[aid].received.alert.to_json()) if aid is not None else None

    def _newest_first(self, chosen: Iterable[_Decision], before: str | None, limit: int) -> list[_Decision]:
        if before is not None:
            cursor = self._decisions.get(before)
            if cursor is None:
                return []
            chosen = (d for d in chosen if d.order < cursor.order)
        return sorted(chosen, key=lambda d: d.order, reverse=True)[:limit]

    async def list_executions(
        self, *, playbook: str | None = None, status: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        self._check()
        chosen = (d for d in self._decisions.values() if d.status is not None
                  and (not playbook or d.decision.playbook == playbook) and (not status or d.status == status))
        return [json_rows.execution_listing(d.row()) for d in self._newest_first(chosen, before, limit)]

    async def list_decisions(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        self._check()
        ordered = sorted(self._decisions.values(), key=lambda d: d.order)[:limit]
        return [json_rows.execution_summary(d.row()) for d in ordered]

    def _matches(self, d: _Decision, q: DecisionQuery) -> bool:
        dec = d.decision
        kind, namespace, name = json_rows.target_columns(dec)
        equal = ((q.playbook, dec.playbook), (q.namespace, namespace), (q.target_kind, kind),
                 (q.target_name, name), (q.fingerprint, dec.fingerprint))
        return (all(want is None or want == have for want, have in equal)
                and (not q.kinds or dec.kind in q.kinds)
                and (q.since is None or dec.at >= q.since) and (q.until is None or dec.at < q.until))

    async def query_decisions(self, query: DecisionQuery) -> list[dict[str, Any]]:
        self._check()
        chosen = (d for d in self._decisions.values() if self._matches(d, query))
        return [json_rows.decision_entry({**d.row(), "alert": self._alert_json(d.decision.alert_key)})
                for d in self._newest_first(chosen, query.before, query.limit)]

    async def decision_counts(self, since: datetime) -> list[DecisionCount]:
        self._check()
        counts: dict[tuple[str, str, str], int] = {}
        for d in self._decisions.values():
            dec = d.decision
            if dec.at >= since:
                key = (dec.playbook, dec.at.astimezone(UTC).strftime("%Y-%m-%d"), dec.kind.value)
                counts[key] = counts.get(key, 0) + 1
        return [DecisionCount(p, day, kind, n) for (p, day, kind), n in counts.items()]

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        self._check()
        d = self._decisions.get(execution_id)
        if d is None:
            return None
        steps = sorted(self._steps.get(execution_id, {}).values(),
                       key=lambda s: (s.step.phase == "on_failure", s.step.index))
        return json_rows.execution_document(d.row(), self._alert_json(d.decision.alert_key),
                                            [s.row() for s in steps], self._journal.get(execution_id, []))

    async def parked_alerts(self, *, limit: int = 50) -> list[dict[str, Any]]:
        self._check()
        parked = sorted((r for r in self._alerts.values() if r.parked_at is not None),
                        key=lambda r: (r.parked_at or 0.0, r.id), reverse=True)
        return [json_rows.parked_alert(r.row()) for r in parked[:limit]]

    # -- retention ------------------------------------------------------------------------

    def _closed_episode(self, key: str) -> bool:
        """The alert record keyed ``key``'s episode has ended (retention.closed, over the records kept)."""
        return key.endswith("|resolved") or key.rpartition("|")[0] + "|resolved" in self._by_key

    async def delete_older_than(self, days: float, *, batch: int = 1000) -> dict[str, int]:
        """Retention with the SQL stores' rules (see :mod:`remediator.store.retention`); ``batch``
        is accepted for their signature: each call is atomic here anyway."""
        self._check()
        cutoff = self._clock.now() - timedelta(days=days)
        counts = {"decisions": 0, "steps": 0, "notifications": 0, "alerts": 0,
                  "kill_switch": self._prune_switches(cutoff)}
        for d in [d for d in self._decisions.values() if d.decision.at < cutoff and d.status not in _OPEN
                  and self._closed_episode(d.decision.alert_key)]:
            steps, journal = self._drop_decision(d.id)
            counts["decisions"] += 1
            counts["steps"] += steps
            counts["notifications"] += journal
            dids = self._by_alert.get(d.decision.alert_key, [])
            dids.remove(d.id)
            if not dids:
                del self._by_alert[d.decision.alert_key]

        def old(r: _Alert) -> bool:
            return r.processed and r.received.received_at < cutoff and r.key not in self._by_alert

        firing_ended = [r for r in self._alerts.values()
                        if old(r) and r.received.alert.status == "firing" and self._closed_episode(r.key)]
        self._delete_alerts(firing_ended, counts)
        resolved_alone = [r for r in self._alerts.values() if old(r) and r.received.alert.status == "resolved"
                          and r.key.rpartition("|")[0] + "|firing" not in self._by_key
                          and r.key.rpartition("|")[0] + "|firing" not in self._by_alert]
        self._delete_alerts(resolved_alone, counts)
        return counts

    def _delete_alerts(self, records: list[_Alert], counts: dict[str, int]) -> None:
        for r in records:
            del self._alerts[r.id], self._by_key[r.key]
            self._keys.discard(r.received.alert)  # as a deleted row: a later delivery counts as new
            counts["alerts"] += 1

    # -- the kill switch ------------------------------------------------------------------

    async def kill_switch(self) -> KillSwitchRecord | None:
        self._check()
        return self._switch

    async def set_kill_switch(self, paused: bool, by: str, at: datetime) -> None:
        self._check()
        self._switch = KillSwitchRecord(paused, json_rows.without_nul(by), at.astimezone(UTC))
        self._switches.append(self._switch)

    async def kill_switch_history(self, since: datetime, until: datetime) -> list[KillSwitchRecord]:
        self._check()
        ordered = sorted(enumerate(self._switches), key=lambda p: (p[1].at, p[0]))  # as the SQL stores order
        before = [r for _, r in ordered if r.at < since][-1:]
        return before + [r for _, r in ordered if since <= r.at < until]

    def _prune_switches(self, cutoff: datetime) -> int:
        """Retention of the history: the settings older than ``cutoff`` but the last of them (in force at it)."""
        old = {i for i, r in enumerate(self._switches) if r.at < cutoff}
        old.discard(max(old, key=lambda i: (self._switches[i].at, i), default=-1))
        self._switches = [r for i, r in enumerate(self._switches) if i not in old]
        return len(old)
