"""A Redis guardrail state that was lost (restarted without persistence, flushed, failed over).

Every script that admits, takes, keeps or frees a lock checks the state's marker key; without it
the adapter raises GuardrailUnavailable (the pipeline defers, executions pause), says so once
(ERROR, ``remediator_guardrail_state_lost_total``) and rebuilds the state from the store: the
unfinished executions' locks and slots, the pause, cooldowns, rate and budget histories.  A loss
is simulated by deleting the test's keys (its own prefix on the shared Redis), as a restart
without persistence leaves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from structlog.testing import capture_logs

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.errors import GuardrailUnavailable
from remediator.core.guardrails import LOCK_RECORD_KEPT, Policy, Request
from remediator.guardstate.rebuild import Held, Seed
from remediator.guardstate.redis import RedisGuardrails
from remediator.ports import StepContext, StepResult
from remediator.runtime import RUNTIME
from tests.guardrails.conftest import REDIS_URL, delete_prefix, prefixed
from tests.payloads import alert_json, payload
from tests.tokens import ADMIN

AUTH = {"Authorization": "Bearer t1"}
TARGET = """match: {alertname: %s, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
"""
RESTART = "name: restart-and-wait\n" + TARGET % "Down" + """guardrails: {lock_ttl: 60s, cooldown: 15m,
  rate_limit: {max: 1, per: 1h}}
steps: [{action: restart}]
"""
SCALE = "name: scale-up\n" + TARGET % "Busy" + """guardrails: {lock_ttl: 60s}
steps: [{action: scale, to: 5}]
"""


class Cluster:
    """Records every step sent; a restart of ``web`` holds until the test lets it finish (the reviewer's
    wait_healthy after the restart)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.web_started = asyncio.Event()
        self.web_may_finish = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.sent.append((step.action, ctx.target.name))
        if step.action == "restart" and ctx.target.name == "web":
            self.web_started.set()
            await self.web_may_finish.wait()
        return StepResult("ok", f"{step.action} done")


def alert(name: str, deployment: str, **more: str) -> dict[str, Any]:
    return payload(alert_json({"alertname": name, "deployment": deployment, **more}))


def settings_for(tmp_path: Path, settings_factory: Callable[..., Any], redis_prefix: str) -> Any:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "restart.yaml").write_text(RESTART)
    (tmp_path / "pb" / "scale.yaml").write_text(SCALE)
    return settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, guardrails={"max_running": 1},
                            redis_url=prefixed(REDIS_URL, redis_prefix))


async def decisions(rt: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["playbook"], d["target"]["name"]): d for d in await rt.store.list_decisions()}


