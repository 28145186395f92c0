"""set_image, set_env, set_resources and min_healthy_replicas on the real kube-apiserver.

The fake's tests check the requests against our reading of the apiserver; these check
that the apiserver itself accepts them: a server-side dry-run answers with the would-be
object and moves no resourceVersion, a live run stores exactly the change, and a
resumed intent compares quantities as the apiserver stores them (``1.5Gi`` is kept as
``1536Mi``), not as they were written.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from remediator.clock import SystemClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.ports import StepContext, StepResult
from tests.real_kube.helpers import apply_web, executor, run_step, settled, snapshot, web_manifest

RESOURCES = {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "2Gi"}}

CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # params, and what the app container then holds
    "set_image": ({"container": "app", "image": "registry.example/web:1.9"}, {"image": "registry.example/web:1.9"}),
    "set_env": ({"container": "app", "name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"},
                {"env": [{"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"}, {"name": "LOG_LEVEL", "value": "info"}]}),
    "set_resources": ({"container": "app", "limits": {"memory": {"factor": 1.5, "max": "4Gi"}},
                       "requests": {"cpu": {"to": "250m"}}},
                      {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"},
                                     "limits": {"cpu": "500m", "memory": "3Gi"}}}),
}


async def apply_sized_web(api: Any, namespace: str) -> dict[str, Any]:
    """Deployment ``web`` whose app container has an env var and requests/limits, rolled out and quiet."""
    manifest = web_manifest(namespace, env=[{"name": "LOG_LEVEL", "value": "info"}])
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = RESOURCES
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, manifest)
    return await settled(api, namespace)


async def app(api: Any, namespace: str) -> dict[str, Any]:
    dep = api.sanitize_for_serialization(await client.AppsV1Api(api).read_namespaced_deployment("web", namespace))
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("action", sorted(CASES))
async def test_dry_run_changes_nothing_and_live_stores_exactly_the_change(
    kube_admin: Any, namespace: str, action: str
) -> None:
    params, expected = CASES[action]
    await apply_sized_web(kube_admin, namespace)
    before = await snapshot(kube_admin, namespace)
    held = await app(kube_admin, namespace)

    dry = await run_step(executor(kube_admin, server_dry_run=True), namespace, action, params)
    assert dry.status == "planned", dry.message
    assert await snapshot(kube_admin, namespace) == before, f"a server-side dry-run {action} changed the cluster"
    assert dry.details["diff"], dry.message

    live = await run_step(executor(kube_admin, server_dry_run=False), namespace, action, params)
    assert live.status == "ok", live.message
    now = await app(kube_admin, namespace)
    assert {k: now.get(k) for k in expected} == expected
    assert {k: v for k, v in now.items() if k not in expected} == {k: v for k, v in held.items() if k not in expected}


def resumed(intent: dict[str, Any], namespace: str) -> StepContext:
    alert = Alert(fingerprint="real-kube", status="firing", labels={"alertname": "RealKube"})
    return StepContext("real-kube-resume", alert, ResolvedTarget("Deployment", namespace, "web"), False,
                       SystemClock(), previous=StepResult("started", details={"intent": intent}))


async def test_a_resumed_intent_compares_quantities_as_the_apiserver_stores_them(
    kube_admin: Any, namespace: str
) -> None:
    """The apiserver stores 1.5Gi as 1536Mi: the intent's "1.5Gi" must still read as already applied."""
    await apply_sized_web(kube_admin, namespace)
    body = {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "resources": {"limits": {"memory": "1.5Gi"}}}]}}}}
    await client.AppsV1Api(kube_admin).patch_namespaced_deployment("web", namespace, body)
    await settled(kube_admin, namespace)
    assert (await app(kube_admin, namespace))["resources"]["limits"]["memory"] == "1536Mi"
    kube = executor(kube_admin, server_dry_run=False)
    step = PlannedStep(0, "set_resources", {"container": "app", "limits": {"memory": {"factor": 1.5, "max": "4Gi"}}})
    intent = {"resources": {"limits": {"memory": "1.5Gi"}}, "from": {"limits": {"memory": "1Gi"}}}
    before = await snapshot(kube_admin, namespace)
    result = await kube.run(step, resumed(intent, namespace))
    assert result.status == "ok" and "already" in result.message, result.message
    assert await snapshot(kube_admin, namespace) == before


async def test_min_healthy_replicas_refuses_a_delete_on_the_real_apiserver(kube_admin: Any, namespace: str) -> None:
    await apply_web(kube_admin, namespace, replicas=2)
    pods = (await client.CoreV1Api(kube_admin).list_namespaced_pod(namespace, label_selector="app=web")).items
    victim = sorted(p.metadata.name for p in pods)[0]
    kube = executor(kube_admin, server_dry_run=False)
    refused = await run_step(kube, namespace, "delete_pod", {"pod": victim, "min_healthy_replicas": 2})
    assert refused.status == "failed" and refused.details["ready"] == 2, refused.message
    assert victim in {p.metadata.name for p in
                      (await client.CoreV1Api(kube_admin).list_namespaced_pod(namespace)).items}
    allowed = await run_step(kube, namespace, "delete_pod", {"pod": victim, "min_healthy_replicas": 1})
    assert allowed.status == "ok", allowed.message
