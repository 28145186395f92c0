"""The seams of the pipeline, as small Protocols.

The pipeline depends on these and on the pure core only; which adapters fill them
(SQLite or PostgreSQL, memory or Redis, dry-run or Kubernetes, real or virtual
clock) is the only difference between serve, dry-run and replay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from remediator.core.alerts import Alert
from remediator.core.decisions import Decision, DecisionKind, PlannedStep, ResolvedTarget
from remediator.core.frozen import fast_frozen
from remediator.core.guardrails import BreakerView, Finding, GuardStatus, GuardUsage, Request, Verdict


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""

    def monotonic(self) -> float:
        """Seconds for measuring intervals; never goes backwards."""

    async def sleep(self, seconds: float) -> None: ...


@fast_frozen
@dataclass(frozen=True)
class ReceivedAlert:
    alert: Alert
    received_at: datetime
    receiver: str = ""
    group_key: str = ""
    external_url: str = ""


@fast_frozen
@dataclass(frozen=True)
class StoredAlert:
    id: int
    received: ReceivedAlert
    #: How many times the alert has been claimed for processing, this claim included
    #: (see :meth:`IntakeQueue.claim_alerts`); 0 where it was not read from a claim.
    attempts: int = 0


#: ``superseded``: the step's write-ahead intent was stale (the object changed since it was
#: planned), so nothing was written and the execution stops (no on_failure).
#: ``awaiting_approval``: only a step's approval record (phase ``approval``), while it is asked.
StepStatus = Literal["ok", "failed", "planned", "skipped", "started", "superseded", "awaiting_approval"]


@fast_frozen
@dataclass(frozen=True)
class StepResult:
    status: StepStatus
    message: str = ""
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "planned", "skipped")

    @property
    def finished(self) -> bool:
        return self.status != "started"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "message": self.message,
            "before": self.before,
            "after": self.after,
            "details": dict(self.details),
        }


async def _no_intent(intent: Mapping[str, Any]) -> None:
    return None


@fast_frozen
@dataclass(frozen=True)
class StepContext:
    """What an executor knows about the step it runs.

    ``record_intent`` lets an executor write down the absolute change it is about to make
    (e.g. ``{"replicas": 6}`` for ``scale by: 2`` from 4) before making it; if the daemon
    dies mid-step, the resumed step gets that record back as ``previous`` and re-applies
    the same absolute change instead of adding 2 again.

    ``history`` is handed to an ``undo`` step only: this execution's finished steps before it,
    in the order they ran, with their recorded results (the values each write planned from and
    set), so the executor can revert exactly those and nothing else.
    """

    execution_id: str
    alert: Alert
    target: ResolvedTarget
    dry_run: bool
    clock: Clock
    previous: StepResult | None = None
    record_intent: Callable[[Mapping[str, Any]], Awaitable[None]] = _no_intent
    history: tuple[tuple[PlannedStep, StepResult], ...] = ()


# -- the store, by role ---------------------------------------------------------------
#
# One database holds everything, but each part of the daemon uses one role of it: the
# worker drains the intake queue, the execution queue and a Hold use the ledger, the
# read API and retention the audit log, the kill switch its own record.  Each role is its own Protocol so that a
# component's signature says what it touches (and a test double need implement only
# that); ``Store`` is their union, what the adapters implement and the runtime wires.


@runtime_checkable
class IntakeQueue(Protocol):
    """Intake: the durable queue of recorded alerts that the decision loop drains."""

    async def record_alerts(self, alerts: Sequence[ReceivedAlert]) -> int:
        """Durably store alerts; return how many were new.  Raise StoreUnavailable."""

    async def claim_alerts(self, worker: str, limit: int, lease: float) -> list[StoredAlert]:
        """Take unprocessed alerts for ``lease`` seconds, oldest first.

        Alerts ``worker`` itself still holds are taken again at once: a worker claims only
        when it is not working on a batch, so those were left by an aborted one (the
        store was briefly unreachable) and need not wait for their lease.

        Each claim adds one to the alert's ``attempts`` (returned in the StoredAlert),
        except taking back what ``worker`` still holds: that was not tried meanwhile."""

    async def mark_processed(self, alert_id: int) -> None: ...

    async def defer_alert(self, alert_id: int, until: datetime) -> None:
        """Release the claim but keep the alert unprocessed and unclaimable before ``until``
        (stabilisation windows: ``for: 5m`` re-examines the alert when the window ends).

        Deferring is an outcome, not a failure: the alert's ``attempts`` start over, at one, so its
        next claim counts two.  It was claimed by a decider that did not finish it: a deferral for
        unreachable guardrail state may follow an admission that was applied with its reply lost, and
        the next decider must take over the lock that admission holds (``retried``), not wait it out
        as it waits for a decider that may still be at work."""

    async def release_alert(self, alert_id: int, retry_at: datetime) -> None:
        """Give back a claimed alert whose processing failed, to be claimed again from
        ``retry_at`` on; its ``attempts`` are kept (the next claim counts one more)."""

    async def park_alert(self, alert_id: int, error: str) -> None:
        """Set aside an alert whose processing keeps failing: it is never claimed again.

        Marked processed, with the error (its first 2,000 characters) and the time, for
        :meth:`AuditLog.parked_alerts`; ended like any processed alert by retention."""


class AlertHistory(Protocol):
    """Intake, read back: what deciding (freshness, stabilisation) and the export ask of
    the recorded alerts.  Reads only: nothing here claims or changes an alert."""

    async def resolved_for(self, fingerprint: str, starts_at: datetime) -> bool:
        """Whether a resolved delivery of this firing episode has been recorded."""

    async def firing_count(self, fingerprint: str, since: datetime) -> int:
        """Distinct firing episodes (startsAt) recorded for ``fingerprint`` starting at or after ``since``."""

    async def recorded_alert(self, alert_key: str) -> Alert | None:
        """The recorded alert with this dedup key (a decision's ``alert_key``), if retention left it."""

    def alerts_between(self, since: datetime, until: datetime) -> AsyncIterator[StoredAlert]:
        """Every recorded alert received in ``[since, until)``, oldest first (the export)."""

    async def deliveries(self, fingerprint: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The recorded deliveries of the alert with this fingerprint, newest first (the read API's
        episode): ``id``, ``status``, ``startsAt``, ``endsAt``, ``received_at``, ``receiver``, ``labels``."""


class LeaseLost(Exception):
    """Another replica holds this execution (our lease ran out, or was never ours): stop touching it.

    Raised by the ledger's fenced writes (``begin_step``, ``record_step`` and ``finish_execution``
    given an ``owner``): each lands only while the execution is unfinished and claimed by ``owner``
    with its claim not run out (``claimed_until`` after the store's now: the clock the leases are
    taken on), checked in the same statement as the write, so that a replica frozen past its lease
    (SIGSTOP, a VM paused) cannot record, nor then send, a step that another replica has taken over;
    nothing is written then.  Also raised by :class:`remediator.hold.Hold`, which re-exports it."""


class ExecutionLedger(Protocol):
    """The execution queue: admitted executions, who runs each (a lease), and their steps.

    An execution is recorded unfinished with its decision (:meth:`AuditLog.record_decision`);
    a replica takes it with :meth:`claim_unfinished`, keeps it with :meth:`claim_execution`,
    gives it up with :meth:`release_execution` and ends it with :meth:`finish_execution`.
    """

    async def claim_unfinished(self, worker: str, lease: float, *, limit: int = 20) -> list[str]:
        """Claim unfinished executions whose lease ran out (their replica died) or that
        ``worker`` itself left behind, oldest first."""

    async def claim_execution(self, execution_id: str, worker: str, lease: float) -> bool:
        """Take or renew ``worker``'s lease on an unfinished execution for ``lease`` seconds.

        False when it is finished or another owner's lease is still running: with several
        replicas, only the lease holder may run (or resume) an execution.  A True answer
        is also the proof that the execution is still ``worker``'s (and stays so for
        ``lease`` seconds): a Hold asks it before taking a lapsed lock back."""

    async def release_execution(self, execution_id: str, worker: str) -> None:
        """Give up ``worker``'s lease at once (paused, shutting down, or not to be run here
        now), so any replica may claim the execution without waiting for the lease to run
        out.  Nothing happens if the lease is not ``worker``'s."""

    async def unfinished(self, execution_id: str) -> bool:
        """Whether this execution is recorded and not finished (someone may be running it)."""

    async def unfinished_executions(self) -> list[str]: ...

    async def begin_step(
        self, execution_id: str, step: PlannedStep, intent: Mapping[str, Any], *, started: datetime,
        owner: str | None = None,
    ) -> None:
        """Write-ahead record of a step about to run, with the absolute values it will apply.

        After a crash, ``step_results`` shows it with status ``started`` and
        ``details["intent"]``; the executor re-checks the target and re-applies the same
        intent (idempotent) instead of recomputing a relative change twice.

        ``owner``: the replica running the execution, whose lease fences the write (see
        :class:`LeaseLost`); None only for a caller that holds no lease (an approval's record)."""

    async def record_step(
        self, execution_id: str, step: PlannedStep, result: StepResult, *, started: datetime, finished: datetime,
        owner: str | None = None,
    ) -> None:
        """Record a step's result (``owner``: fenced by its lease, as :meth:`begin_step`)."""

    async def step_results(self, execution_id: str) -> dict[tuple[str, int], StepResult]: ...

    async def finish_execution(
        self, execution_id: str, status: str, finished: datetime, *, owner: str | None = None
    ) -> None:
        """Record the execution's final status; its lease ends with it (``owner``: fenced by
        that lease, as :meth:`begin_step`)."""