async def test_a_second_execution_on_a_target_still_remediated_waits_for_the_rebuild(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    """The reviewer's scenario: execution A restarted shop/web and waits; Redis restarts empty; a Busy
    alert for shop/web must not scale it while A runs (nor run beside A beyond max_running=1)."""
    cluster = Cluster()
    app = create_app(settings_for(tmp_path, settings_factory, redis_prefix), clock=vclock,
                     executors=(cluster, cluster), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        assert (await client.post("/webhooks/alertmanager", json=alert("Down", "web"), headers=AUTH)).status == 200
        running = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(cluster.web_started.wait(), 10)
        a = (await decisions(rt))[("restart-and-wait", "web")]
        assert a["decision"] == "executed" and a["status"] == "running"

        await delete_prefix(redis_prefix)  # Redis restarted without persistence
        for name, deployment in (("Busy", "web"), ("Busy", "api")):
            r = await client.post("/webhooks/alertmanager", json=alert(name, deployment), headers=AUTH)
            assert r.status == 200
        with capture_logs() as logs:
            await rt.worker.decide_all()
        # deferred, not decided: nothing recorded, nothing sent, the loss said once and counted
        assert set(await decisions(rt)) == {("restart-and-wait", "web")}
        assert cluster.sent == [("restart", "web")]
        assert [e["detected_by"] for e in logs if e["log_level"] == "error" and "was lost" in e["event"]] == [
            "marker_missing"]
        metrics = await (await client.get("/metrics")).text()
        assert 'remediator_guardrail_state_lost_total{detected_by="marker_missing"} 1.0' in metrics

        assert await rt.guardrails.recover()  # the rebuild the loss started, from the store
        await vclock.advance(2)  # the first deferral's backoff
        await rt.worker.decide_all()
        found = await decisions(rt)
        assert found[("scale-up", "web")]["decision"] == "locked"  # A's lock, re-seeded: not scaled
        assert a["id"] in found[("scale-up", "web")]["reason"]
        assert found[("scale-up", "api")]["decision"] != "executed"  # A's slot: max_running=1 holds
        assert "running" in found[("scale-up", "api")]["reason"]
        assert cluster.sent == [("restart", "web")]

        cluster.web_may_finish.set()  # A ends, and renews nothing lost meanwhile
        await asyncio.wait_for(running, 30)
        assert (await decisions(rt))[("restart-and-wait", "web")]["status"] == "succeeded"
        r = await client.post("/webhooks/alertmanager", json=alert("Busy", "web", n="2"), headers=AUTH)
        assert r.status == 200
        await rt.worker.drain()
        assert cluster.sent == [("restart", "web"), ("scale", "web")]  # after A: runs


async def test_a_rebuild_reseeds_locks_slots_pause_cooldowns_and_histories(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    cluster = Cluster()
    app = create_app(settings_for(tmp_path, settings_factory, redis_prefix), clock=vclock,
                     executors=(cluster, cluster), start_worker=False)
    raw = Redis.from_url(REDIS_URL, decode_responses=True)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        guard: RedisGuardrails = rt.guardrails
        assert (await client.post("/webhooks/alertmanager", json=alert("Down", "api"), headers=AUTH)).status == 200
        await rt.worker.drain()  # X: restarted shop/api and ended
        ended = vclock.now().timestamp()
        await vclock.advance(60)
        assert (await client.post("/webhooks/alertmanager", json=alert("Down", "web"), headers=AUTH)).status == 200
        running = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(cluster.web_started.wait(), 10)  # A: running on shop/web
        found = await decisions(rt)
        x, a = found[("restart-and-wait", "api")]["id"], found[("restart-and-wait", "web")]["id"]
        assert (await client.post("/api/v1/pause", headers=ADMIN)).status == 200
        before = await guard.usage()

        await delete_prefix(redis_prefix)
        assert not await raw.exists(f"{redis_prefix}state")
        now = vclock.now().timestamp()
        with capture_logs() as logs:
            assert await guard.recover()
        [said] = [e for e in logs if e["event"] == "guardrail state rebuilt from the store"]
        assert (said["locks"], said["last_holders"], said["paused"]) == (1, 1, True)
        assert await raw.exists(f"{redis_prefix}state") and await raw.ttl(f"{redis_prefix}state") == -1

        usage, status = await guard.usage(), await guard.status()
        assert status.paused
        assert {k: lock.owner for k, lock in usage.locks.items()} == {"Deployment/shop/web": a}
        assert usage.locks["Deployment/shop/web"].expires == now + 60  # its lock_ttl, from the rebuild
        assert set(usage.running) == set(before.running) == {a}
        # the target X acted on keeps X as its last holder (lapsed), for reacquire and take_back
        assert await raw.hget(f"{redis_prefix}lock:Deployment/shop/api", "owner") == x
        kept = await raw.pttl(f"{redis_prefix}lock:Deployment/shop/api")  # as long as the lost record was
        assert (ended + LOCK_RECORD_KEPT - now - 1) * 1000 < kept <= (ended + LOCK_RECORD_KEPT - now) * 1000
        # cooldowns: X's from its end, A's from now (the least its end will set)
        api, web = "restart-and-wait|Deployment/shop/api", "restart-and-wait|Deployment/shop/web"
        assert float(await raw.get(f"{redis_prefix}cooldown:{api}")) == ended + 900
        assert float(await raw.get(f"{redis_prefix}cooldown:{web}")) == now + 900
        # rate histories: each admission once, at its decision's time
        assert await raw.zrange(f"{redis_prefix}rate:{api}", 0, -1) == [x]
        assert await raw.zrange(f"{redis_prefix}rate:{web}", 0, -1) == [a]
        keys = sorted([k async for k in raw.scan_iter(f"{redis_prefix}*")])

        # idempotent: rebuilt again (forced, as a lost lock record does), nothing is added or moved
        assert await guard._recover(force=True)
        assert sorted([k async for k in raw.scan_iter(f"{redis_prefix}*")]) == keys
        assert await raw.zrange(f"{redis_prefix}rate:{api}", 0, -1) == [x]
        assert (await guard.usage()).locks == usage.locks

        assert (await client.post("/api/v1/resume", headers=ADMIN)).status == 200
        cluster.web_may_finish.set()
        await asyncio.wait_for(running, 30)
        assert (await decisions(rt))[("restart-and-wait", "web")]["status"] == "succeeded"
    await raw.aclose()


async def test_a_fresh_state_is_marked_at_start_and_a_lost_one_refuses_every_taking_script(
    redis_prefix: str, clock: VirtualClock
) -> None:
    may_rebuild = asyncio.Event()

    async def rebuild(at: float) -> Seed:
        await may_rebuild.wait()  # the store is slow: the state stays lost meanwhile
        return Seed()

    may_rebuild.set()
    lost: list[str] = []
    guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), Policy(max_running=1), clock,
                                       rebuild=rebuild, on_lost=lost.append)
    req = Request(owner="a", playbook="pb", target_key="t1", limit_key="k", namespace="ns",
                  now=clock.now().timestamp(), lock_ttl=60.0)
    try:
        assert lost == []  # a new state (an empty store) is no loss
        assert (await guard.admit(req)).admitted
        await delete_prefix(redis_prefix)
        may_rebuild.clear()
        with capture_logs() as logs:
            for call in (guard.admit(req), guard.renew(req), guard.reacquire(req),
                         guard.take_back(req), guard.go_on_as_trial(req), guard.release(req, succeeded=True)):
                with pytest.raises(GuardrailUnavailable, match="guardrail state was lost"):
                    await call
        assert lost == ["marker_missing"]  # once per loss, not once per call
        assert (await guard.evaluate(req)).admitted  # a plan-only reading acts on nothing: read as it is
        assert len([e for e in logs if e["log_level"] == "error"]) == 1
        may_rebuild.set()
        assert await guard.recover()  # nothing to rebuild from here: the marker alone
        assert (await guard.admit(req)).admitted
        await delete_prefix(redis_prefix)  # a second loss is news again
        with pytest.raises(GuardrailUnavailable):
            await guard.admit(req)
        assert lost == ["marker_missing", "marker_missing"]
    finally:
        await guard.close()


async def test_a_renewal_that_finds_no_record_of_its_lock_is_state_loss_not_a_lock_to_take_back(
    redis_prefix: str, clock: VirtualClock
) -> None:
    """The lock's record outlives the lock by LOCK_RECORD_KEPT: its holder renewing it and finding no
    record at all means the state lost it (a failover to a replica behind, an eviction), even with the
    marker there.  Taken back silently, another execution admitted meanwhile on an empty record would
    run beside it; instead the renewal fails closed and the state is rebuilt from the store."""
    now = clock.now().timestamp()
    store = [Seed()]  # what the store knows: at first nothing

    async def rebuild(at: float) -> Seed:
        return store[0]

    lost: list[str] = []
    guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), Policy(max_running=1), clock,
                                       rebuild=rebuild, on_lost=lost.append)
    raw = Redis.from_url(REDIS_URL, decode_responses=True)
    req = Request(owner="a", playbook="pb", target_key="t1", limit_key="k", namespace="ns", now=now, lock_ttl=60.0)
    try:
        assert (await guard.admit(req)).admitted
        store[0] = Seed(locks={"t1": Held("a", "t1", "ns", now + 60.0, live=True)})  # a: unfinished
        await raw.delete(f"{redis_prefix}lock:t1", f"{redis_prefix}running", f"{redis_prefix}running-ns")
        with capture_logs() as logs:
            with pytest.raises(GuardrailUnavailable, match="has no record"):
                await guard.renew(req)
            assert await guard.recover()
        assert lost == ["lock_record_missing"]
        assert [e["detected_by"] for e in logs if e["log_level"] == "error"] == ["lock_record_missing"]
        assert await raw.hget(f"{redis_prefix}lock:t1", "owner") == "a"  # rebuilt from the store's record
        assert await guard.renew(req)
        other = Request(owner="b", playbook="pb", target_key="t2", limit_key="k2", namespace="ns", now=now)
        assert not (await guard.admit(other)).admitted  # a's slot is back: max_running=1
    finally:
        await raw.aclose()
        await guard.close()
