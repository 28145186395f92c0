"""The moment between a pod's delete and its controller's answer: the status still counts the pod.

A real cluster's controllers run in their own time, so right after ``delete_pod`` the
workload's status is the one from before the delete.  The fake shows that window when
its controllers run only on :meth:`FakeCluster.reconcile` (``sync_controllers=False``).
wait_healthy and ``min_healthy_replicas`` must read the pods themselves in that window:
kubectl's rule on the stale status alone says healthy, and counts a pod already deleted.
A StatefulSet's status also counts a Terminating pod as ready, lag or not.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube, running_fake_kube
from tests.executor.harness import NS, db, web
from tests.payloads import T0
from tests.real_kube.helpers import executor, run_step


@pytest.fixture
async def lagging() -> AsyncIterator[FakeKube]:
    """A cluster whose controllers (and kubelet) act only when the test says so."""
    clock = VirtualClock(T0)
    cluster = FakeCluster(clock=lambda: clock.now().timestamp(), sync_controllers=False)
    cluster.apply(web(replicas=2))
    cluster.apply(db(namespace=NS, replicas=2))
    async with running_fake_kube(cluster) as kube:
        yield kube


def pod_names(kube: FakeKube, name: str, kind: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in kube.cluster.pods_of(NS, name, kind))


async def waiting(kube: FakeKube, name: str, kind: str) -> asyncio.Task[Any]:
    """Start wait_healthy and return once it watches the workload (it has judged what it read), or has ended."""
    step = asyncio.create_task(
        run_step(executor(kube.api, server_dry_run=False, clock=VirtualClock(T0)), NS, "wait_healthy",
                 {"timeout": 300}, name=name, kind=kind))
    watched = asyncio.ensure_future(kube.cluster.requests.arrival(where=lambda r: r.watch))
    await asyncio.wait({step, watched}, return_when=asyncio.FIRST_COMPLETED)
    watched.cancel()
    return step


@pytest.mark.parametrize(("name", "kind", "done"), [
    ("web", "Deployment", 'deployment "web" successfully rolled out'),
    ("db", "StatefulSet", "statefulset rolling update complete"),
])
async def test_wait_healthy_right_after_a_delete_waits_for_the_replacement(
    lagging: FakeKube, name: str, kind: str, done: str
) -> None:
    kube = lagging
    victim = pod_names(kube, name, kind)[0]
    live = executor(kube.api, server_dry_run=False)
    deleted = await run_step(live, NS, "delete_pod", {"pod": victim}, name=name, kind=kind)
    assert deleted.status == "ok", deleted.message
    workload = kube.cluster.get("deployments" if kind == "Deployment" else "statefulsets", NS, name)
    assert workload is not None
    status = workload["status"]
    assert (status.get("availableReplicas"), status.get("updatedReplicas"), status.get("readyReplicas")) == (
        2, 2, 2)  # the status from before the delete: kubectl's rule alone says healthy

    step = await waiting(kube, name, kind)
    assert not step.done(), f"wait_healthy called {name} healthy with a pod deleted: {step.result()}"
    listed = [r for r in kube.cluster.requests if r.method == "GET" and r.path.endswith("/pods")]
    assert listed and listed[-1].query["labelSelector"] == f"app={name}"

    kube.cluster.reconcile()  # the controllers see the delete; the kubelet ends it; a replacement is ready
    result = await asyncio.wait_for(step, 10)
    assert (result.status, result.message) == ("ok", done)
    assert victim not in [p["metadata"]["name"] for p in kube.cluster.pods_of(NS, name, kind)
                          if p["metadata"].get("deletionTimestamp")]


async def test_min_healthy_replicas_counts_a_pod_deleted_a_moment_ago_as_gone(lagging: FakeKube) -> None:
    """Two alerts, two pods of web, one after the other: the second delete comes before the Deployment's
    status has counted the first, and would leave no pod serving."""
    kube = lagging
    first, second = pod_names(kube, "web", "Deployment")
    live = executor(kube.api, server_dry_run=False)
    guard = {"min_healthy_replicas": 1}
    assert (await run_step(live, NS, "delete_pod", {"pod": first, **guard})).status == "ok"

    refused = await run_step(live, NS, "delete_pod", {"pod": second, **guard})

    assert refused.status == "failed"
    assert refused.message.endswith(
        f"deleting pod {second} would leave 0 ready replica(s) of Deployment/{NS}/web (1 ready now), fewer "
        "than min_healthy_replicas 1: refused, nothing changed"), refused.message
    pod = kube.cluster.get("pods", NS, second)
    assert pod is not None and not pod["metadata"].get("deletionTimestamp")


async def db0_terminating(replicas: int, action: str, params: dict[str, Any], policy: str = "OrderedReady") -> Any:
    """Delete db-0 of a StatefulSet whose kubelet never finishes deletes, then run one step on db."""
    clock = VirtualClock(T0)
    cluster = FakeCluster(clock=lambda: clock.now().timestamp(), termination_delay=float("inf"))
    manifest = db(namespace=NS, replicas=replicas)
    manifest["spec"]["podManagementPolicy"] = policy
    cluster.apply(manifest)
    async with running_fake_kube(cluster) as kube:
        live = executor(kube.api, server_dry_run=False)
        target = {"name": "db", "kind": "StatefulSet"}
        assert (await run_step(live, NS, "delete_pod", {"pod": "db-0"}, **target)).status == "ok"
        sts = cluster.get("statefulsets", NS, "db")
        assert sts is not None and sts["status"]["readyReplicas"] == replicas  # the Terminating pod counted
        return await run_step(live, NS, action, params, **target)


async def test_min_healthy_replicas_does_not_count_a_terminating_statefulset_pod() -> None:
    """A StatefulSet's readyReplicas counts a Terminating pod whose status says Ready, even once its controller
    has seen the delete: counted from the pods, db-0 Terminating leaves db-1 the only one serving."""
    refused = await db0_terminating(2, "delete_pod", {"pod": "db-1", "min_healthy_replicas": 1})

    assert refused.status == "failed"
    assert "would leave 0 ready replica(s) of StatefulSet/shop/db (1 ready now)" in refused.message, refused.message


@pytest.mark.parametrize(("policy", "left"), [("Parallel", 1), ("OrderedReady", 2)])
async def test_a_statefulset_scale_down_counts_what_its_controller_will_keep(policy: str, left: int) -> None:
    """With db-0 Terminating, 3 -> 2: a Parallel set removes db-2 at once and keeps db-1 alone serving; an
    OrderedReady one removes db-2 only once db-0's replacement is Ready (tests/contract/test_pods.py).
    Its status says 3 ready either way."""
    result = await db0_terminating(3, "scale", {"to": 2, "min_healthy_replicas": 2}, policy)

    if left < 2:
        assert result.status == "failed"
        assert f"scaling from 3 to 2 would leave {left} ready replica(s) of StatefulSet/shop/db (2 ready now)" in \
            result.message, result.message
    else:
        assert (result.status, result.message) == ("ok", "scaled StatefulSet/shop/db from 3 to 2 replicas")


async def test_a_role_without_list_pods_leaves_wait_healthy_to_kubectls_rule_and_refuses_a_floor() -> None:
    """A ClusterRole from before the pods check (no list on pods): wait_healthy does not fail a rollout kubectl
    calls done (that would run on_failure, a rollback say), it judges by the status and says so; a
    min_healthy_replicas that cannot be counted refuses the step (nothing changed, no on_failure)."""
    clock = VirtualClock(T0)
    cluster = FakeCluster(clock=lambda: clock.now().timestamp())
    cluster.apply(web(replicas=2))
    forbidden = {"method": "GET", "path": f"/namespaces/{NS}/pods$", "times": None,
                 "message": 'pods is forbidden: User "remediator" cannot list resource "pods"'}
    cluster.faults.fail(403, **forbidden)
    async with running_fake_kube(cluster) as kube:
        live = executor(kube.api, server_dry_run=False)
        with capture_logs() as logs:
            healthy = await run_step(live, NS, "wait_healthy", {"timeout": 60})
        victim = pod_names(kube, "web", "Deployment")[0]
        refused = await run_step(live, NS, "delete_pod", {"pod": victim, "min_healthy_replicas": 1})

    assert (healthy.status, healthy.message) == ("ok", 'deployment "web" successfully rolled out')
    [said] = [e for e in logs if e["log_level"] == "warning"]
    assert said["event"].startswith("cannot list the target's pods (403)") and said["target"] == f"Deployment/{NS}/web"
    assert refused.status == "failed" and refused.details["refused_input"], refused.message
    assert "listing pods is forbidden (grant list on pods, deploy/kubernetes/rbac.yaml): refused, nothing " \
           "changed" in refused.message
    assert cluster.requests.matching("DELETE") == []


async def test_a_watch_that_ends_re_judges_the_pods_which_changed_with_no_write_to_the_workload(
    lagging: FakeKube,
) -> None:
    """wait_healthy waits on the pods, but watches the workload: a change to the pods alone (here a ready pod
    of web's ReplicaSet appears while the controllers are held, so nothing writes the Deployment) reaches
    it when the apiserver ends the watch, and it re-reads both."""
    kube = lagging
    victim, kept = pod_names(kube, "web", "Deployment")
    live = executor(kube.api, server_dry_run=False)
    assert (await run_step(live, NS, "delete_pod", {"pod": victim})).status == "ok"
    waiter = executor(kube.api, server_dry_run=False, clock=VirtualClock(T0))
    waiter.watch_seconds = 1
    step = asyncio.create_task(run_step(waiter, NS, "wait_healthy", {"timeout": 300}))
    await kube.cluster.requests.arrival(where=lambda r: r.watch)
    assert not step.done()

    extra = copy.deepcopy(kube.cluster.get("pods", NS, kept))
    assert extra is not None
    extra["metadata"] = {**extra["metadata"], "name": "web-extra", "uid": "extra-uid"}
    kube.cluster.store.insert("pods", extra)  # a pods event only: no controller runs, the Deployment is unchanged

    result = await asyncio.wait_for(step, 10)
    assert (result.status, result.message) == ("ok", 'deployment "web" successfully rolled out')


async def test_a_watch_whose_version_expired_meanwhile_re_reads_and_watches_on(lagging: FakeKube) -> None:
    """Between wait_healthy's read and its watch the history moves on and is compacted: the apiserver
    answers the watch 410 Expired.  wait_healthy reads afresh, watches from there, and still sees the
    rollout through (it does not fail, nor call it healthy early)."""
    kube = lagging
    kube.cluster.patch("deployments", NS, "web", "application/merge-patch+json", {"spec": {"replicas": 3}})
    watch_path = f"/namespaces/{NS}/deployments$"
    kube.cluster.faults.hang(method="GET", path=watch_path)  # the first watch waits at the apiserver
    waiter = executor(kube.api, server_dry_run=False, clock=VirtualClock(T0))
    step = asyncio.create_task(run_step(waiter, NS, "wait_healthy", {"timeout": 300}))
    await kube.cluster.requests.arrival("GET", watch_path)
    kube.cluster.patch("deployments", NS, "web", "application/merge-patch+json",
                       {"metadata": {"labels": {"touched": "yes"}}})
    kube.cluster.compact_history()  # the version it read is older than anything kept
    kube.cluster.faults.release()
    again = kube.cluster.requests.arrival(where=lambda r: r.watch, seen=False)
    await asyncio.wait_for(again, 10)  # it watches again... (the bound only turns a regression's hang into a failure)
    assert not step.done()
    reads = [r for r in kube.cluster.requests if r.method == "GET" and r.path.endswith("/deployments/web")]
    assert len(reads) == 2  # ...after reading afresh

    kube.cluster.reconcile()  # the third replica comes up
    result = await asyncio.wait_for(step, 10)
    assert (result.status, result.message) == ("ok", 'deployment "web" successfully rolled out')
    first, again = [int(r.query["resourceVersion"]) for r in kube.cluster.requests if r.watch]
    assert again > first  # watched on from the fresh read, not from the expired version


async def test_wait_healthy_right_after_rolling_back_a_release_that_timed_out_waits_for_the_rollback() -> None:
    """The Deployment controller observes the rollback's generation before the rollback shows progress, and
    keeps the timed-out release's ProgressDeadlineExceeded condition meanwhile (Recreate: the rolled-back
    pods start once the broken ones are gone).  That condition names the broken release's ReplicaSet, not
    the current template's: wait_healthy waits for the rollback rather than failing it (and running
    on_failure) at once.  tests/contract/test_rollout_health.py shows the same status on the real apiserver."""
    clock = VirtualClock(T0)
    cluster = FakeCluster(clock=lambda: clock.now().timestamp(), sync_controllers=False)
    cluster.apply(web(replicas=2, strategy={"type": "Recreate"}, progressDeadlineSeconds=60))
    cluster.faults.never_ready(NS, "web")
    broken = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:bad"}]}}}}
    cluster.patch("deployments", NS, "web", "application/strategic-merge-patch+json", broken)
    cluster.reconcile()
    clock.advance_sync(61)
    cluster.reconcile()
    broken_rs = cluster.replicasets_of(NS, "web")[-1]["metadata"]["name"]
    dep = cluster.get("deployments", NS, "web")
    assert dep is not None
    [progressing] = [c for c in dep["status"]["conditions"] if c["type"] == "Progressing"]
    assert (progressing["reason"], progressing["message"]) == (
        "ProgressDeadlineExceeded", f'ReplicaSet "{broken_rs}" has timed out progressing.')
    cluster.faults.allow_ready(NS, "web")
    async with running_fake_kube(cluster) as kube:
        rolled = await run_step(executor(kube.api, server_dry_run=False), NS, "rollback", {})
        assert rolled.status == "ok", rolled.message
        step = await waiting(kube, "web", "Deployment")
        assert not step.done(), step.result()

        kube.cluster.reconcile()  # observed, the old condition kept; then the broken pods go and the rollback's come
        result = await asyncio.wait_for(step, 10)

    assert (result.status, result.message) == ("ok", 'deployment "web" successfully rolled out')
