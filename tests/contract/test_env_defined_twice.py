"""A container that defines an env var twice: resize_pool, set_env and undo refuse it, writing nothing.

The apiserver accepts such a container (with a warning) and keeps both entries in order; the kubelet
gives the container the last one.  The steps look an env var up by its name, and a strategic-merge
patch merges by name: they read and changed the first entry and reported success while the value the
container gets stayed as it was.  Now the step fails before anything is written, naming the container,
the variable, how many times it is defined and what to do; an undo reports the step ``not undone``.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediator.core.decisions import PlannedStep
from tests.contract.conftest import Backend
from tests.contract.test_undo import UNDO
from tests.real_kube.helpers import executor, run_step
from tests.real_kube.test_undo import undo_context

TWICE = [{"name": "A", "value": "1"}, {"name": "DB_POOL_MAX_SIZE", "value": "10"},
         {"name": "DB_POOL_MAX_SIZE", "value": "40"}]
#: action -> its params (both change DB_POOL_MAX_SIZE)
STEPS: dict[str, dict[str, Any]] = {
    "resize_pool": {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 5, "max": 100},
    "set_env": {"container": "app", "name": "DB_POOL_MAX_SIZE", "value": "7"},
}


def env(dep: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return found


@pytest.mark.parametrize("dry_run", [False, True], ids=["live", "dry-run"])
@pytest.mark.parametrize("action", sorted(STEPS))
async def test_a_step_refuses_an_env_var_defined_twice(backend: Backend, action: str, dry_run: bool) -> None:
    dep = await backend.web(replicas=1, env=TWICE)
    assert env(dep) == TWICE  # accepted, both kept in order
    quiet = await backend.snapshot()

    result = await run_step(executor(backend.api, server_dry_run=dry_run), backend.namespace, action, STEPS[action])

    assert (result.status, result.message) == ("failed", (
        f"{action} on Deployment/{backend.namespace}/web: env DB_POOL_MAX_SIZE is defined 2 times in container "
        "'app': the container gets the last definition, which a change by its name would not reach; nothing is "
        "changed: fix the manifest so that DB_POOL_MAX_SIZE is defined once"))
    assert not result.details.get("wrote")
    assert await backend.snapshot() == quiet  # nothing written


@pytest.mark.parametrize("action", sorted(STEPS))
async def test_undo_does_not_revert_an_env_var_defined_twice_since(backend: Backend, action: str) -> None:
    """The step changed the one DB_POOL_MAX_SIZE; someone then added a second definition.  Which one the
    container gets is not the one a revert by name would change: not undone, with the reason."""
    await backend.web(replicas=1, env=TWICE[:2])
    step = PlannedStep(0, action, STEPS[action])
    done = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, action, STEPS[action])
    assert done.status == "ok" and done.details["wrote"], done.message
    add = [{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "DB_POOL_MAX_SIZE", "value": "40"}}]
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, add)
    theirs = env(await backend.settled())
    assert [e["name"] for e in theirs] == ["A", "DB_POOL_MAX_SIZE", "DB_POOL_MAX_SIZE"]
    quiet = await backend.snapshot()

    undo = await executor(backend.api, server_dry_run=False).run(UNDO, undo_context(backend.namespace, ((step, done),)))

    assert undo.status == "failed", undo.message
    [entry] = undo.details["steps"]
    assert (entry["action"], entry["outcome"]) == (action, "not undone")
    assert entry["reason"].startswith("env DB_POOL_MAX_SIZE is defined 2 times in container 'app'")
    assert "fix the manifest so that DB_POOL_MAX_SIZE is defined once" in undo.message
    assert await backend.snapshot() == quiet
