"""``undo`` on both apiservers: a server-side dry-run undo moves nothing, a live one restores exactly
what each step changed, and a later change by someone else is never reverted: neither a Deployment
deleted and created again under its name (another object, of a new uid, whatever values it holds),
nor a replica count an autoscaler has owned since.

The executor's decisions are tested on the fake in tests/executor/test_undo.py; here the
fake and the real apiserver must both take the reverts (a strategic-merge ``$patch:
delete`` of an env entry, a removed quantity, the scale put back with the
resourceVersion read) and answer alike.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.core.decisions import PlannedStep
from remediator.ports import StepResult
from tests.contract.conftest import Backend
from tests.contract.test_container_actions import app, sized_web
from tests.real_kube.helpers import executor, run_step
from tests.real_kube.test_undo import undo_context

UNDO = PlannedStep(0, "undo", {}, "on_failure")

#: action -> (step params, someone's later change of the app container, as a strategic-merge patch)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "scale": ({"to": 3}, {}),
    "set_image": ({"container": "app", "image": "registry.example/web:2.0"},
                  {"name": "app", "image": "registry.example/web:3.0"}),
    "set_env": ({"container": "app", "name": "JAVA_OPTS", "value": "-Xmx4g"},  # absent before: $patch: delete
                {"name": "app", "env": [{"name": "JAVA_OPTS", "value": "-Xmx8g"}]}),
    "set_resources": ({"container": "app", "limits": {"memory": {"factor": 1.5, "max": "4Gi"}},
                       "requests": {"cpu": {"to": "250m"}}},
                      {"name": "app", "resources": {"limits": {"memory": "5Gi"}}}),
}


async def state(backend: Backend) -> tuple[int, dict[str, Any]]:
    dep = await backend.settled()
    return int(dep["spec"]["replicas"]), app(dep)


async def changed(backend: Backend, action: str) -> tuple[tuple[int, dict[str, Any]], PlannedStep, StepResult]:
    """Deployment ``web`` as it was, and one live step of ``action`` that changed it."""
    await sized_web(backend)
    found = await state(backend)
    step = PlannedStep(0, action, CASES[action][0])
    result = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, action, dict(step.params))
    assert result.status == "ok" and result.details["wrote"], result.message
    assert await state(backend) != found
    return found, step, result


async def not_undone(backend: Backend, step: PlannedStep, result: StepResult, outcome: str) -> dict[str, Any]:
    """A live undo of the one step, which fails: the step's entry, whose outcome (and reason) the message shows."""
    undo = await executor(backend.api, server_dry_run=False).run(
        UNDO, undo_context(backend.namespace, ((step, result),)))
    assert undo.status == "failed", undo.message
    [entry] = undo.details["steps"]
    assert entry["outcome"] == outcome, entry
    assert outcome in undo.message and (not entry.get("reason") or entry["reason"] in undo.message)
    return dict(entry)


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_dry_run_undo_moves_nothing_and_a_live_one_restores_exactly(backend: Backend, action: str) -> None:
    found, step, result = await changed(backend, action)
    quiet = await backend.snapshot()

    dry = await executor(backend.api, server_dry_run=True).run(UNDO, undo_context(backend.namespace, ((step, result),)))
    assert dry.status == "planned" and dry.details["steps"][0]["outcome"] == "undone", dry.message
    assert await backend.snapshot() == quiet

    live = await executor(backend.api, server_dry_run=False).run(
        UNDO, undo_context(backend.namespace, ((step, result),)))
    assert live.status == "ok", live.message
    assert await state(backend) == found


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_later_change_by_someone_else_is_not_reverted(backend: Backend, action: str) -> None:
    _, step, result = await changed(backend, action)
    if action == "scale":
        await backend.apps.patch_namespaced_deployment_scale("web", backend.namespace, {"spec": {"replicas": 2}})
    else:
        body = {"spec": {"template": {"spec": {"containers": [CASES[action][1]]}}}}
        await backend.apps.patch_namespaced_deployment("web", backend.namespace, body)
    theirs = await state(backend)
    generation = (await backend.settled())["metadata"]["generation"]

    entry = await not_undone(backend, step, result, "changed since; not undone")
    assert entry["current"] != entry["to"]
    # Nothing written to the spec: its generation moves with any spec write, and (unlike the
    # resourceVersion) not with the controllers' status writes, which on the real control plane
    # may still come after it has settled (a pod turning ready).
    assert await state(backend) == theirs
    assert (await backend.settled())["metadata"]["generation"] == generation


async def recreate(backend: Backend) -> dict[str, Any]:
    """Deployment ``web`` deleted and created again as it is now (a redeploy from manifests that say the same):
    the same name and spec, another object.  Returns it once rolled out."""
    dep = await backend.read()
    await backend.apps.delete_namespaced_deployment("web", backend.namespace, propagation_policy="Background")

    async def gone() -> bool | None:
        try:
            await backend.read()
        except ApiException as exc:
            return True if exc.status == 404 else None
        return None

    await backend.until(gone, "Deployment web to be deleted")
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": dep["metadata"].get("labels") or {}}, "spec": dep["spec"]}
    await backend.apps.create_namespaced_deployment(backend.namespace, manifest)
    again = await backend.settled()
    assert again["metadata"]["uid"] != dep["metadata"]["uid"]
    return again


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_deployment_created_again_since_is_another_object_and_not_reverted(
    backend: Backend, action: str
) -> None:
    """The step's values are all there, on a Deployment that is not the one the step changed."""
    _, step, result = await changed(backend, action)
    theirs = await state(backend)
    generation = (await recreate(backend))["metadata"]["generation"]
    assert await state(backend) == theirs  # every value as the step set it

    entry = await not_undone(backend, step, result, "changed since; not undone")
    assert "was deleted and created again since this step" in entry["reason"]
    assert await state(backend) == theirs
    assert (await backend.settled())["metadata"]["generation"] == generation


async def test_a_scale_is_not_undone_once_an_autoscaler_owns_the_count(backend: Backend) -> None:
    """scale 1 -> 3; an autoscaler (minReplicas 3) takes the Deployment over since: putting 1 back would fight it
    (below its minReplicas), as a fresh scale is refused."""
    _, step, result = await changed(backend, "scale")
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web-hpa"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 3, "maxReplicas": 6}}
    await client.AutoscalingV2Api(backend.api).create_namespaced_horizontal_pod_autoscaler(backend.namespace, hpa)
    generation = (await backend.settled())["metadata"]["generation"]

    entry = await not_undone(backend, step, result, "not undone")
    assert "is scaled by HorizontalPodAutoscaler web-hpa since (minReplicas 3, maxReplicas 6)" in entry["reason"]
    dep = await backend.settled()
    assert (dep["spec"]["replicas"], dep["metadata"]["generation"]) == (3, generation)
