"""wait_healthy, progress deadlines, rollbacks and Terminating pods for real: the real controllers decide,
and the stand-in kubelet plays the nodes (ready, never ready, slow to finish a delete).

Waits on the cluster are bounded polls; where the executor's own timeout is under test,
it runs on a virtual clock that the test moves once the cluster is in the state it means.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio import client

from remediator.clock import VirtualClock
from remediator.core import rollout
from remediator.ports import StepResult
from remediator.testing.control_plane import Kubelet, PodPolicy, poll_until
from tests.kube_fake.helpers import statefulset
from tests.real_kube.helpers import apply_web, executor, run_step

BROKEN = "registry.example/web:broken"
LIMIT = 20.0


async def read(api: Any, namespace: str, name: str = "web") -> dict[str, Any]:
    out: dict[str, Any] = api.sanitize_for_serialization(
        await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    )
    return out


async def pods(api: Any, namespace: str) -> list[dict[str, Any]]:
    listed = api.sanitize_for_serialization(await client.CoreV1Api(api).list_namespaced_pod(namespace))
    return list(listed.get("items") or [])


async def timed_out(api: Any, namespace: str, seconds: float, **target: str) -> StepResult:
    """Run wait_healthy on a virtual clock and move the clock past its timeout once it is watching.

    Watching means its read is answered and its request timeout no longer pending: only the
    step's own timer is left on the clock, so moving time ends the wait and nothing else.
    """
    clock = VirtualClock()
    kube = executor(api, server_dry_run=False, clock=clock)
    step = asyncio.create_task(run_step(kube, namespace, "wait_healthy", {"timeout": seconds}, **target))

    async def watching() -> bool | None:
        assert not step.done(), f"wait_healthy ended before its timeout: {step.result()}"
        return True if clock.pending() == [seconds] else None

    await poll_until(watching, limit=LIMIT, what="wait_healthy to read the workload and watch it")
    await clock.advance(seconds)
    return await asyncio.wait_for(step, LIMIT)


async def release_broken(api: Any, namespace: str) -> None:
    """Roll web out to an image whose pods never become ready, and wait until its new pod runs, not ready."""
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": BROKEN}]}}}}
    await client.AppsV1Api(api).patch_namespaced_deployment("web", namespace, body)

    async def stuck() -> bool | None:
        dep = await read(api, namespace)
        observed = dep["status"].get("observedGeneration") == dep["metadata"]["generation"]
        broken = [p for p in await pods(api, namespace) if p["spec"]["containers"][0]["image"] == BROKEN]
        running = bool(broken) and all(p["status"].get("phase") == "Running" for p in broken)
        return True if observed and running and dep["status"].get("updatedReplicas") else None

    await poll_until(stuck, limit=LIMIT, what="the broken release's pod to run, not ready")


async def test_a_restart_whose_pods_become_ready_passes_wait_healthy(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    kubelet.manage(namespace, PodPolicy(ready_after=0.5))  # the wait is a real wait, on real controllers
    await apply_web(kube_admin, namespace, mark=False)
    kube = executor(kube_admin, server_dry_run=False)
    restarted = await run_step(kube, namespace, "restart", {})
    assert restarted.status == "ok", restarted.message

    healthy = await run_step(kube, namespace, "wait_healthy", {"timeout": LIMIT})

    assert healthy.status == "ok", healthy.message
    assert healthy.message == 'deployment "web" successfully rolled out'
    dep = await read(kube_admin, namespace)
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
    assert dep["status"]["updatedReplicas"] == dep["status"]["availableReplicas"] == 2
    live = [p for p in await pods(kube_admin, namespace) if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2 and all(map(rollout.pod_ready, live))
    stamp = restarted.details["restartedAt"]
    assert all(p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == stamp for p in live)


async def test_a_never_ready_rollout_times_out_wait_healthy_on_the_clock(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    kubelet.manage(namespace, PodPolicy(never_ready_images=frozenset({BROKEN})))
    await apply_web(kube_admin, namespace, mark=False)
    await release_broken(kube_admin, namespace)
    result = await timed_out(kube_admin, namespace, 300)

    assert result.status == "failed"
    # maxSurge 1, maxUnavailable 0: one broken pod beside the two old ones, and the rollout goes no further
    assert result.message == (f"wait_healthy on Deployment/{namespace}/web: Deployment/{namespace}/web did not "
                              "become healthy within 300s (last seen: 1 out of 2 new replicas have been updated...)")


async def test_a_progress_deadline_fails_wait_healthy_and_a_rollback_brings_it_back(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    kubelet.manage(namespace, PodPolicy(never_ready_images=frozenset({BROKEN})))
    await apply_web(kube_admin, namespace, mark=False, progressDeadlineSeconds=2)
    await release_broken(kube_admin, namespace)
    kube = executor(kube_admin, server_dry_run=False)

    failed = await run_step(kube, namespace, "wait_healthy", {"timeout": LIMIT})
    assert failed.status == "failed"
    assert failed.message.endswith('deployment "web" exceeded its progress deadline'), failed.message

    rolled = await run_step(kube, namespace, "rollback", {})
    assert rolled.status == "ok", rolled.message
    assert rolled.details["revision"] == 1
    healthy = await run_step(kube, namespace, "wait_healthy", {"timeout": LIMIT})
    assert healthy.status == "ok", healthy.message
    dep = await read(kube_admin, namespace)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1.0"
    progressing = {c["type"]: c for c in dep["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")


async def test_a_terminating_pod_counts_for_nothing_and_is_not_deleted_twice(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    await apply_web(kube_admin, namespace, mark=False)
    # From now on a deleted pod stays Terminating, and a new pod does not become ready.
    kubelet.manage(namespace, PodPolicy(finalize_after=None, ready_after=3600))
    victim = sorted(p["metadata"]["name"] for p in await pods(kube_admin, namespace))[0]
    kube = executor(kube_admin, server_dry_run=False)

    deleted = await run_step(kube, namespace, "delete_pod", {"pod": victim})
    assert deleted.status == "ok", deleted.message
    [pod] = [p for p in await pods(kube_admin, namespace) if p["metadata"]["name"] == victim]
    # Terminating, and its status still says Ready
    assert pod["metadata"]["deletionTimestamp"] and rollout.pod_ready(pod)

    again = await run_step(kube, namespace, "delete_pod", {"pod": victim})
    assert again.status == "ok", again.message
    assert again.message == f"pod {victim} is already terminating"
    assert "wrote" not in again.details and again.details["terminating"] is True

    # Right after the delete the Deployment's status may not have counted it yet (2 of 2 available):
    # wait_healthy reads the pods as well, and does not call web healthy with one of two pods Terminating.
    early = await timed_out(kube_admin, namespace, 60)
    assert early.status == "failed", early.message

    # The controllers count the Terminating pod as nothing: 1 of 2 available, whatever its status says.
    # Wait until they have created its replacement; before that the rollout reads "1 out of 2 updated".
    async def replaced() -> bool | None:
        status = (await read(kube_admin, namespace))["status"]
        return True if (status.get("updatedReplicas"), status.get("availableReplicas")) == (2, 1) else None

    await poll_until(replaced, limit=LIMIT, what="the controllers to replace the Terminating pod")
    waited = await timed_out(kube_admin, namespace, 60)
    assert waited.status == "failed"
    assert "(last seen: 1 of 2 updated replicas are available...)" in waited.message, waited.message

    # Once the replacement is ready the rollout is healthy, the old pod still Terminating.
    kubelet.manage(namespace, PodPolicy(finalize_after=None))
    healthy = await run_step(kube, namespace, "wait_healthy", {"timeout": LIMIT})
    assert healthy.status == "ok", healthy.message
    [pod] = [p for p in await pods(kube_admin, namespace) if p["metadata"]["name"] == victim]
    assert pod["metadata"]["deletionTimestamp"]


async def test_a_statefulset_with_a_terminating_pod_is_not_healthy_until_its_replacement_is_ready(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    """The StatefulSet controller counts a Terminating pod whose status says Ready as ready: readyReplicas
    alone would call the set healthy while the pod it must recreate (same name) does not exist yet."""
    apps = client.AppsV1Api(kube_admin)
    await apps.create_namespaced_stateful_set(namespace, statefulset("db", namespace, replicas=2))
    db = {"name": "db", "kind": "StatefulSet"}
    kube = executor(kube_admin, server_dry_run=False)
    assert (await run_step(kube, namespace, "wait_healthy", {"timeout": LIMIT}, **db)).status == "ok"
    kubelet.manage(namespace, PodPolicy(finalize_after=None))

    deleted = await run_step(kube, namespace, "delete_pod", {"pod": "db-0"}, **db)
    assert deleted.status == "ok", deleted.message
    sts = api_dict(kube_admin, await apps.read_namespaced_stateful_set("db", namespace))
    assert sts["status"]["readyReplicas"] == 2  # the Terminating pod still counts as ready

    # wait_healthy starts at once, maybe before the controller has seen the delete (its status then
    # still says healthy): it must wait all the same, on the pods, and time out with db-0 Terminating.
    waited = await timed_out(kube_admin, namespace, 60, **db)
    assert waited.status == "failed"
    assert waited.message.endswith((
        "(last seen: Waiting for 1 pods to be replaced (terminating or not created)...)",  # from the status
        "(last seen: Waiting for pod db-0 to be replaced (terminating)...)",  # from the pods, the status behind
    )), waited.message
    sts = api_dict(kube_admin, await apps.read_namespaced_stateful_set("db", namespace))
    assert sts["status"]["readyReplicas"] == 2  # and the status still counts the Terminating pod as ready

    kubelet.manage(namespace, PodPolicy())  # the kubelet finishes the delete; the controller recreates db-0
    healthy = await run_step(kube, namespace, "wait_healthy", {"timeout": LIMIT}, **db)
    assert healthy.status == "ok", healthy.message
    pod = api_dict(kube_admin, await client.CoreV1Api(kube_admin).read_namespaced_pod("db-0", namespace))
    assert not pod["metadata"].get("deletionTimestamp") and rollout.pod_ready(pod)
    assert pod["metadata"]["uid"] != deleted.before["metadata"]["uid"]


def api_dict(api: Any, model: Any) -> dict[str, Any]:
    out: dict[str, Any] = api.sanitize_for_serialization(model)
    return out


async def test_a_timeout_names_why_the_new_pods_cannot_be_created(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    """A LimitRange (cpu at most 500m, so a default limit of 500m) refuses the pods of a template requesting 1 cpu:
    the Deployment carries ReplicaFailure (FailedCreate) with the refusal, and wait_healthy's timeout says it."""
    await apply_web(kube_admin, namespace, mark=False)
    limits = {"metadata": {"name": "cpu"}, "spec": {"limits": [{"type": "Container", "max": {"cpu": "500m"}}]}}
    await client.CoreV1Api(kube_admin).create_namespaced_limit_range(namespace, limits)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "1"}}}]}}}}
    await client.AppsV1Api(kube_admin).patch_namespaced_deployment("web", namespace, body)

    async def refused() -> dict[str, Any] | None:
        conditions = (await read(kube_admin, namespace))["status"].get("conditions") or []
        return next((c for c in conditions if c["type"] == "ReplicaFailure"), None)

    condition = await poll_until(refused, limit=LIMIT, what="the ReplicaFailure condition")
    assert (condition["status"], condition["reason"]) == ("True", "FailedCreate")
    assert "must be less than or equal to cpu limit of 500m" in condition["message"]

    result = await timed_out(kube_admin, namespace, 300)

    assert result.status == "failed"
    assert result.message.startswith(f"wait_healthy on Deployment/{namespace}/web: Deployment/{namespace}/web did "
                                     "not become healthy within 300s (last seen: 0 out of 2 new replicas have been "
                                     "updated... (ReplicaFailure (FailedCreate): "), result.message
    assert condition["message"] in result.message
