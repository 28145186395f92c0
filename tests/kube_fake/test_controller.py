"""The simulated controllers, observed through the API as kubectl and the executor observe them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from remediator.clock import VirtualClock
from remediator.testing.kube import FakeCluster, FakeKube, ManualClock
from tests.kube_fake.helpers import deployment, statefulset, with_image

REVISION = "deployment.kubernetes.io/revision"
HISTORY = "deployment.kubernetes.io/revision-history"


@pytest.fixture
def apps(kube_api: Any) -> Any:
    return client.AppsV1Api(kube_api)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def set_image(image: str) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}


def revisions(cluster: FakeCluster) -> list[tuple[str, int, str | None]]:
    out = []
    for rs in cluster.replicasets_of("shop", "web"):
        annotations = rs["metadata"]["annotations"]
        out.append((annotations[REVISION], rs["spec"]["replicas"], annotations.get(HISTORY)))
    return out


async def test_new_deployment_gets_a_replicaset_pods_and_complete_status(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment(replicas=3))
    d = await apps.read_namespaced_deployment("web", "shop")
    s = d.status
    assert (s.observed_generation, s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas,
            s.unavailable_replicas) == (1, 3, 3, 3, 3, None)
    assert d.metadata.annotations[REVISION] == "1"
    [rs] = (await apps.list_namespaced_replica_set("shop", label_selector="app=web")).items
    pod_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{pod_hash}"
    assert rs.spec.selector.match_labels == {"app": "web", "pod-template-hash": pod_hash}
    assert rs.spec.template.metadata.labels["pod-template-hash"] == pod_hash
    assert rs.metadata.annotations == {REVISION: "1", "deployment.kubernetes.io/desired-replicas": "3",
                                       "deployment.kubernetes.io/max-replicas": "4"}
    [owner] = rs.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller, owner.block_owner_deletion) == (
        "Deployment", "web", d.metadata.uid, True, True)
    pods = (await client.CoreV1Api(fake_kube.api).list_namespaced_pod("shop", label_selector="app=web")).items
    assert len(pods) == 3
    for pod in pods:
        prefix, suffix = pod.metadata.name.rsplit("-", 1)
        assert prefix == rs.metadata.name and len(suffix) == 5
        assert pod.metadata.owner_references[0].name == rs.metadata.name
        assert pod.status.phase == "Running"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    cond = conditions(fake_kube.cluster.get("deployments", "shop", "web") or {})
    assert (cond["Available"]["status"], cond["Available"]["reason"], cond["Available"]["message"]) == (
        "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    assert (cond["Progressing"]["reason"], cond["Progressing"]["message"]) == (
        "NewReplicaSetAvailable", f'ReplicaSet "{rs.metadata.name}" has successfully progressed.')


async def test_template_change_rolls_out_revision_2(apps: Any, fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    await apps.create_namespaced_deployment("shop", deployment(replicas=3))
    first = cluster.pods_of("shop", "web")
    await apps.patch_namespaced_deployment("web", "shop", set_image("registry.example/web:2.0"))
    assert revisions(cluster) == [("1", 0, None), ("2", 3, None)]
    new_rs = cluster.replicasets_of("shop", "web")[-1]
    pods = cluster.pods_of("shop", "web")
    assert len(pods) == 3 and not {p["metadata"]["uid"] for p in pods} & {p["metadata"]["uid"] for p in first}
    assert all(p["spec"]["containers"][0]["image"] == "registry.example/web:2.0" for p in pods)
    assert all(p["metadata"]["ownerReferences"][0]["name"] == new_rs["metadata"]["name"] for p in pods)
    d = cluster.get("deployments", "shop", "web") or {}
    assert d["metadata"]["annotations"][REVISION] == "2" and d["metadata"]["generation"] == 2
    assert d["status"]["updatedReplicas"] == 3 and d["status"]["observedGeneration"] == 2


async def test_undo_reuses_revision_1_as_revision_3(apps: Any, kube_api: Any, fake_kube: FakeKube) -> None:
    """kubectl rollout undo: JSON-patch the old RS's template back; the controller renumbers that RS."""
    cluster = fake_kube.cluster
    await apps.create_namespaced_deployment("shop", deployment(replicas=2))
    await apps.patch_namespaced_deployment("web", "shop", set_image("registry.example/web:2.0"))
    old_rs = (await apps.list_namespaced_replica_set("shop", label_selector="app=web")).items
    rev1 = next(rs for rs in old_rs if rs.metadata.annotations[REVISION] == "1")
    template = kube_api.sanitize_for_serialization(rev1.spec.template)
    del template["metadata"]["labels"]["pod-template-hash"]
    d = await apps.read_namespaced_deployment("web", "shop")
    annotations = {k: v for k, v in d.metadata.annotations.items()}
    after = await apps.patch_namespaced_deployment("web", "shop", [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ])
    assert after.metadata.generation == 3
    assert sorted(revisions(cluster)) == [("2", 0, None), ("3", 2, "1")]
    reused = cluster.replicasets_of("shop", "web")[-1]
    assert reused["metadata"]["name"] == rev1.metadata.name and reused["metadata"]["uid"] == rev1.metadata.uid
    final = cluster.get("deployments", "shop", "web") or {}
    assert final["metadata"]["annotations"][REVISION] == "3"
    assert final["metadata"]["generation"] == 3  # the controller's annotation write bumps nothing
    assert all(p["spec"]["containers"][0]["image"] == "registry.example/web:1.0"
               for p in cluster.pods_of("shop", "web"))
    # a second undo goes back to revision 2, which becomes 4 with history "2"
    rev2 = cluster.replicasets_of("shop", "web")[0]
    template = rev2["spec"]["template"]
    del template["metadata"]["labels"]["pod-template-hash"]
    await apps.patch_namespaced_deployment("web", "shop", [{"op": "replace", "path": "/spec/template",
                                                            "value": template}])
    assert sorted(revisions(cluster)) == [("3", 0, "1"), ("4", 2, "2")]


