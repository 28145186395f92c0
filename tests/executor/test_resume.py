"""A crash mid-step never applies a relative change twice, on a real (fake) apiserver.

The daemon dies after its request reached the apiserver but before it recorded the
result.  The next daemon resumes the execution from the write-ahead intent and finds
the change already made, instead of scaling ``by: 2`` a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.executors.kube import KubeExecutor
from remediator.ports import StepContext, StepResult
from remediator.settings import KubernetesSettings
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, open_harness, playbook, web
from tests.payloads import alert_json

SCALE_BY_TWO = {"fix": playbook("- action: scale\n  by: 2\n")}
POOL_BY_TEN = {"fix": playbook("- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n")}


async def crash_while(h: Any, task: asyncio.Task[Any], method: str, path: str) -> None:
    """Kill the pipeline while ``method path`` is held at the apiserver, then let the apiserver apply it."""
    await h.cluster.requests.arrival(method, path)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    changes = h.cluster.watch("deployments", int(h.cluster.resource_version))
    try:
        h.cluster.faults.release()  # the request had reached the server: it takes effect anyway
        await changes.queue.get()
    finally:
        h.cluster.unwatch(changes)


async def test_a_scale_interrupted_after_the_apiserver_applied_it_is_not_repeated(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    kube.cluster.apply(web(replicas=3))
    kube.cluster.faults.hang(method="PUT", path="/scale$")
    async with open_harness(tmp_path, settings_factory, vclock, kube, SCALE_BY_TWO) as h:
        await crash_while(h, h.start(), "PUT", "/scale$")
        assert h.get()["spec"]["replicas"] == 5
        [ex] = await h.rt.store.list_executions()
        assert ex["status"] == "running"

    await h.advance(301)  # the dead daemon's execution lease runs out
    async with open_harness(tmp_path, settings_factory, vclock, kube, SCALE_BY_TWO) as h2:
        assert await h2.until_done(h2.rt.pipeline.resume_unfinished()) == 1
        full = await h2.execution()
        replicas = h2.get()["spec"]["replicas"]
        puts = kube.cluster.requests.matching("PUT", "/scale$")
    assert replicas == 5  # not 7
    assert len(puts) == 1
    assert full["status"] == "succeeded"
    result = full["results"][0]
    assert result["status"] == "ok" and result["message"] == "Deployment/shop/web already has 5 replicas"
    assert (result["details"]["from"], result["details"]["to"]) == (3, 5)


async def test_a_pool_resize_interrupted_before_the_apiserver_saw_it_is_applied_once(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    kube.cluster.apply(web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
    kube.cluster.faults.fail(503, method="PATCH", path=f"/namespaces/{NS}/deployments/web$", times=None)
    async with open_harness(tmp_path, settings_factory, vclock, kube, POOL_BY_TEN) as h:
        task = h.start()
        await h.cluster.requests.arrival("PATCH")
        task.cancel()  # dies between retries: the change was never applied
        with contextlib.suppress(asyncio.CancelledError):
            await task
    kube.cluster.faults.clear()

    await h.advance(301)
    async with open_harness(tmp_path, settings_factory, vclock, kube, POOL_BY_TEN) as h2:
        assert await h2.until_done(h2.rt.pipeline.resume_unfinished()) == 1
        full = await h2.execution()
        env = h2.get()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "DB_POOL_MAX_SIZE", "value": "30"}]  # 20 + 10, once
    assert full["status"] == "succeeded"
    assert (full["results"][0]["details"]["from"], full["results"][0]["details"]["to"]) == (20, 30)


async def test_a_crash_during_the_backoff_after_a_refused_write_replans_on_resume(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The refused write's value (3 + 2) must not come back as the resumed step's intent over a person's 10."""
    kube.cluster.apply(web(replicas=3))
    kube.cluster.faults.hang(method="PUT", path="/scale$")
    async with open_harness(tmp_path, settings_factory, vclock, kube, SCALE_BY_TWO) as h:
        task = h.start()
        await h.cluster.requests.arrival("PUT", "/scale$")
        h.cluster.patch_scale("deployments", NS, "web", "application/merge-patch+json", {"spec": {"replicas": 10}})
        h.cluster.faults.release()  # our PUT: 409
        await h.clock.sleeping(lambda left: left <= 15)  # backing off before the retry...
        task.cancel()  # ...when the daemon dies
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await h.advance(301)
    async with open_harness(tmp_path, settings_factory, vclock, kube, SCALE_BY_TWO) as h2:
        assert await h2.until_done(h2.rt.pipeline.resume_unfinished()) == 1
        full = await h2.execution()
        replicas = h2.get()["spec"]["replicas"]
    assert replicas == 12
    assert (full["results"][0]["details"]["from"], full["results"][0]["details"]["to"]) == (10, 12)


async def test_a_crash_era_intent_is_not_wiped_by_a_conflict_in_the_resumed_run(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    """The write from before the crash may still be landing: its intent stays the step's, 409 or not."""
    kube.cluster.apply(web(replicas=3))
    kube.cluster.faults.conflict(method="PUT", path="/scale$")
    executor = KubeExecutor(kube.api, vclock, KubernetesSettings(mode="kubeconfig", request_timeout=30))
    recorded: list[dict[str, Any]] = []

    async def record(intent: Mapping[str, Any]) -> None:
        recorded.append(dict(intent))

    crash_era = StepResult("started", details={"intent": {"replicas": 5, "from": 3}})
    ctx = StepContext("ex-1", Alert.from_json(alert_json({"alertname": "Broken"})),
                      ResolvedTarget("Deployment", NS, "web"), False, vclock, previous=crash_era,
                      record_intent=record)
    run = asyncio.create_task(executor.run(PlannedStep(0, "scale", {"by": 2}), ctx))
    while not run.done():  # the backoff after the 409
        waiting = asyncio.ensure_future(vclock.sleeping(lambda left: left <= 15))
        await asyncio.wait({run, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            await vclock.advance(waiting.result())
        else:
            waiting.cancel()
    result = run.result()
    assert {} not in recorded  # the stored intent was never cleared
    assert result.ok and kube.cluster.get("deployments", NS, "web")["spec"]["replicas"] == 5
