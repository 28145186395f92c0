"""A pause asked for while Redis is unreachable is answered 503 but recorded, and holds once
Redis is back, on every replica (docs/operations.md, The kill switch).

Two replicas (two KillSwitch instances, or two runtimes) on one store and one redis-server of
the test's own, stopped while the pause is asked for and started again after.  The replica that
paused keeps trying to set the pause in Redis; another replica, which read the store's
"not paused" a moment before, does not trust that reading once its Redis connection broke.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.errors import GuardrailUnavailable
from remediator.core.guardrails import Policy
from remediator.guardstate.redis import MARKER, RedisGuardrails
from remediator.killswitch import KillSwitch
from remediator.runtime import open_runtime
from tests.guardrails.conftest import PrivateRedis
from tests.payloads import alert_json, payload
from tests.pipeline.test_kill_switch_mid_execution import PLAYBOOK, FirstStepWaits
from tests.pipeline.test_pipeline import received
from tests.store.conftest import fresh_schema

#: Virtual seconds within which the replica that paused has tried again (it tries every half second).
SOON = 1.0


@pytest.fixture
async def two_replicas(
    tmp_path: Path, vclock: VirtualClock
) -> AsyncIterator[tuple[PrivateRedis, RedisGuardrails, RedisGuardrails]]:
    """A redis-server of the test's own, and each replica's guardrail state on it."""
    server = PrivateRedis(tmp_path)
    server.start()
    one = await RedisGuardrails.open(server.url, Policy(), vclock)
    two = await RedisGuardrails.open(server.url, Policy(), vclock)
    yield server, one, two
    await one.close()
    await two.close()
    server.stop()


def rearming() -> list[asyncio.Task[Any]]:
    """The tries under way to set a pause that could not reach Redis."""
    return [t for t in asyncio.all_tasks() if t.get_name() == "remediator-kill-switch-rearm" and not t.done()]


async def tries_end() -> None:
    await asyncio.wait_for(asyncio.gather(*rearming()), 5)


async def test_a_pause_recorded_while_redis_was_down_holds_on_another_replica_at_its_very_next_check(
    store: Any, two_replicas: tuple[PrivateRedis, RedisGuardrails, RedisGuardrails], vclock: VirtualClock
) -> None:
    server, guard_1, guard_2 = two_replicas
    replica_1, replica_2 = KillSwitch(store, guard_1, clock=vclock), KillSwitch(store, guard_2, clock=vclock)
    assert not await replica_1.paused()  # it read the store's "not paused", and keeps that reading
    server.stop()
    with pytest.raises(GuardrailUnavailable):
        await replica_2.pause("alice")  # 503, but recorded
    assert (await store.kill_switch()).paused
    server.start()  # back: the pause never reached it
    assert not await guard_2.paused()
    assert await replica_1.paused()  # no time has passed: its kept "not paused" predates the outage
    assert await guard_1.paused()  # and it set the pause in Redis from the store
    await replica_2.close()


async def test_the_replica_whose_pause_did_not_reach_redis_sets_it_once_redis_is_back(
    store: Any, two_replicas: tuple[PrivateRedis, RedisGuardrails, RedisGuardrails], vclock: VirtualClock
) -> None:
    server, guard_1, guard_2 = two_replicas
    replica_2 = KillSwitch(store, guard_2, clock=vclock)
    server.stop()
    with pytest.raises(GuardrailUnavailable):
        await replica_2.pause("alice")
    await vclock.advance(SOON)  # Redis still down: it keeps trying
    assert len(rearming()) == 1
    server.start()
    assert not await guard_1.paused()  # what every admission reads: no pause yet
    with capture_logs() as logs:
        await vclock.advance(SOON)
        await tries_end()
    assert await guard_1.paused()  # set by the replica that paused, nobody else checked
    assert [e["paused_by"] for e in logs if "is set there now" in e["event"]] == ["alice"]
    assert rearming() == []  # and it stopped trying


async def test_a_resume_recorded_after_a_pause_that_did_not_reach_redis_is_not_overridden(
    store: Any, two_replicas: tuple[PrivateRedis, RedisGuardrails, RedisGuardrails], vclock: VirtualClock
) -> None:
    server, guard_1, guard_2 = two_replicas
    replica_1, replica_2 = KillSwitch(store, guard_1, clock=vclock), KillSwitch(store, guard_2, clock=vclock)
    server.stop()
    with pytest.raises(GuardrailUnavailable):
        await replica_2.pause("alice")
    assert len(rearming()) == 1
    with pytest.raises(GuardrailUnavailable):
        await replica_1.resume("bob")  # another replica resumes: recorded, Redis still down
    server.start()
    with capture_logs() as logs:
        await vclock.advance(SOON)
        await tries_end()
    assert [e for e in logs if "a resume was recorded" in e["event"]]  # it read the store first, and stopped
    assert not await guard_1.paused()
    assert not await replica_1.paused() and not await replica_2.paused()
    # the replica that paused resumes itself: its tries stop at once, before the store says resumed
    server.stop()
    with pytest.raises(GuardrailUnavailable):
        await replica_2.pause("carol")
    assert len(rearming()) == 1
    with pytest.raises(GuardrailUnavailable):
        await replica_2.resume("carol")
    assert rearming() == []


async def test_closing_the_runtime_stops_the_tries(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        async with open_runtime(settings_factory(redis_url=server.url), clock=vclock, start_worker=False) as rt:
            server.stop()
            with pytest.raises(GuardrailUnavailable):
                await rt.kill_switch.pause("alice")
            [tries] = rearming()
        assert tries.cancelled()
    finally:
        server.stop()


async def test_two_runtimes_a_pause_recorded_while_redis_was_down_refuses_the_other_replicas_next_alert(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """The reviewer's scenario, Redis restarted with its state (persistence: the marker is kept, so no
    rebuild re-arms the pause): the other replica decides the next alert ``paused``, not ``executed``."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "two.yaml").write_text(PLAYBOOK.replace("name: web", 'name: "{{ labels.app }}"')
                                          .replace("{alertname: X}", "{alertname: X, matchers: ['app=~\".+\"']}"))
    server = PrivateRedis(tmp_path)
    server.start()
    cluster = FirstStepWaits()
    cluster.go.set()

    async def decide(rt: Any, app: str) -> DecisionKind:
        [one] = received(payload(alert_json({"alertname": "X", "app": app})), vclock)
        [decision] = (await rt.pipeline.process(one)).decisions
        return decision.kind  # type: ignore[no-any-return]

    try:
        async with fresh_schema() as schema:
            settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, redis_url=server.url,
                                        database_url=schema.dsn)
            async with (open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as r1,
                        open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as r2):
                assert await decide(r1, "web") is DecisionKind.EXECUTED
                server.stop()
                with pytest.raises(GuardrailUnavailable):
                    await r2.kill_switch.pause("alice")
                server.start()
                raw = Redis.from_url(server.url)
                await raw.set(r1.guardrails.prefix + MARKER, "kept")  # type: ignore[attr-defined]
                await raw.aclose()
                assert await decide(r1, "api") is DecisionKind.PAUSED
    finally:
        server.stop()
    assert cluster.sent == ["restart", "scale"]  # web's two steps; nothing on api