async def test_rolling_update_respects_max_surge_and_max_unavailable(kube_cluster: FakeCluster) -> None:
    kube_cluster.ready_delay = 5
    kube_cluster.apply(deployment(replicas=4))  # 25%/25%: surge 1, unavailable 1
    kube_cluster.advance(5)
    kube_cluster.patch("deployments", "shop", "web", "application/strategic-merge-patch+json", set_image("web:2"))
    for _ in range(40):
        rss = kube_cluster.replicasets_of("shop", "web")
        assert sum(rs["spec"]["replicas"] for rs in rss) <= 5
        available = sum(rs["status"].get("availableReplicas", 0) for rs in rss)
        assert available >= 3
        if revisions(kube_cluster) == [("1", 0, None), ("2", 4, None)] and available == 4:
            break
        kube_cluster.advance(1)
    else:
        pytest.fail(f"the rollout did not finish: {revisions(kube_cluster)}")
    d = kube_cluster.get("deployments", "shop", "web") or {}
    assert conditions(d)["Progressing"]["reason"] == "NewReplicaSetAvailable"


async def test_pods_become_ready_after_the_ready_delay(apps: Any, fake_kube: FakeKube, kube_clock: ManualClock) -> None:
    fake_kube.cluster.ready_delay = 30
    await apps.create_namespaced_deployment("shop", deployment(replicas=2))
    d = await apps.read_namespaced_deployment("web", "shop")
    assert d.status.replicas == 2 and d.status.ready_replicas is None and d.status.unavailable_replicas == 2
    assert {c.type: c.reason for c in d.status.conditions}["Available"] == "MinimumReplicasUnavailable"
    assert all(p["status"]["phase"] == "Pending" for p in fake_kube.cluster.pods_of("shop", "web"))
    fake_kube.cluster.advance(29)
    assert (await apps.read_namespaced_deployment("web", "shop")).status.ready_replicas is None
    fake_kube.cluster.advance(1)
    d = await apps.read_namespaced_deployment("web", "shop")
    assert d.status.ready_replicas == 2 and d.status.available_replicas == 2
    assert kube_clock.now() == pytest.approx(fake_kube.cluster.now())


