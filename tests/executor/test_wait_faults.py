"""wait_healthy when the watch or the API misbehaves, on the fake's faults and the executor's virtual clock.

A watch that ends at once with nothing to show (a proxy cutting it, a 410 on every try) must not
become a tight loop of reads, lists and watches for the whole timeout: it is watched again after a
pause that grows, as client-go's reflector does.  An API that keeps failing until the timeout is
logged at each failure, and the timeout's message says the API failed, not only what the rollout
looked like before it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.executors.kube import KubeExecutor
from remediator.settings import KubernetesSettings
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube, running_fake_kube
from tests.executor.harness import NS, web
from tests.payloads import T0
from tests.real_kube.helpers import run_step

WATCHES = f"/namespaces/{NS}/deployments$"  # the executor reads web by name: only its watches go here
#: No request of the fake comes near it: the only sleepers on the clock are the wait's timeout and its pauses.
REQUEST_TIMEOUT = 1000.0


@pytest.fixture
async def unfinished() -> AsyncIterator[FakeKube]:
    """web restarted, its new pods never ready: a rollout the wait is still waiting for."""
    clock = VirtualClock(T0)
    cluster = FakeCluster(clock=lambda: clock.now().timestamp())
    cluster.apply(web(replicas=3))
    cluster.faults.never_ready(NS, "web")
    cluster.patch("deployments", NS, "web", "application/merge-patch+json",
                  {"spec": {"template": {"metadata": {"annotations": {"restarted": "now"}}}}})
    async with running_fake_kube(cluster) as kube:
        yield kube


def waiter(kube: FakeKube) -> tuple[KubeExecutor, VirtualClock]:
    clock = VirtualClock(T0)
    return KubeExecutor(kube.api, clock, KubernetesSettings(request_timeout=REQUEST_TIMEOUT)), clock


async def paused(clock: VirtualClock, deadline: float) -> float:
    """Wait (real time, bounded: a regression that never pauses fails here) until the wait sleeps on its
    clock for something other than its own timeout (``deadline`` on the clock); how long that sleep is."""

    def a_pause(left: float) -> bool:
        return left < 100 and abs(left - (deadline - clock.monotonic())) > 1e-6

    return await asyncio.wait_for(clock.sleeping(a_pause), 10)


def watches(kube: FakeKube) -> int:
    return sum(1 for r in kube.cluster.requests if r.watch)


@pytest.mark.parametrize("expired", [False, True], ids=["ended", "expired"])
async def test_a_watch_that_ends_at_once_again_and_again_is_watched_again_after_a_growing_pause(
    unfinished: FakeKube, expired: bool
) -> None:
    kube = unfinished
    kube.cluster.faults.end_watch(path=WATCHES, times=None, expired=expired)
    kube_exec, clock = waiter(kube)
    with capture_logs() as logs:
        step = asyncio.create_task(run_step(kube_exec, NS, "wait_healthy", {"timeout": 300}))
        pauses = [await paused(clock, 300)]
        for _ in range(3):
            # the first short watch is retried at once (one 410 is routine); every one after it waits first
            assert watches(kube) == len(pauses) + 1
            await clock.advance(pauses[-1])
            pauses.append(await paused(clock, 300))
        assert not step.done()
        kube.cluster.faults.clear()
        kube.cluster.faults.allow_ready(NS, "web")
        kube.cluster.reconcile()  # the new pods become ready while it pauses
        await clock.advance(pauses[-1])
        result = await asyncio.wait_for(step, 10)

    assert (result.status, result.message) == ("ok", 'deployment "web" successfully rolled out')
    for n, pause in enumerate(pauses):  # from 1 s, doubling, jittered down to half (executors.kube.WATCH_BACKOFF)
        assert 2 ** n / 2 <= pause <= 2 ** n, pauses
    said = [e for e in logs if e["event"].startswith("the watch ended at once with nothing to show")]
    assert [e["times"] for e in said] == [2, 3, 4, 5]
    assert all(e["log_level"] == "warning" and e["target"] == f"Deployment/{NS}/web" for e in said)


async def test_a_wait_that_runs_out_while_the_api_fails_says_so_and_logs_each_failure(unfinished: FakeKube) -> None:
    kube = unfinished
    kube_exec, clock = waiter(kube)
    with capture_logs() as logs:
        step = asyncio.create_task(run_step(kube_exec, NS, "wait_healthy", {"timeout": 60}))
        await asyncio.wait_for(kube.cluster.requests.arrival(where=lambda r: r.watch), 10)
        kube.cluster.faults.server_error(503, times=None, message="the apiserver is unavailable")
        kube.cluster.store.close_watches()  # the open watch breaks; every request from now on fails
        while not step.done():
            pause = await paused(clock, 60)
            await clock.advance(pause)
            await asyncio.sleep(0)
        result: Any = step.result()

    failures = [e for e in logs if e["event"] == "Kubernetes API call failed while waiting for the rollout; "
                                                "reading again"]
    assert len(failures) >= 5  # 0.5 + 1 + 2 + 4 + 8 + 10 ... seconds until the 60 s ran out
    assert all(e["log_level"] == "warning" and e["error"].startswith("503 Service Unavailable") for e in failures)
    assert result.status == "failed"
    assert result.message == (
        f"wait_healthy on Deployment/{NS}/web: Deployment/{NS}/web did not become healthy within 60s (last seen: "
        f"1 out of 3 new replicas have been updated...; then the Kubernetes API failed {len(failures)} times in a "
        "row, last: 503 Service Unavailable: the apiserver is unavailable)"), result.message
