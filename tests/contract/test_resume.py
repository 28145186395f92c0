"""A resumed step tells "my write never landed" from "the spec changed since", on both apiservers.

A step records a write-ahead intent (the value it found, the value it sets, and the workload's
``metadata.generation`` as read right before its write) and then writes.  If the daemon dies before
it records the result, the resumed step finds the object holding one of those values.  Holding the
value it found is ambiguous: its write never landed, or it landed and someone put the old value
back (scale 5 -> 2 by a person, a re-deploy of the release a rollback took away).  The generation
tells them apart: it moves with every change of the spec, the scale subresource's included, and
never with a controller's status write.  Unchanged: the write never landed, and it is made now.
Moved: the step ends ``superseded`` and writes nothing.

The first tests pin that generation rule on both apiservers (the fake must keep it as the real
one does: the executor relies on it); the others run the executor over the crash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.ports import StepContext, StepResult
from tests.contract.conftest import Backend
from tests.contract.test_statefulsets import read_db, settled_db
from tests.kube_fake.helpers import deployment, statefulset
from tests.real_kube.helpers import executor, run_step

IMAGE_2 = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:2.0"}]}}}}


def generation(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["generation"])


async def test_a_deployments_generation_moves_with_its_spec_and_scale_never_with_its_status(backend: Backend) -> None:
    ns, apps = backend.namespace, backend.apps
    g = generation(await backend.web(replicas=1))

    patched = backend.api.sanitize_for_serialization(await apps.patch_namespaced_deployment("web", ns, IMAGE_2))
    assert generation(patched) == g + 1
    settled = await backend.settled()  # the controller's status writes (and its revision annotation) since
    assert settled["metadata"]["resourceVersion"] != patched["metadata"]["resourceVersion"]
    assert settled["status"]["observedGeneration"] == generation(settled) == g + 1

    scale = backend.api.sanitize_for_serialization(await apps.read_namespaced_deployment_scale("web", ns))
    assert "generation" not in scale["metadata"]  # the Scale does not carry it: the workload is read for it
    assert scale["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    await apps.replace_namespaced_deployment_scale("web", ns, {**scale, "spec": {"replicas": 2}})
    assert generation(await backend.settled()) == g + 2

    again = await apps.patch_namespaced_deployment("web", ns, IMAGE_2)  # the same value: no change
    assert generation(backend.api.sanitize_for_serialization(again)) == g + 2

    await apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {"team": "shop"}}})
    assert generation(await backend.read()) == g + 3  # apps/v1 Deployment: its annotations count too

    rolled = await run_step(executor(backend.api, server_dry_run=False), ns, "rollback", {})  # rollout undo's patch
    assert rolled.status == "ok", rolled.message
    assert generation(await backend.settled()) == g + 4


async def test_a_statefulsets_generation_moves_with_its_spec_and_scale_never_with_its_status(
    backend: Backend
) -> None:
    ns, apps = backend.namespace, backend.apps
    await apps.create_namespaced_stateful_set(ns, statefulset("db", ns, replicas=1))
    g = generation(await settled_db(backend))

    image = {"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "registry.example/db:2.0"}]}}}}
    patched = backend.api.sanitize_for_serialization(await apps.patch_namespaced_stateful_set("db", ns, image))
    assert generation(patched) == g + 1
    settled = await settled_db(backend)
    assert settled["metadata"]["resourceVersion"] != patched["metadata"]["resourceVersion"]
    assert settled["status"]["observedGeneration"] == generation(settled) == g + 1

    await apps.patch_namespaced_stateful_set_scale("db", ns, {"spec": {"replicas": 2}})
    assert generation(await settled_db(backend)) == g + 2

    await apps.patch_namespaced_stateful_set("db", ns, {"metadata": {"annotations": {"team": "shop"}}})
    assert generation(await read_db(backend)) == g + 2  # a StatefulSet's annotations do not count

    kube = executor(backend.api, server_dry_run=False)
    rolled = await run_step(kube, ns, "rollback", {}, name="db", kind="StatefulSet")
    assert rolled.status == "ok", rolled.message
    assert generation(await settled_db(backend)) == g + 3



class Crash(Exception):
    """The daemon dies after recording the step's intent, before its write is sent."""


def context(backend: Backend, intents: list[dict[str, Any]], *, previous: StepResult | None = None,
            crash: bool = False) -> StepContext:
    """Deployment ``web``'s step context; ``intents`` gains each intent recorded (``crash``: then it dies)."""

    async def record(intent: Mapping[str, Any]) -> None:
        if intent:
            intents.append(dict(intent))
        if crash:
            raise Crash

    alert = Alert(fingerprint="contract", status="firing", labels={"alertname": "Contract"})
    return StepContext("contract-resume", alert, ResolvedTarget("Deployment", backend.namespace, "web"), False,
                       executor(backend.api, server_dry_run=False).clock, previous=previous, record_intent=record)


def app(dep: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def env_value(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda dep: [e.get("value") for e in app(dep)["env"] if e["name"] == name]


def container_patch(**fields: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "app", **fields}]}}}}


