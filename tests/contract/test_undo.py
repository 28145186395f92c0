"""``undo`` on both apiservers: a server-side dry-run undo moves nothing, a live one restores exactly
what each step changed, and a later change by someone else is never reverted.

The executor's decisions are tested on the fake in tests/executor/test_undo.py; here the
fake and the real apiserver must both take the reverts (a strategic-merge ``$patch:
delete`` of an env entry, a removed quantity, the scale put back with the
resourceVersion read) and answer alike.
"""

from __future__ import annotations

from typing import Any

import pytest

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

    undo = await executor(backend.api, server_dry_run=False).run(
        UNDO, undo_context(backend.namespace, ((step, result),)))

    assert undo.status == "failed", undo.message
    [entry] = undo.details["steps"]
    assert entry["outcome"] == "changed since; not undone" and entry["current"] != entry["to"]
    # Nothing written to the spec: its generation moves with any spec write, and (unlike the
    # resourceVersion) not with the controllers' status writes, which on the real control plane
    # may still come after it has settled (a pod turning ready).
    assert await state(backend) == theirs
    assert (await backend.settled())["metadata"]["generation"] == generation
