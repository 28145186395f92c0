"""Setting up and observing workloads on the real control plane.

Controllers run asynchronously in another process, so every wait here is bounded
polling with a message saying what never happened.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from remediator.clock import SystemClock
from remediator.core import rollout
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.executors.kube import KubeExecutor
from remediator.ports import Clock, StepContext, StepResult
from remediator.settings import KubernetesSettings
from remediator.testing.control_plane import mark_pods_ready, poll_until
from tests.kube_fake.helpers import deployment

SETTLE_TIMEOUT = 20.0


def web_manifest(namespace: str, *, replicas: int = 2, image: str = "registry.example/web:1.0",
                 env: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    """Deployment ``web`` (container ``app``), as the fake's tests describe it."""
    return deployment("web", namespace, replicas=replicas, image=image, env=env, **spec)


async def apply_web(api: Any, namespace: str, *, mark: bool = True, **kw: Any) -> dict[str, Any]:
    """Create Deployment ``web`` and wait until its rollout is done.

    ``mark``: mark its pods ready on the way (no kubelet runs); ``False`` when the test's
    :class:`~remediator.testing.control_plane.Kubelet` does a kubelet's part.
    """
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, web_manifest(namespace, **kw))
    return await settled(api, namespace, mark=mark)


async def update_web(api: Any, namespace: str, image: str, *, mark: bool = True) -> dict[str, Any]:
    """Change web's image (a new revision: a second ReplicaSet) and wait until that rollout is done."""
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    await client.AppsV1Api(api).patch_namespaced_deployment("web", namespace, body)
    return await settled(api, namespace, mark=mark)


async def snapshot(api: Any, namespace: str) -> dict[str, tuple[str, str | None]]:
    """Every deployment, replicaset and pod of the namespace: ``kind/name`` -> (resourceVersion, deletionTimestamp)."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    out: dict[str, tuple[str, str | None]] = {}
    for kind, fn in (("deployments", apps.list_namespaced_deployment),
                     ("replicasets", apps.list_namespaced_replica_set),
                     ("pods", core.list_namespaced_pod)):
        listed = api.sanitize_for_serialization(await fn(namespace))
        for item in listed.get("items") or []:
            meta = item["metadata"]
            out[f"{kind}/{meta['name']}"] = (meta["resourceVersion"], meta.get("deletionTimestamp"))
    return out


async def settled(
    api: Any, namespace: str, name: str = "web", *, limit: float = SETTLE_TIMEOUT, mark: bool = True
) -> dict[str, Any]:
    """Drive the rollout to done (kubectl's rule, as the executor applies it), then wait for the namespace to go quiet.

    Quiet means two snapshots a moment apart are equal: the controllers' last status
    writes have landed, so a later change of a resourceVersion is somebody's doing.
    """
    apps = client.AppsV1Api(api)

    async def done() -> dict[str, Any] | None:
        if mark:
            await mark_pods_ready(api, namespace)
        dep: dict[str, Any] = api.sanitize_for_serialization(await apps.read_namespaced_deployment(name, namespace))
        return dep if rollout.health("Deployment", dep).done else None

    await poll_until(done, limit=limit, what=f"Deployment {namespace}/{name} to finish its rollout", interval=0.1)
    previous: list[dict[str, tuple[str, str | None]]] = []

    async def quiet() -> bool | None:
        now = await snapshot(api, namespace)
        same = bool(previous) and previous[-1] == now
        previous.append(now)
        return True if same else None

    await poll_until(quiet, limit=limit, what=f"namespace {namespace} to go quiet", interval=0.3)
    dep: dict[str, Any] = api.sanitize_for_serialization(await apps.read_namespaced_deployment(name, namespace))
    return dep


def executor(api: Any, *, server_dry_run: bool, clock: Clock | None = None) -> KubeExecutor:
    return KubeExecutor(
        api, clock or SystemClock(), KubernetesSettings(request_timeout=10.0), server_dry_run=server_dry_run
    )


async def run_step(
    kube: KubeExecutor, namespace: str, action: str, params: dict[str, Any], name: str = "web",
    kind: str = "Deployment",
) -> StepResult:
    """Run one planned step on workload ``kind``/``name`` exactly as the pipeline hands it to the executor."""
    alert = Alert(fingerprint="real-kube", status="firing", labels={"alertname": "RealKube", "namespace": namespace})
    ctx = StepContext(
        execution_id=f"real-kube-{action}",
        alert=alert,
        target=ResolvedTarget(kind, namespace, name),
        dry_run=kube.server_dry_run,
        clock=kube.clock,
    )
    return await kube.run(PlannedStep(0, action, params), ctx)