#: action -> (step params, what the step changes, in the Deployment read, and a person's patch putting back
#: what the step found; None: through the scale subresource)
CASES: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], Any], dict[str, Any] | None]] = {
    "scale": ({"by": 3}, lambda dep: dep["spec"]["replicas"], None),
    "set_image": ({"container": "app", "image": "registry.example/web:9.9"}, lambda dep: app(dep)["image"],
                  container_patch(image="registry.example/web:1.0")),
    "resize_pool": ({"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 10}, env_value("DB_POOL_MAX_SIZE"),
                    container_patch(env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}])),
    "set_env": ({"container": "app", "name": "JAVA_OPTS", "value": "-Xmx4g"}, env_value("JAVA_OPTS"),
                container_patch(env=[{"name": "JAVA_OPTS", "value": "-Xmx1g"}])),
    "set_resources": ({"container": "app", "limits": {"memory": {"to": "2Gi"}}},
                      lambda dep: app(dep)["resources"]["limits"]["memory"],
                      container_patch(resources={"limits": {"memory": "1Gi"}})),
}


async def pooled_web(backend: Backend) -> dict[str, Any]:
    """Deployment ``web``: 2 replicas, two env vars and a memory limit, rolled out."""
    env = [{"name": "DB_POOL_MAX_SIZE", "value": "20"}, {"name": "JAVA_OPTS", "value": "-Xmx1g"}]
    manifest = deployment("web", backend.namespace, replicas=2, env=env)
    app(manifest)["resources"] = {"limits": {"memory": "1Gi"}}
    await backend.apps.create_namespaced_deployment(backend.namespace, manifest)
    return await backend.settled()


async def resumed(backend: Backend, action: str, intent: dict[str, Any]) -> StepResult:
    """The step run again from the intent an earlier run recorded, as the pipeline resumes it."""
    ctx = context(backend, [], previous=StepResult("started", details={"intent": intent}))
    return await executor(backend.api, server_dry_run=False).run(PlannedStep(0, action, CASES[action][0]), ctx)


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_resumed_step_does_not_reapply_over_the_old_value_put_back_meanwhile(
    backend: Backend, action: str
) -> None:
    """The write landed, the daemon died before recording the result, and a person put the old value back:
    the resumed step ends superseded and writes nothing (it set the value again, and reported ok)."""
    params, value, revert = CASES[action]
    found = value(await pooled_web(backend))
    intents: list[dict[str, Any]] = []
    done = await executor(backend.api, server_dry_run=False).run(PlannedStep(0, action, params),
                                                                 context(backend, intents))
    assert done.status == "ok", done.message
    set_to = value(await backend.settled())
    assert set_to != found
    if revert is None:
        await backend.apps.patch_namespaced_deployment_scale("web", backend.namespace, {"spec": {"replicas": 2}})
    else:
        await backend.apps.patch_namespaced_deployment("web", backend.namespace, revert)
    theirs = await backend.settled()
    assert value(theirs) == found
    quiet = await backend.snapshot()

    result = await resumed(backend, action, intents[-1])

    assert result.status == "superseded", result.message
    assert result.details["generation"] == {"intent": intents[-1]["generation"], "now": generation(theirs)}
    assert value(await backend.read()) == found
    assert await backend.snapshot() == quiet  # nothing written


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_resumed_step_whose_write_never_landed_makes_it(backend: Backend, action: str) -> None:
    """The daemon died between its intent and its write: the object holds what the step found, at the
    generation it recorded (the controllers' status writes meanwhile do not move it): the write is made."""
    params, value, _ = CASES[action]
    found = value(await pooled_web(backend))
    intents: list[dict[str, Any]] = []
    with pytest.raises(Crash):
        await executor(backend.api, server_dry_run=False).run(PlannedStep(0, action, params),
                                                              context(backend, intents, crash=True))
    dep = await backend.settled()
    assert value(dep) == found and intents[-1]["generation"] == generation(dep)

    result = await resumed(backend, action, intents[-1])

    assert result.status == "ok", result.message
    assert value(await backend.settled()) != found
    assert generation(await backend.read()) == generation(dep) + 1


async def released_twice(backend: Backend) -> None:
    await backend.web(replicas=1, image="registry.example/web:1.0")
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, IMAGE_2)
    await backend.settled()


async def rollback(backend: Backend, intents: list[dict[str, Any]], *, previous: StepResult | None = None,
                   crash: bool = False) -> StepResult:
    ctx = context(backend, intents, previous=previous, crash=crash)
    return await executor(backend.api, server_dry_run=False).run(PlannedStep(0, "rollback", {}), ctx)


async def test_a_resumed_rollback_does_not_roll_back_a_redeploy_of_the_release_it_rolled_back(
    backend: Backend
) -> None:
    """2.0 rolled back to 1.0 (landed, the result not recorded); a person re-deploys 2.0 on purpose.  The
    resumed rollback finds the template it was planned from (2.0's), but the spec changed since."""
    await released_twice(backend)
    intents: list[dict[str, Any]] = []
    assert (await rollback(backend, intents)).status == "ok"
    assert app(await backend.settled())["image"] == "registry.example/web:1.0"
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, IMAGE_2)
    theirs = await backend.settled()
    quiet = await backend.snapshot()

    result = await rollback(backend, [], previous=StepResult("started", details={"intent": intents[-1]}))

    assert result.status == "superseded", result.message
    assert result.details["generation"] == {"intent": intents[-1]["generation"], "now": generation(theirs)}
    assert app(await backend.read())["image"] == "registry.example/web:2.0"
    assert await backend.snapshot() == quiet


async def test_a_resumed_rollback_whose_write_never_landed_makes_it(backend: Backend) -> None:
    await released_twice(backend)
    intents: list[dict[str, Any]] = []
    with pytest.raises(Crash):
        await rollback(backend, intents, crash=True)
    assert app(await backend.settled())["image"] == "registry.example/web:2.0"

    result = await rollback(backend, [], previous=StepResult("started", details={"intent": intents[-1]}))

    assert result.status == "ok", result.message
    assert app(await backend.settled())["image"] == "registry.example/web:1.0"
