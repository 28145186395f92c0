"""The Notifier that delivers: one bounded queue and one delivery task per channel.

``notify`` only renders and enqueues, so a remediation never waits on a receiver.
Each channel has its own queue so a dead Slack does not hold up PagerDuty, and
delivers in order so an incident's trigger never overtakes its resolve.  When a queue
is full the least important notice is dropped (counted, and logged once per burst), see
:class:`_Backlog` and :meth:`Dispatcher._dropped`.  Failures are logged with the execution id, counted, and the most
recent ones kept for inspection.  Outcomes reach the execution's audit through one
bounded queue and one writer task, see :meth:`Dispatcher._write_outcomes`.  At shutdown
every notice still queued or in flight gets one last attempt, and what the drain leaves
is counted, logged and recorded as ``lost``, see :meth:`Dispatcher.close`.  A PagerDuty
page delivered after its alert resolved is followed by the resolve, see
:meth:`Dispatcher._after_page`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter

from remediator.clock import within
from remediator.core.decisions import Decision
from remediator.notify.channels import Channel, Outgoing, channels_from_settings
from remediator.notify.delivery import FAILURE_BUDGET, DeliveryFailed, deliver
from remediator.notify.events import MESSAGE, Notice, build_notice
from remediator.notify.pagerduty import event_action, notice_dedup_key
from remediator.ports import Clock
from remediator.settings import Settings

#: Where a notification's final outcome goes (the execution's audit), besides logs and metrics.
OutcomeSink = Callable[[str, Mapping[str, Any]], Awaitable[None]]

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_DRAIN_TIMEOUT = 5.0
DEFAULT_OUTCOME_QUEUE_SIZE = 1000
#: The share of the shutdown drain kept for writing the audit records of the notices it
#: leaves undelivered: those can only be written once the deliveries have been stopped.
AUDIT_SHARE = 0.2
LOST = "not delivered before shutdown"
#: While a channel's queue keeps dropping, a line with the count at most this often (clock seconds).
DROP_LOG_INTERVAL = 60.0
#: The key of a notice's detail that asks whether its alert resolved while a page was being sent:
#: an async callable answering a bool (the pipeline's, see :meth:`Dispatcher._after_page`).
RESOLVED_MEANWHILE = "resolved_meanwhile"
#: How long that question may take (clock seconds): the channel's queue waits for the answer.
RESOLVED_CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class FailedDelivery:
    channel: str
    event: str
    execution_id: str
    notice_id: str
    error: str
    attempts: int
    at: datetime


#: How much a queued notice matters when its channel's queue is full (see _Backlog).
SUPERSEDED = -1  # a newer notice about the same incident or execution is queued behind it
ROUTINE = 0  # started, succeeded, resolved, skipped...; PagerDuty: resolve
NOTE = 1  # a playbook's own ``notify`` message
URGENT = 2  # a human must act: failed, approval_requested; PagerDuty: every trigger (a page)
#: Events after which a human must act, on channels other than PagerDuty.
URGENT_EVENTS = frozenset({"failed", "approval_requested"})


def importance(channel: Channel, notice: Notice) -> tuple[int, str]:
    """(rank, subject) of ``notice`` on ``channel``.

    PagerDuty ranks by what the event does: a trigger pages someone, an acknowledge or a
    resolve of an incident nobody was paged for does nothing, so in a storm of healthy
    remediations those must go before a failed one's trigger.  Its subject is the
    incident (``dedup_key``, one per execution), whose state is whatever its last event says.  On the other
    channels the subject is the execution, whose last notice is its newest state; a
    playbook's message is content, not state, so it has no subject.
    """
    d = notice.decision
    if channel.type == "pagerduty":
        action = event_action(notice.event, dry_run=notice.dry_run, on_started=channel.on_started)
        return (URGENT if action == "trigger" else ROUTINE), notice_dedup_key(notice)
    if notice.event == MESSAGE:
        return NOTE, ""
    return (URGENT if notice.event in URGENT_EVENTS else ROUTINE), d.execution_id or ""


@dataclass(frozen=True)
class _AfterPage:
    """A PagerDuty trigger's resolve, sent once the trigger is delivered if ``check()`` says the
    alert resolved meanwhile and no newer notice of the incident (``subject``) is queued."""

    check: Callable[[], Awaitable[bool]]
    resolve: Outgoing
    subject: str


@dataclass(eq=False)
class _Queued:
    """A notice in its channel's queue; ``rank`` drops to SUPERSEDED once a newer one of its subject follows."""

    out: Outgoing
    rank: int
    subject: str
    since: float  # clock.monotonic() when queued: a throttled receiver gets a budget from then
    after: _AfterPage | None = None
    seq: int = 0  # arrival order, set when queued


