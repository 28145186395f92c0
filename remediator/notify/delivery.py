"""Sending one request: per-attempt timeout and retries, both on the injectable clock.

Retryable: connection failures, timeouts, 408, 429 (waiting what ``Retry-After``
asks, within a cap) and 5xx.  Any other answer is the receiver refusing this body for
good (bad URL, revoked key), so it fails at once instead of hammering it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from remediator import __version__
from remediator.clock import within
from remediator.core.errors import PermanentError, TemporaryError
from remediator.notify.channels import Channel, Outgoing
from remediator.notify.webhook import signature_headers
from remediator.ports import Clock

USER_AGENT = f"remediator/{__version__}"
MAX_RETRY_AFTER = 300.0
_BACKOFF = wait_exponential_jitter(initial=1.0, max=60.0, exp_base=2.0, jitter=1.0)


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


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, TemporaryError) and exc.delay is not None:
        return min(exc.delay, MAX_RETRY_AFTER)
    return _BACKOFF(state)


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
    if status == 429:
        raise TemporaryError(reason, delay=retry_after(resp_headers, clock))
    if status == 408 or status >= 500:
        raise TemporaryError(reason)
    raise PermanentError(reason)


async def deliver(
    session: aiohttp.ClientSession,
    clock: Clock,
    channel: Channel,
    out: Outgoing,
    *,
    on_retry: Callable[[RetryCallState], None] | None = None,
) -> int:
    """Send until accepted; return the attempts used, or raise DeliveryFailed."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(channel.attempts),
        wait=_wait,
        retry=retry_if_exception_type(TemporaryError),
        sleep=clock.sleep,
        before_sleep=on_retry,
        reraise=True,
    )
    used = 0
    try:
        async for try_ in retrying:
            with try_:
                used = try_.retry_state.attempt_number
                await attempt(session, clock, channel, out)
    except (TemporaryError, PermanentError) as exc:
        raise DeliveryFailed(str(exc), used) from None
    return used
