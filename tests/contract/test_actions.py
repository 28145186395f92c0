"""Each executor action, live and in server-side dry-run, through the executor itself: the object after, the
status it reports, and (dry-run) that nothing changed on the server.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from remediator.executors.kube import RESTARTED_AT
from tests.contract.conftest import Backend
from tests.real_kube.helpers import executor, run_step

REVISION = "deployment.kubernetes.io/revision"


async def run(backend: Backend, action: str, params: dict[str, Any], *, dry_run: bool) -> Any:
    result = await run_step(executor(backend.api, server_dry_run=dry_run), backend.namespace, action, params)
    assert result.status == ("planned" if dry_run else "ok"), result.message
    return result


async def unchanged_by_dry_run(backend: Backend, before: dict[str, str]) -> None:
    """A server-side dry-run wrote nothing: every object keeps its resourceVersion."""
    assert await backend.snapshot() == before


async def test_restart(backend: Backend) -> None:
    before = await backend.web(replicas=2)
    quiet = await backend.snapshot()
    planned = await run(backend, "restart", {}, dry_run=True)
    stamp = planned.details["restartedAt"]
    # the would-be object: the annotation set, generation bumped; the real one untouched
    assert planned.after["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: stamp}
    assert planned.after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert planned.after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    await unchanged_by_dry_run(backend, quiet)

    done = await run(backend, "restart", {}, dry_run=False)
    after = await backend.settled()
    assert after["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == done.details["restartedAt"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["metadata"]["annotations"][REVISION] == "2"
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]


async def test_scale(backend: Backend) -> None:
    before = await backend.web(replicas=2)
    quiet = await backend.snapshot()
    planned = await run(backend, "scale", {"to": 3}, dry_run=True)
    assert planned.after["kind"] == "Scale" and planned.after["spec"] == {"replicas": 3}
    assert planned.after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    await unchanged_by_dry_run(backend, quiet)

    await run(backend, "scale", {"to": 3}, dry_run=False)
    after = await backend.settled()
    assert (after["spec"]["replicas"], after["status"]["availableReplicas"]) == (3, 3)
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert len(await backend.pods()) == 3


async def test_resize_pool_changes_one_env_value_in_place(backend: Backend) -> None:
    await backend.web(env=[{"name": "A", "value": "1"}, {"name": "DB_POOL_MAX_SIZE", "value": "20"}])
    quiet = await backend.snapshot()
    params = {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 10}
    planned = await run(backend, "resize_pool", params, dry_run=True)
    assert planned.after["spec"]["template"]["spec"]["containers"][0]["env"][1]["name"] == "DB_POOL_MAX_SIZE"
    await unchanged_by_dry_run(backend, quiet)

    await run(backend, "resize_pool", params, dry_run=False)
    [app] = (await backend.settled())["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "DB_POOL_MAX_SIZE", "value": "30"}]


async def test_resize_pool_leaves_a_negative_pool_size_alone(backend: Backend) -> None:
    """-1 is "unlimited" to many pools: raising it by 10 gave 9, doubling it within max 50 gave 0."""
    await backend.web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "-1"}])
    quiet = await backend.snapshot()
    for change in ({"by": 10}, {"factor": 2, "max": 50}, {"to": 30}):
        params = {"container": "app", "env": "DB_POOL_MAX_SIZE", **change}
        result = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, "resize_pool", params)
        assert result.status == "failed" and result.message.endswith(
            "env DB_POOL_MAX_SIZE in container 'app' is -1, not a pool size (a negative value often "
            "means unlimited): nothing is changed"), result.message
    await unchanged_by_dry_run(backend, quiet)


async def test_resize_pool_adds_a_missing_env_entry_first(backend: Backend) -> None:
    """A strategic merge patch puts a list entry the object lacks before the ones it has."""
    await backend.web(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    await run(backend, "resize_pool", {"container": "app", "env": "DB_POOL_MAX_SIZE", "to": 30}, dry_run=False)
    [app] = (await backend.settled())["spec"]["template"]["spec"]["containers"]
    assert [e["name"] for e in app["env"]] == ["DB_POOL_MAX_SIZE", "A", "B"]


async def test_resize_pool_replaces_a_value_from_with_a_value(backend: Backend) -> None:
    """``valueFrom: null`` in the patch removes the reference; the apiserver would refuse both at once."""
    ref = {"fieldRef": {"fieldPath": "metadata.name"}}
    await backend.web(env=[{"name": "DB_POOL_MAX_SIZE", "valueFrom": ref}])
    await run(backend, "resize_pool", {"container": "app", "env": "DB_POOL_MAX_SIZE", "to": 30}, dry_run=False)
    [app] = (await backend.settled())["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [{"name": "DB_POOL_MAX_SIZE", "value": "30"}]


async def test_rollback(backend: Backend) -> None:
    await backend.web(replicas=1, image="registry.example/web:1.0")
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:2.0"}]}}}}
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, patch)
    before = await backend.settled()
    quiet = await backend.snapshot()

    planned = await run(backend, "rollback", {}, dry_run=True)
    assert planned.details["revision"] == 1
    assert planned.after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1.0"
    await unchanged_by_dry_run(backend, quiet)

    await run(backend, "rollback", {}, dry_run=False)
    after = await backend.settled()
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1.0"
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # the controller reuses revision 1's ReplicaSet as revision 3: no third ReplicaSet
    listed = backend.api.sanitize_for_serialization(
        await backend.apps.list_namespaced_replica_set(backend.namespace))["items"]
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in listed) == ["2", "3"]
    assert after["metadata"]["annotations"][REVISION] == "3"


async def test_delete_pod(backend: Backend) -> None:
    await backend.web(replicas=2)
    [victim, _] = await backend.pods()
    name = victim["metadata"]["name"]
    quiet = await backend.snapshot()

    planned = await run(backend, "delete_pod", {"pod": name}, dry_run=True)
    would = planned.after
    assert would["metadata"]["uid"] == victim["metadata"]["uid"]
    assert would["metadata"]["resourceVersion"] == victim["metadata"]["resourceVersion"]
    await unchanged_by_dry_run(backend, quiet)

    await run(backend, "delete_pod", {"pod": name}, dry_run=False)

    async def replaced() -> list[str] | None:
        names = [p["metadata"]["name"] for p in await backend.pods() if not p["metadata"].get("deletionTimestamp")]
        return names if len(names) == 2 and name not in names else None

    await backend.until(replaced, "the ReplicaSet to replace the deleted pod")
    assert (await backend.settled())["status"]["availableReplicas"] == 2


async def test_wait_healthy_after_a_scale(backend: Backend) -> None:
    await backend.web(replicas=1)
    await run(backend, "scale", {"to": 2}, dry_run=False)
    result = await run(backend, "wait_healthy", {"timeout": 20}, dry_run=False)
    assert result.message == 'deployment "web" successfully rolled out'
    assert (await backend.read())["status"]["availableReplicas"] == 2


async def test_a_missing_deployment_fails_every_action_with_the_apiservers_404(backend: Backend) -> None:
    kube = executor(backend.api, server_dry_run=False)
    for action, params in (("restart", {}), ("scale", {"to": 2}), ("rollback", {}), ("delete_pod", {"pod": "p"}),
                           ("resize_pool", {"container": "app", "env": "X", "to": 1})):
        result = await run_step(kube, backend.namespace, action, params)
        assert result.status == "failed", action
        assert result.message.endswith('404 Not Found: deployments.apps "web" not found'), result.message


async def test_scale_refuses_a_deployment_an_autoscaler_owns(backend: Backend) -> None:
    """scale lists the namespace's HorizontalPodAutoscalers (autoscaling/v2) before touching the replicas."""
    await backend.web(replicas=1)
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web-hpa"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 4}}
    await client.AutoscalingV2Api(backend.api).create_namespaced_horizontal_pod_autoscaler(backend.namespace, hpa)
    result = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, "scale", {"to": 3})
    assert result.status == "failed"
    assert "is scaled by HorizontalPodAutoscaler web-hpa (minReplicas 1, maxReplicas 4)" in result.message
    assert (await backend.read())["spec"]["replicas"] == 1