class _Backlog:
    """One channel's queued notices: taken in arrival order, dropped least important first.

    When the queue is full, the notice to drop is the one that matters least: first one a
    newer queued notice of the same subject supersedes (the newest state of an execution
    or an incident matters more than its history: a resolve queued after a trigger of the
    same incident must not be the one dropped, or the incident stays open), then routine
    notices, then playbook messages, and a page or a request for a human last.  Among
    equals the oldest goes.  Every operation is O(1): a storm must not make ``notify``
    slower as the queue fills.
    """

    def __init__(self) -> None:
        self._order: OrderedDict[int, _Queued] = OrderedDict()  # seq -> notice, arrival order
        self._ranks: dict[int, OrderedDict[int, _Queued]] = {}  # rank -> seq -> notice, oldest first
        self._newest: dict[str, _Queued] = {}  # subject -> its newest queued notice
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[_Queued]:
        return iter(self._order.values())

    def supersede(self, item: _Queued) -> None:
        """``item`` is about to be queued: the older notice of its subject is history now."""
        older = self._newest.get(item.subject) if item.subject else None
        if older is not None and older.rank != SUPERSEDED:
            del self._ranks[older.rank][older.seq]
            older.rank = SUPERSEDED
            self._ranks.setdefault(SUPERSEDED, OrderedDict())[older.seq] = older

    def append(self, item: _Queued) -> None:
        self.supersede(item)
        item.seq = next(self._seq)
        if item.subject:
            self._newest[item.subject] = item
        self._order[item.seq] = item
        self._ranks.setdefault(item.rank, OrderedDict())[item.seq] = item

    def popleft(self) -> _Queued:
        _seq, item = self._order.popitem(last=False)
        self._forget(item)
        return item

    def least_important(self) -> _Queued | None:
        for rank in sorted(self._ranks):
            if self._ranks[rank]:
                return next(iter(self._ranks[rank].values()))
        return None

    def remove(self, item: _Queued) -> None:
        del self._order[item.seq]
        self._forget(item)

    def _forget(self, item: _Queued) -> None:
        del self._ranks[item.rank][item.seq]
        if self._newest.get(item.subject) is item:
            del self._newest[item.subject]


class _NoticeQueue(asyncio.Queue[_Queued]):
    """An asyncio.Queue over a :class:`_Backlog` (``get``, ``task_done`` and ``join`` as usual)."""

    _queue: _Backlog

    def _init(self, maxsize: int) -> None:
        self._queue = _Backlog()

    def _put(self, item: _Queued) -> None:
        self._queue.append(item)

    def _get(self) -> _Queued:
        return self._queue.popleft()

    def queued_about(self, subject: str) -> bool:
        """Whether a notice of ``subject`` waits in this queue."""
        return bool(subject) and subject in self._queue._newest

    def offer(self, item: _Queued) -> _Queued | None:
        """Queue ``item`` without waiting; when full, drop and return the least important
        notice, which is ``item`` itself if everything queued matters more."""
        self._queue.supersede(item)
        victim = None
        if self.full():
            victim = self._queue.least_important()
            if victim is None or victim.rank > item.rank:
                return item
            self._queue.remove(victim)
            self.task_done()
        self.put_nowait(item)
        return victim


