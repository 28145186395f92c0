"""Redis stopped mid-run, then back (acceptance 4 of issue 4).

The daemon (the real aiohttp app) talks to a redis-server of the test's own, which
the test stops while an execution is in flight and starts again on the same port.
While it is down nothing starts, every decision says why, ``/readyz`` and the metric
report it; when it returns, the same daemon carries on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.ports import StepContext, StepResult
from remediator.runtime import RUNTIME
from tests.guardrails.conftest import PrivateRedis
from tests.payloads import alert_json, payload
from tests.tokens import ADMIN, READ

AUTH = {"Authorization": "Bearer t1"}
PLAYBOOK = """
name: outage
match: {alertname: X, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
guardrails: {cooldown: 10m}
steps: [{action: restart}]
"""


class Cluster:
    """Records restarts; the one of ``slow`` waits until the test lets it finish."""

    def __init__(self) -> None:
        self.restarted: list[str] = []
        self.slow_started = asyncio.Event()
        self.slow_may_finish = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.restarted.append(ctx.target.name)
        if ctx.target.name == "slow":
            self.slow_started.set()
            await self.slow_may_finish.wait()
        return StepResult("ok", "restarted")


def alert(app: str) -> dict[str, Any]:
    return payload(alert_json({"alertname": "X", "app": app}))


async def test_redis_outage_fails_closed_and_recovers_without_a_restart(
    tmp_path: Path, private_redis: PrivateRedis, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "outage.yaml").write_text(PLAYBOOK)
    settings = settings_factory(redis_url=private_redis.url, playbooks=str(tmp_path / "pb"), dry_run=False)
    cluster = Cluster()
    app = create_app(settings, clock=vclock, executors=(cluster, cluster), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]

        async def deliver(app_name: str) -> None:
            r = await client.post("/webhooks/alertmanager", json=alert(app_name), headers=AUTH)
            assert r.status == 200  # intake does not need Redis

        store: Any = rt.store  # the embedded store's audit listing

        async def decision_of(app_name: str) -> dict[str, Any]:
            [d] = [d for d in await store.list_decisions() if d["target"]["name"] == app_name]
            return dict(d)

        await deliver("one")
        await rt.worker.drain()
        assert (await client.get("/readyz")).status == 200

        # Redis goes away while an execution is running: the execution finishes and its
        # lock is left to expire (there is nobody to release it to)
        await deliver("slow")
        running = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(cluster.slow_started.wait(), 10)
        private_redis.stop()
        cluster.slow_may_finish.set()
        await asyncio.wait_for(running, 30)
        assert {e["target"]["name"]: e["status"] for e in await rt.store.list_executions()} == {
            "one": "succeeded", "slow": "succeeded"
        }

        await deliver("two")
        await deliver("three")
        for _ in range(6):  # a minute of outage: the alerts are decided again and again, never executed
            await rt.worker.drain()
            await vclock.advance(10)
        assert cluster.restarted == ["one", "slow"]  # nothing started while Redis was down
        store_decisions = {d["target"]["name"] for d in await store.list_decisions()}
        assert store_decisions == {"one", "slow"}  # and no verdict was recorded: an outage is not one
        r = await client.get("/readyz")
        body = await r.json()
        assert r.status == 503 and body["checks"]["guardrails"].startswith("unavailable: redis ping failed")
        assert (await client.get("/api/v1/guardrails", headers=READ)).status == 503
        assert (await client.post("/api/v1/pause", headers=ADMIN)).status == 503
        metrics = await (await client.get("/metrics")).text()
        assert 'remediator_decisions_deferred_total{cause="guardrail_unavailable"}' in metrics

        private_redis.start()  # same port, empty: the daemon is not restarted
        assert (await client.get("/readyz")).status == 200
        # the pause asked for during the outage was answered 503 but recorded in the store: it holds
        # (failing closed) until an operator resumes
        assert (await (await client.get("/api/v1/guardrails", headers=READ)).json())["paused"] is True
        assert (await client.post("/api/v1/resume", headers=ADMIN)).status == 200
        await vclock.advance(30)  # the longest backoff: no re-send from Alertmanager is needed
        await rt.worker.drain()
        await deliver("four")
        await rt.worker.drain()
        # the restarted Redis is empty: the first script to run finds the state lost, and nothing is
        # decided until it is rebuilt from the store (the decisions wait one more backoff)
        metrics = await (await client.get("/metrics")).text()
        assert 'remediator_guardrail_state_lost_total{detected_by="marker_missing"} 1.0' in metrics
        await vclock.advance(30)
        await rt.worker.drain()
        assert (await decision_of("four"))["decision"] == "executed"
        for name in ("two", "three"):  # each executed once, now that its verdict can be had
            assert (await decision_of(name))["decision"] == "executed"
        assert sorted(cluster.restarted) == ["four", "one", "slow", "three", "two"]
        status = await (await client.get("/api/v1/guardrails", headers=READ)).json()
        assert status == {"paused": False, "breakers": {"outage": {
            "state": "closed", "consecutive_failures": 0, "open_until": None, "trial_execution": None}},
            "budgets": [], "running": [], "locks": [], "locks_cut": False}  # every execution finished: no slot, no lock


TWO_STEPS = """
name: outage
match: {alertname: X, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
steps: [{action: restart}, {action: scale, to: 3}]
"""


class Steps:
    """Records every step sent to the cluster; the restart waits until the test lets it finish."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.restart_started = asyncio.Event()
        self.restart_may_finish = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.sent.append(step.action)
        if step.action == "restart":
            self.restart_started.set()
            await self.restart_may_finish.wait()
        return StepResult("ok", f"{step.action} done")


async def test_redis_stopped_between_two_steps_sends_no_second_step_until_it_is_back(
    tmp_path: Path, private_redis: PrivateRedis, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """The lock was confirmed a moment ago, well inside half its TTL: that is not enough. Before a
    step that writes, the lock is confirmed with the guardrail state itself; with Redis down the
    execution pauses (unfinished, not failed) and resumes, once, when Redis is back."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "outage.yaml").write_text(TWO_STEPS)
    settings = settings_factory(redis_url=private_redis.url, playbooks=str(tmp_path / "pb"), dry_run=False)
    cluster = Steps()
    app = create_app(settings, clock=vclock, executors=(cluster, cluster), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        r = await client.post("/webhooks/alertmanager", json=alert("web"), headers=AUTH)
        assert r.status == 200
        running = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(cluster.restart_started.wait(), 10)
        private_redis.stop()
        await vclock.advance(5)  # a few seconds into the outage
        cluster.restart_may_finish.set()
        await asyncio.wait_for(running, 30)
        assert cluster.sent == ["restart"]  # the scale was not sent
        [ex] = await rt.store.list_executions()
        assert ex["status"] == "running"  # paused: not failed, no on_failure, no breaker
        assert await rt.pipeline.resume_unfinished() == 0  # still down: nothing resumes

        private_redis.start()  # back, and empty (no persistence)
        # its first renewal finds the state lost: the execution waits while the state is rebuilt from
        # the store, which gives it its lock back (it is unfinished there)
        assert await rt.pipeline.resume_unfinished() == 0
        assert cluster.sent == ["restart"]
        assert await rt.guardrails.recover()  # type: ignore[attr-defined]
        assert await rt.pipeline.resume_unfinished() == 1
        assert await rt.pipeline.resume_unfinished() == 0
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
    assert cluster.sent == ["restart", "scale"]  # each step sent exactly once
    assert ex["status"] == "succeeded"
    assert [(s["action"], s["status"]) for s in full["results"]] == [("restart", "ok"), ("scale", "ok")]
