"""``undo``: exact undo of what this execution changed, on a (fake) apiserver.

Each mutating step records the value it planned from and the value it set; ``undo`` puts
the earlier value back, newest step first, and only where the object still holds the
value the step set.  A later change by someone else is never clobbered: that step is
recorded "changed since; not undone" with the values involved, and the undo fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.core.playbooks import parse_playbooks
from remediator.executors.kube import KubeExecutor
from remediator.ports import StepContext, StepResult
from remediator.settings import KubernetesSettings
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, db, open_harness, playbook, steps_of, web
from tests.executor.test_resume import crash_while
from tests.payloads import alert_json

SMP = "application/strategic-merge-patch+json"
History = tuple[tuple[PlannedStep, StepResult], ...]


def executor(kube: FakeKube, clock: VirtualClock, *, dry_run: bool = False) -> KubeExecutor:
    return KubeExecutor(kube.api, clock, KubernetesSettings(mode="kubeconfig", request_timeout=30),
                        server_dry_run=dry_run)


def context(
    clock: VirtualClock, history: History = (), *, previous: StepResult | None = None,
    intents: list[dict[str, Any]] | None = None, kind: str = "Deployment",
) -> StepContext:
    async def record(intent: Mapping[str, Any]) -> None:
        if intents is not None:
            intents.append(dict(intent))

    return StepContext("ex-1", Alert.from_json(alert_json({"alertname": "Broken"})),
                       ResolvedTarget(kind, NS, "web" if kind == "Deployment" else "db"), False, clock,
                       previous=previous,
                       record_intent=record, history=history)


async def apply(kube: FakeKube, clock: VirtualClock, *steps: tuple[str, dict[str, Any]]) -> History:
    """Run the steps live, as an execution's main steps, and return them with their results."""
    history: list[tuple[PlannedStep, StepResult]] = []
    for index, (action, params) in enumerate(steps):
        planned = PlannedStep(index, action, params)
        result = await executor(kube, clock).run(planned, context(clock))
        assert result.status == "ok" and result.details.get("wrote"), result.message
        history.append((planned, result))
    return tuple(history)


UNDO = PlannedStep(0, "undo", {}, "on_failure")


def app(kube: FakeKube) -> dict[str, Any]:
    obj = kube.cluster.get("deployments", NS, "web")
    assert obj is not None
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(kube: FakeKube, name: str) -> dict[str, Any] | None:
    return next((e for e in app(kube).get("env") or [] if e["name"] == name), None)


def replicas(kube: FakeKube) -> int:
    obj = kube.cluster.get("deployments", NS, "web")
    assert obj is not None
    return int(obj["spec"]["replicas"])


def sidecar(kube: FakeKube) -> dict[str, Any]:
    obj = kube.cluster.get("deployments", NS, "web")
    assert obj is not None
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][1]
    return container


def someone_patches(kube: FakeKube, container: dict[str, Any]) -> None:
    """A person's ``kubectl patch`` of the app container, between the step and the undo."""
    kube.cluster.patch("deployments", NS, "web", SMP, {"spec": {"template": {"spec": {"containers": [container]}}}})


