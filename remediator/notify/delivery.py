"""Sending one request: per-attempt timeout and retries, both on the injectable clock.

Retryable: connection failures, timeouts, 408, 429 and 5xx.  Any other answer is the
receiver refusing this body for good (bad URL, revoked key), so it fails at once
instead of hammering it.

A failure (connection, timeout, 408, 5xx) is retried with a backoff of 1 s doubling, at
most a minute.  A routine notice gives up after ``max_attempts``.  A page (``budget``: the
dispatcher gives one to its urgent notices, a PagerDuty trigger, a ``failed`` or an
``approval_requested``) is retried, at least ``max_attempts`` times, until
:data:`FAILURE_BUDGET` after it was queued: PagerDuty asks for 5xx and network errors to be
retried "after some time", and with 1+2+4+8 s a page was given up 15 s into an outage of
45 s, and nobody was paged.  A routine notice gives up as before, so it holds a page queued
behind it for those few seconds at most.

A 429, or a 503 with ``Retry-After``, is the receiver throttling the channel, not a
failure of this notice: PagerDuty answers 429 without ``Retry-After`` while it throttles
a routing key and asks to retry "preferably with a backoff of a few minutes".  Counted
against ``max_attempts`` with a backoff of seconds, a page was given up some 19 s into a
throttle of a minute, and nobody was paged.  So a throttled answer is retried within
:data:`THROTTLE_BUDGET` of the time the notice was queued, waiting what ``Retry-After``
asks (within a cap, and no less than the usual backoff) or else a minute, then two, then
three; only the other failures count against ``max_attempts``.  The throttle is the channel's (PagerDuty's is per
routing key, Slack's per webhook), so the notices queued behind wait too, in order (a
trigger is never overtaken by its resolve); as their budgets run from when they were
queued, a throttle holds the queue for the budget at most, not the budget per notice.

A shutdown must not wait out a backoff or a ``Retry-After`` (minutes) with a drain of a
few seconds: once ``last_call`` is set, a wait in progress ends at once and the next
attempt is the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp

from remediator import __version__
from remediator.clock import within
from remediator.core.errors import PermanentError, TemporaryError
from remediator.notify.channels import Channel, Outgoing
from remediator.notify.webhook import signature_headers
from remediator.ports import Clock

USER_AGENT = f"remediator/{__version__}"
MAX_RETRY_AFTER = 300.0
#: Exponential backoff between failed attempts: 1 s doubling, at most a minute, plus up to 1 s of jitter.
BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_JITTER = 1.0, 60.0, 1.0
#: How long after it was queued a notice is still retried while the receiver throttles.
THROTTLE_BUDGET = 600.0
#: How long after it was queued a page is still retried while the receiver fails (5xx, unreachable).
FAILURE_BUDGET = 600.0
#: The wait after a throttled answer without ``Retry-After``: 1 min, 2, then 3 each time, plus up
#: to a tenth more (replicas throttled together must not come back together).
THROTTLE_INITIAL, THROTTLE_MAX, THROTTLE_JITTER = 60.0, 180.0, 0.1


class Throttled(TemporaryError):
    """The receiver asked us to slow down (429, or 503 with Retry-After): retried on a time budget."""


class DeliveryFailed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


def retry_after(headers: Mapping[str, str], clock: Clock) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None if absent or garbled."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date written without a zone, or with -0000: GMT all the same (RFC 9110)
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, (when - clock.now()).total_seconds())
    except OverflowError:
        return None


def backoff(failures: int) -> float:
    """The wait after the ``failures``-th failed attempt."""
    return min(BACKOFF_INITIAL * 2.0 ** min(failures - 1, 16) + random.uniform(0, BACKOFF_JITTER), BACKOFF_MAX)


def throttle_backoff(throttled: int) -> float:
    """The wait after the ``throttled``-th throttled answer that said not how long."""
    wait = min(THROTTLE_INITIAL * throttled, THROTTLE_MAX)
    return wait * (1 + random.uniform(0, THROTTLE_JITTER))


async def _pause(clock: Clock, seconds: float, last_call: asyncio.Event | None) -> None:
    """Sleep ``seconds`` on ``clock``, or less if ``last_call`` is set meanwhile."""
    if last_call is None:
        await clock.sleep(seconds)
    elif not last_call.is_set():
        with contextlib.suppress(TimeoutError):  # the time passed: retry as planned
            await within(clock, last_call.wait(), seconds)


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, Mapping[str, str], str]:
    async with session.post(url, data=body, headers=dict(headers), allow_redirects=False) as resp:
        head = await resp.content.read(2048)  # enough for an error reason; a receiver cannot make us buffer more
        return resp.status, resp.headers, head.decode("utf-8", errors="replace")


async def attempt(session: aiohttp.ClientSession, clock: Clock, channel: Channel, out: Outgoing) -> None:
    """One POST; raises TemporaryError (retry) or PermanentError (give up)."""
    headers = {"User-Agent": USER_AGENT, **out.headers}
    if channel.type == "webhook":
        headers |= signature_headers(channel.secret, int(clock.now().timestamp()), out.body)
    try:
        sent = _post(session, channel.url, out.body, headers)
        status, resp_headers, text = await within(clock, sent, channel.timeout)
    except TimeoutError:
        raise TemporaryError(f"no answer within {channel.timeout:g}s") from None
    except aiohttp.InvalidURL:
        raise PermanentError("invalid URL") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise TemporaryError(f"cannot reach the receiver: {type(exc).__name__}") from None
    if 200 <= status < 300:
        return
    reason = f"HTTP {status}: {text.strip()[:200]}"
    delay = retry_after(resp_headers, clock) if status in (429, 503) else None
    if status == 429 or delay is not None:
        raise Throttled(reason, delay=delay, status=status)
    if status == 408 or status >= 500:
        raise TemporaryError(reason)
    raise PermanentError(reason)


async def deliver(
    session: aiohttp.ClientSession,
    clock: Clock,
    channel: Channel,
    out: Outgoing,
    *,
    queued: float | None = None,
    budget: float = 0.0,
    last_call: asyncio.Event | None = None,
    on_attempt: Callable[[int], None] | None = None,
    on_retry: Callable[[], None] | None = None,
) -> int:
    """Send until accepted; return the attempts used, or raise DeliveryFailed.

    ``queued`` is when the notice was queued (``clock.monotonic()``; default: now), from
    which the throttle budget runs, and ``budget`` (seconds) how long from then a failure is
    retried after ``max_attempts`` (0: not at all).  ``on_attempt(n)`` is called before the n-th attempt,
    ``on_retry`` before each wait.  Once ``last_call`` is set (the daemon is stopping) the
    wait in progress is cut short and the attempt that follows, or the one in progress,
    is the last.
    """
    since = clock.monotonic() if queued is None else queued
    deadline = since + THROTTLE_BUDGET
    used = failures = throttled = 0
    while True:
        used += 1
        if on_attempt is not None:
            on_attempt(used)
        try:
            await attempt(session, clock, channel, out)
            return used
        except PermanentError as exc:
            raise DeliveryFailed(str(exc), used) from None
        except TemporaryError as exc:
            if last_call is not None and last_call.is_set():
                raise DeliveryFailed(f"{exc} (not retried: shutting down)", used) from None
            if isinstance(exc, Throttled):
                throttled += 1
                left = deadline - clock.monotonic()
                if left <= 0:
                    minutes = f"{THROTTLE_BUDGET / 60:g} min"
                    raise DeliveryFailed(f"{exc} (throttled: given up {minutes} after it was queued)", used) from None
                if exc.delay is None:
                    wait = throttle_backoff(throttled)
                else:  # at least the usual backoff: a "Retry-After: 0" must not make us hammer it for minutes
                    wait = max(min(exc.delay, MAX_RETRY_AFTER), backoff(throttled))
                wait = min(wait, left)  # the last try comes at the end of the budget, not after it
            else:
                failures += 1
                wait = backoff(failures)
                if failures >= channel.attempts:
                    left = since + budget - clock.monotonic()
                    if left <= 0:
                        given_up = f" (given up {budget / 60:g} min after it was queued)" if budget else ""
                        raise DeliveryFailed(f"{exc}{given_up}", used) from None
                    wait = min(wait, left)  # the last try comes at the end of the budget
        if on_retry is not None:
            on_retry()
        await _pause(clock, wait, last_call)
