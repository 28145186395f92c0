"""Every response the fake gives deserializes into kubernetes_asyncio's models, in every state.

The client validates required fields while deserializing (DeploymentSpec.selector,
Container.name, condition type/status, ...), so an incomplete object from the fake
would surface as a ValueError in the code under test rather than as a test failure
here.  The typed methods are called exactly as the executor calls them.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client, watch

from remediator.testing.kube import MERGE_PATCH, FakeKube
from tests.kube_fake.helpers import deployment, lease, statefulset


async def _events(fn: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """The initial ADDED events of a watch, deserialized by the client's own Watch."""
    expected = len((await fn(*args, **kwargs)).items)
    seen: list[Any] = []
    if expected == 0:
        return seen
    async with watch.Watch().stream(fn, *args, timeout_seconds=5, **kwargs) as stream:
        async for event in stream:
            seen.append(event["object"])
            if len(seen) == expected:
                break
    return seen


async def test_every_response_type_deserializes(fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    apps = client.AppsV1Api(fake_kube.api)
    core = client.CoreV1Api(fake_kube.api)
    coord = client.CoordinationV1Api(fake_kube.api)
    cluster.ready_delay = 10

    # objects in many states: pending, ready and never-ready pods; paused, rolling and empty workloads
    assert isinstance(await apps.create_namespaced_deployment("shop", deployment("web", replicas=2)),
                      client.V1Deployment)
    await apps.create_namespaced_deployment("shop", deployment("zero", replicas=0))
    cluster.advance(10)
    cluster.faults.never_ready("shop", "web")
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}})
    cluster.advance(11)
    await apps.create_namespaced_deployment("shop", deployment("paused", replicas=1, paused=True))
    await apps.create_namespaced_stateful_set("shop", statefulset("db", replicas=2))
    await apps.create_namespaced_stateful_set("shop", statefulset("empty", replicas=0))
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lone", "namespace": "shop"},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
                                            "env": [{"name": "X", "valueFrom": {"fieldRef": {
                                                "fieldPath": "metadata.name"}}}]}]}})

    for d in (await apps.list_namespaced_deployment("shop")).items:
        assert isinstance(d, client.V1Deployment) and d.spec.selector and d.spec.template
        assert isinstance(await apps.read_namespaced_deployment(d.metadata.name, "shop"), client.V1Deployment)
    assert (await apps.list_deployment_for_all_namespaces()).items
    assert isinstance(await apps.read_namespaced_deployment_scale("web", "shop"), client.V1Scale)
    scale = await apps.patch_namespaced_deployment_scale("zero", "shop", {"spec": {"replicas": 0}},
                                                        _content_type=MERGE_PATCH)
    assert isinstance(scale, client.V1Scale) and scale.status.replicas == 0
    assert isinstance(await apps.replace_namespaced_deployment_scale("zero", "shop", scale), client.V1Scale)
    assert isinstance(await apps.patch_namespaced_deployment("zero", "shop", [
        {"op": "add", "path": "/metadata/labels/x", "value": "y"}]), client.V1Deployment)
    current = await apps.read_namespaced_deployment("zero", "shop")
    assert isinstance(await apps.replace_namespaced_deployment("zero", "shop", current), client.V1Deployment)

    for s in (await apps.list_namespaced_stateful_set("shop")).items:
        assert isinstance(await apps.read_namespaced_stateful_set(s.metadata.name, "shop"), client.V1StatefulSet)
    assert isinstance(await apps.read_namespaced_stateful_set_scale("db", "shop"), client.V1Scale)
    assert (await apps.list_stateful_set_for_all_namespaces()).items

    rss = (await apps.list_namespaced_replica_set("shop")).items
    assert rss and all(isinstance(rs, client.V1ReplicaSet) for rs in rss)
    assert isinstance(await apps.read_namespaced_replica_set(rss[0].metadata.name, "shop"), client.V1ReplicaSet)
    revisions = (await apps.list_namespaced_controller_revision("shop")).items
    assert revisions and isinstance(
        await apps.read_namespaced_controller_revision(revisions[0].metadata.name, "shop"), client.V1ControllerRevision)

    pods = (await core.list_namespaced_pod("shop")).items
    phases = {p.status.phase for p in pods}
    readiness = {c.status for p in pods for c in p.status.conditions if c.type == "Ready"}
    assert phases == {"Pending", "Running"} and readiness == {"True", "False"}
    assert (await core.list_pod_for_all_namespaces()).items
    assert isinstance(await core.read_namespaced_pod("lone", "shop"), client.V1Pod)
    assert isinstance(await core.delete_namespaced_pod("lone", "shop", dry_run="All"), client.V1Pod)
    assert isinstance(await core.delete_namespaced_pod("lone", "shop"), client.V1Pod)

    assert isinstance(await coord.create_namespaced_lease("shop", lease(namespace="shop"), pretty=True),
                      client.V1Lease)
    held = await coord.read_namespaced_lease("remediator-leader", "shop")
    assert isinstance(await coord.replace_namespaced_lease("remediator-leader", "shop", held), client.V1Lease)

    autoscaling = client.AutoscalingV2Api(fake_kube.api)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "maxReplicas": 10}}
    created = await autoscaling.create_namespaced_horizontal_pod_autoscaler("shop", hpa)
    assert isinstance(created, client.V2HorizontalPodAutoscaler) and created.spec.min_replicas == 1
    [listed] = (await autoscaling.list_namespaced_horizontal_pod_autoscaler("shop")).items
    assert listed.spec.scale_target_ref.name == "web" and listed.status.desired_replicas == 0

    assert isinstance(await apps.delete_namespaced_deployment("zero", "shop"), client.V1Status)
    assert isinstance(await apps.delete_namespaced_stateful_set("empty", "shop"), client.V1Status)

    # watch events go through the same models
    for fn in (apps.list_namespaced_deployment, apps.list_namespaced_stateful_set, apps.list_namespaced_replica_set,
               apps.list_namespaced_controller_revision, core.list_namespaced_pod):
        assert all(not isinstance(obj, dict) for obj in await _events(fn, "shop"))

    # discovery
    assert "v1" in (await client.CoreApi(fake_kube.api).get_api_versions()).versions
    groups = await client.ApisApi(fake_kube.api).get_api_versions()
    assert {g.name for g in groups.groups} == {"apps", "coordination.k8s.io", "autoscaling"}
    resources = await apps.get_api_resources()
    assert {"deployments", "deployments/scale", "statefulsets", "replicasets"} <= {x.name for x in resources.resources}
    assert (await client.CoreV1Api(fake_kube.api).get_api_resources()).group_version == "v1"
    assert (await client.VersionApi(fake_kube.api).get_code()).major == "1"