async def test_progress_deadline_exceeded_with_never_ready_pods(apps: Any, fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    await apps.create_namespaced_deployment("shop", deployment(replicas=2))
    cluster.faults.never_ready("shop", "web")
    await apps.patch_namespaced_deployment("web", "shop", set_image("registry.example/web:bad"))
    new_rs = cluster.replicasets_of("shop", "web")[-1]["metadata"]["name"]
    d = cluster.get("deployments", "shop", "web") or {}
    assert conditions(d)["Progressing"]["reason"] == "ReplicaSetUpdated"
    cluster.advance(599)
    assert conditions(cluster.get("deployments", "shop", "web") or {})["Progressing"]["status"] == "True"
    cluster.advance(2)
    d = (await apps.read_namespaced_deployment("web", "shop")).to_dict()
    progressing = {c["type"]: c for c in d["status"]["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"], progressing["message"]) == (
        "False", "ProgressDeadlineExceeded", f'ReplicaSet "{new_rs}" has timed out progressing.')
    available = {c["type"]: c for c in d["status"]["conditions"]}["Available"]
    assert available["status"] == "True"  # the old pods still serve: maxUnavailable kept one of them
    new_pods = [p for p in cluster.pods_of("shop", "web")
                if p["metadata"]["ownerReferences"][0]["name"] == new_rs]
    assert new_pods and all(p["status"]["phase"] == "Running" for p in new_pods)
    assert all({c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"] == "False" for p in new_pods)
    # lifting the fault lets the rollout finish
    cluster.faults.allow_ready("shop", "web")
    cluster.reconcile()
    assert conditions(cluster.get("deployments", "shop", "web") or {})["Progressing"]["reason"] == (
        "NewReplicaSetAvailable")


async def test_paused_deployment_scales_but_does_not_roll(apps: Any, fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    await apps.create_namespaced_deployment("shop", deployment(replicas=2))
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"paused": True}})
    progressing = conditions(cluster.get("deployments", "shop", "web") or {})["Progressing"]
    assert (progressing["status"], progressing["reason"], progressing["message"]) == (
        "Unknown", "DeploymentPaused", "Deployment is paused")
    await apps.patch_namespaced_deployment("web", "shop", set_image("registry.example/web:2.0"))
    await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 4}},
                                                 _content_type="application/merge-patch+json")
    assert revisions(cluster) == [("1", 4, None)]
    d = cluster.get("deployments", "shop", "web") or {}
    assert "updatedReplicas" not in d["status"]  # no ReplicaSet matches the paused template yet
    assert d["status"]["replicas"] == 4 and conditions(d)["Progressing"]["reason"] == "DeploymentPaused"
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"paused": False}})
    assert revisions(cluster) == [("1", 0, None), ("2", 4, None)]
    assert conditions(cluster.get("deployments", "shop", "web") or {})["Progressing"]["reason"] == (
        "NewReplicaSetAvailable")


async def test_scaling_changes_replicaset_and_annotations(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment(replicas=3))
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 1}})
    [rs] = fake_kube.cluster.replicasets_of("shop", "web")
    assert rs["spec"]["replicas"] == 1 and rs["status"]["replicas"] == 1
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "1"
    assert len(fake_kube.cluster.pods_of("shop", "web")) == 1
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 0}})
    d = await apps.read_namespaced_deployment("web", "shop")
    assert d.status.replicas is None and fake_kube.cluster.pods_of("shop", "web") == []
    assert {c.type: c.status for c in d.status.conditions}["Available"] == "True"


async def test_deleted_pods_are_recreated(kube_cluster: FakeCluster) -> None:
    kube_cluster.apply(deployment(replicas=2))
    victim = kube_cluster.pods_of("shop", "web")[0]
    kube_cluster.delete("pods", "shop", victim["metadata"]["name"])
    pods = kube_cluster.pods_of("shop", "web")
    assert len(pods) == 2 and victim["metadata"]["uid"] not in {p["metadata"]["uid"] for p in pods}