def _with_resources(manifest: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = resources
    return manifest


SECRET_REF = {"secretKeyRef": {"name": "jvm", "key": "opts"}}

#: action -> (manifest, step params, what the step changes, a later change by someone else)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], Callable[[FakeKube], Any], Callable[[FakeKube], None]]] = {
    "scale": (
        web(replicas=3), {"to": 5}, replicas,
        lambda kube: kube.cluster.patch_scale("deployments", NS, "web", "application/merge-patch+json",
                                              {"spec": {"replicas": 8}}),
    ),
    "set_image": (
        web(), {"container": "app", "image": "registry.example/web:2.0"}, lambda kube: app(kube)["image"],
        lambda kube: someone_patches(kube, {"name": "app", "image": "registry.example/web:3.0"}),
    ),
    "set_env (a value)": (
        web(env=[{"name": "JAVA_OPTS", "value": "-Xmx1g"}]),
        {"container": "app", "name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"},
        lambda kube: env_of(kube, "JAVA_OPTS"),
        lambda kube: someone_patches(kube, {"name": "app", "env": [{"name": "JAVA_OPTS", "value": "-Xmx8g"}]}),
    ),
    "set_env (absent)": (
        web(env=[{"name": "OTHER", "value": "1"}]),
        {"container": "app", "name": "JAVA_OPTS", "value": "-Xmx4g"},
        lambda kube: app(kube)["env"],
        lambda kube: someone_patches(kube, {"name": "app", "env": [{"name": "JAVA_OPTS", "value": "-Xmx8g"}]}),
    ),
    "set_env (valueFrom)": (
        web(env=[{"name": "JAVA_OPTS", "valueFrom": SECRET_REF}]),
        {"container": "app", "name": "JAVA_OPTS", "value": "-Xmx4g"},
        lambda kube: env_of(kube, "JAVA_OPTS"),
        lambda kube: someone_patches(kube, {"name": "app", "env": [{"name": "JAVA_OPTS", "value": "-Xmx8g"}]}),
    ),
    "resize_pool": (
        web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "10"}]),
        {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 5},
        lambda kube: env_of(kube, "DB_POOL_MAX_SIZE"),
        lambda kube: someone_patches(kube, {"name": "app", "env": [{"name": "DB_POOL_MAX_SIZE", "value": "40"}]}),
    ),
    "set_resources": (
        _with_resources(web(), {"requests": {"cpu": "100m"}}),
        {"container": "app", "requests": {"cpu": {"to": "500m"}}, "limits": {"memory": {"to": "1Gi"}}},
        lambda kube: app(kube).get("resources"),
        lambda kube: someone_patches(kube, {"name": "app", "resources": {"requests": {"cpu": "750m"}}}),
    ),
}


def writes(kube: FakeKube) -> int:
    return len(kube.cluster.requests.writes())


