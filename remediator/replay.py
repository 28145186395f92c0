"""Replay: what would these playbooks have done to this alert history?

History runs through the daemon's own :class:`~remediator.pipeline.Pipeline` and
:class:`~remediator.worker.Worker`, on a :class:`~remediator.clock.VirtualClock`
driven by the history, with a scratch in-memory store (:mod:`remediator.store.memory`,
which forgets each alert once it is over), fresh in-memory guardrail state and a dry-run
executor.  Rate limits, cooldowns, stabilisation windows, resolves and the kill switch
therefore decide exactly as they did (or would have) live; only the adapters differ.

Input: JSON Lines, one event per line (blank lines are skipped):

* an Alertmanager v4 webhook payload exactly as received;
* the same wrapped as ``{"received_at": RFC3339, "payload": {...}}`` (the daemon's
  export has this shape; other keys of the wrapper are ignored);
* a kill-switch control line ``{"at": RFC3339, "control": "pause"}`` or
  ``{"at": RFC3339, "control": "resume"}`` (as ``POST /api/v1/pause|resume``).

An event's time is its ``received_at`` (or ``at``); for a bare payload it is the
latest alert time inside it (a firing alert's ``startsAt``, a resolved alert's
``endsAt``), because Alertmanager cannot have sent a notification before its newest
alert, while a group notification re-sends alerts that started hours earlier.

Ordering: events are applied in time order.  Input that is slightly out of order
(exports interleaved from several replicas, clock skew) is sorted within a sliding
window (``reorder_window``, default 5 minutes), so memory stays bounded by the
events of one window; a line further back in time than that is rejected with
``path:line`` rather than silently decided at the wrong time.  Events with equal
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
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

import msgspec

from remediator.clock import SystemClock, VirtualClock
from remediator.core.alerts import (
    Alert,
    WebhookPayload,
    format_time,
    parse_time,
    refuse_bad_unicode,
    validate_payload,
)
from remediator.core.decisions import Decision, DecisionKind, PlannedStep
from remediator.core.errors import ConfigError, PayloadError
from remediator.core.frozen import fast_frozen
from remediator.core.payload_codec import PayloadDecoder
from remediator.core.playbooks import PlaybookSet
from remediator.executors.checks import WithChecks, open_checks
from remediator.executors.plan_only import PlanOnlyExecutor
from remediator.guardstate.memory import MemoryGuardrails
from remediator.pipeline import Pipeline, PipelineSettings
from remediator.ports import Executor, IntakeQueue, ReceivedAlert, StepResult
from remediator.runtime import guard_policy
from remediator.settings import Settings
from remediator.store.memory import MemoryStore
from remediator.worker import Worker

Control = Literal["pause", "resume"]
#: How replay answers playbooks' approval requests: nobody is there to ask.  "none" (the default)
#: approves nothing: such a decision is ``awaiting_approval`` and nothing runs, as live when no one
#: answers; "all" approves every one at once (the guardrails admitting it as at any decision).
Approve = Literal["all", "none"]
Entry = dict[str, Any]
DEFAULT_REORDER_WINDOW = 300.0


class ReplayInputError(Exception):
    """An input line that cannot be replayed; printed as ``path:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@fast_frozen
@dataclass(frozen=True)
class Event:
    at: datetime
    line: int
    alerts: tuple[ReceivedAlert, ...] = ()
    control: Control | None = None


# -- input ---------------------------------------------------------------------------


def _event_time(alerts: tuple[Alert, ...]) -> datetime | None:
    """When a bare payload was sent: no earlier than its newest alert start or end."""
    return max((a.ends_at if a.status == "resolved" and a.ends_at else a.starts_at for a in alerts), default=None)


def parse_event(obj: Any, line: int) -> Event | None:
    """One decoded input line as an event (None for a bare payload with no alerts).

    Raises PayloadError with the reason; the caller adds ``path:line``.
    """
    if not isinstance(obj, dict):
        raise PayloadError("expected a JSON object (a webhook payload, a wrapped payload or a control line)")
    if "control" in obj:
        control = obj["control"]
        if control not in ("pause", "resume"):
            raise PayloadError(f"control must be 'pause' or 'resume', not {control!r}")
        if not isinstance(obj.get("at"), str):
            raise PayloadError('a control line needs "at": an RFC 3339 time')
        return Event(parse_time(obj["at"]), line, control=control)
    body, stamp = (obj["payload"], obj.get("received_at")) if "payload" in obj else (obj, None)
    if stamp is not None and not isinstance(stamp, str):
        raise PayloadError("received_at must be an RFC 3339 string")
    refuse_bad_unicode(body)  # as the webhook does: the rest of the line (ignored keys) may hold anything
    return _payload_event(validate_payload(body), stamp, line)


