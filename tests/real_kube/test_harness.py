"""The harness itself, on the real control plane: controllers run, the stand-in kubelet makes pods count,
the unprivileged user really is unprivileged, and the daemon's own kubeconfig loading reaches the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.clock import SystemClock
from remediator.executors.kube import open_kube_executors
from remediator.testing.control_plane import ControlPlane, mark_pods_ready, poll_until
from tests.real_kube.helpers import web_manifest


async def test_a_deployment_gets_a_replicaset_and_pods_that_count_once_marked_ready(
    kube_admin: Any, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_admin), client.CoreV1Api(kube_admin)
    created = await apps.create_namespaced_deployment(namespace, web_manifest(namespace, replicas=2))

    async def two_pods() -> list[Any] | None:
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=web")).items
        return pods if len(pods) == 2 else None

    pods = await poll_until(two_pods, limit=15, what="the Deployment's 2 pods")
    replicasets = (await apps.list_namespaced_replica_set(namespace)).items
    assert len(replicasets) == 1
    [owner] = replicasets[0].metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Deployment", "web", created.metadata.uid, True)
    assert all(p.status.phase == "Pending" and not p.spec.node_name for p in pods)  # no scheduler, no kubelet
    assert all(p.metadata.owner_references[0].name == replicasets[0].metadata.name for p in pods)
    dep = await apps.read_namespaced_deployment("web", namespace)
    assert not dep.status.ready_replicas

    marked = await mark_pods_ready(kube_admin, namespace, selector="app=web")
    assert sorted(marked) == sorted(p.metadata.name for p in pods)

    async def counted() -> Any:
        d = await apps.read_namespaced_deployment("web", namespace)
        return d if d.status.ready_replicas == 2 and d.status.available_replicas == 2 else None

    dep = await poll_until(counted, limit=15, what="the Deployment to count 2 ready replicas")
    available = {c.type: c.status for c in dep.status.conditions}
    assert available["Available"] == "True"
    assert await mark_pods_ready(kube_admin, namespace) == []  # already ready: left alone


async def test_the_second_user_is_authenticated_but_may_do_only_what_rbac_grants(
    control_plane: ControlPlane, kube_admin: Any, namespace: str
) -> None:
    async with control_plane.api_client(control_plane.user_token) as api:
        with pytest.raises(ApiException) as denied:
            await client.CoreV1Api(api).list_namespaced_pod(namespace)
        assert denied.value.status == 403
        status = json.loads(denied.value.body)
        assert status["reason"] == "Forbidden"
        assert f'User "{control_plane.user_name}" cannot list resource "pods"' in status["message"]

        rbac = client.RbacAuthorizationV1Api(kube_admin)
        await rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        })
        await rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": control_plane.user_name}],
        })
        listed = await client.CoreV1Api(api).list_namespaced_pod(namespace)
        assert listed.items == []


async def test_the_daemon_loads_a_written_kubeconfig_and_reaches_the_cluster_over_verified_tls(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    path = control_plane.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace)
    settings = settings_factory(kubernetes={"mode": "kubeconfig", "kubeconfig": str(path)})
    async with open_kube_executors(settings, SystemClock()) as (live, _dry):
        ns = await client.CoreV1Api(live.api).read_namespace(namespace)
    assert ns.metadata.name == namespace