@pytest.mark.parametrize("case", sorted(CASES))
async def test_undo_restores_exactly_the_prior_value(case: str, vclock: VirtualClock, kube: FakeKube) -> None:
    manifest, params, value, _ = CASES[case]
    action = case.split()[0]
    kube.cluster.apply(manifest)
    prior, untouched = value(kube), sidecar(kube)
    history = await apply(kube, vclock, (action, params))
    assert value(kube) != prior

    result = await executor(kube, vclock).run(UNDO, context(vclock, history))

    assert result.status == "ok", result.message
    assert value(kube) == prior
    assert sidecar(kube) == untouched
    [entry] = result.details["steps"]
    assert (entry["phase"], entry["index"], entry["action"], entry["outcome"]) == ("main", 0, action, "undone")
    assert result.details["undone"] == [["main", 0]]


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_later_change_by_someone_else_is_not_reverted(
    case: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    manifest, params, value, later = CASES[case]
    action = case.split()[0]
    kube.cluster.apply(manifest)
    history = await apply(kube, vclock, (action, params))
    later(kube)
    theirs, before = value(kube), writes(kube)

    result = await executor(kube, vclock).run(UNDO, context(vclock, history))

    assert result.status == "failed"
    assert value(kube) == theirs
    assert writes(kube) == before  # nothing was written at all
    [entry] = result.details["steps"]
    assert entry["outcome"] == "changed since; not undone"
    step = history[0][1].details
    if action == "resize_pool":  # compared as the env var's state, as set_env records it
        assert (entry["from"], entry["to"]) == ({"value": str(step["from"])}, {"value": str(step["to"])})
    else:
        assert (entry["from"], entry["to"]) == (step["from"], step["to"])
    assert entry["current"] != entry["to"]
    assert "changed since; not undone" in result.message
    assert result.details["undone"] == []
    if action == "set_env":  # its values are in the details, as in the step's own result, not in the message
        assert "Xm" not in result.message


async def test_several_steps_are_undone_newest_first(vclock: VirtualClock, kube: FakeKube) -> None:
    """Two scales of the same workload: the newer is reverted first, so the older finds its own value."""
    kube.cluster.apply(web(replicas=3))
    history = await apply(kube, vclock, ("scale", {"to": 5}), ("set_image", {"container": "app", "image": "x:2"}),
                          ("scale", {"by": 1}))
    assert (replicas(kube), app(kube)["image"]) == (6, "x:2")

    result = await executor(kube, vclock).run(UNDO, context(vclock, history))

    assert result.status == "ok", result.message
    assert (replicas(kube), app(kube)["image"]) == (3, "registry.example/web:1.0")
    assert [(e["index"], e["outcome"]) for e in result.details["steps"]] == [(2, "undone"), (1, "undone"),
                                                                            (0, "undone")]
    assert "6 -> 5" in result.message and "5 -> 3" in result.message


async def test_only_the_step_changed_since_is_left_alone(vclock: VirtualClock, kube: FakeKube) -> None:
    kube.cluster.apply(web(replicas=3))
    history = await apply(kube, vclock, ("scale", {"to": 5}), ("set_image", {"container": "app", "image": "x:2"}))
    someone_patches(kube, {"name": "app", "image": "x:3"})

    result = await executor(kube, vclock).run(UNDO, context(vclock, history))

    assert result.status == "failed"
    assert (replicas(kube), app(kube)["image"]) == (3, "x:3")
    assert [(e["action"], e["outcome"]) for e in result.details["steps"]] == [
        ("set_image", "changed since; not undone"), ("scale", "undone")]
    changed = result.details["steps"][0]
    assert (changed["from"], changed["to"], changed["current"]) == ("registry.example/web:1.0", "x:2", "x:3")


async def test_dry_run_undo_changes_nothing(vclock: VirtualClock, kube: FakeKube) -> None:
    kube.cluster.apply(web(replicas=3))
    history = await apply(kube, vclock, ("scale", {"to": 5}), ("set_image", {"container": "app", "image": "x:2"}))
    before = writes(kube)

    result = await executor(kube, vclock, dry_run=True).run(UNDO, context(vclock, history))

    assert result.status == "planned", result.message
    assert result.message.startswith("dry-run (server-side): would have undone 2 step(s)")
    assert (replicas(kube), app(kube)["image"]) == (5, "x:2")
    sent = kube.cluster.requests.writes()[before:]
    assert len(sent) == 2 and all(r.dry_run for r in sent)  # the apiserver checked both, applied neither


async def test_undo_with_nothing_written_is_a_no_op_success(vclock: VirtualClock, kube: FakeKube) -> None:
    kube.cluster.apply(web(replicas=3))
    unchanged = PlannedStep(0, "scale", {"to": 3})
    kept = await executor(kube, vclock).run(unchanged, context(vclock))  # already 3: nothing sent
    planned = PlannedStep(1, "set_image", {"container": "app", "image": "x:2"})
    dry = await executor(kube, vclock, dry_run=True).run(planned, context(vclock))
    before = writes(kube)

    for history in ((), ((unchanged, kept), (planned, dry))):
        result = await executor(kube, vclock).run(UNDO, context(vclock, history))
        assert result.status == "ok" and result.message.startswith("nothing to undo"), result.message
        assert result.details["steps"] == []
    assert writes(kube) == before


async def test_a_deleted_pod_and_a_restart_are_recorded_as_not_reverted(vclock: VirtualClock, kube: FakeKube) -> None:
    """Neither is a failure: a deleted pod cannot come back, and undoing a restart would only restart again."""
    kube.cluster.apply(web(replicas=3))
    [(restart, restarted)] = await apply(kube, vclock, ("restart", {}))
    template = kube.cluster.get("deployments", NS, "web")["spec"]["template"]  # type: ignore[index]
    deleted = (PlannedStep(1, "delete_pod", {"pod": "web-1"}),
               StepResult("ok", details={"pod": "web-1", "wrote": True}))
    before = writes(kube)

    result = await executor(kube, vclock).run(UNDO, context(vclock, ((restart, restarted), deleted)))

    assert result.status == "ok", result.message
    assert [(e["action"], e["outcome"]) for e in result.details["steps"]] == [
        ("delete_pod", "cannot be undone"), ("restart", "not reverted")]
    assert writes(kube) == before
    assert kube.cluster.get("deployments", NS, "web")["spec"]["template"] == template  # type: ignore[index]


async def released_twice(kube: FakeKube, kind: str) -> None:
    """Two releases (1.0, then 2.0) of the target, seen by its controller: a rollback has somewhere to go."""
    for image in ("1.0", "2.0"):
        kube.cluster.apply(web(image=f"registry.example/web:{image}") if kind == "Deployment"
                           else db(image=f"registry.example/db:{image}"))
        kube.cluster.reconcile()


def image_of(kube: FakeKube, kind: str) -> str:
    obj = kube.cluster.get("deployments" if kind == "Deployment" else "statefulsets", NS,
                           "web" if kind == "Deployment" else "db")
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def rolled_back(kube: FakeKube, vclock: VirtualClock, kind: str) -> tuple[PlannedStep, StepResult]:
    """Two releases of the target, then a rollback to the first: the step and its result."""
    await released_twice(kube, kind)
    rollback = PlannedStep(0, "rollback", {})
    result = await executor(kube, vclock).run(rollback, context(vclock, kind=kind))
    assert result.status == "ok" and image_of(kube, kind).endswith(":1.0"), result.message
    return rollback, result


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
async def test_a_rollback_is_undone_by_rolling_forward_to_the_template_it_found(
    kind: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    rollback, result = await rolled_back(kube, vclock, kind)
    kube.cluster.reconcile()

    undo = await executor(kube, vclock).run(UNDO, context(vclock, ((rollback, result),), kind=kind))

    assert undo.status == "ok", undo.message
    assert image_of(kube, kind).endswith(":2.0")
    [entry] = undo.details["steps"]
    assert entry["outcome"] == "undone"
    assert (entry["from"], entry["to"]) == (result.details["template_from"], result.details["template_to"])


async def test_a_resumed_statefulset_rollback_that_landed_is_already_applied(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    """A ControllerRevision's template carries ``$patch: replace``: compared without it, a resumed rollback
    finds its own write (not a later change), and records the template digests undo needs."""
    await released_twice(kube, "StatefulSet")
    rollback, intents = PlannedStep(0, "rollback", {}), []
    await executor(kube, vclock).run(rollback, context(vclock, kind="StatefulSet", intents=intents))
    crashed = StepResult("started", details={"intent": intents[-1]})

    resumed = await executor(kube, vclock).run(rollback, context(vclock, kind="StatefulSet", previous=crashed))

    assert resumed.status == "ok" and resumed.message.endswith("(already applied)"), resumed.message
    assert resumed.details["template_from"] == intents[-1]["from"] != resumed.details["template_to"]


async def test_a_rollback_is_not_undone_over_a_later_release(vclock: VirtualClock, kube: FakeKube) -> None:
    await released_twice(kube, "Deployment")
    rollback = PlannedStep(0, "rollback", {})
    result = await executor(kube, vclock).run(rollback, context(vclock))
    someone_patches(kube, {"name": "app", "image": "registry.example/web:3.0"})
    before = writes(kube)

    undo = await executor(kube, vclock).run(UNDO, context(vclock, ((rollback, result),)))

    assert undo.status == "failed" and image_of(kube, "Deployment").endswith(":3.0")
    assert writes(kube) == before
    assert undo.details["steps"][0]["outcome"] == "changed since; not undone"


async def test_a_rollback_without_recorded_templates_is_refused_with_its_reason(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    kube.cluster.apply(web(replicas=3))
    rollback = (PlannedStep(0, "rollback", {}), StepResult("ok", details={"revision": 1, "wrote": True}))

    result = await executor(kube, vclock).run(UNDO, context(vclock, (rollback,)))

    assert result.status == "failed"
    [entry] = result.details["steps"]
    assert entry["outcome"] == "not undone" and "recorded no pod template digests" in entry["reason"]


async def test_a_crash_mid_undo_resumes_without_applying_twice(vclock: VirtualClock, kube: FakeKube) -> None:
    """The daemon dies while the scale's revert is at the apiserver (after the image's revert landed).
    The resumed undo finds the image reverted by its intent and the scale already back: no second write,
    and neither is mistaken for someone else's change."""
    kube.cluster.apply(web(replicas=3))
    history = await apply(kube, vclock, ("scale", {"to": 5}), ("scale", {"by": 1}),
                          ("set_image", {"container": "app", "image": "x:2"}))
    kube.cluster.faults.hang(method="PUT", path="/scale$")
    intents: list[dict[str, Any]] = []
    before = writes(kube)
    task = asyncio.create_task(executor(kube, vclock).run(UNDO, context(vclock, history, intents=intents)))
    await kube.cluster.requests.arrival("PUT", "/scale$", seen=False)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    changes = kube.cluster.watch("deployments", int(kube.cluster.resource_version))
    try:
        kube.cluster.faults.release()  # it had reached the apiserver: it lands anyway
        while replicas(kube) != 5:
            await asyncio.wait_for(changes.queue.get(), 5)
    finally:
        kube.cluster.unwatch(changes)
    kube.cluster.faults.clear()
    assert replicas(kube) == 5 and intents[-1] == {"undone": [["main", 2]], "undoing": ["main", 1]}

    crashed = StepResult("started", details={"intent": intents[-1]})
    result = await executor(kube, vclock).run(UNDO, context(vclock, history, previous=crashed, intents=intents))

    assert result.status == "ok", result.message
    assert (replicas(kube), app(kube)["image"]) == (3, "registry.example/web:1.0")
    assert [(e["index"], e["outcome"]) for e in result.details["steps"]] == [
        (2, "undone"), (1, "already undone"), (0, "undone")]
    sent = [f"{r.method} {r.path}" for r in kube.cluster.requests.writes()[before:]]
    assert len(sent) == 3 and sum("/scale" in w for w in sent) == 2  # image once, 6 -> 5 once, 5 -> 3 once


SET_IMAGE = "- action: set_image\n  container: app\n  image: registry.example/web:2.0\n"
SCALE_TO_5 = "- action: scale\n  to: 5\n"


def undo_after(*changes: str) -> dict[str, str]:
    """A playbook that makes ``changes``, then fails (a container the target lacks), and undoes them."""
    fails = "- action: set_image\n  container: missing\n  image: registry.example/web:2.0\n"
    return {"fix": playbook("".join(changes) + fails, on_failure="- action: undo\n")}


async def test_on_failure_undo_through_the_pipeline(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The runbook's shape: change, fail, undo exactly what was changed; a step that wrote nothing is not undone."""
    kube.cluster.apply(web(replicas=3))
    books = undo_after(SET_IMAGE, SCALE_TO_5)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        full = await h.fire()
    assert (replicas(kube), app(kube)["image"]) == (3, "registry.example/web:1.0")
    assert full["status"] == "failed"
    assert steps_of(full)[-1] == ("on_failure", "undo", "ok")
    undo = full["results"][-1]["details"]
    assert [(e["index"], e["action"]) for e in undo["steps"]] == [(1, "scale"), (0, "set_image")]


async def test_a_conflict_mid_undo_is_retried_without_losing_what_was_reverted(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    """Three scales 3 -> 5 -> 6 -> 7; the third revert (5 -> 3) meets a 409.  The retry re-reads 5, and
    its intent says the two newer steps are reverted already, so 5 is not taken for a later change.
    A 409 is routine (a controller's status write): retried even with no retries for faults."""
    kube.cluster.apply(web(replicas=3))
    history = await apply(kube, vclock, ("scale", {"to": 5}), ("scale", {"by": 1}), ("scale", {"by": 1}))
    before = writes(kube)
    no_fault_retries = KubeExecutor(kube.api, vclock, KubernetesSettings(mode="kubeconfig", retries=1))
    run = asyncio.create_task(no_fault_retries.run(UNDO, context(vclock, history)))
    await kube.cluster.requests.arrival(
        "PUT", "/scale$", where=lambda r: len(kube.cluster.requests.writes()[before:]) == 2, seen=False)
    kube.cluster.faults.conflict(method="PUT", path="/scale$")  # the next revert (5 -> 3) is refused once
    await vclock.advance(await vclock.sleeping(lambda left: left <= 15))  # the one backoff, after the 409
    result = await run

    assert result.status == "ok", result.message
    assert replicas(kube) == 3
    sent = kube.cluster.requests.writes()[before:]
    assert [r.status for r in sent][2] == 409 and len(sent) == 4  # 7 -> 6, 6 -> 5, refused, 5 -> 3
    assert result.details["undone"] == [["main", 2], ["main", 1], ["main", 0]]
    assert result.details["attempts"] == 2


def test_undo_takes_no_parameters() -> None:
    text = playbook("- action: scale\n  to: 5\n", on_failure="- action: undo\n")
    books, problems = parse_playbooks(text, "fix.yaml")
    assert problems == [] and books[0].on_failure[0].action == "undo"
    _, problems = parse_playbooks(playbook("- action: undo\n  to: 3\n"), "bad.yaml")
    assert [p.message for p in problems] and "to" in problems[0].message


async def test_the_daemon_dies_mid_undo_and_the_resumed_execution_reverts_each_step_once(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """Through the pipeline and the store: the undo's intent survives the crash, the resumed undo
    finds the image reverted and the scale's revert landed, and writes nothing more."""
    kube.cluster.apply(web(replicas=3))
    books = undo_after(SCALE_TO_5, SET_IMAGE)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        task = h.start()
        await kube.cluster.requests.arrival("PATCH", "/deployments/web$", seen=False)  # main's set_image
        kube.cluster.faults.hang(method="PUT", path="/scale$")  # the next PUT is the undo's 5 -> 3
        await kube.cluster.requests.arrival("PUT", "/scale$", seen=False)
        await crash_while(h, task, "PUT", "/scale$")
        assert (replicas(kube), app(kube)["image"]) == (3, "registry.example/web:1.0")
    kube.cluster.faults.clear()
    before = writes(kube)

    await h.advance(301)  # the dead daemon's execution lease runs out
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h2:
        assert await h2.until_done(h2.rt.pipeline.resume_unfinished()) == 1
        full = await h2.execution()
    assert writes(kube) == before
    assert (replicas(kube), app(kube)["image"]) == (3, "registry.example/web:1.0")
    assert steps_of(full)[-1] == ("on_failure", "undo", "ok")
    assert [(e["index"], e["outcome"]) for e in full["results"][-1]["details"]["steps"]] == [
        (1, "undone"), (0, "already undone")]


def created_again(kube: FakeKube, kind: str = "Deployment") -> None:
    """The target deleted and created again as it is now, under its name: another object (a new uid)."""
    resource, name = ("deployments", "web") if kind == "Deployment" else ("statefulsets", "db")
    obj = kube.cluster.get(resource, NS, name)
    assert obj is not None
    kube.cluster.delete(resource, NS, name)
    kube.cluster.reconcile()
    again = kube.cluster.apply({"apiVersion": "apps/v1", "kind": kind, "spec": obj["spec"],
                                "metadata": {"name": name, "namespace": NS, "labels": obj["metadata"].get("labels")}})
    assert again["metadata"]["uid"] != obj["metadata"]["uid"]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
async def test_a_rollback_of_an_object_created_again_since_is_not_undone(
    kind: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    """The new object runs the template the rollback set: another object all the same, which it never changed."""
    rollback, result = await rolled_back(kube, vclock, kind)
    created_again(kube, kind)
    before = writes(kube)

    undo = await executor(kube, vclock).run(UNDO, context(vclock, ((rollback, result),), kind=kind))

    assert undo.status == "failed" and image_of(kube, kind).endswith(":1.0"), undo.message
    assert writes(kube) == before
    [entry] = undo.details["steps"]
    assert entry["outcome"] == "changed since; not undone"
    assert "was deleted and created again since this step (uid " in entry["reason"]


async def test_a_failed_step_s_write_on_an_object_created_again_since_is_not_undone(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    """A step failed after its write (the answer lost): undo goes by its intent, whose uid names the object."""
    kube.cluster.apply(web())
    uid = kube.cluster.get("deployments", NS, "web")["metadata"]["uid"]
    step = PlannedStep(0, "set_image", {"container": "app", "image": "registry.example/web:2.0"})
    failed = StepResult("failed", "set_image: timed out", details={"wrote": True, "intent": {
        "image": "registry.example/web:2.0", "from": "registry.example/web:1.0", "generation": 1, "uid": uid}})
    kube.cluster.apply(web(image="registry.example/web:2.0"))  # the write landed
    created_again(kube)

    undo = await executor(kube, vclock).run(UNDO, context(vclock, ((step, failed),)))

    assert undo.status == "failed" and app(kube)["image"] == "registry.example/web:2.0", undo.message
    assert undo.details["steps"][0]["outcome"] == "changed since; not undone"


async def test_a_result_recorded_before_uids_were_is_judged_by_value_as_then(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    """No uid in the step's result (recorded by an older version): the object is not known, the values decide."""
    kube.cluster.apply(web())
    [(step, result)] = await apply(kube, vclock, ("set_image", {"container": "app",
                                                                "image": "registry.example/web:2.0"}))
    older = replace(result, details={k: v for k, v in result.details.items() if k != "uid"})
    created_again(kube)

    undo = await executor(kube, vclock).run(UNDO, context(vclock, ((step, older),)))

    assert undo.status == "ok" and app(kube)["image"] == "registry.example/web:1.0", undo.message
