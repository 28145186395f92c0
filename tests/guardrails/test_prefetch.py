"""Verdicts prefetched for a batch (Redis: one pipelined round trip) answer the batch's
read-only decisions exactly as asking each would, unless the state was changed since.

To tell a prefetched answer from a fresh one, the state is changed behind the adapter's back
(another client sets the pause): a prefetched verdict does not see it, a fresh one does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.guardrails import Policy, Request
from remediator.guardstate.redis import RedisGuardrails
from remediator.ports import PrefetchesVerdicts
from tests.guardrails.conftest import REDIS_URL, prefixed
from tests.payloads import T0

K = DecisionKind


@pytest.fixture
async def guard(redis_prefix: str, clock: VirtualClock) -> AsyncIterator[RedisGuardrails]:
    g = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), Policy(), clock)
    yield g
    await g.close()


@pytest.fixture
async def behind(redis_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def req(owner: str, clock: VirtualClock, target: str = "t1") -> Request:
    return Request(owner=owner, target_key=target, limit_key=target, namespace="shop", playbook="pb",
                   now=clock.now().timestamp(), cooldown=600.0)


async def test_a_prefetched_verdict_answers_its_request_once(
    guard: RedisGuardrails, behind: Redis, redis_prefix: str, clock: VirtualClock
) -> None:
    assert isinstance(guard, PrefetchesVerdicts)
    await guard.prefetch_evaluations([req("a", clock), req("b", clock, "t2")])
    await behind.set(f"{redis_prefix}paused", "1")  # not through the adapter: it cannot know
    clock.set(T0 + timedelta(seconds=1))  # a moment later: the same request otherwise
    assert (await guard.evaluate(req("a", clock))).kind is K.EXECUTED  # the prefetched reading
    assert (await guard.evaluate(req("a", clock))).kind is K.PAUSED  # once: asked again
    assert (await guard.evaluate(req("b", clock, "t3"))).kind is K.PAUSED  # another request: asked


async def test_a_change_made_through_the_adapter_makes_prefetched_verdicts_stale(
    guard: RedisGuardrails, clock: VirtualClock
) -> None:
    await guard.prefetch_evaluations([req("a", clock), req("b", clock)])
    assert (await guard.admit(req("a", clock))).kind is K.EXECUTED  # the target is now locked by "a"
    verdict = await guard.evaluate(req("b", clock))
    assert verdict.kind is K.LOCKED and verdict.holder == "a"  # not the reading from before the admission