@dataclass
class _InFlight:
    """The notice a channel's delivery task is sending, and the attempts made so far."""

    out: Outgoing
    since: float
    after: _AfterPage | None = None
    urgent: bool = False  # a page: retried through an outage of minutes, not max_attempts (see delivery)
    attempts: int = 0
    ended: bool = False  # its outcome is counted (what follows it, see _after_page, may still run)


@dataclass
class _Drops:
    """The notices of one execution that one channel dropped (or lost at shutdown) since the
    writer last took them: one audit record with a count, not one per notice."""

    at: str
    events: dict[str, None]  # in the order first dropped
    count: int = 1
    attempts: int = 0

    def record(self, channel: str, result: str) -> dict[str, Any]:
        if result == "lost":
            error = LOST if self.count == 1 else f"{LOST}: {self.count} notices"
        else:
            error = "queue full" if self.count == 1 else f"queue full: {self.count} notices dropped"
        return {"at": self.at, "channel": channel, "event": ", ".join(self.events), "result": result,
                "attempts": self.attempts, "error": error, "count": self.count}


@dataclass
class _DropBurst:
    """A channel's queue dropping notices: since when it was last logged, and how many so far."""

    logged: float  # clock.monotonic() of the last line
    since_logged: int = 0
    total: int = 1


class NotificationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.total = Counter(
            "remediator_notifications_total",
            "Notifications by channel and final result (sent, failed, dropped; lost: still queued or in"
            " flight when the shutdown drain ended)",
            ["channel", "result"],
            registry=registry,
        )
        self.retries = Counter(
            "remediator_notification_retries_total", "Notification delivery retries", ["channel"], registry=registry
        )
        self.unrecorded = Counter(
            "remediator_notification_outcomes_unrecorded_total",
            "Notification outcomes left out of the execution's audit: the queue to the store was full",
            registry=registry,
        )


