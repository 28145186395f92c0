"""The one pipeline: alert -> matching playbooks -> plan -> guardrails -> steps -> audit.

Serve, dry-run and replay all run this class; they differ only in the adapters
(store, guardrail state, executors, clock) they hand it.  It never decides twice
for the same (alert, playbook): decision ids are deterministic and the store keeps
the first, so redelivery and crash-recovery are safe.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from remediator.clock import within
from remediator.core.alerts import Alert, format_time, parse_time
from remediator.core.decisions import (
    APPROVAL_PHASE,
    Decision,
    DecisionKind,
    PlannedStep,
    decision_from_json,
    execution_id,
)
from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.core.guardrails import BreakerState, Check, GuardStatus, Request, Verdict, with_playbooks
from remediator.core.planning import Plan, Refusal, make_plan
from remediator.core.playbooks import Playbook, PlaybookSet
from remediator.core.schema import MUTATING_ACTIONS
from remediator.hold import Hold, LeaseLost, LockUnconfirmed, Releases
from remediator.logs import Deferred, writes_debug
from remediator.metrics import Metrics
from remediator.ports import (
    AWAITING_APPROVAL,
    ApprovalState,
    BatchLookups,
    Clock,
    DecisionQuery,
    Executor,
    GuardrailStore,
    NoEvents,
    Notifier,
    Pausable,
    PipelineEvents,
    PipelineStore,
    PlannedExecutions,
    PrefetchesVerdicts,
    ReceivedAlert,
    StepContext,
    StepRecord,
    StepResult,
)

#: Seconds between two re-arm checks of the kill switch by decisions that only read the guardrails.
REARM_EVERY = 1.0
#: How many of an alert's latest executions its resolve looks through (see Pipeline._notify_resolved).
RESOLVE_LOOKBACK = 20


def guard_request(plan: Plan, did: str, now: float) -> Request:
    """The guardrail request for a plan; rebuilt identically when an execution resumes."""
    g = plan.playbook.guardrails
    return Request(
        owner=did,
        playbook=plan.playbook.name,
        target_key=plan.target.key,
        limit_key=plan.limit_key,
        namespace=plan.target.namespace,
        now=now,
        rate_max=g.rate_limit.max if g.rate_limit else 0,
        rate_per=g.rate_limit.per if g.rate_limit else 0.0,
        cooldown=g.cooldown,
        lock_ttl=g.lock_ttl,
    )


def _changed(results: Mapping[tuple[str, int], StepResult]) -> bool:
    """Whether any step of the execution sent a write (which may have landed even if it failed);
    a write-ahead intent recorded before a crash counts too."""
    return any(r.details.get("wrote") or r.details.get("intent") for r in results.values())


def _maybe_wrote(wrote: list[Mapping[str, Any]], previous: StepResult | None) -> dict[str, Any]:
    """For a step cut off without a result of its own: whether a write of it may have landed
    (an intent was recorded, now or before a crash), and the intent of its last write, which
    ``undo`` needs to revert it."""
    before = previous.details.get("intent") if previous else None
    if not (any(wrote) or before):
        return {}
    last = wrote[-1] if wrote else before
    return {"wrote": True, **({"intent": dict(last)} if last else {})}


def _history(
    decision: Decision | None, steps: tuple[PlannedStep, ...], done: Mapping[tuple[str, int], StepResult],
    step: PlannedStep,
) -> tuple[tuple[PlannedStep, StepResult], ...]:
    """What an ``undo`` step reverts: this execution's finished steps other than itself, in the
    order they ran (the main steps, then on_failure's), each with its recorded result."""
    ordered = (decision.steps + decision.on_failure) if decision is not None else steps
    return tuple(
        (s, r) for s in ordered
        if (s.phase, s.index) != (step.phase, step.index)
        and (r := done.get((s.phase, s.index))) is not None and r.finished
    )


def _needs_history(step: PlannedStep, *, dry_run: bool) -> bool:
    """Whether a step is handed the execution's finished steps: ``undo`` reverts them, and in dry-run
    a ``scale`` plans from the count an earlier dry-run scale would have left (nothing it "did" is
    in the cluster: a bounce's start would otherwise be planned from the count before the stop)."""
    return step.action == "undo" or (dry_run and step.action == "scale")


def _refused_input(results: Mapping[tuple[str, int], StepResult]) -> bool:
    """Whether the execution failed on input the target refused (a container or pod that
    the alert named and that does not exist)."""
    return any(r.status == "failed" and r.details.get("refused_input") for r in results.values())


def _queued(step: PlannedStep, *, dry_run: bool) -> StepResult:
    """A ``notify`` step's result: its message is queued (delivery retries on its own)."""
    channel = str(step.params.get("channel", ""))
    dry = " (marked dry-run)" if dry_run else ""
    return StepResult("ok", f"message queued for channel {channel}{dry}", details={"channel": channel})


@dataclass(frozen=True)
class BatchFacts:
    """What the store said, once for a claimed batch (:class:`BatchLookups`), about the decisions
    and resolves its alerts will ask after; a question it was not asked goes to the store."""

    asked: frozenset[str]  # execution ids looked up
    decided: Mapping[str, Decision]
    episodes: frozenset[tuple[str, datetime]]  # firing episodes looked up
    resolved: frozenset[tuple[str, datetime]]
    # execution id -> (the playbook, its plan for the alert): made once, for the verdicts prefetched
    plans: Mapping[str, tuple[Playbook, Plan | Refusal]] = dataclass_field(default_factory=dict)


@dataclass
class Outcome:
    decisions: list[Decision]
    defer_until: datetime | None = None


@dataclass(frozen=True)
class PipelineSettings:
    dry_run: bool = True
    step_timeout: float = 900.0
    execution_lease: float = 300.0  # how long a dead replica's execution waits before another resumes it
    # Plan-only executions read the guardrails and never consume them, so a dry run never holds a
    # live remediation back.  Replay sets this: its guardrail state is its own scratch copy, and
    # showing what cooldowns, rate limits and locks would have done over time is its purpose.  It
    # is for the dry-run replay forces on every playbook only: a playbook on trial (its own
    # ``dry_run``) was a dry run live too, so it still only reads them (see ``_plan_only``).
    dry_run_consumes_guardrails: bool = False
    # Who answers a playbook's ``approval``: "ask" waits for a human (the daemon).  Replay simulates
    # the answer (``--approve``): "all" approves every one at once, "none" never does.
    approvals: Literal["ask", "all", "none"] = "ask"


@dataclass(frozen=True)
class ApprovalAnswer:
    """What a request to approve or deny an execution came to.

    ``outcome``: ``approved`` (now pending: the execution queue runs it), ``denied``, ``refused``
    (approved, but the guardrails re-checked at approval said no: ``decision`` is their kind,
    ``message`` their reason), ``not_found``, ``forbidden`` (not one of the playbook's approvers),
    ``conflict`` (not awaiting approval any more, or being decided by another request right now;
    or, for a step, the concurrency limits full now: it still waits) or ``unavailable``
    (guardrail state or store unreachable: it still waits; retry).
    ``status`` is the execution's status after the request, when known."""

    outcome: Literal["approved", "denied", "refused", "not_found", "forbidden", "conflict", "unavailable"]
    message: str
    status: str = ""
    decision: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "message": self.message, "status": self.status or None,
                **({"decision": self.decision} if self.decision else {})}


#: The answers after which the execution no longer awaits approval (it was settled under the answer's claim).
_SETTLED = frozenset({"approved", "denied", "refused"})


def _not_awaiting(did: str, state: ApprovalState, now: datetime) -> ApprovalAnswer:
    """Why an execution cannot be approved or denied now (the claim on it was not had)."""
    if state.status != AWAITING_APPROVAL:
        return ApprovalAnswer("conflict", f"execution {did} is not awaiting approval: it is {state.status}",
                              state.status)
    if state.deadline is not None and state.deadline <= now:
        return ApprovalAnswer("conflict", f"execution {did}: its approval expired at {format_time(state.deadline)}",
                              "expired")
    return ApprovalAnswer("conflict", f"execution {did} is being approved or denied by another request right now",
                          state.status)


class _Deferred(Exception):
    """No final verdict can be had now: the alert stays pending and is decided again later."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


class _Halted(Exception):
    """The kill switch is on, or the playbook's breaker open: stop before the next step."""


class _AwaitingStep(Exception):
    """The next step asks for approval: the execution now awaits it (recorded, its lease ended)."""

    def __init__(self, step: PlannedStep, deadline: datetime | None) -> None:
        super().__init__(f"{step.phase} step {step.index} ({step.action}) awaits approval")
        self.step, self.deadline = step, deadline


def gate_step(step: PlannedStep) -> PlannedStep:
    """The record of a step's approval: a result of its own (phase ``approval``, the step's index),
    next to the step's, so that the execution's page shows who approved what, and a resumed
    execution knows the gate is passed without asking again."""
    return PlannedStep(step.index, "approval", {"before": step.action}, APPROVAL_PHASE)


def _describe_step(step: PlannedStep) -> str:
    return f"step {step.index} ({step.action})"


class _Run(enum.Enum):
    """How a phase of steps ended."""

    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # the target changed under the execution: stop, undo nothing


