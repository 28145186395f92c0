"""Clocks: the real one and a virtual one for tests and replay.

Nothing in remediator reads the time except through a Clock, so tests advance time
explicitly instead of sleeping, and replay runs history at full speed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class _Sleeps(Protocol):
    async def sleep(self, seconds: float) -> None: ...


async def within(clock: _Sleeps, awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` unless ``seconds`` pass first on ``clock``: then cancel it and raise TimeoutError.

    ``asyncio.wait_for`` counts real time; bounds kept on the injected clock also hold,
    and can be tested, on a virtual one.  The deadline is a plain future of the clock's
    (:meth:`VirtualClock.timer`) when it offers one: a task sleeping until then cost
    half of every bounded step (a replay bounds a million of them).
    """
    work: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    timer = _timer(clock, seconds)
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        running: list[asyncio.Future[Any]] = [task for task in (work, timer) if not task.done()]
        for task in running:
            task.cancel()
        running = [task for task in running if not task.done()]  # a cancelled future is done; a task ends later
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if work.done() and not work.cancelled():
        return work.result()
    if not timer.done() or timer.cancelled():  # the work was cancelled from elsewhere, not timed out
        raise asyncio.CancelledError
    raise TimeoutError(f"no answer within {seconds:g}s")


def _timer(clock: _Sleeps, seconds: float) -> asyncio.Future[None]:
    """A future done once ``seconds`` have passed on ``clock``: the clock's own timer when it has
    one, else a task sleeping on it (any clock that can sleep will do)."""
    timer = getattr(clock, "timer", None)
    if timer is not None and seconds > 0:
        made: asyncio.Future[None] = timer(seconds)
        return made
    return asyncio.ensure_future(clock.sleep(seconds))


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timer(self, seconds: float) -> asyncio.Future[None]:
        """A future that is done in ``seconds`` (cancel it to drop the timer)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(seconds, _set_done, fut)
        fut.add_done_callback(lambda _: handle.cancel())
        return fut


class VirtualClock:
    """Time moves only when told; sleepers wake when the clock passes their deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._watchers: list[tuple[Callable[[float], bool], asyncio.Future[float]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await self.timer(seconds)

    def timer(self, seconds: float) -> asyncio.Future[None]:
        """A future that is done once the clock has moved ``seconds`` on (cancel it to drop it);
        a task awaiting it counts as asleep on this clock (:meth:`pending`, :meth:`sleeping`)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        self._notify_watchers()
        return fut

    def pending(self) -> list[float]:
        """Seconds left for every task asleep on this clock, soonest first."""
        return sorted(d - self._mono for d, _, f in self._sleepers if not f.done())

    async def sleeping(self, predicate: Callable[[float], bool] = lambda left: True) -> float:
        """Wait, without moving time, until a task sleeps with ``predicate(seconds_left)`` true.

        Tests use it to advance time exactly when the code under test has started waiting
        (a retry backoff, a timeout) instead of guessing with real sleeps.
        """
        for left in self.pending():
            if predicate(left):
                return left
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._watchers.append((predicate, fut))
        try:
            return await fut
        finally:
            self._watchers = [(p, f) for p, f in self._watchers if f is not fut]

    def _notify_watchers(self) -> None:
        if not self._watchers:  # the usual case (replay sleeps on it a lot): nobody to tell
            return
        pending = self.pending()
        for predicate, fut in self._watchers:
            if fut.done():
                continue
            left = next((x for x in pending if predicate(x)), None)
            if left is not None:
                fut.set_result(left)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (never backwards): replay drives time from history this way.

        The clock then reads ``when`` exactly (not the sum of float seconds, which can be a
        microsecond off), and costs no conversions: replay sets it for every event."""
        now = self._now
        if when > now:
            if when.tzinfo is not now.tzinfo:
                when = when.astimezone(now.tzinfo)
            self._mono += (when - now).total_seconds()
            self._now = when
            self._wake_due()

    def advance_sync(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        self._wake_due()

    async def advance(self, seconds: float) -> None:
        """Advance in steps so every woken task runs before later deadlines fire."""
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            step = self._sleepers[0][0] - self._mono
            self.advance_sync(step)
            for _ in range(5):
                await asyncio.sleep(0)
        self.advance_sync(target - self._mono)
        for _ in range(5):
            await asyncio.sleep(0)
