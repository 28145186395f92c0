"""Deleting pods: who is deleted at once, who stays Terminating, and what the workload reports meanwhile.

A pod never bound to a node has no kubelet to stop it, so the apiserver deletes it at
once (grace period 0).  A bound pod gets ``deletionTimestamp`` = now + its grace period
and stays, Terminating, until its kubelet finishes the delete: the executor's delete_pod
and wait_healthy see exactly this.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediator.core import rollout
from tests.contract.conftest import Backend
from tests.kube_fake.helpers import deployment, statefulset
from tests.real_kube.helpers import executor, run_step

#: A node no kubelet runs on (real: no such Node at all; fake: not its fake-node).
NOWHERE = "contract-node-without-kubelet"


def bare_pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bare"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}], **spec}}


async def db_ready(backend: Backend, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create StatefulSet db from ``manifest`` and return it once its rollout is done."""
    await backend.apps.create_namespaced_stateful_set(backend.namespace, manifest)

    async def ready() -> dict[str, Any] | None:
        sts = backend.api.sanitize_for_serialization(
            await backend.apps.read_namespaced_stateful_set("db", backend.namespace))
        return sts if rollout.health("StatefulSet", sts).done else None

    return await backend.until(ready, "StatefulSet db to be ready")


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


async def test_a_deleted_pod_shows_on_the_pods_before_the_workloads_status(backend: Backend) -> None:
    """What wait_healthy and ``min_healthy_replicas`` read besides the status, which lags a delete.

    Listed by the selector's labels, a Deployment's pods name a ReplicaSet it owns as their
    controller, and a deleted pod carries its ``deletionTimestamp`` from the delete's own
    answer on, while its status may still say Ready: the pods, not the status, tell it out.
    """
    dep = await backend.web(replicas=2)
    backend.hold_terminating()
    [victim, kept] = await backend.pods()
    await backend.core.delete_namespaced_pod(victim["metadata"]["name"], backend.namespace)

    pods = await backend.pods()  # read at once: on the real cluster, maybe before its controllers acted
    replicasets = backend.api.sanitize_for_serialization(
        await backend.apps.list_namespaced_replica_set(backend.namespace, label_selector="app=web"))["items"]
    own = {p["metadata"]["name"]: p for p in rollout.own_pods("Deployment", dep, pods, replicasets)}
    assert set(own) == {p["metadata"]["name"] for p in pods}  # the replacement, if made yet, is its own too
    gone = own[victim["metadata"]["name"]]
    assert gone["metadata"]["deletionTimestamp"] and rollout.pod_ready(gone)  # Terminating, still "Ready"
    serving = [p["metadata"]["name"] for p in rollout.serving(list(own.values()))]
    assert victim["metadata"]["name"] not in serving and kept["metadata"]["name"] in serving


async def test_a_statefulset_pod_deleted_is_not_healthy_by_its_pods_until_recreated(backend: Backend) -> None:
    """A StatefulSet recreates a deleted pod under the same name only once the old one is gone, and its
    status counts the Terminating pod as ready: by the pods, the set is short of that ordinal at once."""
    sts = await db_ready(backend, statefulset("db", backend.namespace, replicas=2))
    pods = await backend.pods("app=db")
    assert rollout.pods_health("StatefulSet", sts, rollout.own_pods("StatefulSet", sts, pods, [])).done
    backend.hold_terminating()
    await backend.core.delete_namespaced_pod("db-0", backend.namespace)

    pods = await backend.pods("app=db")
    own = rollout.own_pods("StatefulSet", sts, pods, [])
    assert [p["metadata"]["name"] for p in own] == ["db-0", "db-1"]
    verdict = rollout.pods_health("StatefulSet", sts, own)
    assert (verdict.done, verdict.message) == (False, "Waiting for pod db-0 to be replaced (terminating)...")
    status = backend.api.sanitize_for_serialization(
        await backend.apps.read_namespaced_stateful_set("db", backend.namespace))["status"]
    assert status["readyReplicas"] == 2  # whether or not its controller has seen the delete yet