async def test_old_replicasets_beyond_revision_history_limit_are_pruned(kube_cluster: FakeCluster) -> None:
    kube_cluster.apply(deployment(replicas=1, revisionHistoryLimit=1))
    for tag in ("2", "3", "4"):
        kube_cluster.apply(with_image(deployment(replicas=1, revisionHistoryLimit=1), f"web:{tag}"))
    assert revisions(kube_cluster) == [("3", 0, None), ("4", 1, None)]


async def test_recreate_strategy_removes_old_pods_first(kube_cluster: FakeCluster) -> None:
    kube_cluster.ready_delay = 10
    manifest = deployment(replicas=2, strategy={"type": "Recreate"})
    kube_cluster.apply(manifest)
    kube_cluster.advance(10)
    kube_cluster.apply(with_image(manifest, "web:2"))
    pods = kube_cluster.pods_of("shop", "web")
    assert all(p["spec"]["containers"][0]["image"] == "web:2" for p in pods) and len(pods) == 2
    assert revisions(kube_cluster) == [("1", 0, None), ("2", 2, None)]
    d = kube_cluster.get("deployments", "shop", "web") or {}
    assert conditions(d)["Available"]["status"] == "False"
    kube_cluster.advance(10)
    assert conditions(kube_cluster.get("deployments", "shop", "web") or {})["Available"]["status"] == "True"


async def test_statefulset_revisions_pods_and_rollback(apps: Any, fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    cluster.ready_delay = 5
    await apps.create_namespaced_stateful_set("shop", statefulset(replicas=3))
    assert [p["metadata"]["name"] for p in cluster.pods_of("shop", "db", "StatefulSet")] == ["db-0"]  # OrderedReady
    cluster.advance(15)
    [rev1] = cluster.revisions_of("shop", "db")
    assert rev1["revision"] == 1 and rev1["metadata"]["name"].startswith("db-")
    assert rev1["metadata"]["labels"]["controller-revision-hash"] == rev1["metadata"]["name"]
    assert rev1["data"]["spec"]["template"]["$patch"] == "replace"
    sts = (await apps.read_namespaced_stateful_set("db", "shop")).status
    assert (sts.replicas, sts.ready_replicas, sts.current_revision, sts.update_revision, sts.observed_generation) == (
        3, 3, rev1["metadata"]["name"], rev1["metadata"]["name"], 1)
    pods = cluster.pods_of("shop", "db", "StatefulSet")
    assert [p["metadata"]["labels"]["controller-revision-hash"] for p in pods] == [rev1["metadata"]["name"]] * 3

    await apps.patch_namespaced_stateful_set("db", "shop", {"spec": {"template": {"spec": {"containers": [
        {"name": "db", "image": "registry.example/db:2.0"}]}}}})
    rev2 = cluster.revisions_of("shop", "db")[-1]
    assert rev2["revision"] == 2
    status = (cluster.get("statefulsets", "shop", "db") or {})["status"]
    assert status["updateRevision"] == rev2["metadata"]["name"] != status["currentRevision"]
    cluster.advance(30)
    status = (cluster.get("statefulsets", "shop", "db") or {})["status"]
    assert status["currentRevision"] == status["updateRevision"] == rev2["metadata"]["name"]
    assert status["updatedReplicas"] == status["readyReplicas"] == 3

    # kubectl rollout undo for a StatefulSet: the previous revision's data as a strategic merge patch
    revs = (await apps.list_namespaced_controller_revision("shop", label_selector="app=db")).items
    previous = next(r for r in revs if r.revision == 1)
    await apps.patch_namespaced_stateful_set("db", "shop", previous.data)
    cluster.advance(30)
    reused = cluster.revisions_of("shop", "db")[-1]
    assert reused["metadata"]["name"] == rev1["metadata"]["name"] and reused["revision"] == 3
    status = (cluster.get("statefulsets", "shop", "db") or {})["status"]
    assert status["currentRevision"] == rev1["metadata"]["name"]
    assert all(p["spec"]["containers"][0]["image"] == "registry.example/db:1.0"
               for p in cluster.pods_of("shop", "db", "StatefulSet"))


async def test_statefulset_scale_down_removes_highest_ordinals(kube_cluster: FakeCluster) -> None:
    kube_cluster.apply(statefulset(replicas=3))
    kube_cluster.patch("statefulsets", "shop", "db", "application/merge-patch+json", {"spec": {"replicas": 1}})
    assert [p["metadata"]["name"] for p in kube_cluster.pods_of("shop", "db", "StatefulSet")] == ["db-0"]
    assert (kube_cluster.get("statefulsets", "shop", "db") or {})["status"]["replicas"] == 1


async def test_state_file_seeds_workloads(tmp_path: Any) -> None:
    state = tmp_path / "state.yaml"
    state.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n"
        "spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: app, image: web:1}]}\n"
        "---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lone, namespace: shop, labels: {app: lone}}\n"
        "spec: {containers: [{name: c, image: busybox}]}\n"
    )
    cluster = FakeCluster()
    result = cluster.load_state(state)
    assert [o["metadata"]["name"] for o in result.applied] == ["web", "lone"]
    assert len(cluster.pods_of("shop", "web")) == 2
    lone = cluster.get("pods", "shop", "lone") or {}
    assert lone["status"]["phase"] == "Running" and lone["spec"]["serviceAccountName"] == "default"


