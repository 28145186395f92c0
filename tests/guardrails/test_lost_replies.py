"""Scripts whose reply was lost after Redis ran them: sent again, they are applied once.

The adapter's client retries a failed connection once, at once, and so sends again a
script whose reply the network lost although Redis had already run it.  These tests put
a proxy (:class:`~tests.tcp_faults.FaultyProxy`) between the adapter and the
real Redis that loses exactly such a reply, and hold the outcome to the pure rules
applied once.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from remediator.clock import VirtualClock
from remediator.core import guardrails as rules
from remediator.core.decisions import DecisionKind
from remediator.core.guardrails import BreakerState, Budget, Check, Finding, GuardState, Policy, Request, Verdict
from remediator.guardstate import lua
from remediator.guardstate.redis import RedisGuardrails
from tests.guardrails.conftest import REDIS_URL, prefixed
from tests.payloads import T0
from tests.tcp_faults import FaultyProxy

T = TypeVar("T")
SCRIPTS = (lua.ADMIT, lua.RENEW, lua.REACQUIRE, lua.TAKE_BACK, lua.TRIAL, lua.ABANDON, lua.RELEASE)


def sha(script: str) -> bytes:
    """The SHA-1 that names a Lua script in EVALSHA, as it goes over the wire (the proxy's marker)."""
    return hashlib.sha1(script.encode()).hexdigest().encode()


@pytest.fixture
async def lossy() -> AsyncIterator[FaultyProxy]:
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    client = Redis.from_url(REDIS_URL)
    try:  # loaded beforehand: a NOSCRIPT reply lost would only make redis-py load it and run it once
        for script in SCRIPTS:
            await client.script_load(script)
    finally:
        await client.aclose()
    proxy = await FaultyProxy(host, int(port)).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def guard_through(proxy: FaultyProxy, prefix: str, policy: Policy, clock: VirtualClock) -> RedisGuardrails:
    return await RedisGuardrails.open(prefixed(f"redis://127.0.0.1:{proxy.port}/0", prefix), policy, clock)


async def reply_lost(proxy: FaultyProxy, marker: bytes, call: Callable[[], Awaitable[T]]) -> T:
    """``call``'s answer with the reply to its command (the one holding ``marker``) lost once: that
    the call still answers shows redis-py sent the command again and had the second reply."""
    lost = proxy.lose_reply(marker)
    answer = await call()
    assert lost.is_set(), "the command's reply was not lost: nothing was sent again"
    return answer


async def test_a_failed_execution_whose_release_reply_was_lost_counts_one_failure(
    lossy: FaultyProxy, redis_prefix: str, clock: VirtualClock
) -> None:
    """The reviewer's case: RELEASE ran, its reply was lost, redis-py sent it again and the breaker
    was fed twice, so one failed execution opened a breaker whose threshold is two."""
    policy = Policy(breaker_threshold=2, breaker_cooloff=600.0)
    guard = await guard_through(lossy, redis_prefix, policy, clock)
    try:
        req = Request("ex-1", "pb", "Deployment/shop/web", "Deployment/shop/web", "shop", clock.now().timestamp())
        assert (await guard.admit(req)).admitted
        await reply_lost(lossy, sha(lua.RELEASE), lambda: guard.release(req, succeeded=False))
        view = await guard.breaker("pb")
        assert (view.state, view.failures) == (BreakerState.CLOSED, 1)
        other = replace(req, owner="ex-2", target_key="Deployment/shop/api", limit_key="Deployment/shop/api")
        assert (await guard.admit(other)).admitted  # one failure opens nothing
    finally:
        await guard.close()


async def test_every_change_whose_reply_was_lost_is_applied_once(
    lossy: FaultyProxy, redis_prefix: str, clock: VirtualClock
) -> None:
    """Each script that changes the state, its reply lost once and the script sent again, leaves
    the state the pure rules give for applying it once: the limits an admission counts, the slot a
    renewal, a take-back or a reacquire holds, the breaker a release feeds and the trial it names,
    an abandoned slot, the kill switch.  A lost admission's reply answers LOCKED by the execution
    itself (the resend met its own lock), which the pipeline defers and takes over."""
    policy = Policy(budgets=(Budget("*", 5, 600.0),), max_running=3, breaker_threshold=2, breaker_cooloff=100.0)
    guard = await guard_through(lossy, redis_prefix, policy, clock)
    oracle = GuardState()

    def at(seconds: float) -> float:
        clock.set(T0 + timedelta(seconds=seconds))
        return clock.now().timestamp()

    def req(owner: str, target: str, **kw: object) -> Request:
        fields: dict[str, object] = {"limit_key": target, "now": clock.now().timestamp(), "lock_ttl": 60.0, **kw}
        return Request(owner, "pb", target, namespace="shop", **fields)  # type: ignore[arg-type]

    probes = (  # read-only: what an admission on a free target would find (rate on K, cooldown on KB)
        req("probe", "free", limit_key="K", rate_max=1, rate_per=600.0),
        req("probe", "free", limit_key="KB"),
    )

    async def agrees() -> None:
        now = clock.now().timestamp()
        assert await guard.usage() == rules.usage(policy, now, oracle.budget_history, oracle.running, oracle.locks)
        assert await guard.status() == rules.status(oracle.paused, oracle.breakers, policy, now)
        for probe in probes:
            probe = replace(probe, now=now)
            assert await guard.evaluate(probe) == rules.evaluate(probe, oracle, policy)

    try:
        a = req("a", "t1", limit_key="K", rate_max=2, rate_per=600.0)
        verdict = await reply_lost(lossy, sha(lua.ADMIT), lambda: guard.admit(a))
        assert verdict == Verdict(DecisionKind.LOCKED, "t1 is locked by execution a", "a")
        assert rules.admit(a, oracle, policy).admitted
        await agrees()  # rate and budget counted once, one slot

        now = at(10)
        assert await reply_lost(lossy, sha(lua.RENEW), lambda: guard.renew(a)) is True
        assert rules.renew(a, oracle, now)
        await agrees()

        now = at(20)  # a stops at a step's gate, then is approved and takes lock and slot back
        await reply_lost(lossy, sha(lua.RELEASE), lambda: guard.release(a, succeeded=None))
        rules.release(a, oracle, policy, succeeded=None, now=now)
        await agrees()
        now = at(30)
        assert await reply_lost(lossy, sha(lua.TAKE_BACK), lambda: guard.take_back(a)) == Finding(Check.PASSED)
        assert rules.take_back(a, oracle, policy, now) == Finding(Check.PASSED)
        await agrees()

        now = at(40)
        await reply_lost(lossy, sha(lua.RELEASE), lambda: guard.release(a, succeeded=False))
        rules.release(a, oracle, policy, succeeded=False, now=now)
        await agrees()
        assert (await guard.breaker("pb")).failures == 1

        b, c = req("b", "t2", limit_key="KB", cooldown=30.0), req("c", "t3")
        for admitted in (b, c):
            assert (await guard.admit(admitted)).admitted and rules.admit(admitted, oracle, policy).admitted
        now = at(50)
        await reply_lost(lossy, sha(lua.RELEASE), lambda: guard.release(b, succeeded=False))
        rules.release(b, oracle, policy, succeeded=False, now=now)
        await agrees()
        assert (await guard.breaker("pb")).state is BreakerState.OPEN  # two failures, two executions

        now = at(150)  # half-open; c, stopped by the breaker, resumes and goes on as its trial
        assert await reply_lost(lossy, sha(lua.REACQUIRE), lambda: guard.reacquire(c)) is True
        assert rules.reacquire(c, oracle, now)
        assert await reply_lost(lossy, sha(lua.TRIAL), lambda: guard.go_on_as_trial(c)) is True
        assert rules.go_on_as_trial(c, oracle, policy, now)
        await agrees()
        now = at(160)
        await reply_lost(lossy, sha(lua.RELEASE), lambda: guard.release(c, succeeded=True))
        rules.release(c, oracle, policy, succeeded=True, now=now)
        await agrees()

        e = req("e", "t5")
        assert (await guard.admit(e)).admitted and rules.admit(e, oracle, policy).admitted
        await reply_lost(lossy, sha(lua.ABANDON), lambda: guard.abandon(e))
        rules.abandon(e, oracle)
        await agrees()

        paused = f"{redis_prefix}paused".encode()
        for state in (True, False):
            await reply_lost(lossy, paused, lambda: guard.set_paused(state))  # noqa: B023 - awaited at once
            oracle.paused = state
            await agrees()
    finally:
        await guard.close()