class Dispatcher:
    """Implements the Notifier port; use as ``async with`` to run its delivery tasks."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        registry: CollectorRegistry,
        public_url: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        keep_failures: int = 100,
        on_outcome: OutcomeSink | None = None,
        outcome_queue_size: int = DEFAULT_OUTCOME_QUEUE_SIZE,
    ) -> None:
        self.channels = dict(channels)
        self.session = session
        self.clock = clock
        self.public_url = public_url
        self.metrics = NotificationMetrics(registry)
        self.failures: deque[FailedDelivery] = deque(maxlen=keep_failures)
        self._queues: dict[str, _NoticeQueue] = {n: _NoticeQueue(queue_size) for n in self.channels}
        self._tasks: list[asyncio.Task[None]] = []
        self._delivering: dict[str, _InFlight] = {}  # channel -> the notice its task is sending
        # set: the daemon is stopping; waits end and each notice gets one last attempt
        self._last_call = asyncio.Event()
        self._stopped = False  # the delivery tasks are gone: a notice now is lost at once
        self._late = 0  # notices lost so, logged for the first
        self._failed_at_stop: dict[str, int] = {}  # channel -> failures during the drain (logged in one line)
        self._on_outcome = on_outcome
        # the audit writer's queue: outcomes in order, and drops (and losses) merged per
        # (execution, channel, result)
        self._outcomes: deque[tuple[str, dict[str, Any]]] = deque()
        self._drops: dict[tuple[str, str, str], _Drops] = {}
        self._outcome_room = max(outcome_queue_size, 1)
        self._unrecorded = 0  # outcomes left out since the queue last had room: one log line per burst
        self._drop_bursts: dict[str, _DropBurst] = {}  # channel -> its queue is dropping (until it empties)
        self._wake = asyncio.Event()  # set: something to write
        self._written = asyncio.Event()  # set: nothing queued and nothing being written
        self._written.set()
        self._writer: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("remediator.notify")

    # -- the Notifier port ----------------------------------------------------------

    async def notify(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        try:
            self._enqueue_all(event, decision, detail)
        except Exception:  # a bug here must cost a message, never a remediation
            self._log.exception("could not queue notification", notice=event, execution_id=decision.execution_id)

    def _enqueue_all(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        names = list(dict.fromkeys(detail.get("channels") or ()))
        if not names:
            return
        notice = build_notice(event, decision, detail, at=self.clock.now(), public_url=self.public_url)
        for name in names:
            channel = self.channels.get(name)
            if channel is None:
                self._log.warning("notification for an unconfigured channel", channel=name, notice=event)
                continue
            if not channel.wants(event):
                continue
            try:
                out = channel.encode(notice)
            except Exception:
                self._log.exception("could not build notification", channel=name, notice=event)
                self._failed(channel, event, decision.execution_id or "", notice.id, "could not build message", 0)
                continue
            if out is None:
                continue
            if out.template_error:
                self._log.warning(
                    "channel template failed; sending the default text", channel=name, error=out.template_error
                )
            if self._stopped:  # nothing will send it: count it rather than queue it for nobody
                self._lose(out, 0)
                if not self._late:
                    self._log.error("notifications after shutdown are not sent", channel=name, notice=event,
                                    execution_id=out.execution_id)
                self._late += 1
                continue
            rank, subject = importance(channel, notice)
            after = _page_follow_up(channel, notice, detail, subject)
            dropped = self._queues[name].offer(_Queued(out, rank, subject, self.clock.monotonic(), after))
            if dropped is not None:
                self._dropped(dropped.out)

    def _merge(self, out: Outgoing, result: str, attempts: int) -> None:
        """Count ``out`` into the one audit record of its execution, channel and ``result`` still waiting."""
        if self._on_outcome is None or not out.execution_id:
            return
        key = (out.execution_id, out.channel, result)
        drops = self._drops.get(key)
        if drops is not None:  # merged into the record the writer has not taken yet
            drops.events[out.event] = None
            drops.count += 1
            drops.attempts += attempts
        elif self._room():
            self._drops[key] = _Drops(self._now(), {out.event: None}, attempts=attempts)
            self._wake_writer()

    def _lose(self, out: Outgoing, attempts: int) -> None:
        """``out`` was still queued or in flight when the deliveries stopped: count and record it."""
        self.metrics.total.labels(out.channel, "lost").inc()
        self._merge(out, "lost", attempts)

    def _dropped(self, out: Outgoing) -> None:
        """Count every drop; log the first of a burst, then the count at most once a
        :data:`DROP_LOG_INTERVAL`, and the total once the queue has emptied.

        A storm against a stalled receiver drops one notice per ``notify``: a line each was
        9,000 ERROR lines for 10,000 notices, burying the rest of the log (logs.py).  The
        metric counts each drop, the audit records each execution's.
        """
        self.metrics.total.labels(out.channel, "dropped").inc()
        self._merge(out, "dropped", 0)
        now = self.clock.monotonic()
        burst = self._drop_bursts.get(out.channel)
        if burst is None:
            self._drop_bursts[out.channel] = _DropBurst(now)
            self._log.error(
                "notification queue full: dropping the least important notices",
                channel=out.channel,
                size=self._queues[out.channel].maxsize,
                notice=out.event,
                execution_id=out.execution_id,
            )
            return
        burst.total += 1
        burst.since_logged += 1
        if now - burst.logged >= DROP_LOG_INTERVAL:
            self._log.error("notification queue full: still dropping", channel=out.channel, count=burst.since_logged)
            burst.logged, burst.since_logged = now, 0

    def _drops_ended(self, channel: str) -> None:
        """``channel``'s queue has emptied (or the dispatcher stops): the burst, if any, is over."""
        burst = self._drop_bursts.pop(channel, None)
        if burst is not None:
            self._log.warning("notification queue emptied after dropping", channel=channel, count=burst.total)

    # -- delivery ---------------------------------------------------------------------

    async def _run(self, channel: Channel) -> None:
        queue = self._queues[channel.name]
        while True:
            item = await queue.get()
            if queue.empty():
                self._drops_ended(channel.name)
            flight = _InFlight(item.out, item.since, item.after, item.rank >= URGENT)
            self._delivering[channel.name] = flight
            try:
                await self._deliver(channel, flight)
            except Exception:  # this task must outlive any bug in one delivery
                self._log.exception("notification delivery crashed", channel=channel.name, notice=flight.out.event)
            finally:
                queue.task_done()
            # Not in the finally: a delivery cancelled at shutdown has no outcome yet, and
            # close() counts what is left here as lost.
            self._delivering.pop(channel.name, None)

    async def _deliver(self, channel: Channel, flight: _InFlight) -> None:
        out = flight.out

        def attempting(n: int) -> None:
            flight.attempts = n

        def retried() -> None:
            self.metrics.retries.labels(channel.name).inc()

        try:
            attempts = await deliver(self.session, self.clock, channel, out, queued=flight.since,
                                     budget=FAILURE_BUDGET if flight.urgent else 0.0,
                                     last_call=self._last_call, on_attempt=attempting, on_retry=retried)
        except DeliveryFailed as exc:
            flight.ended = True
            self._failed(channel, out.event, out.execution_id, out.notice_id, str(exc), exc.attempts)
        except Exception as exc:
            flight.ended = True
            self._log.exception("notification delivery crashed", channel=channel.name)
            self._failed(channel, out.event, out.execution_id, out.notice_id, type(exc).__name__, 0)
        else:
            flight.ended = True
            self.metrics.total.labels(channel.name, "sent").inc()
            self._outcome(out.execution_id, channel.name, out.event, "sent", attempts, "")
            self._log.info(
                "notification sent",
                channel=channel.name,
                notice=out.event,
                execution_id=out.execution_id,
                attempts=attempts,
            )
            if flight.after is not None:
                await self._after_page(channel, flight.after)

    async def _after_page(self, channel: Channel, after: _AfterPage) -> None:
        """A page has just been delivered: resolve its incident if the alert resolved meanwhile.

        Another replica that decided the alert's resolve told PagerDuty at once, and PagerDuty
        drops a resolve for an incident that is not open: a page retried here through a throttle
        and landing after it opened an incident nothing would ever resolve.  A newer notice of
        the incident queued here speaks after the page, in order, so then nothing is asked.  When
        the answer is unknown (the store is down) the incident is left as it is: resolving a page
        that may be live is worse than one left open.
        """
        if self._queues[channel.name].queued_about(after.subject):
            return
        try:
            resolved = await within(self.clock, after.check(), RESOLVED_CHECK_TIMEOUT)
        except Exception as exc:
            self._log.warning("could not ask whether the alert resolved while its page was sent",
                              channel=channel.name, execution_id=after.resolve.execution_id, error=str(exc))
            return
        if not resolved:
            return
        self._log.warning("the alert resolved while its page was being sent: resolving the incident",
                          channel=channel.name, execution_id=after.resolve.execution_id)
        follow = _InFlight(after.resolve, self.clock.monotonic())
        self._delivering[channel.name] = follow  # a shutdown counts it as lost, as any other
        await self._deliver(channel, follow)

    def _failed(self, channel: Channel, event: str, execution: str, notice: str, error: str, attempts: int) -> None:
        self.metrics.total.labels(channel.name, "failed").inc()
        self.failures.append(FailedDelivery(channel.name, event, execution, notice, error, attempts, self.clock.now()))
        self._outcome(execution, channel.name, event, "failed", attempts, error)
        if self._last_call.is_set() and not self._stopped:  # a drain's last attempts: one line for all, see close()
            self._failed_at_stop[channel.name] = self._failed_at_stop.get(channel.name, 0) + 1
            return
        self._log.error(
            "notification failed",
            channel=channel.name,
            type=channel.type,
            notice=event,
            execution_id=execution,
            attempts=attempts,
            error=error,
        )

    def _outcome(self, execution: str, channel: str, event: str, result: str, attempts: int, error: str) -> None:
        """Queue the outcome for the audit writer: a slow store must not hold up delivery."""
        if self._on_outcome is None or not execution or not self._room():
            return
        record = {"at": self._now(), "channel": channel, "event": event,
                  "result": result, "attempts": attempts, "error": error}
        self._outcomes.append((execution, record))
        self._wake_writer()

    def _now(self) -> str:
        return self.clock.now().isoformat().replace("+00:00", "Z")

    def _room(self) -> bool:
        """Whether the audit queue can take one more record; if not, count and (once a burst) log it.

        Never waits: ``notify`` runs in the pipeline, and a store slower than a storm must
        cost audit records, never memory without bound or a remediation's time.
        """
        if len(self._outcomes) + len(self._drops) < self._outcome_room:
            return True
        self.metrics.unrecorded.inc()
        if not self._unrecorded:
            self._log.error("notification outcomes are not being recorded: the audit queue is full",
                            size=self._outcome_room)
        self._unrecorded += 1
        return False

    def _wake_writer(self) -> None:
        self._written.clear()
        self._wake.set()

    async def _write_outcomes(self) -> None:
        """The one task that writes outcomes to the audit, one at a time, so that a storm
        competes with the pipeline for the store with one write, not one per notice.

        Each pass takes the drops gathered so far (one record per execution and channel,
        with a count: a full queue drops a notice per ``notify``), then the queued outcomes.
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outcomes or self._drops:
                drops, self._drops = self._drops, {}
                for (execution, channel, result), dropped in drops.items():
                    await self._audit(execution, dropped.record(channel, result))
                for _ in range(len(self._outcomes)):
                    execution, record = self._outcomes.popleft()
                    await self._audit(execution, record)
            if self._unrecorded:
                self._log.warning("notification outcomes were left out of the audit", count=self._unrecorded)
                self._unrecorded = 0
            self._written.set()

    async def _audit(self, execution: str, record: Mapping[str, Any]) -> None:
        assert self._on_outcome is not None
        try:
            await self._on_outcome(execution, record)
        except Exception as exc:  # the log line and the metric remain
            self._log.warning("could not record the notification outcome", execution_id=execution, error=str(exc))

    def failures_for(self, execution_id: str) -> list[FailedDelivery]:
        return [f for f in self.failures if f.execution_id == execution_id]

    def pending(self) -> int:
        """Notices queued or being delivered."""
        return sum(q.qsize() for q in self._queues.values()) + len(self._delivering)

    async def join(self) -> None:
        """Wait until every queued notice has been delivered or given up on, and its outcome recorded."""
        await asyncio.gather(*(q.join() for q in self._queues.values()))
        if self._writer is not None:
            await self._written.wait()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(c), name=f"remediator-notify-{c.name}") for c in self.channels.values()
            ]
        if self._writer is None and self._on_outcome is not None:
            self._writer = asyncio.create_task(self._write_outcomes(), name="remediator-notify-audit")

    async def close(self, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Give queued notices, and the audit records of their outcomes, ``drain_timeout`` (real)
        seconds in all to go out, then stop: a hung receiver or store must not hold us.

        The drain is a few seconds inside the pod's grace period, while a notice may be waiting
        out a backoff or a ``Retry-After`` of minutes.  So every wait ends now, and each notice
        in flight or queued gets one last attempt, in order, without retries.  Those the drain
        still leaves (a receiver that hangs, a queue longer than the time) are counted as
        ``lost``, recorded in their executions' audits (the store closes after us; the last
        fifth of the drain is kept for those records) and told in one log line, together with
        the last attempts that failed: a notice must not vanish without a trace, and a
        shutdown with a dead receiver must not write a line per notice.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(drain_timeout, 0.0)
        self._last_call.set()
        if self._tasks and drain_timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sent(), timeout=drain_timeout * (1 - AUDIT_SHARE))
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        lost: dict[str, int] = {}
        for flight in self._delivering.values():  # cut off mid-attempt, or never given its last one
            if flight.ended:  # sent or failed, and counted so: cut off while asking what follows it
                continue
            self._lose(flight.out, flight.attempts)
            lost[flight.out.channel] = lost.get(flight.out.channel, 0) + 1
        self._delivering.clear()
        for queue in self._queues.values():
            while not queue.empty():
                out = queue.get_nowait().out
                queue.task_done()
                self._lose(out, 0)
                lost[out.channel] = lost.get(out.channel, 0) + 1
        for name in list(self._drop_bursts):
            self._drops_ended(name)
        failed, self._failed_at_stop = self._failed_at_stop, {}
        if lost or failed:
            self._log.error(
                "notifications not delivered before shutdown",
                count=sum(lost.values()) + sum(failed.values()),
                lost=sum(lost.values()),
                failed=sum(failed.values()),
                channels={c: lost.get(c, 0) + failed.get(c, 0) for c in sorted(lost.keys() | failed.keys())},
            )
        if self._writer is not None:
            left = deadline - loop.time()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._written.wait(), timeout=left)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        unwritten = len(self._outcomes) + sum(d.count for d in self._drops.values())
        if unwritten:
            self._log.warning("notification outcomes not recorded before shutdown", count=unwritten)

    async def _sent(self) -> None:
        """Every queue is empty and nothing is being sent."""
        await asyncio.gather(*(q.join() for q in self._queues.values()))

    async def __aenter__(self) -> Dispatcher:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _page_follow_up(channel: Channel, notice: Notice, detail: Mapping[str, Any], subject: str) -> _AfterPage | None:
    """What to do once ``notice`` is delivered on ``channel``: for a PagerDuty trigger whose detail
    can tell whether the alert resolved meanwhile, on a channel told of resolves, the resolve."""
    check = detail.get(RESOLVED_MEANWHILE)
    if check is None or channel.type != "pagerduty" or not channel.wants("resolved"):
        return None
    if event_action(notice.event, dry_run=notice.dry_run, on_started=channel.on_started) != "trigger":
        return None
    resolve = channel.encode(dataclasses.replace(notice, event="resolved"))  # routing and dedup keys only
    return _AfterPage(check, resolve, subject) if resolve is not None else None


@contextlib.asynccontextmanager
async def open_dispatcher(
    settings: Settings,
    clock: Clock,
    registry: CollectorRegistry,
    *,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    on_outcome: OutcomeSink | None = None,
) -> AsyncIterator[Dispatcher | None]:
    """The configured channels behind one HTTP session, or None when no channel is configured."""
    channels = channels_from_settings(settings)
    if not channels:
        yield None
        return
    log = structlog.get_logger("remediator.notify")
    for c in channels.values():
        if c.type == "webhook" and not c.secret:
            log.warning("webhook channel has no secret: its requests are not signed", channel=c.name)
    # trust_env: HTTP(S)_PROXY and NO_PROXY from the environment, as curl and every HTTP client an SRE
    # knows take them.  Slack and PagerDuty are outside the cluster, and a cluster whose egress goes
    # through a proxy could reach neither: no page ever left.  (The verification checks do not: their
    # URLs are inside the cluster and a proxy would see the Prometheus token; see open_checks.)
    async with aiohttp.ClientSession(trust_env=True) as session:
        dispatcher = Dispatcher(
            channels, session=session, clock=clock, registry=registry, public_url=settings.public_url,
            on_outcome=on_outcome,
        )
        dispatcher.start()
        try:
            yield dispatcher
        finally:
            await dispatcher.close(drain_timeout)
