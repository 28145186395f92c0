"""Replay: what would these playbooks have done to this alert history?

History runs through the daemon's own :class:`~remediator.pipeline.Pipeline` and
:class:`~remediator.worker.Worker`, on a :class:`~remediator.clock.VirtualClock`
driven by the history, with a scratch in-memory store (:mod:`remediator.store.memory`,
which forgets each alert once it is over), fresh in-memory guardrail state and a dry-run
executor.  Rate limits, cooldowns, stabilisation windows, resolves and the kill switch
therefore decide exactly as they did (or would have) live; only the adapters differ.
Steps take no virtual time, but an execution holds its target's lock and running slot until
the clock moves on (:class:`_HeldWhileTimeStands`), as steps that take some time would.

Input: JSON Lines, one event per line (blank lines are skipped):

* an Alertmanager v4 webhook payload exactly as received;
* the same wrapped as ``{"received_at": RFC3339, "payload": {...}}`` (the daemon's
  export has this shape; other keys of the wrapper are ignored);
* a kill-switch control line ``{"at": RFC3339, "control": "pause"}`` or
  ``{"at": RFC3339, "control": "resume"}`` (as ``POST /api/v1/pause|resume``).

A delivery is taken as the webhook takes it: an alert it would refuse alone (its
delivery's others taken) is told as a warning, ``path:line: reason``, and the replay
goes on; a line refused whole is an error, as it is a 400 live.

An event's time is its ``received_at`` (or ``at``); for a bare payload it is the
latest alert time inside it (a firing alert's ``startsAt``, a resolved alert's
``endsAt``), because Alertmanager cannot have sent a notification before its newest
alert, while a group notification re-sends alerts that started hours earlier.

Ordering: events are applied in time order.  Input that is slightly out of order
(exports interleaved from several replicas, clock skew) is sorted within a sliding
window (``reorder_window``, default 5 minutes), so memory stays bounded by the
events of one window; a line with an exact time (``received_at``, ``at``) further back
than that is rejected with ``path:line`` rather than silently decided at the wrong time.
A bare payload's time is only the earliest it can have been sent (Alertmanager re-sends
a still-firing group at every ``repeat_interval``, its newest alert hours old), so one
further back is replayed at the time already reached instead.  Events with equal
times keep their input order.

Approvals: a playbook with ``approval:`` asks a human, and replay has none to ask; ``approve``
(``--approve all|none``, default ``none``) simulates the answer.  Replay never assumes a yes
it was not told to: by default such decisions are ``awaiting_approval`` and run nothing.

At one instant, deferred alerts that come due are processed before new events,
and at the end of the input the clock advances to every remaining due time so
that no alert is left undecided.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from remediator.clock import SystemClock, VirtualClock
from remediator.core.alerts import format_time
from remediator.core.decisions import Decision, DecisionKind, PlannedStep
from remediator.core.errors import ConfigError
from remediator.core.guardrails import BreakerView, Finding, GuardStatus, Request, Verdict
from remediator.core.playbooks import PlaybookSet
from remediator.executors.checks import WithChecks, open_checks
from remediator.executors.plan_only import PlanOnlyExecutor
from remediator.guardstate.memory import MemoryGuardrails
from remediator.pipeline import Pipeline, PipelineSettings
from remediator.ports import AWAITING_APPROVAL, Executor, IntakeQueue, ReceivedAlert, StepResult
from remediator.replay_input import (
    DEFAULT_REORDER_WINDOW,
    Control,
    Event,
    ReplayInputError,
    parse_event,
    read_events,
)
from remediator.runtime import guard_policy
from remediator.settings import Settings
from remediator.store.memory import MemoryStore
from remediator.worker import Worker

# The input is read by remediator.replay_input; its names are also this module's (the CLI, the UI
# and the tests take events from here).
__all__ = [
    "DEFAULT_REORDER_WINDOW", "Approve", "Control", "Engine", "Entry", "Event", "Listener", "ReplayInputError",
    "Tally", "entry_for", "load_playbooks", "parse_event", "read_events", "replay",
]

#: How replay answers playbooks' approval requests: nobody is there to ask.  "none" (the default)
#: approves nothing: such a decision is ``awaiting_approval`` and nothing runs, as live when no one
#: answers; "all" approves every one at once (the guardrails admitting it as at any decision).
Approve = Literal["all", "none"]
Entry = dict[str, Any]


# -- observing the pipeline ----------------------------------------------------------


class Listener(Protocol):
    def decision(self, entry: Entry) -> None:
        """One (alert, playbook) decision, in the order the pipeline made them."""

    def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
        """Every decision about one alert delivery is made (none is pending any more)."""


@runtime_checkable
class Tally(Protocol):
    """A listener that only counts (``--summary``): it is given each decision as it is, in the
    order a :class:`Listener` is given entries, and no entry is built for it (building one per
    decision was a tenth of a long replay's CPU)."""

    def tally(self, decision: Decision) -> None:
        """One (alert, playbook) decision, in the order the pipeline made them."""


def _steps(steps: tuple[PlannedStep, ...]) -> list[dict[str, Any]]:
    return [{"action": s.action, "params": s.params} for s in steps]


def entry_for(decision: Decision, alert: ReceivedAlert | None) -> Entry:
    """The replay output's view of a decision (the public ``decisions[]`` item)."""
    return {
        "fingerprint": decision.fingerprint,
        "alert": decision.alert_key,
        "alertname": alert.alert.alertname if alert else "",
        "status": alert.alert.status if alert else "",
        "playbook": decision.playbook or None,
        "at": format_time(decision.at),
        "decision": decision.kind.value,
        "reason": decision.reason,
        "target": decision.target.to_json() if decision.target else None,
        "steps": _steps(decision.steps),
        "on_failure": _steps(decision.on_failure),
        "dry_run": decision.dry_run,
    }


class _Tap:
    """What replay sees of the pipeline's work (its :class:`~remediator.ports.PipelineEvents`):
    decisions, step results, completed alerts, and when deferred alerts come due."""

    def __init__(self, listener: Listener | Tally, *, results: bool) -> None:
        self.tally = listener.tally if isinstance(listener, Tally) else None
        self.listener = None if isinstance(listener, Tally) else listener
        self.results = results
        self.due: list[float] = []  # a heap of the times deferred alerts are decided again
        # Executions under way: told when they finish (with their results, with --kube)
        self._running: dict[str, tuple[Decision, ReceivedAlert]] = {}
        self._steps: dict[str, list[dict[str, Any]]] = {}
        self._by_alert: dict[str, list[Entry]] = {}

    def _emit(self, decision: Decision, received: ReceivedAlert, execution: str | None = None) -> None:
        if self.tally is not None:
            self.tally(decision)
            return
        assert self.listener is not None
        entry = entry_for(decision, received)
        if execution is not None and self.results:
            steps = self._steps.pop(decision.execution_id or "", None)
            if steps is not None:
                entry["results"] = steps
            entry["execution"] = execution
        elif execution == AWAITING_APPROVAL:  # stopped before a step with approval: (--approve none)
            entry["execution"] = execution
        self._by_alert.setdefault(entry["alert"], []).append(entry)
        self.listener.decision(entry)

    def decision_recorded(self, decision: Decision, received: ReceivedAlert) -> None:
        if decision.kind is DecisionKind.EXECUTED:
            self._running[decision.execution_id or ""] = (decision, received)  # told when it finishes
        else:
            self._emit(decision, received)

    def step_finished(self, execution: str, step: PlannedStep, result: StepResult) -> None:
        if self.results and self.tally is None and execution in self._running:
            self._steps.setdefault(execution, []).append(
                {"phase": step.phase, "action": step.action, "status": result.status, "message": result.message}
            )

    def execution_finished(self, execution: str, status: str) -> None:
        running = self._running.pop(execution, None)
        if running is not None:
            self._emit(*running, execution=status)

    def _unfinished(self) -> None:
        if not self._running:  # the usual case: every execution finished inside its decision
            return
        for execution in list(self._running):  # an execution that returned without finishing still counts
            self.execution_finished(execution, "unfinished")

    def alert_processed(self, received: ReceivedAlert, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            if d.kind is DecisionKind.NO_MATCH:  # never recorded, so only seen here
                self._emit(d, received)
        self._unfinished()
        if self.listener is not None:
            key = received.alert.dedup_key
            self.listener.alert_done(key, self._by_alert.pop(key, []))

    def alert_deferred(self, received: ReceivedAlert, until: datetime) -> None:
        self._unfinished()
        heapq.heappush(self.due, until.timestamp())


class _Quiet:
    """Replay notifies nobody: the history already happened."""

    async def notify(self, event: str, decision: Decision, detail: Any) -> None:
        return None


# -- executions take time ------------------------------------------------------------


class _HeldWhileTimeStands:
    """Replay's guardrail state: what an execution holds (its target's lock, a running slot) is
    freed when the virtual clock moves on, not the moment its steps were planned.

    Why: live, an execution holds both from its admission to its last step, and steps take
    time, so the alerts of one notification (decided together, before any of them ran) see
    each other's lock and slots: two alerts for one target are ``executed, locked`` and
    ``max_running`` binds a storm.  Replay plans an execution as its alert is decided, and
    freeing there and then made them ``executed, executed``, over any ``max_running``.  How
    long steps would have taken replay cannot know; that they take longer than no time at all
    it can.  The release itself (cooldown, breaker) is made at the instant it was asked, just
    before the clock leaves it (:meth:`Engine.feed`).
    """

    def __init__(self, inner: MemoryGuardrails) -> None:
        self.inner = inner
        self._ending: list[tuple[Request, bool | None]] = []

    async def end_instant(self) -> None:
        """Free what the executions of the instant now ending hold, in the order they ended."""
        while self._ending:
            ending, self._ending = self._ending, []
            for req, succeeded in ending:
                await self.inner.release(req, succeeded=succeeded)

    async def release(self, req: Request, *, succeeded: bool | None) -> None:
        self._ending.append((req, succeeded))

    async def admit(self, req: Request) -> Verdict:
        return await self.inner.admit(req)

    async def evaluate(self, req: Request) -> Verdict:
        return await self.inner.evaluate(req)

    async def renew(self, req: Request) -> bool:
        return await self.inner.renew(req)

    async def reacquire(self, req: Request) -> bool:
        return await self.inner.reacquire(req)

    async def take_back(self, req: Request) -> Finding:
        return await self.inner.take_back(req)

    async def abandon(self, req: Request) -> None:
        await self.inner.abandon(req)

    async def go_on_as_trial(self, req: Request) -> bool:
        return await self.inner.go_on_as_trial(req)

    async def status(self) -> GuardStatus:
        return await self.inner.status()

    async def breaker(self, playbook: str) -> BreakerView:
        return await self.inner.breaker(playbook)

    async def paused(self) -> bool:
        return await self.inner.paused()

    async def set_paused(self, paused: bool) -> None:
        await self.inner.set_paused(paused)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.end_instant()
        await self.inner.close()


# -- the engine ----------------------------------------------------------------------


class Engine:
    """One replay: feed it events in time order, then ``finish``."""

    def __init__(
        self, clock: VirtualClock, intake: IntakeQueue, guard: _HeldWhileTimeStands, worker: Worker, tap: _Tap
    ) -> None:
        self.clock = clock
        self.intake = intake  # where the history goes in, as webhooks would put it
        self.tap = tap
        self.guard = guard
        self.worker = worker
        self.alerts = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        playbooks: PlaybookSet,
        settings: Settings,
        listener: Listener | Tally,
        *,
        start: datetime,
        kube: bool = False,
        approve: Approve = "none",
    ) -> AsyncIterator[Engine]:
        clock = VirtualClock(start)
        tap = _Tap(listener, results=kube)
        async with contextlib.AsyncExitStack() as stack:
            store = MemoryStore(clock, streaming=True)  # forgets each alert once it is over
            stack.push_async_callback(store.close)
            guard = _HeldWhileTimeStands(MemoryGuardrails(guard_policy(settings), clock))
            if settings.guardrails.paused:
                await guard.set_paused(True)
            dry: Executor = PlanOnlyExecutor()
            if kube:  # server-side dry-run; verification steps are planned (WithChecks in dry-run sends nothing)
                checks = await stack.enter_async_context(open_checks(settings.prometheus, store))
                dry = WithChecks(await _dry_executor(settings, stack), checks)
            pipeline = Pipeline(
                playbooks=lambda: playbooks,
                store=store,
                guardrails=guard,
                live=dry,  # never live: a playbook's `dry_run: false` still only plans
                dry=dry,
                notifier=_Quiet(),
                clock=clock,
                settings=PipelineSettings(dry_run=True, step_timeout=settings.worker.step_timeout,
                                          dry_run_consumes_guardrails=True, approvals=approve),
                events=tap,
                dry_local=not kube,  # no cluster to ask: each execution is planned as its alert is decided
            )
            worker = Worker(pipeline, settings.worker, name="replay", inline=True, intake=store)
            yield cls(clock, store, guard, worker, tap)

    async def _run_due(self, until: datetime | None) -> None:
        due = self.tap.due
        if not due:  # the usual case: no deferred alert waits
            return
        limit = until.timestamp() if until is not None else float("inf")
        while due and due[0] <= limit:
            when = heapq.heappop(due)
            await self._move_to(datetime.fromtimestamp(when, UTC))
            await self.worker.drain()

    async def _move_to(self, at: datetime) -> None:
        if at > self.clock.now():
            await self.guard.end_instant()  # see _HeldWhileTimeStands
        self.clock.set(at)

    async def feed(self, event: Event) -> None:
        await self._run_due(event.at)
        await self._move_to(event.at)
        if event.control is not None:
            await self.guard.set_paused(event.control == "pause")
        else:
            self.alerts += len(event.alerts)
            await self.intake.record_alerts(event.alerts)
        await self.worker.drain()

    async def finish(self) -> None:
        """Advance through every remaining stabilisation window so nothing is left undecided."""
        await self._run_due(None)


async def _dry_executor(settings: Settings, stack: contextlib.AsyncExitStack) -> Executor:
    """Server-side dry-run against the configured cluster (``--kube``).

    Its retries wait on the real clock: the virtual one only moves between events.
    """
    from dataclasses import replace

    from remediator.executors.kube import open_kube_executors

    k = settings.kubernetes
    kube_settings = replace(settings, kubernetes=replace(k, mode="auto" if k.mode == "none" else k.mode))
    _live, dry = await stack.enter_async_context(open_kube_executors(kube_settings, SystemClock()))
    return dry


async def replay(
    events: Iterator[Event],
    playbook_sets: list[PlaybookSet],
    settings: Settings,
    listeners: Sequence[Listener | Tally],
    *,
    kube: bool = False,
    on_event: Callable[[Event], None] | None = None,
    approve: Approve = "none",
) -> int:
    """Run the same events through one engine per playbook set, in lockstep; return the alert count.

    Lockstep (rather than one run after the other) lets ``--compare`` pair up the two
    sides' decisions as they complete, holding only the alerts still pending in one.
    """
    first = next(events, None)
    if first is None:
        return 0
    async with contextlib.AsyncExitStack() as stack:
        engines = [
            await stack.enter_async_context(Engine.open(p, settings, lst, start=first.at, kube=kube,
                                                        approve=approve))
            for p, lst in zip(playbook_sets, listeners, strict=True)
        ]
        pending: Event | None = first
        while pending is not None:
            for engine in engines:
                await engine.feed(pending)
            if on_event is not None:
                on_event(pending)
            pending = next(events, None)
        for engine in engines:
            await engine.finish()
        return engines[0].alerts


def load_playbooks(path: str) -> PlaybookSet:
    """A playbook set for replay; any problem is a ConfigError listing every ``path:line``."""
    from remediator.playbook_files import load_paths

    if not Path(path).exists():
        raise ConfigError(f"{path}:1: no such file or directory")
    pset, problems = load_paths([path])
    if problems:
        raise ConfigError("\n".join(str(p) for p in problems))
    return pset
