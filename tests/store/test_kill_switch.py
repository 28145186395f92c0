"""The kill switch is durable: a Redis restart without persistence does not resume automation
(issue 14, item 5).

Real Redis (a redis-server of the test's own, no persistence, restarted on the same port
exactly as a crashed pod would be) and both real stores.  Pausing records the switch in
the store and in Redis; after the restart Redis has forgotten it, and the first check
(a step, or an admission) re-arms it from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.errors import StoreUnavailable
from remediator.core.guardrails import Policy
from remediator.guardstate.redis import RedisGuardrails
from remediator.killswitch import KillSwitch
from remediator.ports import KillSwitchRecord
from remediator.runtime import open_runtime
from tests.guardrails.conftest import PrivateRedis
from tests.payloads import T0, alert_json, payload
from tests.pipeline.test_kill_switch_mid_execution import PLAYBOOK, FirstStepWaits
from tests.pipeline.test_pipeline import received
from tests.store.conftest import fresh_schema


@pytest.fixture
async def redis(tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[tuple[PrivateRedis, RedisGuardrails]]:
    """A redis-server of the test's own, without persistence (so it can be restarted empty),
    and guardrail state on it."""
    server = PrivateRedis(tmp_path)
    server.start()
    guard = await RedisGuardrails.open(server.url, Policy(), vclock)
    yield server, guard
    await guard.close()
    server.stop()


def restart_without_persistence(server: PrivateRedis) -> None:
    server.stop()
    server.start()  # same port, empty


def rearmed(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if "lost the kill switch" in e["event"]]


async def test_a_pause_lost_by_a_redis_restart_is_re_armed_from_the_store(
    store: Any, redis: tuple[PrivateRedis, RedisGuardrails], vclock: VirtualClock
) -> None:
    redis_server, guard = redis
    switch = KillSwitch(store, guard, clock=vclock)
    assert not await switch.paused() and await switch.record() is None
    await switch.pause("alice")
    assert await guard.paused() and await switch.record() == KillSwitchRecord(True, "alice", T0)
    restart_without_persistence(redis_server)
    assert not await guard.paused()  # what admissions read had silently resumed automation
    with capture_logs() as logs:
        assert await switch.paused()
        assert await guard.paused()  # re-armed: admissions see the pause again
        assert await switch.paused()
    assert [(e["log_level"], e["paused_by"]) for e in rearmed(logs)] == [("warning", "alice")]  # once
    restart_without_persistence(redis_server)  # a second loss is news again
    with capture_logs() as logs:
        assert await switch.paused() and await guard.paused()
    assert len(rearmed(logs)) == 1
    await vclock.advance(60)
    await switch.resume("bob")
    assert not await guard.paused() and not await switch.paused()
    assert await switch.record() == KillSwitchRecord(False, "bob", vclock.now())
    restart_without_persistence(redis_server)
    assert not await switch.paused() and not await guard.paused()  # a resume stays a resume


class DropsRedisOnRead:
    """The store, whose kill-switch read is the moment the private Redis goes away: between the
    switch's two guardrail-state calls (reading the lost pause, then re-arming it)."""

    def __init__(self, inner: Any, server: PrivateRedis) -> None:
        self.inner, self.server, self.drop = inner, server, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def kill_switch(self) -> KillSwitchRecord | None:
        record: KillSwitchRecord | None = await self.inner.kill_switch()
        if self.drop:
            self.drop = False
            self.server.stop()
        return record


async def test_a_re_arm_cut_off_by_redis_going_away_still_answers_paused_and_re_arms_once_it_is_back(
    store: Any, redis: tuple[PrivateRedis, RedisGuardrails], vclock: VirtualClock
) -> None:
    redis_server, guard = redis
    await KillSwitch(store, guard, clock=vclock).pause("alice")
    restart_without_persistence(redis_server)  # the pause is lost...
    switch = KillSwitch(DropsRedisOnRead(store, redis_server), guard, clock=vclock)
    with capture_logs() as logs:
        assert await switch.paused()  # ...and Redis goes away before it can be re-armed: paused all the same
    assert rearmed(logs) == []
    redis_server.start()  # back, empty again
    assert not await guard.paused()
    with capture_logs() as logs:
        assert await switch.paused() and await guard.paused()  # re-armed at the first check that reaches it
    assert len(rearmed(logs)) == 1


async def test_an_unreachable_side_falls_back_to_the_other_and_neither_fails_closed(
    store: Any, redis: tuple[PrivateRedis, RedisGuardrails], vclock: VirtualClock
) -> None:
    redis_server, guard = redis
    switch = KillSwitch(store, guard, clock=vclock)
    await switch.pause("alice")
    redis_server.stop()
    assert await switch.paused()  # Redis down: the store's answer
    redis_server.start()
    await switch.resume("alice")
    await store.close()  # the store unreachable from here on
    assert not await switch.paused()  # the guardrail state's answer
    with pytest.raises(StoreUnavailable):
        await switch.pause("carol")
    assert await guard.paused() and await switch.paused()  # stopping works all the same, not durably
    with pytest.raises(StoreUnavailable):
        await switch.resume("carol")
    assert await guard.paused()  # a resume that cannot be recorded changes nothing
    await guard.set_paused(False)
    redis_server.stop()
    assert await switch.paused()  # neither side answers: paused


