"""deploy/kubernetes/rbac.yaml on the real apiserver: every action passes as a user bound to its ClusterRole, and
anything beyond it is 403.

The fake does no authorization (see remediator/testing/kube/README.md): this row runs on
the real backend only.  tests/executor/test_rbac.py derives the role from the requests
the executor sends to the fake; this proves the apiserver's authorizer agrees.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.contract.conftest import Backend
from tests.kube_fake.helpers import deployment
from tests.real_kube.helpers import executor, run_step

RBAC = Path(__file__).resolve().parents[2] / "deploy/kubernetes/rbac.yaml"


def cluster_role() -> dict[str, Any]:
    [role] = [d for d in yaml.safe_load_all(RBAC.read_text()) if d and d["kind"] == "ClusterRole"]
    return dict(role)


async def forbidden(call: Callable[[], Awaitable[Any]]) -> bool:
    try:
        await call()
    except ApiException as exc:
        return exc.status == 403
    return False


async def test_the_role_allows_every_action_and_nothing_else(backend: Backend) -> None:
    if backend.plane is None:
        pytest.skip("the fake does no authorization (documented in remediator/testing/kube/README.md)")
    plane, ns = backend.plane, backend.namespace
    rbac = client.RbacAuthorizationV1Api(backend.api)
    group = "rbac.authorization.k8s.io"
    role = cluster_role()
    role["metadata"] = {"name": f"remediator-contract-{secrets.token_hex(4)}"}
    await rbac.create_cluster_role(role)
    try:
        await rbac.create_namespaced_role_binding(ns, {
            "metadata": {"name": "remediator"},
            "subjects": [{"kind": "User", "name": plane.user_name, "apiGroup": group}],
            "roleRef": {"kind": "ClusterRole", "name": role["metadata"]["name"], "apiGroup": group},
        })
        await backend.web(replicas=2, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}])
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:2.0"}]}}}}
        await backend.apps.patch_namespaced_deployment("web", ns, patch)
        await backend.settled()
        async with plane.api_client(plane.user_token) as user:
            apps = client.AppsV1Api(user)

            async def allowed() -> bool | None:  # the authorizer's informer sees the binding a moment later
                return None if await forbidden(lambda: apps.read_namespaced_deployment("web", ns)) else True

            await backend.until(allowed, "the RoleBinding to take effect")
            for dry_run in (True, False):
                kube = executor(user, server_dry_run=dry_run)
                pod = (await backend.pods())[0]["metadata"]["name"]  # first: the others replace the pods
                steps = [("delete_pod", {"pod": pod, "min_healthy_replicas": 1}), ("restart", {}),
                         ("scale", {"by": 1}), ("rollback", {}),
                         ("resize_pool", {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 1}),
                         ("wait_healthy", {"timeout": 20})]
                for action, params in steps:
                    result = await run_step(kube, ns, action, params)
                    assert result.status in ("planned", "ok"), (action, dry_run, result.message)

            core = client.CoreV1Api(user)
            outside = {
                "list deployments": lambda: apps.list_namespaced_deployment(ns),
                "create a deployment": lambda: apps.create_namespaced_deployment(ns, deployment("x", ns)),
                "delete a deployment": lambda: apps.delete_namespaced_deployment("web", ns),
                "update a deployment": lambda: apps.replace_namespaced_deployment(
                    "web", ns, deployment("web", ns)),
                "watch pods": lambda: core.list_namespaced_pod(ns, watch=True, timeout_seconds=1),
                "list secrets": lambda: core.list_namespaced_secret(ns),
                "read a secret": lambda: core.read_namespaced_secret("any", ns),
                "read a deployment in an unbound namespace": lambda: apps.read_namespaced_deployment("web", "default"),
            }
            refused = {what: await forbidden(call) for what, call in outside.items()}
            assert refused == dict.fromkeys(outside, True)
    finally:
        await rbac.delete_cluster_role(role["metadata"]["name"])
