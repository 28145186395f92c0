"""set_image, set_env and set_resources (one container, a strategic-merge patch carrying the resourceVersion),
live and in server-side dry-run, and the quantities as the apiserver stores them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.conftest import Backend
from tests.kube_fake.helpers import deployment
from tests.real_kube.helpers import executor, run_step
from tests.real_kube.test_new_actions import CASES, RESOURCES  # the same cases, asked of both backends


async def sized_web(backend: Backend) -> dict[str, Any]:
    """Deployment ``web`` whose container ``app`` has an env var and requests and limits, rolled out."""
    manifest = deployment("web", backend.namespace, replicas=1, env=[{"name": "LOG_LEVEL", "value": "info"}])
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = RESOURCES
    await backend.apps.create_namespaced_deployment(backend.namespace, manifest)
    return await backend.settled()


def app(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("action", sorted(CASES))
async def test_dry_run_changes_nothing_and_live_stores_exactly_the_change(backend: Backend, action: str) -> None:
    params, expected = CASES[action]
    held = app(await sized_web(backend))
    quiet = await backend.snapshot()

    dry = await run_step(executor(backend.api, server_dry_run=True), backend.namespace, action, params)
    assert dry.status == "planned", dry.message
    would = app(dry.after)  # the audit's snapshot: env values the step does not set are redacted
    if action == "set_env":
        assert would["env"][0] == expected["env"][0]
        assert [e["name"] for e in would["env"]] == [e["name"] for e in expected["env"]]
    else:
        assert {k: would[k] for k in expected} == expected
    assert await backend.snapshot() == quiet

    live = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, action, params)
    assert live.status == "ok", live.message
    after = app(await backend.settled())
    assert {k: after[k] for k in expected} == expected
    assert {k: v for k, v in after.items() if k not in expected} == {k: v for k, v in held.items() if k not in expected}


async def test_quantities_are_stored_in_canonical_form(backend: Backend) -> None:
    """What set_resources reads back: 1.5Gi as 1536Mi, 1000m as 1, 0.5 as 500m, 2048Ki as 2Mi."""
    await sized_web(backend)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {
        "requests": {"cpu": "0.5", "memory": "2048Ki"}, "limits": {"cpu": "1000m", "memory": "1.5Gi"}}}]}}}}
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, patch)
    assert app(await backend.read())["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Mi"}, "limits": {"cpu": "1", "memory": "1536Mi"}}
