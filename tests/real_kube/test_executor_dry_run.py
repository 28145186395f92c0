"""The executor's server-side dry-run against the real kube-apiserver: every action is answered with the
would-be object, and not one resourceVersion in the namespace moves.

This is what `remediator serve --dry-run` promises operators.  The fake's tests check the
same promise against our own reading of the apiserver; these check it against the
apiserver itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.real_kube.helpers import apply_web, executor, run_step, snapshot, update_web

Seed = Callable[[Any, str], Awaitable[dict[str, Any]]]


async def seed_web(api: Any, namespace: str) -> dict[str, Any]:
    await apply_web(api, namespace)
    return {}


async def seed_pool(api: Any, namespace: str) -> dict[str, Any]:
    await apply_web(api, namespace, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}])
    return {}


async def seed_two_revisions(api: Any, namespace: str) -> dict[str, Any]:
    await apply_web(api, namespace, image="registry.example/web:1.0")
    await update_web(api, namespace, "registry.example/web:2.0")
    replicasets = (await client.AppsV1Api(api).list_namespaced_replica_set(namespace)).items
    assert len(replicasets) == 2, "the second revision did not get its own ReplicaSet"
    return {}


async def seed_pods(api: Any, namespace: str) -> dict[str, Any]:
    await apply_web(api, namespace)
    pods = (await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=web")).items
    return {"pod": sorted(p.metadata.name for p in pods)[0]}


CASES: dict[str, tuple[dict[str, Any], Seed]] = {
    "restart": ({}, seed_web),
    "scale": ({"to": 5}, seed_web),
    "resize_pool": ({"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 10}, seed_pool),
    "rollback": ({}, seed_two_revisions),
    "delete_pod": ({}, seed_pods),
}


@pytest.mark.parametrize("action", list(CASES))
async def test_server_side_dry_run_changes_nothing_on_the_real_apiserver(
    kube_admin: Any, namespace: str, action: str
) -> None:
    params, seed = CASES[action]
    params = {**params, **await seed(kube_admin, namespace)}
    before = await snapshot(kube_admin, namespace)

    result = await run_step(executor(kube_admin, server_dry_run=True), namespace, action, params)

    after = await snapshot(kube_admin, namespace)
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"a server-side dry-run {action} changed the cluster: {changed}\n{result.message}"
    assert result.status == "planned", result.message
    assert result.message.startswith("dry-run (server-side): would have "), result.message
    assert result.details["server_side"] is True
    if action != "delete_pod":  # the would-be object differs from the object as it is
        assert result.details["diff"], f"a dry-run {action} reported no change"