@pytest.fixture(params=["sqlite", "postgres"])
async def store_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {}
        return
    async with fresh_schema() as schema:
        yield {"database_url": schema.dsn}


async def test_after_a_redis_restart_the_daemon_neither_admits_nor_steps_while_paused(
    tmp_path: Path, settings_factory: Callable[..., Any], redis: tuple[PrivateRedis, RedisGuardrails],
    vclock: VirtualClock, store_settings: dict[str, Any],
) -> None:
    redis_server = redis[0]
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "two.yaml").write_text(PLAYBOOK.replace("name: web", 'name: "{{ labels.app }}"')
                                          .replace("{alertname: X}", "{alertname: X, matchers: ['app=~\".+\"']}"))
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, redis_url=redis_server.url,
                                **store_settings)
    cluster = FirstStepWaits()
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        rt.pipeline.kill_switch = switch = KillSwitch(rt.store, rt.guardrails, clock=vclock)
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "X", "app": "web"})), vclock))
        running = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(cluster.started.wait(), 10)  # its first step (restart) is running
        await switch.pause("alice")
        restart_without_persistence(redis_server)
        cluster.go.set()
        await asyncio.wait_for(running, 10)
        [paused] = await rt.store.list_executions()
        full = await rt.store.get_execution(paused["id"])
        restart_without_persistence(redis_server)  # lost again: now the admission must re-arm it
        [other] = received(payload(alert_json({"alertname": "X", "app": "api"})), vclock)
        [decision] = (await rt.pipeline.process(other)).decisions
        state_after = await rt.guardrails.paused()
    assert cluster.sent == ["restart"]  # the step after the restart did not run
    assert paused["status"] == "running" and full["events"][0]["reason"] == "remediation is paused (kill switch)"
    assert decision.kind is DecisionKind.PAUSED  # not admitted: Redis was re-armed before it was asked
    assert state_after


class CountingReads:
    """The store, with its kill-switch reads counted (composition: every other call passes through)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads = 0

    async def kill_switch(self) -> KillSwitchRecord | None:
        self.reads += 1
        return await self.store.kill_switch()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_checks_in_a_storm_do_not_each_read_the_store_and_a_kept_reading_never_re_arms(
    store: Any, redis: tuple[PrivateRedis, RedisGuardrails], vclock: VirtualClock
) -> None:
    guard = redis[1]
    counted = CountingReads(store)
    replica_a = KillSwitch(counted, guard, clock=vclock)
    replica_b = KillSwitch(store, guard, clock=vclock)
    assert not await replica_a.paused()
    for _ in range(1000):  # one admission after another: the store said "not paused" a moment ago
        assert not await replica_a.paused()
    assert counted.reads == 1
    await vclock.advance(10)
    assert not await replica_a.paused()
    assert counted.reads == 2  # the reading is kept for seconds, not forever

    await replica_b.pause("alice")
    assert await replica_a.paused()  # a pause by any replica is seen at once, in the guardrail state
    await replica_a.pause("alice")  # replica_a now keeps "paused"...
    await replica_b.resume("bob")  # ...when another replica resumes
    assert not await replica_a.paused()  # its kept "paused" is re-read, not re-armed over the resume
    assert not await guard.paused()


async def test_a_dry_run_decision_re_arms_a_lost_pause_at_most_once_a_second(
    tmp_path: Path, settings_factory: Callable[..., Any], redis: tuple[PrivateRedis, RedisGuardrails],
    vclock: VirtualClock,
) -> None:
    """A decision that only reads the guardrails (dry-run) re-arms a lost pause before it reads, at
    most once a second (an admission always does: see above).  Between a loss and that re-arm a
    dry run plans what the pause would refuse; nothing is executed either way."""
    redis_server = redis[0]
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "two.yaml").write_text(PLAYBOOK.replace("name: web", 'name: "{{ labels.app }}"')
                                          .replace("{alertname: X}", "{alertname: X, matchers: ['app=~\".+\"']}"))
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=True, redis_url=redis_server.url)
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        rt.pipeline.kill_switch = switch = KillSwitch(rt.store, rt.guardrails, clock=vclock)

        async def decide(app: str) -> DecisionKind:
            [one] = received(payload(alert_json({"alertname": "X", "app": app})), vclock)
            [decision] = (await rt.pipeline.decide(one)).decisions
            return decision.kind

        await switch.pause("alice")
        restart_without_persistence(redis_server)
        assert await decide("a") is DecisionKind.PAUSED  # re-armed first
        restart_without_persistence(redis_server)
        await vclock.advance(0.5)
        assert await decide("b") is DecisionKind.EXECUTED  # within the second: read as it is (planned only)
        await vclock.advance(0.5)
        assert await decide("c") is DecisionKind.PAUSED  # a second on: re-armed again