async def test_min_ready_seconds_delays_availability(kube_cluster: FakeCluster) -> None:
    kube_cluster.apply(deployment(replicas=2, minReadySeconds=20))
    d = kube_cluster.get("deployments", "shop", "web") or {}
    assert d["status"]["readyReplicas"] == 2 and "availableReplicas" not in d["status"]
    kube_cluster.advance(20)
    d = kube_cluster.get("deployments", "shop", "web") or {}
    assert d["status"]["availableReplicas"] == 2
    assert conditions(d)["Progressing"]["reason"] == "NewReplicaSetAvailable"


async def test_scaling_a_paused_rollout_is_proportional(kube_cluster: FakeCluster) -> None:
    kube_cluster.apply(deployment(replicas=4))  # surge 1, unavailable 1
    kube_cluster.faults.never_ready("shop", "web")
    kube_cluster.patch("deployments", "shop", "web", "application/strategic-merge-patch+json", set_image("web:2"))
    assert revisions(kube_cluster) == [("1", 3, None), ("2", 2, None)]  # 5 = 4 + surge; 3 still available
    kube_cluster.patch("deployments", "shop", "web", "application/merge-patch+json",
                       {"spec": {"paused": True, "replicas": 8}})  # surge becomes 2: room for 10
    assert revisions(kube_cluster) == [("1", 6, None), ("2", 4, None)]


async def test_orphan_propagation_keeps_dependents(kube_cluster: FakeCluster) -> None:
    kube_cluster.apply(deployment(replicas=1))
    kube_cluster.delete("deployments", "shop", "web", {"propagationPolicy": "Orphan"})
    [rs] = kube_cluster.objects("replicasets", "shop")
    assert rs["metadata"]["ownerReferences"] == [] and len(kube_cluster.objects("pods", "shop")) == 1


async def test_an_external_virtual_clock_drives_the_cluster() -> None:
    """Share the daemon's VirtualClock: move it, then let the cluster catch up with reconcile()."""
    vclock = VirtualClock()
    cluster = FakeCluster(clock=lambda: vclock.now().timestamp(), ready_delay=10)
    cluster.apply(deployment(replicas=1))
    assert cluster.pods_of("shop", "web")[0]["status"]["phase"] == "Pending"
    await vclock.advance(10)
    cluster.reconcile()
    assert cluster.pods_of("shop", "web")[0]["status"]["phase"] == "Running"
    with pytest.raises(TypeError):
        cluster.advance(1)
