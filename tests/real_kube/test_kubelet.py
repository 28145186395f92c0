"""The stand-in kubelet on the real control plane: pods are bound to its Node, readied through ``pods/status``
as the namespace's policy says, and a deleted bound pod stays Terminating until the kubelet finishes it.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes_asyncio import client

from remediator.clock import VirtualClock
from remediator.testing.control_plane import (
    KUBELET_NODE,
    ControlPlane,
    Kubelet,
    PodPolicy,
    poll_until,
    read_or_none,
)
from tests.real_kube.helpers import web_manifest

LIMIT = 20.0


async def pods(api: Any, namespace: str) -> list[dict[str, Any]]:
    listed = api.sanitize_for_serialization(await client.CoreV1Api(api).list_namespaced_pod(namespace))
    return list(listed.get("items") or [])


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


async def test_pods_are_bound_to_the_node_and_readied_and_a_never_ready_workload_stays_not_ready(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    apps = client.AppsV1Api(kube_admin)
    kubelet.manage(namespace, PodPolicy(never_ready_labels={"app": "broken"}))
    await apps.create_namespaced_deployment(namespace, web_manifest(namespace, replicas=2))
    broken = web_manifest(namespace, replicas=1)
    broken["metadata"]["name"] = "broken"
    broken["spec"]["selector"]["matchLabels"] = broken["spec"]["template"]["metadata"]["labels"] = {"app": "broken"}
    await apps.create_namespaced_deployment(namespace, broken)

    async def settled() -> list[dict[str, Any]] | None:
        now = await pods(kube_admin, namespace)
        web = [p for p in now if p["metadata"]["labels"]["app"] == "web"]
        bad = [p for p in now if p["metadata"]["labels"]["app"] == "broken"]
        running = all(p.get("status", {}).get("phase") == "Running" for p in now)
        return now if len(web) == 2 and len(bad) == 1 and running and all(map(ready, web)) else None

    now = await poll_until(settled, limit=LIMIT, what="web's pods Ready and broken's pod Running")
    assert {p["spec"]["nodeName"] for p in now} == {KUBELET_NODE}
    [bad] = [p for p in now if p["metadata"]["labels"]["app"] == "broken"]
    assert not ready(bad)
    assert [s["ready"] for s in bad["status"]["containerStatuses"]] == [False]

    async def counted() -> Any:
        web = await apps.read_namespaced_deployment("web", namespace)
        brk = await apps.read_namespaced_deployment("broken", namespace)
        return (web, brk) if web.status.available_replicas == 2 else None

    _, brk = await poll_until(counted, limit=LIMIT, what="web to count 2 available replicas")
    assert not brk.status.available_replicas and brk.status.unavailable_replicas == 1

    # Switching the policy marks a Ready pod NotReady, as a failing readiness probe would.
    kubelet.manage(namespace, PodPolicy(never_ready_labels={"app": "web"}))

    async def unready() -> bool | None:
        dep = await apps.read_namespaced_deployment("web", namespace)
        return True if not dep.status.available_replicas else None

    await poll_until(unready, limit=LIMIT, what="web to count no available replica")


async def test_a_deleted_bound_pod_stays_terminating_until_the_kubelet_finishes_it(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    core = client.CoreV1Api(kube_admin)
    kubelet.manage(namespace, PodPolicy(finalize_after=None))
    await core.create_namespaced_pod(namespace, {
        "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}]},
    })

    async def bound_and_ready() -> bool | None:
        pod = kube_admin.sanitize_for_serialization(await core.read_namespaced_pod("solo", namespace))
        return True if pod["spec"].get("nodeName") == KUBELET_NODE and ready(pod) else None

    await poll_until(bound_and_ready, limit=LIMIT, what="pod solo bound and Ready")
    await core.delete_namespaced_pod("solo", namespace)
    pod = await core.read_namespaced_pod("solo", namespace)
    assert pod.metadata.deletion_timestamp is not None  # Terminating, not gone: a kubelet holds it
    assert pod.metadata.deletion_grace_period_seconds == 30

    kubelet.manage(namespace, PodPolicy(finalize_after=0))

    async def gone() -> bool | None:
        return True if await read_or_none(core.read_namespaced_pod, "solo", namespace) is None else None

    await poll_until(gone, limit=LIMIT, what="the kubelet to finish deleting pod solo")


async def test_on_a_virtual_clock_a_pod_becomes_ready_exactly_when_its_delay_has_passed(
    kube_admin: Any, namespace: str, control_plane: ControlPlane
) -> None:
    """``async with Kubelet(...)`` on the test's own loop, with its delays on a virtual clock:
    readiness happens when the test moves time, not when a real second has passed."""
    core = client.CoreV1Api(kube_admin)
    clock = VirtualClock()
    node = f"node-{namespace}"
    async with Kubelet(control_plane.configuration, node=node, clock=clock) as kubelet:
        kubelet.manage(namespace, PodPolicy(ready_after=30))
        await core.create_namespaced_pod(namespace, {
            "metadata": {"name": "slow", "labels": {"app": "slow"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}]},
        })

        async def waiting() -> bool | None:  # bound, and the kubelet's timer for it is set
            pod = kube_admin.sanitize_for_serialization(await core.read_namespaced_pod("slow", namespace))
            return True if pod["spec"].get("nodeName") == node and clock.pending() == [30] else None

        await poll_until(waiting, limit=LIMIT, what="pod slow bound, its readiness 30 s away")
        await clock.advance(29)
        pod = kube_admin.sanitize_for_serialization(await core.read_namespaced_pod("slow", namespace))
        assert not ready(pod)
        await clock.advance(1)

        async def readied() -> bool | None:
            pod = kube_admin.sanitize_for_serialization(await core.read_namespaced_pod("slow", namespace))
            return True if ready(pod) else None

        await poll_until(readied, limit=LIMIT, what="pod slow Ready once 30 s have passed")
        kubelet.release(namespace)  # deletes of pods on its node still finish: the namespace can go
        await core.delete_namespaced_pod("slow", namespace)

        async def gone() -> bool | None:
            return True if await read_or_none(core.read_namespaced_pod, "slow", namespace) is None else None

        await poll_until(gone, limit=LIMIT, what="the kubelet to finish deleting pod slow")
    await core.delete_node(node)


def test_a_kubelet_in_its_own_thread_stops_cleanly(control_plane: ControlPlane) -> None:
    """For synchronous fixtures: it runs on a loop in a thread of its own, and stop() ends that thread."""
    before = set(threading.enumerate())
    kubelet = Kubelet(control_plane.configuration, node="node-threaded").start_in_thread()
    started = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert "test-kubelet" in {t.name for t in started}  # with its loop's executor threads, if any
    kubelet.stop()
    assert not [t.name for t in started if t.is_alive()]
    assert not kubelet.errors
    kubelet.stop()  # a second stop is harmless
