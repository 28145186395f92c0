"""CRUD, defaults, generation, errors, dry-run and selectors, through the real kubernetes_asyncio client."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.testing.kube import FakeCluster, FakeKube
from tests.kube_fake.helpers import deployment, lease, status_of


@pytest.fixture
def apps(kube_api: Any) -> Any:
    return client.AppsV1Api(kube_api)


@pytest.fixture
def core(kube_api: Any) -> Any:
    return client.CoreV1Api(kube_api)


async def test_create_returns_201_with_apiserver_defaults(apps: Any, fake_kube: FakeKube) -> None:
    created, code, _ = await apps.create_namespaced_deployment_with_http_info("shop", deployment(replicas=2))
    assert code == 201
    meta, spec = created.metadata, created.spec
    assert meta.generation == 1 and meta.uid and meta.resource_version.isdigit()
    assert meta.creation_timestamp is not None and meta.namespace == "shop"
    assert spec.strategy.type == "RollingUpdate"
    assert (spec.strategy.rolling_update.max_surge, spec.strategy.rolling_update.max_unavailable) == ("25%", "25%")
    assert (spec.revision_history_limit, spec.progress_deadline_seconds) == (10, 600)
    pod = spec.template.spec
    assert (pod.restart_policy, pod.termination_grace_period_seconds, pod.dns_policy, pod.scheduler_name) == (
        "Always", 30, "ClusterFirst", "default-scheduler")
    c = pod.containers[0]
    assert (c.termination_message_path, c.termination_message_policy, c.image_pull_policy) == (
        "/dev/termination-log", "File", "IfNotPresent")
    stored = fake_kube.cluster.get("deployments", "shop", "web")
    assert stored is not None and stored["spec"]["template"]["spec"]["securityContext"] == {}


@pytest.mark.parametrize(("image", "policy"), [("nginx", "Always"), ("nginx:latest", "Always"),
                                               ("reg:5000/nginx", "Always"), ("nginx@sha256:ab", "IfNotPresent")])
async def test_image_pull_policy_default_follows_the_tag(apps: Any, image: str, policy: str) -> None:
    created = await apps.create_namespaced_deployment("shop", deployment(image=image))
    assert created.spec.template.spec.containers[0].image_pull_policy == policy


async def test_replicas_default_to_one(apps: Any) -> None:
    body = deployment()
    del body["spec"]["replicas"]
    assert (await apps.create_namespaced_deployment("shop", body)).spec.replicas == 1


async def test_get_list_all_namespaces_and_delete(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment("web"))
    await apps.create_namespaced_deployment("pay", deployment("api", "pay"))
    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"
    listed = await apps.list_namespaced_deployment("shop")
    assert [d.metadata.name for d in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(listed.items[0].metadata.resource_version)
    everywhere = await apps.list_deployment_for_all_namespaces()
    assert sorted(d.metadata.name for d in everywhere.items) == ["api", "web"]
    status = await apps.delete_namespaced_deployment("web", "shop")
    assert status.status == "Success" and status.details.name == "web"
    assert fake_kube.cluster.get("deployments", "shop", "web") is None
    assert fake_kube.cluster.objects("replicasets", "shop") == []  # garbage-collected
    assert fake_kube.cluster.objects("pods", "shop") == []


async def test_resource_version_is_global_and_bumped_by_every_write(apps: Any) -> None:
    a = await apps.create_namespaced_deployment("shop", deployment("a"))
    b = await apps.create_namespaced_deployment("shop", deployment("b"))
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)
    patched = await apps.patch_namespaced_deployment("a", "shop", {"metadata": {"labels": {"x": "1"}}})
    assert int(patched.metadata.resource_version) > int(b.metadata.resource_version)


async def test_generation_bumps_on_spec_or_annotations_only(apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    labels = await apps.patch_namespaced_deployment("web", "shop", {"metadata": {"labels": {"team": "a"}}})
    assert labels.metadata.generation == 1
    annotated = await apps.patch_namespaced_deployment("web", "shop", {"metadata": {"annotations": {"a": "1"}}})
    assert annotated.metadata.generation == 2
    scaled = await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 4}})
    assert scaled.metadata.generation == 3
    settled = await apps.read_namespaced_deployment("web", "shop")
    same = await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 4}})
    assert same.metadata.generation == 3
    assert same.metadata.resource_version == settled.metadata.resource_version  # a no-op write stores nothing
    # status writes by the controller never bump it
    fake_kube.cluster.reconcile()
    stored = fake_kube.cluster.get("deployments", "shop", "web")
    assert stored is not None and stored["metadata"]["generation"] == 3
    assert stored["status"]["observedGeneration"] == 3


async def test_put_keeps_status_and_system_fields(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    current = await apps.read_namespaced_deployment("web", "shop")
    current.spec.replicas = 5
    current.status.replicas = 99
    current.metadata.uid = None
    replaced = await apps.replace_namespaced_deployment("web", "shop", current)
    assert replaced.spec.replicas == 5 and replaced.status.replicas == 3  # status comes from the controller
    assert replaced.metadata.generation == 2
    assert replaced.metadata.creation_timestamp == current.metadata.creation_timestamp


async def test_not_found_is_a_json_status(apps: Any, core: Any) -> None:
    with pytest.raises(ApiException) as err:
        await apps.read_namespaced_deployment("nope", "shop")
    assert err.value.status == 404 and err.value.reason == "Not Found"
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "apps", "kind": "deployments"}, "code": 404,
    }
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_pod("p", "shop")
    body = status_of(err.value)
    assert body["message"] == 'pods "p" not found' and body["details"] == {"name": "p", "kind": "pods"}


async def test_stale_resource_version_is_409_conflict(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    old = await apps.read_namespaced_deployment("web", "shop")
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 4}})
    old.spec.replicas = 2
    with pytest.raises(ApiException) as err:
        await apps.replace_namespaced_deployment("web", "shop", old)
    assert err.value.status == 409
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
                   "please apply your changes to the latest version and try again",
        "reason": "Conflict", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 409,
    }
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment(
            "web", "shop", {"metadata": {"resourceVersion": old.metadata.resource_version}, "spec": {"replicas": 1}})
    assert err.value.status == 409


async def test_create_twice_is_409_already_exists(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment("shop", deployment())
    body = status_of(err.value)
    assert (err.value.status, body["reason"], body["message"]) == (
        409, "AlreadyExists", 'deployments.apps "web" already exists')


async def test_negative_replicas_is_422_with_the_exact_status(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": -1}})
    assert err.value.status == 422
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'Deployment.apps "web" is invalid: '
                   "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "reason": "Invalid",
        "details": {"name": "web", "group": "apps", "kind": "Deployment", "causes": [
            {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
             "field": "spec.replicas"}]},
        "code": 422,
    }


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d["spec"].pop("selector"), "spec.selector", "Required value"),
        (lambda d: d["spec"].pop("template"), "spec.template", "Required value"),
        (lambda d: d["spec"]["template"]["metadata"].update(labels={"app": "other"}),
         "spec.template.metadata.labels", "`selector` does not match template `labels`"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
         "spec.template.spec.containers[0].name", "Required value"),
        (lambda d: d["metadata"].update(name="Web_1"), "metadata.name", "RFC 1123"),
        (lambda d: d["spec"].update(strategy={"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
         "spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0"),
    ],
)
async def test_validation_errors(apps: Any, mutate: Any, field: str, fragment: str) -> None:
    body = deployment()
    mutate(body)
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment("shop", body)
    status = status_of(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert field in [c["field"] for c in status["details"]["causes"]]
    assert fragment in status["message"]


async def test_env_with_value_and_value_from_is_the_spec_message(apps: Any) -> None:
    env = [{"name": "A", "value": "1"},
           {"name": "POOL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "pool"}}}]
    await apps.create_namespaced_deployment("shop", deployment(env=env))
    container = {"name": "app", "env": [{"name": "POOL", "value": "50"}]}
    patch = {"spec": {"template": {"spec": {"containers": [container]}}}}
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", patch)
    assert err.value.status == 422
    assert status_of(err.value)["message"] == (
        'Deployment.apps "web" is invalid: spec.template.spec.containers[0].env[1].valueFrom: '
        'Invalid value: "": may not be specified when `value` is not empty'
    )


async def test_selector_is_immutable(apps: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment())
    patch = {"spec": {"selector": {"matchLabels": {"app": "web", "v": "2"}},
                      "template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}}
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", patch)
    assert "spec.selector: Invalid value" in status_of(err.value)["message"]
    assert "field is immutable" in status_of(err.value)["message"]


async def test_dry_run_validates_and_returns_the_would_be_object_without_storing(
    apps: Any, core: Any, fake_kube: FakeKube
) -> None:
    cluster = fake_kube.cluster
    created = await apps.create_namespaced_deployment("shop", deployment(), dry_run="All")
    assert created.metadata.uid and created.metadata.generation == 1
    assert cluster.get("deployments", "shop", "web") is None
    await apps.create_namespaced_deployment("shop", deployment())
    version = cluster.resource_version
    events_before = cluster.store.watch("deployments", int(version))
    patched = await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 7}}, dry_run="All")
    assert patched.spec.replicas == 7 and patched.metadata.generation == 2
    assert patched.metadata.resource_version == version  # unchanged, although the would-be object differs
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": -2}}, dry_run="All")
    assert err.value.status == 422
    scale = await apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 9}}, dry_run="All",
                                                        _content_type="application/merge-patch+json")
    assert scale.spec.replicas == 9
    pod = cluster.objects("pods", "shop")[0]
    deleted_pod = await core.delete_namespaced_pod(pod["metadata"]["name"], "shop", dry_run="All")
    assert deleted_pod.metadata.name == pod["metadata"]["name"] and deleted_pod.metadata.deletion_timestamp
    gone = await apps.delete_namespaced_deployment("web", "shop", dry_run="All")
    assert gone.status == "Success"
    assert cluster.resource_version == version
    stored = cluster.get("deployments", "shop", "web")
    assert stored is not None and stored["spec"]["replicas"] == 3
    assert len(cluster.objects("pods", "shop")) == 3
    assert events_before.queue.empty() and events_before.backlog == []
    cluster.unwatch(events_before)


async def test_any_other_dry_run_value_is_422_invalid_create_options(apps: Any) -> None:
    with pytest.raises(ApiException) as err:
        await apps.create_namespaced_deployment("shop", deployment(), dry_run="Yes")
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: ["Yes"]: supported values: "All"')
    assert body["details"]["kind"] == "CreateOptions"


async def test_label_and_field_selectors_on_lists(apps: Any, core: Any) -> None:
    await apps.create_namespaced_deployment("shop", deployment("web", replicas=2))
    await apps.create_namespaced_deployment("shop", deployment("api", replicas=1))
    names = [d.metadata.name for d in (await apps.list_namespaced_deployment(
        "shop", field_selector="metadata.name=api")).items]
    assert names == ["api"]
    assert len((await core.list_namespaced_pod("shop", label_selector="app=web")).items) == 2
    assert len((await core.list_namespaced_pod("shop", label_selector="app in (web,api)")).items) == 3
    assert len((await core.list_namespaced_pod("shop", label_selector="app notin (web)")).items) == 1
    assert len((await core.list_namespaced_pod("shop", label_selector="app!=web,pod-template-hash")).items) == 1
    assert len((await core.list_namespaced_pod("shop", label_selector="!pod-template-hash")).items) == 0
    assert len((await core.list_pod_for_all_namespaces(field_selector="metadata.namespace=shop")).items) == 3
    with pytest.raises(ApiException) as err:
        await core.list_namespaced_pod("shop", label_selector="app in (web")
    assert err.value.status == 400


async def test_list_limit_and_continue(apps: Any) -> None:
    for name in ("a", "b", "c"):
        await apps.create_namespaced_deployment("shop", deployment(name, replicas=0))
    first = await apps.list_namespaced_deployment("shop", limit=2)
    assert [d.metadata.name for d in first.items] == ["a", "b"] and first.metadata.remaining_item_count == 1
    rest = await apps.list_namespaced_deployment("shop", limit=2, _continue=first.metadata._continue)
    assert [d.metadata.name for d in rest.items] == ["c"] and rest.metadata._continue is None


async def test_pod_delete_with_uid_precondition(core: Any, apps: Any, fake_kube: FakeKube) -> None:
    await apps.create_namespaced_deployment("shop", deployment(replicas=1))
    pod = (await core.list_namespaced_pod("shop")).items[0]
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="0000-stale"))
    with pytest.raises(ApiException) as err:
        await core.delete_namespaced_pod(pod.metadata.name, "shop", body=stale)
    assert err.value.status == 409
    assert status_of(err.value)["message"] == (
        f'Operation cannot be fulfilled on Pod "{pod.metadata.name}": the UID in the precondition (0000-stale) '
        f"does not match the UID in record ({pod.metadata.uid}). The object might have been deleted and then recreated"
    )
    # with a body, the apiserver reads every option from it: a grace_period_seconds= query would be ignored
    options = client.V1DeleteOptions(grace_period_seconds=5, preconditions=client.V1Preconditions(uid=pod.metadata.uid))
    deleted = await core.delete_namespaced_pod(pod.metadata.name, "shop", body=options)
    assert deleted.metadata.uid == pod.metadata.uid and deleted.metadata.deletion_grace_period_seconds == 5
    # the ReplicaSet replaces it under a new name
    replacement = (await core.list_namespaced_pod("shop")).items
    assert len(replacement) == 1 and replacement[0].metadata.uid != pod.metadata.uid
    record = fake_kube.cluster.requests.matching("DELETE", r"/pods/")[-1]
    assert record.body["preconditions"] == {"uid": pod.metadata.uid}


async def test_leases_for_leader_election(kube_api: Any) -> None:
    coord = client.CoordinationV1Api(kube_api)
    created = await coord.create_namespaced_lease("remediator", lease(), pretty=True)
    assert created.spec.holder_identity == "pod-a"
    read = await coord.read_namespaced_lease("remediator-leader", "remediator")
    read.spec.holder_identity = "pod-b"
    updated = await coord.replace_namespaced_lease("remediator-leader", "remediator", read)
    assert updated.spec.holder_identity == "pod-b"
    read.spec.holder_identity = "pod-c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        await coord.replace_namespaced_lease("remediator-leader", "remediator", read)
    assert err.value.status == 409
    assert "leases.coordination.k8s.io" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        await coord.read_namespaced_lease("other", "remediator")
    assert status_of(err.value)["code"] == 404  # what leaderelection.py reads


async def test_unsupported_patch_content_type_is_415(fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment())
    async with aiohttp.ClientSession() as http:
        url = f"{fake_kube.url}/apis/apps/v1/namespaces/shop/deployments/web"
        async with http.patch(url, data=b"spec: {replicas: 2}", headers={"Content-Type": "application/yaml"}) as resp:
            body = await resp.json()
            assert resp.status == 415
            assert body["reason"] == "UnsupportedMediaType"
            assert body["message"] == "415: Unsupported Media Type"  # the apiserver's words
        async with http.patch(url, data=b"[", headers={"Content-Type": "application/json-patch+json"}) as resp:
            assert resp.status == 400


async def test_unknown_paths_and_verbs(fake_kube: FakeKube) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake_kube.url}/apis/apps/v1/namespaces/shop/daemonsets") as resp:
            assert resp.status == 404 and (await resp.json())["reason"] == "NotFound"
        async with http.delete(f"{fake_kube.url}/apis/apps/v1/namespaces/shop/replicasets/x") as resp:
            assert resp.status == 405 and (await resp.json())["reason"] == "MethodNotAllowed"
        async with http.get(f"{fake_kube.url}/api/v1/namespaces/shop/pods?watch=maybe") as resp:
            assert resp.status == 400


async def test_apply_seeds_like_kubectl_apply(kube_cluster: FakeCluster) -> None:
    created = kube_cluster.apply(deployment(replicas=2))
    assert "kubectl.kubernetes.io/last-applied-configuration" in created["metadata"]["annotations"]
    again = kube_cluster.apply(deployment(replicas=4))
    assert again["spec"]["replicas"] == 4 and again["metadata"]["generation"] == 2
    assert len(kube_cluster.pods_of("shop", "web")) == 4
    result = kube_cluster.apply_manifests(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n"
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l, namespace: shop}\nspec: {}\n"
    )
    assert result.skipped == ["Service/web"] and [o["kind"] for o in result.applied] == ["Lease"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"scaleTargetRef": {"kind": "Deployment", "name": "web"}}, "spec.maxReplicas"),
        ({"scaleTargetRef": {"kind": "Deployment"}, "maxReplicas": 3}, "spec.scaleTargetRef.name"),
        ({"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 5, "maxReplicas": 3},
         "spec.maxReplicas"),
    ],
)
async def test_autoscalers_are_validated(fake_kube: FakeKube, spec: dict[str, Any], field: str) -> None:
    autoscaling = client.AutoscalingV2Api(fake_kube.api)
    body = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "shop"}, "spec": spec}
    with pytest.raises(ApiException) as err:
        await autoscaling.create_namespaced_horizontal_pod_autoscaler("shop", body)
    assert err.value.status == 422
    assert [c["field"] for c in status_of(err.value)["details"]["causes"]] == [field]