class Pipeline:
    def __init__(
        self,
        *,
        playbooks: Callable[[], PlaybookSet],
        store: PipelineStore,
        guardrails: GuardrailStore,
        live: Executor,
        dry: Executor,
        notifier: Notifier,
        clock: Clock,
        settings: PipelineSettings,
        metrics: Metrics | None = None,
        owner: str | None = None,
        events: PipelineEvents | None = None,
        kill_switch: Pausable | None = None,
        dry_local: bool = False,
    ) -> None:
        # Who holds execution leases: unique per Pipeline, so replicas (and tests running
        # several pipelines in one process) never mistake each other's lease for their own.
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._playbooks = playbooks
        self.store = store
        # ``dry``, when it needs nothing outside the process (PlanOnlyExecutor: no cluster to ask):
        # a plan-only execution is then computed while its alert is decided and recorded with the
        # decision, already over, by a store that can (PlannedExecutions); see _planned.
        self._dry_local = dry_local
        self.guardrails = guardrails
        self._live = live
        self._dry = dry
        self._notifier = notifier
        self.clock = clock
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.events: PipelineEvents = events or NoEvents()  # who watches (replay's report)
        # The durable kill switch (remediator.killswitch.KillSwitch), when the runtime has one: read
        # before every step, and asked before every admission so that a guardrail state that lost
        # a recorded pause is re-armed before it admits anything.  Without one, the guardrail
        # state's own switch is all there is.
        self.kill_switch = kill_switch
        # Bound once: binding on get_logger's lazy proxy assembles a logger each time (3 µs per alert in replay).
        self._log = structlog.get_logger("remediator.pipeline").bind()
        self._debug = writes_debug(self._log)  # each decision's lines are at DEBUG: skipped whole when off
        self._holds: dict[str, Hold] = {}  # the executions this replica runs now, each with its lease and lock
        self.releases = Releases(clock)  # finished executions' releases the guardrail state did not answer yet
        self._resume_waiting: set[str] = set()  # executions told (once) that they wait for guardrail state
        self._rearmed_at = float("-inf")  # clock.monotonic() of the last re-arm check by a read-only decision
        self._deferrals: dict[str, int] = {}  # cause -> decisions deferred for it since the last verdict
        # Called when a decision leaves an execution to run: the execution queue's wake-up.
        self.on_executable: Callable[[], None] = lambda: None

    @property
    def store(self) -> PipelineStore:
        return self._store

    @store.setter
    def store(self, store: PipelineStore) -> None:
        self._store = store
        # Decided once per store (a Protocol isinstance costs microseconds per alert); tests swap it.
        self._planned_store = store if isinstance(store, PlannedExecutions) else None
        self._lookups = store if isinstance(store, BatchLookups) else None

    async def facts(self, batch: Sequence[ReceivedAlert]) -> BatchFacts | None:
        """Ask the store, in one round trip, what deciding ``batch`` will ask for every alert
        (None: a store that answers each question at once, or nothing to ask)."""
        if self._lookups is None or not batch:
            return None
        prefetch = self.guardrails if isinstance(self.guardrails, PrefetchesVerdicts) else None  # once a batch
        ids: list[str] = []
        episodes: list[tuple[str, datetime]] = []
        plans: dict[str, tuple[Playbook, Plan | Refusal]] = {}
        reads: list[Request] = []  # the guardrail readings the batch's read-only decisions will ask for
        now = self.clock.now().timestamp()
        for received in batch:
            alert = received.alert
            selected = self._playbooks().matching(alert)
            if not selected:
                continue
            for playbook in selected:
                did = execution_id(alert.dedup_key, playbook.name)
                ids.append(did)
                if prefetch is not None and alert.status == "firing":
                    plan = make_plan(playbook, alert, global_dry_run=self.settings.dry_run)
                    plans[did] = (playbook, plan)
                    if isinstance(plan, Plan) and self._reads_only(playbook, plan):
                        reads.append(guard_request(plan, did, now))
            if alert.status == "firing":
                episodes.append((alert.fingerprint, alert.starts_at))
        if not ids:
            return None
        decided, resolved = await self._lookups.look_up(ids, episodes)
        if prefetch is not None and reads:
            with contextlib.suppress(GuardrailUnavailable):  # then each decision asks, and hears so itself
                await prefetch.prefetch_evaluations([r for r in reads if r.owner not in decided])
        return BatchFacts(frozenset(ids), decided, frozenset(episodes), frozenset(resolved), plans)

    def _reads_only(self, playbook: Playbook, plan: Plan) -> bool:
        """Whether this decision only reads the guardrails: awaiting a human's approval, or a
        plan-only execution (which takes nothing from them)."""
        asks = playbook.needs_approval and self.settings.approvals != "all"
        return asks or self._plan_only(plan.dry_run, playbook)

    def _plan_only(self, dry_run: bool, playbook: Playbook | None) -> bool:
        """Whether a dry run only reads the guardrails (takes nothing, holds no lock): every one,
        unless replay's forced dry-run consumes them; even then a playbook's own ``dry_run`` (on
        trial) only reads them, as it did live, where it held back no live remediation."""
        if not dry_run or not self.settings.dry_run_consumes_guardrails:
            return dry_run
        return playbook is not None and bool(playbook.guardrails.dry_run)

    async def _resolved(self, alert: Alert, facts: BatchFacts | None) -> bool:
        episode = (alert.fingerprint, alert.starts_at)
        if facts is not None and episode in facts.episodes:
            return episode in facts.resolved
        return await self.store.resolved_for(alert.fingerprint, alert.starts_at)

    async def decide(
        self, received: ReceivedAlert, *, retried: bool = False, facts: BatchFacts | None = None
    ) -> Outcome:
        """Decide every playbook that selects this alert; admitted executions are left pending.

        Deciding never waits on executing: an admitted execution is recorded unfinished and
        ``on_executable`` is called, so the execution queue (its own loop) takes it at once.
        A playbook still inside its stabilisation window gets no decision yet; the outcome's
        ``defer_until`` tells the caller when to decide the alert again.
        """
        return await self._decide(received, run=False, retried=retried, facts=facts)

    async def process(self, received: ReceivedAlert) -> Outcome:
        """Decide, and run each admitted execution to its end before returning.

        For replay, which runs history in order on a virtual clock, and for callers that
        want one alert's whole outcome at once; the daemon decides and executes apart.
        """
        return await self._decide(received, run=True)

    async def _decide(
        self, received: ReceivedAlert, *, run: bool, retried: bool = False, facts: BatchFacts | None = None
    ) -> Outcome:
        alert = received.alert
        log = Deferred(self._log, {"fingerprint": alert.fingerprint, "alertname": alert.alertname,
                                  "status": alert.status}, debug=self._debug)
        if alert.status == "resolved":
            # The firing episode's playbooks, matched once for both (most have neither approval nor channels).
            firing = alert.with_status("firing")
            episode = [p for p in self._playbooks().matching(firing) if p.asks_approval or p.notify]
            if episode:
                await self._cancel_awaiting(firing, episode)
                await self._notify_resolved(alert, firing, episode)
        selected = self._playbooks().matching(alert)
        if not selected:
            log.debug("no playbook matches")
            return Outcome(
                [
                    Decision(
                        alert.dedup_key,
                        alert.fingerprint,
                        "",
                        "",
                        DecisionKind.NO_MATCH,
                        "no playbook matches",
                        self.clock.now(),
                    )
                ]
            )
        outcome = Outcome([])
        for playbook in selected:
            self.metrics.count(self.metrics.matches, playbook.name)
            result = await self._decide_and_run(playbook, received, log.bind(playbook=playbook.name), run=run,
                                                retried=retried, facts=facts)
            if isinstance(result, Decision):
                outcome.decisions.append(result)
            elif outcome.defer_until is None or result < outcome.defer_until:
                outcome.defer_until = result
        return outcome

    async def _freshness(
        self, playbook: Playbook, alert: Alert, now: datetime, facts: BatchFacts | None
    ) -> tuple[DecisionKind, str] | None:
        """Only fresh alerts are acted on: not one whose resolve is already recorded (a storm's
        backlog is full of them), nor one older than the playbook's ``max_age``."""
        if alert.status != "firing":
            return None
        g = playbook.guardrails
        if g.max_age and (now - alert.starts_at).total_seconds() > g.max_age:
            age = (now - alert.starts_at).total_seconds()
            return DecisionKind.NOT_ALLOWED, f"the alert started {age:.0f}s ago, longer than max_age ({g.max_age:.0f}s)"
        if await self._resolved(alert, facts):
            return DecisionKind.RESOLVED_CANCELLED, "the alert had resolved before it was decided"
        return None

    async def _stabilisation(
        self, playbook: Playbook, alert: Alert, now: datetime, facts: BatchFacts | None
    ) -> tuple[DecisionKind, str] | datetime | None:
        """``for`` and ``min_occurrences``: a verdict, a time to look again, or None to go on."""
        g = playbook.guardrails
        if alert.status != "firing" or (not g.stabilize_for and g.min_occurrences <= 1):
            return None
        if await self._resolved(alert, facts):
            return DecisionKind.RESOLVED_CANCELLED, "alert resolved before its stabilisation window ended"
        due = alert.starts_at + timedelta(seconds=g.stabilize_for)
        if now < due:
            return due
        if g.min_occurrences > 1:
            window = timedelta(seconds=g.stabilize_for or 3600.0)
            seen = await self.store.firing_count(alert.fingerprint, now - window)
            if seen < g.min_occurrences:
                return DecisionKind.STABILISING, f"fired {seen} of {g.min_occurrences} times required within {window}"
        return None

    async def _decide_and_run(
        self, playbook: Playbook, received: ReceivedAlert, log: Any, *, run: bool, retried: bool = False,
        facts: BatchFacts | None = None,
    ) -> Decision | datetime:
        alert = received.alert
        did = execution_id(alert.dedup_key, playbook.name)
        log = log.bind(execution_id=did)
        if facts is not None and did in facts.asked:
            existing = facts.decided.get(did)
        else:
            existing = await self.store.decision(did)
        if existing is not None:
            log.debug("decision already recorded", decision=existing.kind.value)
            return existing
        known = facts.plans.get(did) if facts is not None else None
        plan = known[1] if known is not None and known[0] is playbook else make_plan(
            playbook, alert, global_dry_run=self.settings.dry_run)
        now = self.clock.now()
        admitted: Request | None = None  # the guardrail admission this decision holds, if any
        deadline: datetime | None = None  # when an execution awaiting approval expires
        base: dict[str, Any] = dict(
            alert_key=alert.dedup_key,
            fingerprint=alert.fingerprint,
            playbook=playbook.name,
            playbook_version=playbook.version,
            at=now,
            execution_id=did,
        )
        if isinstance(plan, Refusal):
            decision = Decision(kind=DecisionKind.NOT_ALLOWED, reason=plan.reason, target=plan.target, **base)
        else:
            gate = (await self._freshness(playbook, alert, now, facts)
                    or await self._stabilisation(playbook, alert, now, facts))
            if isinstance(gate, datetime):
                log.info("stabilising: will look again", until=gate.isoformat())
                return gate
            if gate is not None:
                kind, reason = gate
            else:
                evaluate_only = self._reads_only(playbook, plan)
                if self.kill_switch is not None and (not evaluate_only or self._rearm_due()):
                    with contextlib.suppress(GuardrailUnavailable, StoreUnavailable):  # then admission decides
                        await self.kill_switch.paused()  # re-arms a guardrail state that lost the pause
                try:
                    if evaluate_only:
                        kind, reason = await self._evaluate(plan, did, now.timestamp())
                    else:
                        kind, reason, admitted = await self._admit(plan, did, now.timestamp(), retried=retried)
                except _Deferred as deferred:
                    return self._defer(deferred, log)
                self._deferral_ends(log)
                if kind is DecisionKind.EXECUTED and playbook.needs_approval:
                    kind, reason, deadline = self._approval_asked(playbook, reason, now)
            decision = Decision(
                kind=kind,
                reason=reason,
                target=plan.target,
                steps=plan.steps,
                on_failure=plan.on_failure,
                dry_run=plan.dry_run,
                **base,
            )
        planned = await self._planned(decision, alert)
        try:
            if planned is not None and self._planned_store is not None:
                recorded = await self._planned_store.record_planned(decision, planned, status="dry_run",
                                                                    finished=self.clock.now())
            elif deadline is not None and decision.kind is DecisionKind.AWAITING_APPROVAL:
                recorded = await self.store.record_decision(decision, approval_deadline=deadline)
            else:
                recorded = await self.store.record_decision(decision)
        except StoreUnavailable:
            # Not recorded, so the alert will be decided again: give the admission back now, or that
            # retry would find the target locked by this very execution until the lock's TTL.
            if admitted is not None:
                with contextlib.suppress(GuardrailUnavailable):
                    await self.guardrails.abandon(admitted)
            raise
        if recorded:
            self.events.decision_recorded(decision, received)
        self.metrics.count(self.metrics.decisions, playbook.name, decision.kind.value)
        log.debug(  # per alert; the worker logs each batch's summary at INFO
            "decision",
            decision=decision.kind.value,
            reason=decision.reason,
            target=decision.target.key if decision.target else None,
            dry_run=decision.dry_run,
        )
        if not recorded:
            # Another worker recorded it first (its claim lease had expired under us).
            winner = await self.store.decision(did) or decision
            await self._abandon_lost_race(did, winner, admitted, log)
            return winner
        if decision.kind is DecisionKind.EXECUTED:
            if planned is not None:
                await self._planned_done(decision, playbook, alert, planned, log, admitted)
            elif run:
                await self.execute(decision, playbook=playbook, received=received, request=admitted)
            else:
                self.on_executable()
        elif decision.kind is DecisionKind.AWAITING_APPROVAL:
            if deadline is not None:  # asked for real (replay's --approve none asks nobody)
                await self._notify("approval_requested", decision, playbook.notify, alert=alert,
                                   message=f"approve or deny before {format_time(deadline)}")
        elif decision.kind is not DecisionKind.RESOLVED:
            await self._notify("skipped", decision, playbook.notify, alert=alert)  # channels opt in to "skipped"
        return decision

    async def _planned(self, decision: Decision, alert: Alert) -> list[StepRecord] | None:
        """A plan-only execution's steps, computed now, when it can be recorded with its decision:
        admitted, plan-only, an executor that asks nobody, and a store that records both at once.
        None: it runs as any execution does.  (Where dry runs consume the guardrails, replay's
        scratch copy, its admission is released as soon as it is recorded, as the execution
        queue would release it after its steps; replay's guardrail state keeps it held until its
        virtual clock moves on.)

        Nothing here has effects (a ``notify`` step's message is queued by :meth:`_planned_done`,
        once the decision is recorded): the decision may yet lose a race or fail to be recorded.
        A step that does not come out ``ok`` leaves the execution to the ordinary path, which
        knows what a failure means (``on_failure``, the breaker).
        """
        if (decision.kind is not DecisionKind.EXECUTED or not decision.dry_run or not self._dry_local
                or self._planned_store is None or decision.target is None
                or any(s.approval is not None for s in decision.steps)):  # it stops at a gate: the queue runs it
            return None
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        ctx = StepContext(did, alert, decision.target, True, self.clock)
        done: dict[tuple[str, int], StepResult] = {}
        records = []
        for step in decision.steps:
            started = self.clock.now()
            if step.action == "notify":
                result = _queued(step, dry_run=True)
            else:
                step_ctx = (replace(ctx, history=_history(decision, decision.steps, done, step))
                            if _needs_history(step, dry_run=True) else ctx)
                try:
                    result = await self._dry.run(step, step_ctx)
                except Exception:  # the ordinary path records what an executor's exception means
                    return None
            if not result.ok or result.status == "superseded":
                return None
            done[(step.phase, step.index)] = result
            records.append(StepRecord(step, result, started, self.clock.now()))
        return records

    async def _planned_done(
        self, decision: Decision, playbook: Playbook, alert: Alert, steps: Sequence[StepRecord], log: Any,
        admitted: Request | None = None,
    ) -> None:
        """What a recorded plan-only execution tells: the same events, metrics and notifications, in
        the same order, as when the execution queue runs it; its log lines are at DEBUG, as the
        decision's are (it is part of deciding the alert; the batch's INFO summary counts it)."""
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        log = log.bind(execution_id=did, playbook=decision.playbook, fingerprint=decision.fingerprint)
        channels = playbook.notify
        await self._notify("started", decision, channels, alert=alert)
        for record in steps:
            step, result = record.step, record.result
            if step.action == "notify":
                await self._notify("message", decision, (str(step.params.get("channel", "")),), alert=alert,
                                   message=str(step.params.get("message", "")), step=step)
            self.events.step_finished(did, step, result)
            self.metrics.count(self.metrics.steps, step.action, result.status)
            log.debug("step", phase=step.phase, index=step.index, action=step.action, status=result.status,
                      message=result.message)
        self.events.execution_finished(did, "dry_run")
        self.metrics.count(self.metrics.executions, decision.playbook, "dry_run")
        if admitted is not None:  # as Hold.release: the lock and slot freed, the cooldown started
            try:
                await self.guardrails.release(admitted, succeeded=True)
            except GuardrailUnavailable as exc:  # the lock lapses by its TTL
                log.error("could not release guardrails", error=str(exc))
        log.debug("execution finished", result="dry_run")  # per alert: the decision loop's summary counts it
        results = {(r.step.phase, r.step.index): r.result for r in steps} if channels else {}
        await self._notify("dry_run", decision, channels, alert=alert, results=results)

    def _rearm_due(self) -> bool:
        """Whether a decision that only reads the guardrails (dry-run, awaiting approval) should
        re-arm a lost pause first: at most once a second.  An admission always does (it is what
        the pause must stop); a read says "paused" from the guardrail state itself, and between
        a loss and its re-arm a dry run could at worst plan what a pause would have refused."""
        now = self.clock.monotonic()
        if now - self._rearmed_at < REARM_EVERY:
            return False
        self._rearmed_at = now
        return True

    def _approval_asked(
        self, playbook: Playbook, reason: str, now: datetime
    ) -> tuple[DecisionKind, str, datetime | None]:
        """A decision the guardrails would admit, for a playbook that wants a human's approval.

        Until it is approved, the guardrails were only read (``evaluate``), never consumed: a lock,
        cooldown, rate or budget taken now would hold the target for an execution that may never
        run (denied, expired).  Approving admits it for real, against the world as it is then.
        Returns the decision's kind and reason, and the deadline (None when nobody is asked:
        replay's simulated answers)."""
        assert playbook.approval is not None
        if self.settings.approvals == "all":
            return DecisionKind.EXECUTED, f"{reason}; approval simulated (--approve all)", None
        if self.settings.approvals == "none":
            return DecisionKind.AWAITING_APPROVAL, f"{reason}; approval required, not given (--approve none)", None
        deadline = now + timedelta(seconds=playbook.approval.timeout)
        return DecisionKind.AWAITING_APPROVAL, f"{reason}; awaiting approval until {format_time(deadline)}", deadline

    async def _admit(
        self, plan: Plan, did: str, now: float, *, retried: bool = False
    ) -> tuple[DecisionKind, str, Request | None]:
        """The guardrails' verdict, and the request it admitted (whose lock the execution holds).
        Raises _Deferred when no verdict can be had now.

        ``retried``: the alert was claimed before, by a decider that did not finish it.  If that
        decider died after its admission and before recording the decision, the target is
        locked by this very execution id, and its cooldown, rate and budget already count it:
        the admission is taken over (the lock re-taken as this execution's) rather than waited
        out until the lock's TTL.  Two copies of one execution can never both run: the
        decision is recorded once, and one replica at a time holds the execution's lease.
        """
        return await self._admit_request(guard_request(plan, did, now), retried=retried)

    async def _admit_request(self, req: Request, *, retried: bool = False) -> tuple[DecisionKind, str, Request | None]:
        did = req.owner
        try:
            verdict = await self._verdict(self.guardrails.admit(req), did)
        except _Deferred as deferred:
            if not (retried and deferred.cause == "locked_by_itself"):
                raise
            try:
                taken = await self.guardrails.reacquire(req)
            except GuardrailUnavailable as exc:
                raise _Deferred("guardrail_unavailable", f"guardrail state unreachable: {exc}") from exc
            if not taken:
                raise
            self._log.warning("took over an admission its decider left unrecorded", execution_id=did,
                              target=req.target_key)
            verdict = Verdict(DecisionKind.EXECUTED, "all guardrails passed (admitted before an interruption)")
        return verdict.kind, verdict.reason, (req if verdict.admitted else None)

    async def _evaluate(self, plan: Plan, did: str, now: float) -> tuple[DecisionKind, str]:
        """A plan-only execution's verdict: what the guardrails would say, without consuming any of
        them (no lock, cooldown, rate, budget or slot), so trying a playbook out in dry-run never
        holds back a live remediation."""
        verdict = await self._verdict(self.guardrails.evaluate(guard_request(plan, did, now)), did)
        return verdict.kind, verdict.reason

    async def _verdict(self, asked: Awaitable[Verdict], did: str) -> Verdict:
        """A verdict that may be recorded as final, or _Deferred.

        Not final: guardrail state unreachable (fail closed: nothing runs, and the alert is
        decided again once it is back, without Alertmanager re-sending it), and a target
        locked by this very execution id (its admission outlived a crash before the decision
        was recorded, or another replica is deciding the same alert right now: either way
        the decision it gets is not "locked").
        """
        try:
            verdict = await asked
        except GuardrailUnavailable as exc:
            self.metrics.guardrail_unavailable.inc()
            raise _Deferred("guardrail_unavailable", f"guardrail state unreachable: {exc}") from exc
        if verdict.kind is DecisionKind.LOCKED and verdict.holder == did:
            raise _Deferred("locked_by_itself", f"the target is locked by this execution's own admission ({did})")
        return verdict

    def _defer(self, deferred: _Deferred, log: Any) -> datetime:
        """When to decide again: a backoff that grows while the cause lasts (1 s doubling, at
        most 30 s).  Said once per cause, not once per alert; counted per alert."""
        count = self._deferrals.get(deferred.cause, 0) + 1
        self._deferrals[deferred.cause] = count
        self.metrics.decisions_deferred.labels(deferred.cause).inc()
        if count == 1:
            log.error("deciding later: no final verdict can be had now; nothing runs meanwhile",
                      cause=deferred.cause, error=deferred.detail)
        else:
            log.debug("deciding later", cause=deferred.cause)
        return self.clock.now() + timedelta(seconds=min(2.0 ** min(count - 1, 5), 30.0))

    def _deferral_ends(self, log: Any) -> None:
        if self._deferrals:
            log.warning("verdicts can be had again: deferred decisions go on", causes=sorted(self._deferrals))
            self._deferrals.clear()

    async def _abandon_lost_race(self, did: str, winner: Decision, req: Request | None, log: Any) -> None:
        """Give back our admission unless the winner's execution may be using the lock.

        Both copies have the same execution id, so they would share the lock: while the
        winner's execution is unfinished the lock is its, and freeing it would unprotect
        the target.  Otherwise nothing runs under our admission, and its lock and slot
        would otherwise block the target until their TTL.
        """
        if req is None:
            return
        if winner.kind is DecisionKind.EXECUTED and await self.store.unfinished(did):
            return
        try:
            await self.guardrails.abandon(req)
            log.info("lost the decision race: gave back the admission", winner=winner.kind.value)
        except GuardrailUnavailable as exc:  # the lock expires by its TTL instead
            log.error("could not give back the admission", error=str(exc))

    async def execute(
        self,
        decision: Decision,
        *,
        playbook: Playbook | None = None,
        received: ReceivedAlert | None = None,
        request: Request | None = None,
    ) -> str:
        """Run (or resume: the same thing) an execution under a :class:`Hold` of its lease and lock.

        ``request`` is the admission that just locked the target; without it (a resumed
        execution) the request is rebuilt from the decision.  The lease is what stops two
        replicas from running the same execution: when a replica dies its lease runs out and
        another replica's ``resume_unfinished`` takes the execution over.  Before anything
        runs, the lock is confirmed: another execution that has held it since makes this one
        ``superseded``; unreachable guardrail state pauses it (the lease is handed back).
        """
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        if self.settings.dry_run and not decision.dry_run:
            # Decided live by a daemon that ran live on this data; this one runs in dry-run, which acts on
            # nothing whatever was decided (restarting with --dry-run is how an SRE stops it acting).  Not
            # run, nor planned as if dry (its record would then say it finished): left unfinished and
            # untouched, as under the kill switch, for a live daemon to resume.  Its lock lapses
            # meanwhile, so another execution on the target since then makes it superseded.
            self._log.warning("not running a live execution: this daemon runs in dry-run; a live daemon resumes it",
                              execution_id=did, playbook=decision.playbook)
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_execution(did, self.owner)
            return "interrupted"
        # A plan-only execution holds no lock: it changes nothing, and took nothing at its decision.
        plan_only = self._plan_only(decision.dry_run, playbook)
        req = request if request is not None or plan_only else self._resume_request(decision, playbook, received)
        hold = Hold(did, owner=self.owner, store=self.store, guardrails=self.guardrails, clock=self.clock,
                    lease=self.settings.execution_lease, request=req, metrics=self.metrics, log=self._log,
                    releases=self.releases)
        try:
            await hold.take_lease()
        except LeaseLost:  # the holder owns the guardrail lock too (same execution id)
            self._log.info("execution is held by another replica", execution_id=did)
            return "held_elsewhere"
        self._holds[did] = hold
        try:
            if not await self._lock_at_start(hold):
                return "interrupted"
            hold.start()
            return await self._execute_held(decision, hold, playbook=playbook, received=received)
        except LeaseLost:
            self._log.error("lost the execution lease: another replica resumes it (or has ended it)",
                            execution_id=did)
            return "lease_lost"
        except LockUnconfirmed:
            self._log.error("paused before the next step: the target's guardrail lock cannot be confirmed; "
                            "the execution resumes once it can", execution_id=did)
            await hold.hand_back()
            return "interrupted"
        except _Halted:  # kill switch or breaker: resumed by a later claim once it is lifted
            await hold.hand_back()
            return "interrupted"
        except _AwaitingStep:  # stopped before a step that asks for approval (see _execute_held)
            self.events.execution_finished(did, AWAITING_APPROVAL)
            return AWAITING_APPROVAL
        except StoreUnavailable as exc:
            # The audit cannot be written (a step's intent or result): pause, never fail. Nothing
            # was sent without its write-ahead record, and a step whose result was lost is
            # re-checked from its intent when the execution is claimed again, once the store is back.
            self.metrics.store_unavailable.inc()
            self._log.error("paused: the store is unreachable; the execution resumes once it is back",
                            execution_id=did, error=str(exc))
            await hold.hand_back()
            return "interrupted"
        finally:  # whichever way it ended, this replica keeps nothing of it
            await hold.close()
            self._holds.pop(did, None)

    async def _lock_at_start(self, hold: Hold) -> bool:
        """Confirm the lock before the first step (a resumed execution's may have lapsed).

        False when the guardrail state is unreachable: the lease is handed back and the
        execution waits, unfinished, for a replica (or a later round) that can confirm it.
        Another execution having held the lock is no reason to wait: the next step is then
        recorded ``superseded``.
        """
        did = hold.execution_id
        try:
            await hold.hold_lock()  # False marks nothing yet: confirm() before the next step decides
        except (GuardrailUnavailable, StoreUnavailable) as exc:
            self.metrics.guardrail_unavailable.inc()
            await hold.hand_back()
            if did not in self._resume_waiting:  # once, not at every poll while it lasts
                self._resume_waiting.add(did)
                self._log.error("not running yet: guardrail state or store unreachable", execution_id=did,
                                error=str(exc))
            return False
        self._resume_waiting.discard(did)
        return True

    async def guardrail_status(self) -> GuardStatus:
        """The shared kill switch and circuit breakers, mirrored into this replica's gauges."""
        status = with_playbooks(await self.guardrails.status(), [p.name for p in self._playbooks().playbooks])
        self.metrics.show_guardrails(status)
        return status

    async def _execute_held(
        self, decision: Decision, hold: Hold, *, playbook: Playbook | None = None,
        received: ReceivedAlert | None = None,
    ) -> str:
        """Run (or resume) an admitted execution; steps already recorded are not repeated."""
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        log = Deferred(self._log, {"execution_id": did, "playbook": decision.playbook,
                                  "fingerprint": decision.fingerprint}, debug=self._debug)
        assert decision.target is not None
        alert = received.alert if received else Alert(decision.fingerprint, "firing", {})
        done = await self.store.step_results(did)
        executor = self._dry if decision.dry_run else self._live
        ctx = StepContext(did, alert, decision.target, decision.dry_run, self.clock)
        channels = playbook.notify if playbook else ()
        approved = bool(done) and self._approved_gate(decision, done)
        # Resolved while it waited to run, or to run the step just approved (a resolve cancels a wait
        # for approval, not what was approved before it came): acting now would remediate what is
        # already well.  An execution interrupted half way resumes whatever: stopping it half way
        # could leave the target worse than either end.
        if (not done or approved) and received is not None and alert.status == "firing" and \
                await self.store.resolved_for(alert.fingerprint, alert.starts_at):
            log.info("the alert resolved before its execution started: not acted on" if not done else
                     "the alert resolved before the approved step started: not acted on")
            await hold.record_end("resolved_cancelled", self.clock.now())
            self.events.execution_finished(did, "resolved_cancelled")
            self.metrics.executions.labels(decision.playbook, "resolved_cancelled").inc()
            await hold.release(succeeded=None)
            return "resolved_cancelled"
        announce: Callable[[], Awaitable[None]] | None = None
        if not done:  # told once its first step passes the kill switch and breaker, not at every paused try
            async def announce() -> None:
                await self._notify("started", decision, channels, alert=alert)
        elif approved:
            log.info("resuming: a step's approval was given")
            await self.store.record_event(did, "resumed", self.clock.now(), reason="approved")
        else:
            log.warning("resuming interrupted execution")
            await self.store.record_event(did, "resumed", self.clock.now(),
                                          reason="claimed again after an interruption")
        try:
            run = await self._run_steps(decision.steps, done, executor, ctx, hold, log, decision, announce=announce)
        except _AwaitingStep as gate:
            # Its lease ended with the wait.  The lock and slot are freed now (nothing runs while a
            # human decides, which may take longer than any lock's TTL) and the cooldown starts;
            # the lock's record stays this execution's, so once approved it takes the lock back
            # only if no other execution has held the target meanwhile (see _approve_step).
            # Freed before anyone is told: an approval never meets this replica's lock.
            await hold.release_for_approval()
            if gate.deadline is not None:  # asked for real (replay's --approve none asks nobody)
                await self._notify("approval_requested", decision, channels, alert=alert, step=gate.step,
                                   message=f"approve or deny {_describe_step(gate.step)} before "
                                           f"{format_time(gate.deadline)}")
            raise
        changed = _changed(done)
        if run is _Run.FAILED and decision.on_failure:
            if changed:
                log.warning("step failed: running on_failure")
                await self._run_steps(decision.on_failure, done, executor, ctx, hold, log, decision)
            else:  # a rollback would only throw away a release that this execution never touched
                log.warning("step failed before changing anything: on_failure not run")
        if run is _Run.SUPERSEDED:
            status, succeeded = "superseded", None
        elif run is _Run.FAILED:
            status = "failed"
            # Input the target refused (a container or pod the alert named does not exist) says
            # nothing about whether the playbook works: the breaker is not fed.
            succeeded = None if not changed and _refused_input(done) else False
        else:
            status, succeeded = ("dry_run" if decision.dry_run else "succeeded"), True
        # A replica whose lease lapsed during a long step (another one resumed the execution) must
        # neither finish it nor release the lock the other one, same execution id, now holds; and an
        # end whose reply the store lost is not given up for a pause that nothing would resume.
        await hold.record_end(status, self.clock.now())
        self.events.execution_finished(did, status)
        self.metrics.executions.labels(decision.playbook, status).inc()
        await hold.release(succeeded=succeeded)
        (log.error if status == "failed" else log.info)("execution finished", result=status)
        results: Mapping[tuple[str, int], StepResult] = {}
        if channels:
            with contextlib.suppress(Exception):  # a message without step details beats no message
                results = await self.store.step_results(did)
        # A page still being retried here when another replica decides the resolve: see _resolved_meanwhile
        late = {"resolved_meanwhile": self._resolved_meanwhile(alert)} \
            if status == "failed" and received is not None and alert.status == "firing" else {}
        await self._notify(status, decision, channels, alert=alert, results=results, **late)
        if channels and received is not None and alert.status == "firing":
            with contextlib.suppress(StoreUnavailable):
                if await self.store.resolved_for(alert.fingerprint, alert.starts_at):
                    # The alert resolved while this ran, and its resolve left the telling to this end
                    # (see _notify_resolved): the channels' last word for it is 'resolved'.
                    await self._notify("resolved", decision, channels, alert=alert.with_status("resolved"),
                                       results=results)
        return status

    async def _run_steps(
        self,
        steps: tuple[PlannedStep, ...],
        done: dict[tuple[str, int], StepResult],
        executor: Executor,
        ctx: StepContext,
        hold: Hold,
        log: Any,
        decision: Decision | None = None,
        *,
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> _Run:
        """Run the steps not yet finished; ``done`` gains each result as it is recorded.  ``announce`` is
        called once, before the first step that the kill switch and the breaker let run."""
        for step in steps:
            previous = done.get((step.phase, step.index))
            if previous is not None and previous.finished:
                if previous.status == "superseded":
                    return _Run.SUPERSEDED
                if not previous.ok:
                    return _Run.FAILED
                continue
            await hold.take_lease()  # a paused or cut-off replica finds out here
            started = self.clock.now()
            mutating = step.action in MUTATING_ACTIONS and not ctx.dry_run
            if not ctx.dry_run and (why := await self._halted(decision, hold.request)):
                await self.store.record_event(ctx.execution_id, "paused", self.clock.now(), reason=why,
                                              before=f"{step.phase} step {step.index} ({step.action})")
                log.warning("paused before the next step", reason=why, action=step.action)
                raise _Halted(why)
            if announce is not None:
                await announce()
                announce = None
            if not await hold.confirm(mutating=mutating):
                lost = StepResult(
                    "superseded", "not run: another execution has held this target's guardrail lock since this "
                    "one lost it, so the target may have changed since this execution was planned",
                    details={**(previous.details if previous else {})},
                )
                await self.store.record_step(ctx.execution_id, step, lost, started=started, finished=started,
                                             owner=hold.owner)
                self.events.step_finished(ctx.execution_id, step, lost)
                done[(step.phase, step.index)] = lost
                self.metrics.steps.labels(step.action, lost.status).inc()
                return _Run.SUPERSEDED
            if step.approval is not None and previous is None and decision is not None:
                await self._gate(step, done, ctx, decision, log)  # returns once passed, else raises
            wrote: list[Mapping[str, Any]] = []  # the intents this run recorded (made, or was making, a write)

            async def record_intent(
                intent: Mapping[str, Any], step: PlannedStep = step, started: datetime = started,
                wrote: list[Mapping[str, Any]] = wrote,
            ) -> None:
                wrote.append(dict(intent))
                await self._record_intent(ctx.execution_id, step, started, intent)

            if previous is None:
                await self.store.begin_step(ctx.execution_id, step, {}, started=started, owner=hold.owner)
            else:
                log.warning("re-checking a step interrupted by a restart", action=step.action)
            step_ctx = replace(ctx, previous=previous, record_intent=record_intent,
                               history=_history(decision, steps, done, step)
                               if _needs_history(step, dry_run=ctx.dry_run) else ())
            try:
                if step.action == "notify" and decision is not None:
                    result = await self._notify_step(step, decision, ctx)
                else:
                    result = await hold.while_leased(within(self.clock, executor.run(step, step_ctx),
                                                            self._step_limit(step)))
            except TimeoutError:
                result = StepResult("failed", f"step did not finish within {self._step_limit(step):.0f}s",
                                    details=_maybe_wrote(wrote, previous))
            except (StoreUnavailable, LeaseLost):  # no write-ahead record, or no longer ours: not a failed step
                raise
            except Exception as exc:  # an executor bug must be recorded, not crash the worker
                log.exception("executor raised", action=step.action)
                result = StepResult("failed", f"{type(exc).__name__}: {exc}", details=_maybe_wrote(wrote, previous))
            await self.store.record_step(ctx.execution_id, step, result, started=started, finished=self.clock.now(),
                                         owner=hold.owner)
            self.events.step_finished(ctx.execution_id, step, result)
            done[(step.phase, step.index)] = result
            self.metrics.steps.labels(step.action, result.status).inc()
            # A failed step is worth a look (WARNING); whether it failed the execution is said below.
            (log.info if result.ok else log.warning)(
                "step",
                phase=step.phase,
                index=step.index,
                action=step.action,
                status=result.status,
                message=result.message,
            )
            if result.status == "superseded":
                return _Run.SUPERSEDED
            if not result.ok:
                return _Run.FAILED
        return _Run.DONE

    def _approved_gate(self, decision: Decision, done: Mapping[tuple[str, int], StepResult]) -> bool:
        """Whether the execution resumes because a step's approval was given (not after an interruption)."""
        return any((gate := done.get((APPROVAL_PHASE, s.index))) is not None and gate.ok
                   and (s.phase, s.index) not in done for s in decision.steps if s.approval is not None)

    async def _gate(self, step: PlannedStep, done: dict[tuple[str, int], StepResult], ctx: StepContext,
                    decision: Decision, log: Any) -> None:
        """Before a step with ``approval:``: return if it was approved (or replay simulates a yes);
        else stop the execution here, awaiting approval, and raise :class:`_AwaitingStep`.

        The wait is recorded first (the lease ends with it), so that an approval can be given as
        soon as anyone is told.  Approving records the gate's own result (:func:`gate_step`)."""
        gate = done.get((APPROVAL_PHASE, step.index))
        if gate is not None and gate.ok:
            return
        did, now = ctx.execution_id, self.clock.now()
        if self.settings.approvals == "all":
            result = StepResult("ok", "approval simulated (--approve all)")
            await self.store.record_step(did, gate_step(step), result, started=now, finished=now, owner=self.owner)
            done[(APPROVAL_PHASE, step.index)] = result
            return
        assert step.approval is not None
        deadline = None if self.settings.approvals == "none" else now + timedelta(seconds=step.approval.timeout)
        # The gate's record first: it tells this wait from the playbook's own (an execution of a playbook
        # with both waits twice, its decision awaiting_approval both times).  Cut off before the wait is
        # recorded, the execution still runs, and asks again when it is resumed.
        until = f" until {format_time(deadline)}" if deadline else " (nobody to ask: --approve none)"
        asked = StepResult("awaiting_approval", f"approval asked before {_describe_step(step)}{until}")
        await self.store.record_step(did, gate_step(step), asked, started=now, finished=now, owner=self.owner)
        if not await self.store.await_approval(did, self.owner, deadline):
            raise LeaseLost(did)  # another replica holds it now: it asks, not us
        await self.store.record_event(did, "approval_requested", now, before=_describe_step(step),
                                      **({"deadline": format_time(deadline)} if deadline else {}))
        log.info("awaiting approval before the next step", action=step.action, index=step.index,
                 deadline=format_time(deadline) if deadline else None)
        raise _AwaitingStep(step, deadline)

    async def _halted(self, decision: Decision | None, req: Request | None) -> str | None:
        """Why the execution must stop before its next step, if it must: the kill switch, or its
        playbook's circuit breaker open (other executions of it kept failing meanwhile), or half-open
        with another execution as its one trial.  Both are read at every step: the switch from the
        durable kill switch when there is one (it re-arms a guardrail state that lost it), else from
        the guardrail state; the breaker from the guardrail state.  Unreachable guardrail state
        pauses too."""
        try:
            if await (self.kill_switch or self.guardrails).paused():
                return "remediation is paused (kill switch)"
            if decision is not None:
                breaker = await self.guardrails.breaker(decision.playbook)
                if breaker.state is BreakerState.OPEN:
                    return f"the playbook's circuit breaker is open ({breaker.failures} consecutive failures)"
                if (breaker.state is BreakerState.HALF_OPEN and req is not None and breaker.trial_owner != req.owner
                        and not await self.guardrails.go_on_as_trial(req)):
                    return "the playbook's circuit breaker is half-open and another execution is its trial"
        except GuardrailUnavailable as exc:
            self.metrics.guardrail_unavailable.inc()
            raise LockUnconfirmed(str(exc)) from exc
        return None

    def _step_limit(self, step: PlannedStep) -> float:
        """The step timeout, stretched for a step with its own longer ``timeout`` (a long wait_healthy)."""
        own = step.params.get("timeout")
        return max(self.settings.step_timeout, float(own) + 60.0 if isinstance(own, int | float) else 0.0)

    async def _record_intent(
        self, execution: str, step: PlannedStep, started: datetime, intent: Mapping[str, Any]
    ) -> None:
        await self.store.begin_step(execution, step, intent, started=started, owner=self.owner)

    async def _notify(self, event: str, decision: Decision, channels: tuple[str, ...], **detail: Any) -> None:
        """Hand an event to the notifier, which only queues it: nothing it does may stop a remediation."""
        with contextlib.suppress(Exception):
            await self._notifier.notify(event, decision, {"channels": channels, **detail})

    async def _notify_step(self, step: PlannedStep, decision: Decision, ctx: StepContext) -> StepResult:
        """A playbook's ``notify`` step: done once queued; delivery retries on its own."""
        channel = str(step.params.get("channel", ""))
        message = str(step.params.get("message", ""))
        await self._notify("message", decision, (channel,), alert=ctx.alert, message=message, step=step)
        return _queued(step, dry_run=ctx.dry_run)

    def _resolved_meanwhile(self, alert: Alert) -> Callable[[], Awaitable[bool]]:
        """Asked by the notifier once a page about ``alert``'s firing episode has been delivered:
        whether the episode has resolved since, with no later one of the alert firing.

        Another replica deciding the resolve tells the channels at once (this execution has
        finished, see _notify_resolved), while the page may still be retried here (PagerDuty
        throttling: minutes).  PagerDuty drops a resolve for an incident not open yet, so the
        page landing after it opened one that nothing would resolve.  The resolve is recorded
        before it is decided, so a page that lands after the other replica's resolve finds it
        here and is followed by its own; one that lands before it is resolved by that one.  A
        later episode firing meanwhile owns the incident now: it is not resolved for it.
        """

        async def ask() -> bool:
            return await self.store.resolved_for(alert.fingerprint, alert.starts_at) and \
                await self.store.firing_count(alert.fingerprint, alert.starts_at) <= 1

        return ask

    async def _notify_resolved(self, alert: Alert, firing: Alert, playbooks: Sequence[Playbook]) -> None:
        """Close the loop: tell the channels of every execution of this alert since its previous resolve.

        Not only this firing episode's: a flapping alert fires a new episode (a new startsAt)
        with no resolve between, and an earlier episode's failed execution opened a PagerDuty
        incident of its own that only this resolve closes (this one's may even have been
        refused, by a cooldown, say).  So the alert's latest executions are walked back to the
        first whose own episode resolved (its resolve told it).  An execution is told on the
        channels of its playbook as loaded now and, when that playbook changed since it was
        decided (its ``notify`` list may have) or is no longer loaded (renamed), on those its
        audit shows it told: otherwise the incident its failure opened would stay open for good.
        """
        told: set[str] = set()
        loaded = {p.name: p for p in playbooks}
        for playbook in playbooks:
            if not playbook.notify:
                continue
            did = execution_id(firing.dedup_key, playbook.name)
            told.add(did)
            decision = await self.store.decision(did)
            if decision is not None and decision.kind is DecisionKind.EXECUTED:
                await self._notify_resolved_execution(alert, decision, loaded)
        await self._notify_resolved_earlier(alert, firing, loaded, told)

    async def _notify_resolved_earlier(
        self, alert: Alert, firing: Alert, loaded: Mapping[str, Playbook], told: set[str]
    ) -> None:
        """The executions of ``alert`` no resolve has told yet, besides ``told``: see _notify_resolved."""
        query = DecisionQuery(fingerprint=alert.fingerprint, kinds=(DecisionKind.EXECUTED,),
                              limit=RESOLVE_LOOKBACK)
        previous: datetime | None = None  # the start of the latest earlier episode that resolved, once asked
        for row in await self.store.query_decisions(query):
            did = row.get("execution_id")
            if not did or did in told:
                continue
            told.add(did)
            decision = decision_from_json(row)
            if decision.alert_key != firing.dedup_key:
                starts = parse_time(decision.alert_key.rsplit("|", 2)[1])
                if starts > firing.starts_at:
                    continue  # a later episode, still firing: its incident is not this resolve's
                if await self.store.resolved_for(alert.fingerprint, starts):
                    break  # its own resolve told it, and everything before it
                if previous is None:
                    previous = await self._notify_resolved_before(alert, firing.starts_at)
                if starts <= previous:
                    break  # a later episode's resolve told it (it flapped into that one)
            await self._notify_resolved_execution(alert, decision, loaded)

    async def _notify_resolved_before(self, alert: Alert, starts: datetime) -> datetime:
        """The start of the latest episode of ``alert`` before ``starts`` whose resolve is recorded
        (that resolve told every execution up to it), or the earliest time when none is."""
        resolved = [parse_time(d["startsAt"]) for d in await self.store.deliveries(alert.fingerprint,
                                                                                  limit=RESOLVE_LOOKBACK * 2)
                    if d.get("status") == "resolved" and d.get("startsAt")]
        return max((t for t in resolved if t < starts), default=datetime.min.replace(tzinfo=starts.tzinfo))

    async def _notify_resolved_execution(
        self, alert: Alert, decision: Decision, loaded: Mapping[str, Playbook]
    ) -> None:
        """Tell ``decision``'s execution's channels that its alert resolved (see _notify_resolved)."""
        did = decision.execution_id or ""
        if await self.store.unfinished(did):
            # Still to run, or running: told at its end (see _execute_held), after its outcome.  Told
            # now, a failure after it would leave the channels' last word 'failed': a PagerDuty
            # incident triggered after its resolve, open for good, for an alert already gone.
            return
        playbook = loaded.get(decision.playbook)
        channels = tuple(playbook.notify) if playbook is not None else ()
        if playbook is None or playbook.version != decision.playbook_version:
            document = await self.store.get_execution(did) or {}
            channels = tuple(dict.fromkeys(
                (*channels, *(str(n.get("channel", "")) for n in document.get("notifications") or ()))))
        if not channels:
            return
        results = await self.store.step_results(did)
        await self._notify("resolved", decision, channels, alert=alert, results=results)

    def _resume_request(
        self, decision: Decision, playbook: Playbook | None, received: ReceivedAlert | None
    ) -> Request | None:
        """The guardrail request a resumed execution holds its target with.

        The target is always the decision's: it is what the steps act on, whatever the
        playbook says now (it may have been edited or removed since).  The rest (limit key,
        cooldown, TTL) comes from re-planning when that still yields the same target, and
        from the playbook's settings otherwise.
        """
        if decision.target is None:
            return None
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        now = self.clock.now().timestamp()
        if playbook is not None and received is not None:
            plan = make_plan(playbook, received.alert, global_dry_run=self.settings.dry_run)
            if isinstance(plan, Plan) and plan.target == decision.target:
                return guard_request(plan, did, now)
        g = playbook.guardrails if playbook is not None else None
        return Request(
            owner=did,
            playbook=decision.playbook,
            target_key=decision.target.key,
            limit_key=f"{decision.playbook}|{decision.target.key}",
            namespace=decision.target.namespace,
            now=now,
            cooldown=g.cooldown if g else 0.0,
            lock_ttl=g.lock_ttl if g else Request.lock_ttl,
        )

    async def run_claimed(self, did: str) -> str | None:
        """Run an execution this replica has claimed (``ExecutionLedger.claim_unfinished``): a fresh one
        and one another replica left behind are the same thing.  None: nothing to run."""
        decision = await self.store.decision(did)
        if decision is None:
            return None
        alert = await self.store.recorded_alert(decision.alert_key)
        received = ReceivedAlert(alert, self.clock.now()) if alert else None
        playbook = self._playbooks().by_name(decision.playbook)
        return await self.execute(decision, playbook=playbook, received=received)

    async def resume_unfinished(self) -> int:
        """Claim and run, one after the other, every unfinished execution nobody holds: after a
        restart, or those of a replica that died.  The execution queue does this concurrently;
        this is its one-shot form (the CLI, tests).  Returns how many ran."""
        count = 0
        try:
            await self.guardrails.ping()
        except GuardrailUnavailable:  # leave them to a replica that can hold their locks
            return 0
        claimed = await self.store.claim_unfinished(self.owner, self.settings.execution_lease)
        self._resume_waiting &= set(claimed)  # the others were finished elsewhere meanwhile
        for did in claimed:
            if did in self._holds:
                continue
            if await self.run_claimed(did) not in (None, "interrupted", "held_elsewhere"):
                count += 1
        return count

    # -- the approval gate -------------------------------------------------------------

    async def answer_approval(self, did: str, *, approve: bool, by: str, token_sha256: str) -> ApprovalAnswer:
        """Approve or deny an execution awaiting approval, for an admin (``by``, as the audit
        names them; ``token_sha256``, the SHA-256 of their token, is what ``approvers`` list).

        One answer wins: the execution is claimed first (:meth:`ApprovalLedger.claim_approval`),
        so two replicas, or two requests on one, never both approve, or approve and deny.  An
        approval re-checks the guardrails (the world may have changed since the decision: another
        execution may have left the target in cooldown) and admits the execution for real; a
        refusal finishes it ``refused`` with the guardrail's reason.  Approving needs the playbook
        still loaded (its approvers, its guardrails); denying does not."""
        state = await self.store.approval(did)
        decision = await self.store.decision(did) if state is not None else None
        if state is None or decision is None:
            return ApprovalAnswer("not_found", f"no execution {did!r} is recorded")
        now = self.clock.now()
        if state.status != AWAITING_APPROVAL or state.deciding:
            return _not_awaiting(did, state, now)
        playbook = self._playbooks().by_name(decision.playbook)
        gate = await self._waiting_gate(decision) if any(s.approval for s in decision.steps) else None
        if gate is None and decision.kind is DecisionKind.EXECUTED:  # admitted: only a step of it can wait
            return ApprovalAnswer("conflict", f"execution {did} awaits approval before no step of its plan",
                                  state.status)
        approval = gate.approval if gate is not None else playbook.approval if playbook is not None else None
        if approval is not None and not approval.allows(token_sha256):
            whose = f"{_describe_step(gate)} of playbook" if gate is not None else "playbook"
            return ApprovalAnswer("forbidden", f"this token is not one of {whose} {decision.playbook}'s approvers",
                                  state.status)
        if approve and playbook is None:
            return ApprovalAnswer("conflict", f"playbook {decision.playbook} is no longer loaded: deny the execution "
                                              "or let it expire", state.status)
        if approve and self.settings.dry_run and not decision.dry_run:  # see execute(): nothing runs live here
            return ApprovalAnswer("conflict", f"this daemon runs in dry-run: live execution {did} cannot be approved "
                                              "here (it still waits); approve it on a live daemon, or deny it",
                                  state.status)
        if not await self.store.claim_approval(did, self.owner, self.settings.execution_lease):
            return _not_awaiting(did, await self.store.approval(did) or state, now)
        answer: ApprovalAnswer | None = None
        try:
            if not approve:
                answer = await self._settle(decision, playbook, "denied", "approval_denied", by=by)
            elif gate is not None:
                assert playbook is not None
                answer = await self._approve_step(decision, playbook, gate, by)
            else:
                assert playbook is not None
                answer = await self._approve(decision, playbook, by)
            return answer
        finally:
            # Not settled (unreachable state, a crash, a conflict): the claim is given back, and the
            # execution waits for another answer.  Settled, the claim went with it, and this replica's own
            # queue (same owner name) may have claimed the execution since to run it: giving "our" claim
            # back then would free it for another replica to run alongside.
            if answer is None or answer.outcome not in _SETTLED:
                with contextlib.suppress(StoreUnavailable):
                    # Cut short (an error, or the request's store_timeout cancelling it), it may have
                    # settled all the same: given back only while it still waits.
                    now_state = None if answer is not None else await self.store.approval(did)
                    if now_state is None or now_state.status == AWAITING_APPROVAL:
                        await self.store.release_execution(did, self.owner)

    async def _approve(self, decision: Decision, playbook: Playbook, by: str) -> ApprovalAnswer:
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        alert = await self.store.recorded_alert(decision.alert_key)
        received = ReceivedAlert(alert, self.clock.now()) if alert else None
        if (refused := await self._refused_as_loaded_now(decision, playbook, received, by)) is not None:
            return refused
        req = self._resume_request(decision, playbook, received)
        assert req is not None  # an awaiting execution was admitted by the guardrails: it has a target
        if self.kill_switch is not None:
            with contextlib.suppress(GuardrailUnavailable, StoreUnavailable):  # then admission decides
                await self.kill_switch.paused()
        admitted: Request | None = None
        try:
            if self._plan_only(decision.dry_run, playbook):
                verdict = await self._verdict(self.guardrails.evaluate(req), did)
                kind, reason = verdict.kind, verdict.reason
            else:
                # retried: an approval cut short after its admission (the replica died) left the
                # target locked by this very execution; it is taken over, not waited out
                kind, reason, admitted = await self._admit_request(req, retried=True)
        except _Deferred as deferred:
            return ApprovalAnswer("unavailable", f"not approved yet: {deferred.detail}; retry", AWAITING_APPROVAL)
        if kind is not DecisionKind.EXECUTED:
            return await self._settle(decision, playbook, "refused", "approval_refused", by=by, verdict=kind.value,
                                      reason=reason)
        if not await self.store.settle_approval(did, self.owner, "pending", self.clock.now()):
            # The claim lapsed and someone else answered.  The admission shares this execution's id:
            # if the other answer approved it, the lock is that execution's now, and stays.
            if admitted is not None and not await self.store.unfinished(did):
                with contextlib.suppress(GuardrailUnavailable):
                    await self.guardrails.abandon(admitted)
            return _not_awaiting(did, await self.store.approval(did) or ApprovalState("", None, False),
                                 self.clock.now())
        await self.store.record_event(did, "approved", self.clock.now(), by=by, reason=reason)
        self._log.info("execution approved", execution_id=did, playbook=decision.playbook, by=by)
        self.on_executable()
        return ApprovalAnswer("approved", f"approved: {reason}", "pending")

    async def _refused_as_loaded_now(self, decision: Decision, playbook: Playbook, received: ReceivedAlert | None,
                                     by: str) -> ApprovalAnswer | None:
        """The refusal of an approval that the playbook as loaded now no longer allows, settled (None:
        it still allows it, or the alert is not recorded to tell).  Both approvals ask this, the
        playbook's own and a step's: a reload that took the namespace off the playbook's allowlist
        (or makes it name another target for this alert) is an SRE saying "not there any more", and
        approving used to run the execution (or the rest of it, from the gated step on) all the same.

        Asked before anything is taken from the guardrails, so a refused approval takes no lock
        (back); one it may still hold from before is given up once the refusal is settled
        (:meth:`_unrun`)."""
        if received is None:
            return None
        plan = make_plan(playbook, received.alert, global_dry_run=self.settings.dry_run)
        if isinstance(plan, Plan) and plan.target == decision.target:
            return None
        why = plan.reason if isinstance(plan, Refusal) else f"it now names {plan.target.key} for this alert"
        return await self._settle(decision, playbook, "refused", "approval_refused", by=by,
                                  verdict=DecisionKind.NOT_ALLOWED.value,
                                  reason=f"the playbook as loaded now does not allow this execution: {why}")

    async def _waiting_gate(self, decision: Decision) -> PlannedStep | None:
        """The step an execution awaiting approval stopped before, or None when it awaits the playbook's
        own approval (it never ran): the step whose gate is recorded and that has not begun.  (A gated
        step begins only once approved; an approval cut short after recording the gate's result is
        found again, and answered again.)"""
        done = await self.store.step_results(decision.execution_id or "")
        return next((s for s in decision.steps if s.approval is not None and (APPROVAL_PHASE, s.index) in done
                     and (s.phase, s.index) not in done), None)

    async def _approve_step(self, decision: Decision, playbook: Playbook, step: PlannedStep,
                            by: str) -> ApprovalAnswer:
        """Approve the step an admitted execution stopped before.  Its limits were counted when it was
        admitted, so nothing is admitted again; what is checked is that the playbook as loaded now
        still allows it (:meth:`_refused_as_loaded_now`), and the target: the execution takes
        its lock back, which it can only while no other execution has held the target since it
        stopped (whatever that one did came after this plan).  Else the approval is refused with
        the reason and the execution ends ``refused``, unrun from this step on.  Its concurrency
        slot went with the wait: while the executions running now fill the limits, the approval
        is not taken (``conflict``) and it keeps waiting, rather than run one too many or end half run."""
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        alert = await self.store.recorded_alert(decision.alert_key)
        received = ReceivedAlert(alert, self.clock.now()) if alert else None
        if (refused := await self._refused_as_loaded_now(decision, playbook, received, by)) is not None:
            return refused
        req: Request | None = None
        if not self._plan_only(decision.dry_run, playbook):  # else it holds no lock
            req = self._resume_request(decision, playbook, received)
            assert req is not None  # an admitted execution has a target
            try:
                held = await self.guardrails.take_back(req)
            except GuardrailUnavailable as exc:
                self.metrics.guardrail_unavailable.inc()
                return ApprovalAnswer("unavailable", f"not approved yet: guardrail state unreachable ({exc}); retry",
                                      AWAITING_APPROVAL)
            if held.check is Check.LOCKED:
                reason = (f"another execution has acted on {req.target_key} since this one stopped for approval: the "
                          f"target may have changed since it was planned, so {_describe_step(step)} is not run")
                return await self._settle(decision, playbook, "refused", "approval_refused", by=by,
                                          verdict="superseded", reason=reason)
            if held.check is not Check.PASSED:
                # Its slot went with the wait, and the executions running now fill the concurrency limits:
                # running it would break them.  Ending it would leave it half run; it keeps waiting instead.
                where = f" in namespace {req.namespace}" if held.check is Check.RUNNING_NS else ""
                return ApprovalAnswer("conflict", f"not approved yet: {held.count} executions already running{where}, "
                                      "as many as the guardrails allow; it still waits: approve again once one has "
                                      "finished", AWAITING_APPROVAL)
        now = self.clock.now()
        await self.store.record_step(did, gate_step(step), StepResult("ok", f"approved by {by}"),
                                     started=now, finished=now)
        if not await self.store.settle_approval(did, self.owner, "pending", now):
            # The claim lapsed and someone else answered.  Approved: the same record, and the lock
            # is that answer's execution's too.  Denied or ended: the gate's "ok" just written is
            # not what happened (the gate is closed again), and the lock just taken back is given
            # up, not left to block the target until its TTL.
            state = await self.store.approval(did) or ApprovalState("", None, False)
            if not await self.store.unfinished(did):
                await self._close_gate(decision, state.status, {})
                if req is not None:
                    with contextlib.suppress(GuardrailUnavailable):
                        await self.guardrails.abandon(req)
            return _not_awaiting(did, state, now)
        await self.store.record_event(did, "approved", now, by=by, before=_describe_step(step))
        self._log.info("step approved", execution_id=did, playbook=decision.playbook, by=by, action=step.action,
                       index=step.index)
        self.on_executable()
        return ApprovalAnswer("approved", f"approved: {_describe_step(step)} runs next", "pending")

    async def _settle(
        self, decision: Decision, playbook: Playbook | None, status: str, event: str, *, by: str, **detail: str
    ) -> ApprovalAnswer:
        """Finish an awaiting execution unrun (denied, refused) under this replica's claim: recorded,
        counted and notified."""
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        at = self.clock.now()
        if not await self.store.settle_approval(did, self.owner, status, at):
            return _not_awaiting(did, await self.store.approval(did) or ApprovalState("", None, False), at)
        await self._unrun(decision, playbook, status, event, by=by, **detail)
        outcome: Literal["denied", "refused"] = "denied" if status == "denied" else "refused"
        return ApprovalAnswer(outcome, detail.get("reason", f"denied by {by}"), status, detail.get("verdict", ""))

    async def _unrun(
        self, decision: Decision, playbook: Playbook | None, status: str, event: str | None, **detail: str
    ) -> None:
        """What follows an execution that ended without running: its audit, metrics, log and notice
        (``event``; None: none); and the target's lock and slot given up.

        A waiting execution normally holds neither (a stop at a step's gate released them; the
        playbook's own wait never took them), but it may: an approval cut short after taking them
        back (or after its admission), or a stop whose release the guardrail state did not answer.
        Nothing will run under it any more, whichever way it ended (denied, refused, expired, its
        alert resolved), so they are given up now rather than left to block the target until the
        lock's TTL.  ``abandon`` frees only what this execution holds, so it changes nothing when
        it holds none.  Called once the end is settled under this replica's claim: an answer that
        approved meanwhile would be running under the same id, and the lock would be its."""
        did = decision.execution_id or ""
        if not self._plan_only(decision.dry_run, playbook) \
                and (req := self._resume_request(decision, playbook, None)) is not None:
            with contextlib.suppress(GuardrailUnavailable):  # then it lapses by its TTL
                await self.guardrails.abandon(req)
        await self.store.record_event(did, status, self.clock.now(), **detail)
        await self._close_gate(decision, status, detail)
        self.events.execution_finished(did, status)
        self.metrics.executions.labels(decision.playbook, status).inc()
        self._log.info("execution ended unrun", execution_id=did, playbook=decision.playbook, result=status, **detail)
        if event is None:
            return
        alert = await self.store.recorded_alert(decision.alert_key)
        message = detail.get("reason") or (f"by {detail['by']}" if "by" in detail else "")
        await self._notify(event, decision, playbook.notify if playbook else (),
                           **({"alert": alert} if alert else {}), message=message)

    async def _close_gate(self, decision: Decision, status: str, detail: Mapping[str, str]) -> None:
        """The step gate an execution stopped at, when it ends there unrun (denied, refused, expired,
        its alert resolved): its record says so, rather than awaiting an approval for ever (or
        reading ``ok`` when an approval came too late, its claim lapsed, and another answer ended
        it).  Not ``ok``: a gate whose record is ok counts as approved (:meth:`_approved_gate`)."""
        if not any(s.approval for s in decision.steps):
            return
        did = decision.execution_id or ""
        done = await self.store.step_results(did)
        why = detail.get("reason") or (f"by {detail['by']}" if "by" in detail else "")
        for step in decision.steps:
            gate = done.get((APPROVAL_PHASE, step.index))
            if step.approval is not None and gate is not None and gate.status != "failed" \
                    and (step.phase, step.index) not in done:  # the gated step never began
                now = self.clock.now()
                result = StepResult("failed", f"{gate.message}; not approved: {status}{f' ({why})' if why else ''}")
                await self.store.record_step(did, gate_step(step), result, started=now, finished=now)

    async def _cancel_awaiting(self, firing: Alert, playbooks: Sequence[Playbook]) -> None:
        """The alert resolved while an execution for it awaited approval: there is nothing left to
        approve.  It ends ``resolved_cancelled``, as one that resolved while it waited to run does
        (and does, should an answer being given right now approve it: see ``_execute_held``).
        ``firing``: the resolved alert as it fired; ``playbooks``: those that select it."""
        for playbook in playbooks:
            if not playbook.asks_approval:
                continue
            did = execution_id(firing.dedup_key, playbook.name)
            state = await self.store.approval(did)
            if state is None or state.status != AWAITING_APPROVAL:
                continue
            decision = await self.store.decision(did)
            if decision is None or not await self.store.claim_approval(did, self.owner, self.settings.execution_lease):
                continue
            try:
                if await self.store.settle_approval(did, self.owner, "resolved_cancelled", self.clock.now()):
                    await self._unrun(decision, playbook, "resolved_cancelled", None,
                                      reason="the alert resolved before anyone approved it")
            finally:
                with contextlib.suppress(StoreUnavailable):
                    await self.store.release_execution(did, self.owner)

    async def expire_approvals(self) -> int:
        """Expire the executions whose approval deadline passed (the execution queue's sweep, on
        the pipeline's clock): each is finished ``expired``, recorded and notified by exactly one
        replica.  Returns how many."""
        now = self.clock.now()
        expired = await self.store.expire_approvals(now)
        for did in expired:
            decision = await self.store.decision(did)
            if decision is not None:
                await self._unrun(decision, self._playbooks().by_name(decision.playbook), "expired",
                                  "approval_expired", reason="nobody approved it before its deadline")
        return len(expired)