async def test_a_statefulset_counts_a_terminating_pod_as_ready_but_not_as_current_or_updated(
    backend: Backend,
) -> None:
    """computeReplicaStatus: a Terminating pod is in ``replicas`` and, its status still Ready, in
    ``readyReplicas``, but not in ``currentReplicas`` or ``updatedReplicas``: statefulset_health's
    "replaced" rule rests on that (readyReplicas alone would call the set healthy)."""
    await db_ready(backend, statefulset("db", backend.namespace, replicas=2))
    await backend.quiet()
    backend.hold_terminating()
    await backend.core.delete_namespaced_pod("db-0", backend.namespace)
    keys = ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas")

    async def counted() -> dict[str, Any] | None:
        sts = backend.api.sanitize_for_serialization(
            await backend.apps.read_namespaced_stateful_set("db", backend.namespace))
        counts = {k: sts["status"].get(k, 0) for k in keys}
        return sts if counts == {"replicas": 2, "readyReplicas": 2, "currentReplicas": 1, "updatedReplicas": 1} \
            else None

    sts = await backend.until(counted, "the StatefulSet's status to count db-0 Terminating")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert rollout.statefulset_health(sts).message == \
        "Waiting for 1 pods to be replaced (terminating or not created)..."


async def test_a_recreate_rollout_starts_no_new_pod_while_an_old_one_is_terminating(backend: Backend) -> None:
    """oldPodsRunning: Recreate makes the new template's ReplicaSet only once every old pod is gone, Terminating
    ones included (a ReplicaSet's status no longer counts those).  The rollout shows none updated meanwhile."""
    await backend.web(replicas=2, strategy={"type": "Recreate"})
    backend.hold_terminating()
    [victim, _] = await backend.pods()
    await backend.core.delete_namespaced_pod(victim["metadata"]["name"], backend.namespace)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:2.0"}]}}}}
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, body)

    async def observed() -> dict[str, Any] | None:
        dep = await backend.read()
        return dep if dep["status"].get("observedGeneration") == dep["metadata"]["generation"] else None

    await backend.until(observed, "the Deployment controller to observe the new template")
    await backend.quiet()
    dep = await backend.read()
    listed = backend.api.sanitize_for_serialization(
        await backend.apps.list_namespaced_replica_set(backend.namespace))["items"]
    assert [rs["spec"]["template"]["spec"]["containers"][0]["image"] for rs in listed] == ["registry.example/web:1.0"]
    assert [p for p in await backend.pods() if not p["metadata"].get("deletionTimestamp")] == []
    assert (dep["status"].get("updatedReplicas", 0), dep["status"].get("replicas", 0)) == (0, 0)
    assert rollout.health("Deployment", dep).message == "0 out of 2 new replicas have been updated..."

    backend.release_terminating()  # the old pods go: the new ReplicaSet is made and scaled up
    after = await backend.settled()
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:2.0"
    assert len(await backend.pods()) == 2


@pytest.mark.parametrize("policy", ["OrderedReady", "Parallel"])
async def test_a_statefulset_scaled_down_removes_its_highest_ordinal_when_its_policy_says(
    backend: Backend, policy: str
) -> None:
    """What ``min_healthy_replicas`` of a scale down counts on.  With db-0 Terminating, 3 -> 2: a Parallel
    set takes db-2 away at once, leaving db-1 alone serving; an OrderedReady one (the default) waits
    until every pod it keeps is Ready again, so db-1 and db-2 keep serving meanwhile."""
    manifest = statefulset("db", backend.namespace, replicas=3)
    manifest["spec"]["podManagementPolicy"] = policy
    sts = await db_ready(backend, manifest)
    await backend.quiet()
    backend.hold_terminating()
    await backend.core.delete_namespaced_pod("db-0", backend.namespace)
    before = rollout.serving(rollout.own_pods("StatefulSet", sts, await backend.pods("app=db"), []))
    assert [p["metadata"]["name"] for p in before] == ["db-1", "db-2"]
    await backend.apps.patch_namespaced_stateful_set_scale("db", backend.namespace, {"spec": {"replicas": 2}})

    async def scaled() -> bool | None:
        status = backend.api.sanitize_for_serialization(
            await backend.apps.read_namespaced_stateful_set("db", backend.namespace))["status"]
        return True if status.get("observedGeneration") == 2 else None

    await backend.until(scaled, "the StatefulSet controller to see the scale down")
    if policy == "Parallel":
        async def shrunk() -> bool | None:  # Terminating on the real one; the fake's controllers delete at once
            db2 = [p for p in await backend.pods("app=db") if p["metadata"]["name"] == "db-2"]
            return True if not db2 or db2[0]["metadata"].get("deletionTimestamp") else None

        await backend.until(shrunk, "the StatefulSet controller to take db-2 away")
    else:
        await backend.quiet()
    up = rollout.serving(rollout.own_pods("StatefulSet", sts, await backend.pods("app=db"), []))
    assert [p["metadata"]["name"] for p in up] == (["db-1"] if policy == "Parallel" else ["db-1", "db-2"])
    assert rollout.serving_after_scale_down("StatefulSet", manifest, before, 2) == len(up)  # the rule foresaw it


