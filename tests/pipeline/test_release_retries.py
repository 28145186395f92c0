"""How :class:`~remediator.hold.Releases` retries a release the guardrail state did not answer.

How long: one that feeds the breaker an outcome, for as long as it takes; one without, until what
it would do has lapsed by itself.  And with what: the cooldown that is left of the one counted from
the execution's end, not a fresh one from when the retry lands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import structlog

from remediator.clock import VirtualClock
from remediator.core.errors import GuardrailUnavailable
from remediator.core.guardrails import Request
from remediator.hold import Releases
from remediator.runtime import open_runtime
from tests.payloads import db_pool_alert, payload
from tests.pipeline.test_pipeline import Recorder, deliver


class Unreachable:
    """Guardrail state that refuses every release until ``back``; keeps what was applied."""

    def __init__(self) -> None:
        self.back = False
        self.applied: list[tuple[float, bool | None]] = []

    async def release(self, req: Request, *, succeeded: bool | None) -> None:
        if not self.back:
            raise GuardrailUnavailable("connection refused")
        self.applied.append((req.cooldown, succeeded))


def request(cooldown: float = 0.0) -> Request:
    return Request("ex-1", "p", "Deployment/shop/web", "p|Deployment/shop/web", "shop", 0.0, cooldown=cooldown,
                   lock_ttl=60.0)


async def retrying(releases: Releases, guard: Unreachable, clock: VirtualClock, *, cooldown: float,
                   succeeded: bool | None) -> None:
    """Hand ``releases`` a release that ``guard`` refused as the execution ended, now."""
    retry: Any = releases.retry  # the guardrail state is this fake's one method
    retry(guard, request(cooldown), succeeded=succeeded, ended=clock.monotonic(), log=structlog.get_logger())
    await clock.sleeping()  # its first wait has begun


@pytest.mark.parametrize("succeeded", [True, False])
async def test_a_release_that_feeds_the_breaker_is_retried_for_as_long_as_it_takes(
    succeeded: bool, vclock: VirtualClock
) -> None:
    releases, guard = Releases(vclock), Unreachable()
    await retrying(releases, guard, vclock, cooldown=300.0, succeeded=succeeded)
    await vclock.advance(3600)  # an hour's outage, long past the lock's TTL and the cooldown
    assert len(releases) == 1
    guard.back = True
    await vclock.advance(30)  # the longest backoff
    assert guard.applied == [(0.0, succeeded)]  # nothing left of the cooldown; the outcome counted
    assert len(releases) == 0


async def test_a_release_without_an_outcome_is_dropped_once_all_it_would_do_has_lapsed(
    vclock: VirtualClock
) -> None:
    releases, guard = Releases(vclock), Unreachable()
    await retrying(releases, guard, vclock, cooldown=100.0, succeeded=None)
    await vclock.advance(31)
    guard.back = True
    await vclock.advance(32)  # the next try, at 61 s: the lock has lapsed, 39 s of the cooldown are left
    assert guard.applied == [(39.0, None)]
    guard.applied.clear()
    guard.back = False
    await retrying(releases, guard, vclock, cooldown=100.0, succeeded=None)
    await vclock.advance(3600)
    assert len(releases) == 0 and guard.applied == []  # the lock lapsed and the cooldown ended: nothing to do


async def test_at_shutdown_each_waiting_release_gets_one_more_try(vclock: VirtualClock) -> None:
    # The retries were cancelled with the process: a failure whose release waited for Redis (back
    # a moment before the stop) never reached the breaker.
    releases, guard = Releases(vclock), Unreachable()
    await retrying(releases, guard, vclock, cooldown=300.0, succeeded=False)
    await vclock.advance(10)
    guard.back = True  # back, but the next scheduled try is seconds away: the stop comes first
    assert await releases.flush(within=2.0) == 1
    assert guard.applied == [(290.0, False)] and len(releases) == 0
    guard.back = False
    await retrying(releases, guard, vclock, cooldown=300.0, succeeded=False)
    assert await releases.flush(within=2.0) == 0  # still unreachable: given up, said in the log
    assert len(releases) == 0 and guard.applied == [(290.0, False)]


class ReleaseRefused:
    """The runtime's guardrail state, refusing releases until ``back`` (the rest passes through)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.back, self.applied = inner, False, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def release(self, req: Request, *, succeeded: bool | None) -> None:
        if not self.back:
            raise GuardrailUnavailable("connection refused")
        await self.inner.release(req, succeeded=succeeded)
        self.applied += 1


async def test_the_runtimes_stop_gives_a_waiting_release_its_last_try(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    cluster = Recorder(fail={"resize_pool"})
    async with open_runtime(settings_factory(dry_run=False), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        guard = ReleaseRefused(rt.pipeline.guardrails)
        rt.pipeline.guardrails = guard  # type: ignore[assignment]
        await deliver(rt, payload(db_pool_alert()))
        assert [c[0] for c in cluster.calls][:1] == ["resize_pool"] and len(rt.pipeline.releases) == 1
        guard.back = True  # back a moment before the stop, before the next scheduled try
    assert guard.applied == 1 and len(rt.pipeline.releases) == 0
