"""The three PATCH types and the scale subresource, as kubectl and the executor send them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.testing.kube import MERGE_PATCH, FakeKube
from tests.kube_fake.helpers import deployment, statefulset, status_of

POOL_FROM_CONFIG = {"name": "DB_POOL_MAX_SIZE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "pool"}}}


@pytest.fixture
def apps(kube_api: Any) -> Any:
    return client.AppsV1Api(kube_api)


def env_of(obj: Any) -> dict[str, Any]:
    return {e.name: e for e in obj.spec.template.spec.containers[0].env}


async def test_strategic_merge_env_by_name_with_value_from_null(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment(
        "shop", deployment(env=[{"name": "A", "value": "1"}, POOL_FROM_CONFIG, {"name": "Z", "value": "9"}]))
    before = await apps.read_namespaced_deployment("web", "shop")
    body = {
        "metadata": {"resourceVersion": before.metadata.resource_version},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "DB_POOL_MAX_SIZE", "value": "50", "valueFrom": None}]}]}}},
    }
    after = await apps.patch_namespaced_deployment("web", "shop", body, field_manager="remediator")
    env = env_of(after)
    assert list(env) == ["A", "DB_POOL_MAX_SIZE", "Z"]
    assert env["DB_POOL_MAX_SIZE"].value == "50" and env["DB_POOL_MAX_SIZE"].value_from is None
    assert after.metadata.generation == 2
    sent = fake_kube.cluster.requests.matching("PATCH")[-1]
    assert sent.content_type == "application/strategic-merge-patch+json"
    assert sent.query == {"fieldManager": "remediator"}
    # the same patch with the now-stale resourceVersion is a conflict
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", body)
    assert err.value.status == 409


async def test_strategic_merge_patch_delete_directive(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment(env=[{"name": "A", "value": "1"}, {"name": "B"}]))
    container = {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}
    patch = {"spec": {"template": {"spec": {"containers": [container]}}}}
    after = await apps.patch_namespaced_deployment("web", "shop", patch)
    assert list(env_of(after)) == ["B"]


async def test_merge_patch_replaces_the_containers_list(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment(env=[{"name": "A", "value": "1"}]))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}}
    after = await apps.patch_namespaced_deployment("web", "shop", patch, _content_type=MERGE_PATCH)
    container = after.spec.template.spec.containers[0]
    assert container.image == "web:2" and container.env is None


async def test_json_patch_add_replace_and_test(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment(env=[{"name": "A", "value": "1"}]))
    rv = (await apps.read_namespaced_deployment("web", "shop")).metadata.resource_version
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "test", "path": "/spec/template/spec/containers/0/env/0/name", "value": "A"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "2"},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "B", "value": "3"}},
    ]
    after = await apps.patch_namespaced_deployment("web", "shop", ops)
    assert {k: v.value for k, v in env_of(after).items()} == {"A": "2", "B": "3"}
    assert fake_kube.cluster.requests.matching("PATCH")[-1].content_type == "application/json-patch+json"


async def test_failed_json_patch_test_is_422_invalid_not_409(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    version = fake_kube.cluster.resource_version
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment(
            "web", "shop", [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
                            {"op": "replace", "path": "/spec/replicas", "value": 1}])
    body = status_of(err.value)
    assert err.value.status == 422
    assert body["reason"] == "Invalid"
    assert body["message"] == "the server rejected our request due to an error in our request"
    assert body["details"] == {}  # the apiserver does not say which operation failed
    assert fake_kube.cluster.resource_version == version


async def test_undo_style_json_patch_replaces_template_and_annotations(apps: Any, kube_api: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    current = await apps.read_namespaced_deployment("web", "shop")
    template = kube_api.sanitize_for_serialization(current.spec.template)
    template["spec"]["containers"][0]["image"] = "registry.example/web:0.9"
    annotations = {"deployment.kubernetes.io/revision": "1", "kubernetes.io/change-cause": "undo"}
    after = await apps.patch_namespaced_deployment("web", "shop", [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ])
    assert after.spec.template.spec.containers[0].image == "registry.example/web:0.9"
    assert after.metadata.annotations["kubernetes.io/change-cause"] == "undo"


async def test_scale_subresource_get_put_and_merge_patch(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment(replicas=3))
    scale = await apps.read_namespaced_deployment_scale("web", "shop")
    deployment_now = await apps.read_namespaced_deployment("web", "shop")
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.metadata.resource_version == deployment_now.metadata.resource_version
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (3, 3, "app=web")

    scale.spec.replicas = 5
    replaced = await apps.replace_namespaced_deployment_scale("web", "shop", scale)
    assert replaced.spec.replicas == 5
    assert len(fake_kube.cluster.pods_of("shop", "web")) == 5
    with pytest.raises(ApiException) as err:  # same (now stale) resourceVersion again
        await apps.replace_namespaced_deployment_scale("web", "shop", scale)
    assert err.value.status == 409
    assert status_of(err.value)["message"].startswith('Operation cannot be fulfilled on deployments.apps "web"')

    patched = await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 2}},
                                                          _content_type=MERGE_PATCH)
    assert patched.spec.replicas == 2
    sent = fake_kube.cluster.requests.matching("PATCH", "/scale$")[-1]
    assert (sent.content_type, sent.body) == (MERGE_PATCH, {"spec": {"replicas": 2}})
    stored = fake_kube.cluster.get("deployments", "shop", "web")
    assert stored is not None and stored["spec"]["replicas"] == 2 and stored["metadata"]["generation"] == 3


async def test_scale_without_resource_version_is_unconditional_and_negative_is_422(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment(replicas=1))
    body = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 4}}
    assert (await apps.replace_namespaced_deployment_scale("web", "shop", body)).spec.replicas == 4
    body["spec"]["replicas"] = -1
    with pytest.raises(ApiException) as err:
        await apps.replace_namespaced_deployment_scale("web", "shop", body)
    assert err.value.status == 422
    assert status_of(err.value)["message"] == (
        'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0')


async def test_statefulset_scale_and_patch(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_stateful_set("shop", statefulset(replicas=2))
    scale = await apps.read_namespaced_stateful_set_scale("db", "shop")
    assert scale.spec.replicas == 2 and scale.status.selector == "app=db"
    scale.spec.replicas = 3
    await apps.replace_namespaced_stateful_set_scale("db", "shop", scale)
    assert sorted(p["metadata"]["name"] for p in fake_kube.cluster.pods_of("shop", "db", "StatefulSet")) == [
        "db-0", "db-1", "db-2"]
    patched = await apps.patch_namespaced_stateful_set("db", "shop", {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}})
    assert patched.metadata.generation == 3


async def test_rollout_restart_patch_twice_changes_nothing_the_second_time(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment(replicas=2))
    restart = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T10:04:05Z"}}}}}
    first = await apps.patch_namespaced_deployment("web", "shop", restart, field_manager="kubectl-rollout")
    settled = await apps.read_namespaced_deployment("web", "shop")
    second = await apps.patch_namespaced_deployment("web", "shop", restart, field_manager="kubectl-rollout")
    assert first.metadata.generation == second.metadata.generation == 2
    assert second.metadata.resource_version == settled.metadata.resource_version
    assert len(fake_kube.cluster.replicasets_of("shop", "web")) == 2