@dataclass(frozen=True)
class DecisionQuery:
    """Which recorded decisions :meth:`AuditLog.query_decisions` lists.

    Every field set narrows the listing (they combine with AND); the defaults match
    everything.  ``since`` is inclusive and ``until`` exclusive, so consecutive windows
    never count a decision twice.  ``before`` (a decision id) continues a listing after
    that decision: the order is by decision time then insertion, so a page boundary does
    not move when other decisions are recorded meanwhile."""

    playbook: str | None = None
    kinds: tuple[DecisionKind, ...] = ()
    namespace: str | None = None
    target_kind: str | None = None
    target_name: str | None = None
    fingerprint: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    before: str | None = None


class AuditLog(Protocol):
    """The audit: decisions, what happened to each execution, and the read API's documents.

    The documents (``list_executions``, ``get_execution``, ``parked_alerts``) are built by
    :mod:`remediator.store.rows`, so they are the same JSON whichever store holds them."""

    async def record_decision(self, decision: Decision, *, approval_deadline: datetime | None = None) -> bool:
        """Record once per (alert, playbook); False when it was already recorded.
        An EXECUTED decision is recorded with its execution unfinished (the ledger's work); an
        AWAITING_APPROVAL one with its execution ``awaiting_approval`` until ``approval_deadline``
        (see :class:`ApprovalLedger`), in the same statement, so no replica can run it unapproved."""

    async def decision(self, decision_id: str) -> Decision | None: ...

    async def record_notification(self, execution_id: str, outcome: Mapping[str, Any]) -> None:
        """Append a notification's final outcome (sent, failed, dropped) to the execution's audit
        (its ``notifications``)."""

    async def record_event(self, execution_id: str, event: str, at: datetime, **detail: Any) -> None:
        """Append what happened to the execution besides its steps (paused, resumed) to its
        audit (its ``events``, in the order recorded).  Kept with the notification outcomes
        (see :func:`journal_entry`), told apart when read (:func:`split_journal`)."""

    async def list_executions(
        self, *, playbook: str | None = None, status: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` (an execution id) continues a listing after that execution.  An
        execution that waited for approval (or waits) carries its ``approval_deadline``."""

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None: ...

    async def query_decisions(self, query: DecisionQuery) -> list[dict[str, Any]]:
        """Recorded decisions, refusals included, newest first: each the recorded decision (kind,
        reason, playbook and version, target, steps, dry_run) with its ``id`` (the cursor for
        ``before``), its alert's ``alertname`` (None once retention removed the alert) and, when
        it was admitted, its execution's ``execution_id``, ``status`` and ``finished_at``."""

    async def parked_alerts(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Parked alerts, most recently parked first: ``id``, ``alert`` (its JSON),
        ``receiver``, ``received_at``, ``attempts``, ``parked_at`` and ``error``."""

    async def delete_older_than(self, days: float) -> dict[str, int]:
        """Retention: delete finished audit and processed alerts older than ``days``, in batches."""


@dataclass(frozen=True)
class DecisionCount:
    """How many decisions of one kind a playbook made on one UTC day (``YYYY-MM-DD``)."""

    playbook: str
    day: str
    kind: str
    count: int


class DecisionStats(Protocol):
    """Decisions counted rather than listed: the playbooks page's week of bars per playbook."""

    async def decision_counts(self, since: datetime) -> list[DecisionCount]:
        """Decisions recorded at or after ``since``, counted per playbook, UTC day and kind, in
        one grouped query (any order)."""


#: The execution status of one that waits for a human's approval (never claimed to run).
AWAITING_APPROVAL = "awaiting_approval"


@dataclass(frozen=True)
class ApprovalState:
    """Where an execution stands, as approving or denying it needs to know."""

    status: str  # awaiting_approval while it waits; then pending, running, ..., denied, expired, refused
    deadline: datetime | None  # when an awaiting execution expires (kept after, for the record)
    deciding: bool  # a replica holds the claim to approve or deny it right now


class ApprovalLedger(Protocol):
    """Executions waiting for a human: approved (they become pending and the execution queue
    runs them), denied, refused (the guardrails said no at approval time) or expired.

    Approving or denying first takes a claim (a lease, as running an execution does): with several
    replicas answering requests, exactly one claimant gets it, and a claimant that died loses it
    when the lease runs out.  The deadline is stored with the execution, so a restart keeps it."""

    async def approval(self, execution_id: str) -> ApprovalState | None:
        """None when no execution has this id."""

    async def claim_approval(self, execution_id: str, worker: str, lease: float) -> bool:
        """Take an execution that is awaiting approval, before its deadline, for ``lease`` seconds.

        False when it is not awaiting (unknown, already decided), past its deadline, or another
        live claim holds it.  Give a claim up with :meth:`ExecutionLedger.release_execution`."""

    async def settle_approval(self, execution_id: str, worker: str, status: str, at: datetime) -> bool:
        """End the wait under ``worker``'s claim: ``pending`` (approved: the execution queue may now
        claim it) or a final status (``denied``, ``refused``) finished at ``at``.  The claim ends
        with it.  False (nothing changed) when the claim is not ``worker``'s any more."""

    async def await_approval(self, execution_id: str, worker: str, deadline: datetime | None) -> bool:
        """Stop a running execution, under ``worker``'s lease, before a step that asks for approval:
        it awaits approval until ``deadline`` (None: nobody is asked, it never expires) and the lease
        ends with it.  False (nothing changed) when it is not ``worker``'s to stop (its lease was
        taken over) or not running."""

    async def expire_approvals(self, now: datetime, *, limit: int = 100) -> list[str]:
        """Finish as ``expired`` (at ``now``) the awaiting executions whose deadline is past and
        that nobody is deciding; return their ids.  Each is returned to one caller only."""


@dataclass(frozen=True)
class KillSwitchRecord:
    """The kill switch as last set by an operator: on or off, by whom, when."""

    paused: bool
    by: str
    at: datetime


class KillSwitchStore(Protocol):
    """The durable copy of the kill switch (see :class:`remediator.killswitch.KillSwitch`).

    The guardrail state holds the switch every admission reads; it may be in a Redis
    that restarts without persistence.  The store's record is what such a state is
    re-armed from, so an operator's pause survives it."""

    async def kill_switch(self) -> KillSwitchRecord | None:
        """The last setting recorded; None if the switch was never set."""

    async def set_kill_switch(self, paused: bool, by: str, at: datetime) -> None:
        """Record a setting: the last one, and in the same transaction one more entry of
        :class:`KillSwitchHistory`."""


class KillSwitchHistory(Protocol):
    """Every setting of the kill switch, in order, so that an export of the alerts carries the
    pauses they were decided under (``remediator export``, the UI's replay of its own history):
    replayed without them, an alert decided ``paused`` live would replay as ``executed``.

    Kept as long as the alerts (:meth:`AuditLog.delete_older_than` prunes it with them), except
    the setting in force at the cutoff, which still governs every alert kept."""

    async def kill_switch_history(self, since: datetime, until: datetime) -> list[KillSwitchRecord]:
        """Oldest first: the setting in force at ``since`` (the last one set before it, when one is
        kept), then every setting made in ``[since, until)``."""


@fast_frozen
@dataclass(frozen=True)
class StepRecord:
    """A finished step as the audit keeps it: what ran, its result, when it started and ended."""

    step: PlannedStep
    result: StepResult
    started: datetime
    finished: datetime


@runtime_checkable
class PlannedExecutions(Protocol):
    """Executions that are over once decided: a plan-only (dry-run) execution whose executor
    needs nothing outside the process (no cluster) is computed while its alert is decided.

    Recording it in one call (its decision, every step's result and its end, together) spares
    the execution ledger's round trips (claim, lease, each step's start and end, finish) for work
    that can neither wait nor fail half way; a storm of dry-run decisions is mostly that."""

    async def record_planned(
        self, decision: Decision, steps: Sequence[StepRecord], *, status: str, finished: datetime
    ) -> bool:
        """Record the decision with its execution already ``status`` at ``finished``, and its steps,
        in one transaction; False (and nothing written) when the decision was already recorded."""


@runtime_checkable
class BatchLookups(Protocol):
    """What deciding a claimed batch of alerts reads, asked once for the whole batch.

    For a store where every read is a round trip (PostgreSQL): "was this (alert, playbook)
    decided already?" and "has this firing episode resolved?" are asked for every matching
    alert; asked per batch, they are one round trip instead of two per alert.  The embedded
    store answers each in microseconds, yet offers it too: two statements per alert, each with
    its Python around it, cost a storm's batch more than one for the batch (some 6 % of the
    decisions' CPU).  A store that offers neither is asked each question as it comes."""

    async def look_up(
        self, ids: Sequence[str], episodes: Sequence[tuple[str, datetime]]
    ) -> tuple[dict[str, Decision], set[tuple[str, datetime]]]:
        """In one round trip: the recorded decisions among ``ids`` (absent: not decided), and the
        (fingerprint, startsAt) firing ``episodes`` whose resolve is recorded."""


class PipelineStore(AlertHistory, ExecutionLedger, ApprovalLedger, AuditLog, Protocol):
    """What the pipeline uses: it reads the alert history, records decisions and runs executions."""


class Store(
    IntakeQueue, AlertHistory, ExecutionLedger, ApprovalLedger, AuditLog, KillSwitchStore, KillSwitchHistory,
    DecisionStats, Protocol
):
    """Every role, in one database: what the adapters implement and the runtime wires."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class Pausable(Protocol):
    """Whether remediation is paused (the kill switch): asked before every step."""

    async def paused(self) -> bool: ...


class PauseState(Pausable, Protocol):
    """Where the kill switch is read at every admission: the guardrail state."""

    async def set_paused(self, paused: bool) -> None: ...


@runtime_checkable
class Interruptions(Protocol):
    """A pause state reached over connections that can break (Redis): how many times they did.

    A reading of the store's switch that predates a break is not to be trusted (a pause set while
    the state was unreachable never reached it: see :class:`remediator.killswitch.KillSwitch`).
    Its own protocol, not a member of :class:`PauseState`, so that wrappers of a guardrail state
    (replay's) need not forward it; a state without it (the embedded one: nothing to break) counts none."""

    @property
    def interruptions(self) -> int:
        """Grows at every connection made and every connection error seen; never goes down."""


class GuardrailStore(PauseState, Protocol):
    """Shared guardrail state; every method raises GuardrailUnavailable when unreachable."""

    async def admit(self, req: Request) -> Verdict: ...

    async def evaluate(self, req: Request) -> Verdict:
        """The verdict ``admit(req)`` would give now (same checks, same order, same reasons),
        changing nothing: no lock, cooldown, rate or budget history, concurrency slot or
        breaker trial is taken, so plan-only (dry-run) executions may ask as often as they like.

        A half-open breaker with no live trial answers EXECUTED, as admit would, but the
        request does not become its trial: the next admit may still claim it.  Only a reading:
        a later admit may decide otherwise (the state moved, or the pass could not be recorded)."""

    async def renew(self, req: Request) -> bool: ...

    async def release(self, req: Request, *, succeeded: bool | None) -> None:
        """Free the lock and slot, restart the cooldown; feed the breaker with the outcome
        (None: the execution tried nothing that tells, leave the breaker alone)."""

    async def reacquire(self, req: Request) -> bool:
        """Take the lock back for a resuming execution if it was its last holder (live or
        lapsed) or there is no record of one; never after another execution held it."""

    async def take_back(self, req: Request) -> Finding:
        """``reacquire`` for an execution that gave its lock and slot up to wait for a step's
        approval: the lock on the same terms (LOCKED), the slot only within the concurrency
        limits (RUNNING, RUNNING_NS); PASSED when it holds both."""

    async def abandon(self, req: Request) -> None:
        """Give back an admission whose execution will not run: its lock and slot, at once."""

    async def go_on_as_trial(self, req: Request) -> bool:
        """Whether an admitted execution that its playbook's breaker stopped may take its next step:
        closed, yes; open, no; half-open, only as the breaker's one trial (taken if no live trial
        holds it).  See :func:`remediator.core.guardrails.go_on_as_trial`."""

    async def status(self) -> GuardStatus:
        """The kill switch and every playbook's circuit breaker, for the API and ``/metrics``."""

    async def breaker(self, playbook: str) -> BreakerView:
        """One playbook's circuit breaker (closed when it has no record), read before every step of
        its executions: one read whatever the number of playbooks, where ``status`` reads them all."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class PrefetchesVerdicts(Protocol):
    """Guardrail state that can read a batch's verdicts in one round trip (Redis: a pipeline of
    the read-only script).  Deciding a claimed batch of alerts asks for the verdicts its
    read-only decisions (dry-run, awaiting approval) will need, once."""

    async def prefetch_evaluations(self, requests: Sequence[Request]) -> None:
        """Evaluate ``requests`` now; a later ``evaluate`` of one of them (same owner and
        request, whatever its ``now``) is answered from this reading, once, unless this adapter
        has changed the state since (an admission, release, renewal...): then it asks again.
        Changes by other replicas are not seen, as they would not be a moment later anyway."""


@runtime_checkable
class GuardrailUsage(Protocol):
    """The guardrail state read for people (the guardrails panel): budgets used, live concurrency
    slots and locks.  A role of its own, not part of :class:`GuardrailStore`: the pipeline never
    needs it, and an adapter that cannot list its locks cheaply may leave it out (the panel then
    says so).  Raises GuardrailUnavailable when unreachable."""

    async def usage(self) -> GuardUsage: ...


class PipelineEvents(Protocol):
    """What the pipeline and the worker report as they go, for an observer (replay's report).

    Each event is told after what it reports is recorded in the store, in the order it
    happened.  The calls are synchronous and must neither block nor fail: observing the
    work never changes it.  :class:`NoEvents` is the default observer, which ignores all.
    """

    def decision_recorded(self, decision: Decision, received: ReceivedAlert) -> None:
        """A final decision about (alert, playbook), recorded now (not one found already recorded)."""

    def step_finished(self, execution_id: str, step: PlannedStep, result: StepResult) -> None:
        """A step's result is recorded (never its write-ahead ``started`` record)."""

    def execution_finished(self, execution_id: str, status: str) -> None: ...

    def alert_processed(self, received: ReceivedAlert, decisions: Sequence[Decision]) -> None:
        """Every decision about this delivery is made; ``decisions`` includes ``no_match``,
        which is not recorded in the store."""

    def alert_deferred(self, received: ReceivedAlert, until: datetime) -> None:
        """Some playbook cannot decide this delivery yet: it is decided again from ``until`` on."""


class NoEvents:
    """The observer that ignores everything: the daemon's default."""

    def decision_recorded(self, decision: Decision, received: ReceivedAlert) -> None:
        return None

    def step_finished(self, execution_id: str, step: PlannedStep, result: StepResult) -> None:
        return None

    def execution_finished(self, execution_id: str, status: str) -> None:
        return None

    def alert_processed(self, received: ReceivedAlert, decisions: Sequence[Decision]) -> None:
        return None

    def alert_deferred(self, received: ReceivedAlert, until: datetime) -> None:
        return None


class Executor(Protocol):
    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult: ...


class Notifier(Protocol):
    async def notify(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        """Queue a notification; must never block or fail the remediation."""


#: A journal entry of an execution (paused, resumed) shares the notifications table with the
#: notification outcomes: both are "what happened to this execution besides its steps".
JOURNAL = "journal"


def journal_entry(event: str, at: str, **detail: Any) -> dict[str, Any]:
    return {JOURNAL: event, "at": at, **detail}


def split_journal(bodies: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(journal events, notification outcomes), each in the order recorded."""
    return [b for b in bodies if JOURNAL in b], [b for b in bodies if JOURNAL not in b]

