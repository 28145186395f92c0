"""The same actions live: the real apiserver (and its controllers) end up where each action says it would."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.executors.kube import RESTARTED_AT
from remediator.testing.control_plane import poll_until
from tests.real_kube.helpers import apply_web, executor, run_step, update_web

REVISION = "deployment.kubernetes.io/revision"


async def read_web(api: Any, namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = api.sanitize_for_serialization(
        await client.AppsV1Api(api).read_namespaced_deployment("web", namespace)
    )
    return out


async def replicasets(api: Any, namespace: str) -> list[dict[str, Any]]:
    listed = api.sanitize_for_serialization(await client.AppsV1Api(api).list_namespaced_replica_set(namespace))
    return list(listed["items"])


async def test_restart_sets_the_restarted_at_annotation_and_starts_a_rollout(kube_admin: Any, namespace: str) -> None:
    before = await apply_web(kube_admin, namespace)
    result = await run_step(executor(kube_admin, server_dry_run=False), namespace, "restart", {})
    assert result.status == "ok", result.message

    dep = await read_web(kube_admin, namespace)
    stamp = dep["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert stamp == result.details["restartedAt"]
    assert dep["metadata"]["generation"] == before["metadata"]["generation"] + 1

    async def new_replicaset() -> bool | None:
        return True if len(await replicasets(kube_admin, namespace)) == 2 else None

    await poll_until(new_replicaset, limit=15, what="the restart's new ReplicaSet")


async def test_scale_sets_the_replicas_and_the_replicaset_follows(kube_admin: Any, namespace: str) -> None:
    await apply_web(kube_admin, namespace)
    result = await run_step(executor(kube_admin, server_dry_run=False), namespace, "scale", {"to": 5})
    assert result.status == "ok", result.message
    assert (result.details["from"], result.details["to"]) == (2, 5)
    assert (await read_web(kube_admin, namespace))["spec"]["replicas"] == 5

    async def five_pods() -> bool | None:
        pods = (await client.CoreV1Api(kube_admin).list_namespaced_pod(namespace, label_selector="app=web")).items
        return True if len(pods) == 5 else None

    await poll_until(five_pods, limit=15, what="5 pods after scaling to 5")


async def test_resize_pool_sets_the_env_value(kube_admin: Any, namespace: str) -> None:
    await apply_web(kube_admin, namespace, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"},
                                                {"name": "OTHER", "value": "kept"}])
    params = {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 10}
    result = await run_step(executor(kube_admin, server_dry_run=False), namespace, "resize_pool", params)
    assert result.status == "ok", result.message

    [app] = (await read_web(kube_admin, namespace))["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [{"name": "DB_POOL_MAX_SIZE", "value": "30"}, {"name": "OTHER", "value": "kept"}]


async def test_rollback_restores_the_previous_template_and_the_controller_reuses_its_replicaset(
    kube_admin: Any, namespace: str
) -> None:
    await apply_web(kube_admin, namespace, image="registry.example/web:1.0")
    await update_web(kube_admin, namespace, "registry.example/web:2.0")
    [old] = [rs for rs in await replicasets(kube_admin, namespace) if rs["metadata"]["annotations"][REVISION] == "1"]

    result = await run_step(executor(kube_admin, server_dry_run=False), namespace, "rollback", {})
    assert result.status == "ok", result.message
    assert result.details["revision"] == 1
    [app] = (await read_web(kube_admin, namespace))["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "registry.example/web:1.0"

    async def reused() -> dict[str, Any] | None:
        for rs in await replicasets(kube_admin, namespace):
            if rs["metadata"]["name"] == old["metadata"]["name"] and rs["metadata"]["annotations"][REVISION] == "3":
                return rs
        return None

    rs = await poll_until(reused, limit=15, what="revision 1's ReplicaSet to become revision 3")
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert len(await replicasets(kube_admin, namespace)) == 2  # no third ReplicaSet


async def test_delete_pod_removes_the_pod_at_once_when_no_kubelet_holds_it(kube_admin: Any, namespace: str) -> None:
    await apply_web(kube_admin, namespace)
    core = client.CoreV1Api(kube_admin)
    names = sorted(p.metadata.name for p in (await core.list_namespaced_pod(namespace)).items)
    result = await run_step(executor(kube_admin, server_dry_run=False), namespace, "delete_pod", {"pod": names[0]})
    assert result.status == "ok", result.message

    # The pod was never bound to a node, so the apiserver skips graceful deletion: it is gone, not Terminating.
    try:
        await core.read_namespaced_pod(names[0], namespace)
        raise AssertionError(f"pod {names[0]} still exists after delete_pod")
    except ApiException as exc:
        assert exc.status == 404

    async def replaced() -> list[str] | None:
        now = sorted(p.metadata.name for p in (await core.list_namespaced_pod(namespace)).items)
        return now if len(now) == 2 and names[0] not in now else None

    await poll_until(replaced, limit=15, what="the ReplicaSet to replace the deleted pod")
