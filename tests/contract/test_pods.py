"""Deleting pods: who is deleted at once, who stays Terminating, and what the workload reports meanwhile.

A pod never bound to a node has no kubelet to stop it, so the apiserver deletes it at
once (grace period 0).  A bound pod gets ``deletionTimestamp`` = now + its grace period
and stays, Terminating, until its kubelet finishes the delete: the executor's delete_pod
and wait_healthy see exactly this.
"""

from __future__ import annotations

from typing import Any

from tests.contract.conftest import Backend

#: A node no kubelet runs on (real: no such Node at all; fake: not its fake-node).
NOWHERE = "contract-node-without-kubelet"


def bare_pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bare"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}], **spec}}


async def test_a_pod_never_bound_to_a_node_is_deleted_at_once(backend: Backend) -> None:
    backend.without_kubelet()
    created = await backend.raw("POST", backend.path("pods", group=""), bare_pod("unbound", schedulerName="none"))
    assert created.status == 201 and created.json["metadata"]["generation"] == 1
    assert "nodeName" not in created.json["spec"] and created.json["status"]["phase"] == "Pending"

    deleted = await backend.raw("DELETE", backend.path("pods", "unbound", group=""),
                                {"preconditions": {"uid": created.json["metadata"]["uid"]}})
    meta = deleted.json["metadata"]
    assert deleted.status == 200 and deleted.json["kind"] == "Pod"
    assert meta["deletionGracePeriodSeconds"] == 0 and meta["deletionTimestamp"]
    assert meta["generation"] == 2
    assert int(meta["resourceVersion"]) > int(created.json["metadata"]["resourceVersion"])
    assert (await backend.raw("GET", backend.path("pods", "unbound", group=""))).status == 404


async def test_a_bound_pod_stays_terminating_until_its_kubelet_finishes_it(backend: Backend) -> None:
    backend.without_kubelet()
    path = backend.path("pods", "bound", group="")
    created = await backend.raw("POST", backend.path("pods", group=""), bare_pod("bound", nodeName=NOWHERE))
    assert created.status == 201

    dry = await backend.raw("DELETE", path, {"dryRun": ["All"]})
    assert dry.json["metadata"]["deletionGracePeriodSeconds"] == 30
    assert dry.json["metadata"]["resourceVersion"] == created.json["metadata"]["resourceVersion"]
    assert "deletionTimestamp" not in (await backend.raw("GET", path)).json["metadata"]

    deleted = await backend.raw("DELETE", path)
    meta = deleted.json["metadata"]
    assert deleted.status == 200 and meta["deletionGracePeriodSeconds"] == 30 and meta["generation"] == 2
    terminating = (await backend.raw("GET", path)).json
    assert terminating["metadata"]["deletionTimestamp"] == meta["deletionTimestamp"]

    again = await backend.raw("DELETE", path)  # a second delete changes nothing
    assert again.json["metadata"]["resourceVersion"] == terminating["metadata"]["resourceVersion"]
    taken = await backend.raw("POST", backend.path("pods", group=""), bare_pod("bound", nodeName=NOWHERE))
    assert (taken.status, taken.json["reason"], taken.json["message"]) == (
        409, "AlreadyExists", 'object is being deleted: pods "bound" already exists')

    now = await backend.raw("DELETE", path, {"gracePeriodSeconds": 0})  # what a kubelet sends once it is done
    assert now.status == 200
    assert (await backend.raw("GET", path)).status == 404


async def test_a_terminating_pod_is_replaced_and_counted_apart(backend: Backend) -> None:
    """The ReplicaSet replaces a Terminating pod at once; both report it as ``terminatingReplicas``."""
    await backend.web(replicas=2)
    backend.hold_terminating()
    [victim, _] = await backend.pods()
    await backend.core.delete_namespaced_pod(victim["metadata"]["name"], backend.namespace)

    async def replaced() -> dict[str, Any] | None:
        dep = await backend.read()
        status = dep["status"]
        counted = (status.get("terminatingReplicas"), status.get("replicas"), status.get("availableReplicas"))
        return dep if counted == (1, 2, 2) else None

    dep = await backend.until(replaced, "the Deployment to count one Terminating pod beside 2 running ones")
    assert dep["status"]["updatedReplicas"] == 2
    pods = await backend.pods()
    assert len(pods) == 3
    [terminating] = [p for p in pods if p["metadata"].get("deletionTimestamp")]
    assert terminating["metadata"]["name"] == victim["metadata"]["name"]
    listed = backend.api.sanitize_for_serialization(
        await backend.apps.list_namespaced_replica_set(backend.namespace))["items"]
    assert [(rs["status"]["replicas"], rs["status"]["terminatingReplicas"]) for rs in listed] == [(2, 1)]