def _payload_event(payload: WebhookPayload, stamp: str | None, line: int) -> Event | None:
    at = parse_time(stamp) if stamp is not None else _event_time(payload.alerts)
    if at is None:
        return None
    received = (ReceivedAlert(a, at, payload.receiver, payload.group_key, payload.external_url) for a in payload.alerts)
    return Event(at, line, tuple(received))


class _Line(msgspec.Struct):
    """What tells an input line's kind (an absent key is an empty Raw); the rest is skipped."""

    payload: msgspec.Raw = msgspec.Raw()
    control: msgspec.Raw = msgspec.Raw()
    received_at: Any = None


class _FastLines:
    """The compiled path for a payload line (the webhook's own decoder, :mod:`remediator.core.payload_codec`),
    some 20 times cheaper than ``json`` + jsonschema, which cost a fifth of a long replay.

    As on the webhook, it only ever accepts: a line it does not take (a control line, anything
    invalid, escapes of surrogates or huge numbers, which ``json`` reads differently) goes to
    :func:`parse_event`, which decides and explains it as it always did."""

    _SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
    _HUGE_NUMBER = re.compile(rb"[0-9]{4300}")

    def __init__(self) -> None:
        self._lines = msgspec.json.Decoder(_Line)
        self._payloads = PayloadDecoder()

    def decode(self, raw: bytes, line: int) -> Event | Literal[False] | None:
        """The line's event (None: a bare payload with no alerts), or False: not decided here."""
        # Each searched only where it could be: one regex over every line was a sixth of decoding it
        if (b"\\u" in raw and self._SURROGATE.search(raw)) or (len(raw) >= 4300 and self._HUGE_NUMBER.search(raw)):
            return False
        try:
            head = self._lines.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False
        if len(head.control) or not (head.received_at is None or isinstance(head.received_at, str)):
            return False
        body = bytes(head.payload) if len(head.payload) else raw
        payload = self._payloads.decode(body)
        if payload is None:
            return False
        return _payload_event(payload, head.received_at if len(head.payload) else None, line)


def _decode(raw: bytes, path: str, line: int, fast: _FastLines | None = None) -> Event | None:
    try:
        event = fast.decode(raw, line) if fast is not None else False
        if event is not False:
            return event
        return parse_event(json.loads(raw.rstrip(b"\r\n")), line)
    except UnicodeDecodeError as exc:
        raise ReplayInputError(path, line, f"not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ReplayInputError(path, line, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ReplayInputError(path, line, "JSON nested too deeply") from None
    except PayloadError as exc:
        raise ReplayInputError(path, line, str(exc)) from None


def read_events(
    stream: BinaryIO, path: str, *, reorder_window: float = DEFAULT_REORDER_WINDOW
) -> Iterator[Event]:
    """Stream events in time order, sorting within ``reorder_window`` seconds."""
    window = timedelta(seconds=reorder_window)
    heap: list[tuple[datetime, int, Event]] = []
    released: datetime | None = None
    newest: datetime | None = None
    horizon = datetime.min.replace(tzinfo=UTC)  # newest - window: events up to it are released
    fast = _FastLines()
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        event = _decode(raw, path, number, fast)
        if event is None:
            continue
        if released is not None and event.at < released:
            raise ReplayInputError(
                path,
                number,
                f"event at {format_time(event.at)} is earlier than {format_time(released)}, already replayed: "
                f"the input may be out of order by at most {reorder_window:.0f}s (sort it, or widen the window)",
            )
        heapq.heappush(heap, (event.at, number, event))
        if newest is None or event.at > newest:
            newest, horizon = event.at, event.at - window
        while heap and heap[0][0] <= horizon:
            released, _, ready = heapq.heappop(heap)
            yield ready
    while heap:
        yield heapq.heappop(heap)[2]


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


# -- the engine ----------------------------------------------------------------------


class Engine:
    """One replay: feed it events in time order, then ``finish``."""

    def __init__(
        self, clock: VirtualClock, intake: IntakeQueue, guard: MemoryGuardrails, worker: Worker, tap: _Tap
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
            guard = MemoryGuardrails(guard_policy(settings), clock)
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
            self.clock.set(datetime.fromtimestamp(when, UTC))
            await self.worker.drain()

    async def feed(self, event: Event) -> None:
        await self._run_due(event.at)
        self.clock.set(event.at)
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