async def test_a_workload_selected_by_expressions_lists_only_its_own_pods(backend: Backend) -> None:
    """The executor lists a workload's pods by its whole selector (``rollout.selector_text``), expressions
    included: both apiservers take the set-based form, and a pod outside it is not listed."""
    manifest = deployment("web", backend.namespace, replicas=2)
    manifest["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]},
                                                         {"key": "canary", "operator": "DoesNotExist"}]}
    await backend.apps.create_namespaced_deployment(backend.namespace, manifest)
    dep = await backend.settled()
    await backend.apps.create_namespaced_deployment(backend.namespace, deployment("other", backend.namespace))
    await backend.settled("other")
    text = rollout.selector_text(dep)
    assert text == "app in (web),!canary"

    listed = backend.api.sanitize_for_serialization(
        await backend.core.list_namespaced_pod(backend.namespace, label_selector=text))["items"]

    assert len(listed) == 2 and all(p["metadata"]["labels"]["app"] == "web" for p in listed)
    result = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, "wait_healthy",
                            {"timeout": 20})
    assert (result.status, result.message) == ("ok", 'deployment "web" successfully rolled out')


async def test_a_floor_does_not_count_a_terminating_statefulset_pod_on_either_apiserver(backend: Backend) -> None:
    """The executor end to end: with db-0 Terminating (its status still Ready, the set's readyReplicas still
    2), deleting db-1 under ``min_healthy_replicas: 1`` would leave none serving: refused, db-1 untouched."""
    await db_ready(backend, statefulset("db", backend.namespace, replicas=2))
    await backend.quiet()
    backend.hold_terminating()
    kube = executor(backend.api, server_dry_run=False)
    db = {"name": "db", "kind": "StatefulSet"}
    assert (await run_step(kube, backend.namespace, "delete_pod", {"pod": "db-0"}, **db)).status == "ok"

    refused = await run_step(kube, backend.namespace, "delete_pod", {"pod": "db-1", "min_healthy_replicas": 1}, **db)

    assert refused.status == "failed" and refused.details["refused_input"], refused.message
    assert (refused.details["ready"], refused.details["left"]) == (1, 0)
    [db1] = [p for p in await backend.pods("app=db") if p["metadata"]["name"] == "db-1"]
    assert not db1["metadata"].get("deletionTimestamp")


async def test_deleting_a_pod_that_is_not_there_is_refused_on_either_apiserver(backend: Backend) -> None:
    """An alert can name a pod that has gone (or never was, or was mistyped): the apiserver's 404 is the
    alert's fault, not an outage: the step is refused (no retry, no breaker count) and nothing is deleted."""
    await backend.apps.create_namespaced_deployment(backend.namespace, deployment("web", backend.namespace,
                                                                                  replicas=2))
    await backend.settled()
    before = sorted(p["metadata"]["name"] for p in await backend.pods("app=web"))

    refused = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, "delete_pod",
                             {"pod": "web-not-a-pod"})

    assert refused.status == "failed" and refused.details["refused_input"], refused.message
    assert refused.message.endswith(f"pod web-not-a-pod not found in namespace {backend.namespace}")
    assert sorted(p["metadata"]["name"] for p in await backend.pods("app=web")) == before
