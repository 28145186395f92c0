"""``undo`` on the real kube-apiserver: the revert patches are accepted and restore exactly.

The fake's tests check undo's decisions; these check that the apiserver itself takes
its requests as meant: ``$patch: delete`` of an env entry that was absent, a restored
``valueFrom`` with the value removed, a quantity (and a whole section) removed again,
the scale put back, a server-side dry-run that moves nothing, and a rollback undone by
rolling forward with a JSON patch that carries the resourceVersion read.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from remediator.clock import SystemClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.ports import StepContext, StepResult
from tests.real_kube.helpers import apply_web, executor, run_step, settled, snapshot, update_web

SECRET_REF = {"secretKeyRef": {"name": "db", "key": "password"}}


def undo_context(namespace: str, history: tuple[tuple[PlannedStep, StepResult], ...]) -> StepContext:
    alert = Alert(fingerprint="real-kube", status="firing", labels={"alertname": "RealKube"})
    return StepContext("real-kube-undo", alert, ResolvedTarget("Deployment", namespace, "web"), False,
                       SystemClock(), history=history)


async def state(api: Any, namespace: str) -> tuple[int, dict[str, Any]]:
    dep = api.sanitize_for_serialization(await client.AppsV1Api(api).read_namespaced_deployment("web", namespace))
    return int(dep["spec"]["replicas"]), dep["spec"]["template"]["spec"]["containers"][0]


async def test_undo_restores_every_change_exactly_and_a_dry_run_moves_nothing(
    kube_admin: Any, namespace: str
) -> None:
    await apply_web(kube_admin, namespace, env=[{"name": "LOG_LEVEL", "value": "info"},
                                                 {"name": "DB_PASSWORD", "valueFrom": SECRET_REF}])
    found = await state(kube_admin, namespace)
    live = executor(kube_admin, server_dry_run=False)
    steps = [
        ("scale", {"to": 3}),
        ("set_image", {"container": "app", "image": "registry.example/web:2.0"}),
        ("set_env", {"container": "app", "name": "JAVA_OPTS", "value": "-Xmx4g"}),  # was absent
        ("set_env", {"container": "app", "name": "DB_PASSWORD", "value": "plain"}),  # was a reference
        ("set_resources", {"container": "app", "requests": {"cpu": {"to": "250m"}},
                           "limits": {"memory": {"to": "1Gi"}}}),  # neither section was there
    ]
    history = []
    for index, (action, params) in enumerate(steps):
        result = await run_step(live, namespace, action, params)
        assert result.status == "ok", result.message
        history.append((PlannedStep(index, action, params), result))
    changed = await state(kube_admin, namespace)
    assert changed != found
    await settled(kube_admin, namespace)
    quiet = await snapshot(kube_admin, namespace)

    dry = await executor(kube_admin, server_dry_run=True).run(
        PlannedStep(0, "undo", {}, "on_failure"), undo_context(namespace, tuple(history)))
    assert dry.status == "planned", dry.message
    assert await snapshot(kube_admin, namespace) == quiet, "a server-side dry-run undo changed the cluster"

    undone = await live.run(PlannedStep(0, "undo", {}, "on_failure"), undo_context(namespace, tuple(history)))
    assert undone.status == "ok", undone.message
    assert [e["outcome"] for e in undone.details["steps"]] == ["undone"] * len(steps)
    assert await state(kube_admin, namespace) == found


async def test_a_rollback_is_undone_by_rolling_forward(kube_admin: Any, namespace: str) -> None:
    await apply_web(kube_admin, namespace)
    released = await update_web(kube_admin, namespace, "registry.example/web:2.0")
    live = executor(kube_admin, server_dry_run=False)
    rollback = await run_step(live, namespace, "rollback", {})
    assert rollback.status == "ok", rollback.message
    await settled(kube_admin, namespace)
    assert (await state(kube_admin, namespace))[1]["image"] == "registry.example/web:1.0"

    undone = await live.run(PlannedStep(0, "undo", {}, "on_failure"),
                            undo_context(namespace, ((PlannedStep(0, "rollback", {}), rollback),)))

    assert undone.status == "ok", undone.message
    now = await settled(kube_admin, namespace)
    assert now["spec"]["template"] == released["spec"]["template"]
