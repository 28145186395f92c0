"""``undo`` of a step that failed after sending its write.

A step whose write reached the apiserver but whose answer was lost (the client timed
out, the retries were used up) fails, yet its change may have landed.  Its failed
result keeps the write-ahead intent (the value it found, the value it sent), and undo
reverts it exactly like a step that succeeded: only while the object holds the value
the step sent.  If the write never landed, the object holds the earlier value and
nothing is written; if someone changed it since, their change is left alone.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.executors.kube import KubeExecutor
from remediator.ports import StepResult
from remediator.runtime import open_runtime
from remediator.settings import KubernetesSettings
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, Harness, open_harness, playbook, steps_of
from tests.executor.test_undo import CASES, UNDO, context, executor, image_of, released_twice, writes

PATCH = f"/namespaces/{NS}/deployments/web$"
SCALE = f"/namespaces/{NS}/deployments/web/scale$"
TIMEOUT = 30.0


def write_path(action: str, kind: str = "Deployment") -> tuple[str, str]:
    if kind == "StatefulSet":
        return "PATCH", f"/namespaces/{NS}/statefulsets/db$"
    return ("PUT", SCALE) if action == "scale" else ("PATCH", PATCH)


def no_retries(kube: FakeKube, clock: VirtualClock) -> KubeExecutor:
    """An executor that gives up after one failed attempt (``kubernetes.retries: 1``)."""
    return KubeExecutor(kube.api, clock, KubernetesSettings(mode="kubeconfig", request_timeout=TIMEOUT, retries=1))


async def fails_after_its_write(
    kube: FakeKube, clock: VirtualClock, action: str, params: dict[str, Any], *, lands: bool,
    kind: str = "Deployment",
) -> tuple[PlannedStep, StepResult]:
    """Run ``action`` once; its write is held at the apiserver until the client gives up (the step fails),
    then it is applied (``lands``) or answered 500 without being applied."""
    method, path = write_path(action, kind)
    if lands:
        kube.cluster.faults.hang(method=method, path=path)
    else:
        kube.cluster.faults.server_error(500, method=method, path=path)
    step = PlannedStep(0, action, params)
    task = asyncio.create_task(no_retries(kube, clock).run(step, context(clock, kind=kind)))
    if lands:
        await kube.cluster.requests.arrival(method, path)
        await clock.advance(await clock.sleeping(lambda left: math.isclose(left, TIMEOUT)))
        result = await task
        changes = kube.cluster.watch(f"{kind.lower()}s", int(kube.cluster.resource_version))
        try:
            kube.cluster.faults.release()  # the write had reached the apiserver: it lands after all
            await asyncio.wait_for(changes.queue.get(), 5)
        finally:
            kube.cluster.unwatch(changes)
    else:
        result = await task
    kube.cluster.faults.clear()
    assert result.status == "failed" and result.details["wrote"], result.message
    return step, result


async def undo_after_a_failed_step(
    kube: FakeKube, clock: VirtualClock, case: str, *, lands: bool, changed_since: bool = False
) -> tuple[StepResult, Any, Any, int]:
    """The case's step fails after its write (which ``lands`` or not), someone changes the object
    (``changed_since``), then undo runs.  Returns its result, the value before the step, the value undo
    found, and the count of writes before undo."""
    manifest, params, value, later = CASES[case]
    kube.cluster.apply(manifest)
    prior = value(kube)
    failed = await fails_after_its_write(kube, clock, case.split()[0], params, lands=lands)
    assert (value(kube) != prior) is lands  # whether the failed step's change is in the cluster
    if changed_since:
        later(kube)
    found, before = value(kube), writes(kube)
    return await executor(kube, clock).run(UNDO, context(clock, (failed,))), prior, found, before


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_write_that_landed_although_its_step_failed_is_undone(
    case: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    result, prior, _, _ = await undo_after_a_failed_step(kube, vclock, case, lands=True)

    assert result.status == "ok", result.message
    [entry] = result.details["steps"]
    assert entry["outcome"] == "undone" and entry["note"] == "the step failed after sending its write"
    assert CASES[case][2](kube) == prior
    assert "failed after sending its write" in result.message


@pytest.mark.parametrize("case", ["scale", "set_image", "set_env (absent)"])
async def test_a_write_that_never_landed_is_not_undone_and_nothing_is_written(
    case: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    result, _, found, before = await undo_after_a_failed_step(kube, vclock, case, lands=False)

    assert result.status == "ok", result.message
    assert writes(kube) == before and CASES[case][2](kube) == found
    assert [e["outcome"] for e in result.details["steps"]] == ["already undone"]


@pytest.mark.parametrize("case", ["scale", "set_image", "set_resources"])
async def test_a_later_change_after_a_failed_step_is_not_reverted(
    case: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    result, _, theirs, before = await undo_after_a_failed_step(kube, vclock, case, lands=True, changed_since=True)

    assert result.status == "failed"
    assert writes(kube) == before and CASES[case][2](kube) == theirs
    [entry] = result.details["steps"]
    assert entry["outcome"] == "changed since; not undone" and entry["current"] != entry["to"]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
async def test_a_rollback_that_landed_although_it_failed_is_undone_by_rolling_forward(
    kind: str, vclock: VirtualClock, kube: FakeKube
) -> None:
    """Its intent names the revision it rolled back to and the template it found: undo finds that
    revision's template on the workload and rolls forward to the one found."""
    await released_twice(kube, kind)
    failed = await fails_after_its_write(kube, vclock, "rollback", {}, lands=True, kind=kind)
    kube.cluster.reconcile()
    assert image_of(kube, kind).endswith(":1.0")  # the rollback landed

    result = await executor(kube, vclock).run(UNDO, context(vclock, (failed,), kind=kind))

    assert result.status == "ok", result.message
    assert image_of(kube, kind).endswith(":2.0")
    [entry] = result.details["steps"]
    assert entry["outcome"] == "undone" and entry["from"] == failed[1].details["intent"]["from"]


async def test_a_step_cut_off_by_the_step_timeout_keeps_its_intent_and_is_undone(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The daemon's own bound on a step (``worker.step_timeout``) cuts set_image off while its PATCH is
    held; the PATCH lands after all.  The pipeline's failed result keeps the intent, and undo reverts it."""
    manifest, params, value, _ = CASES["set_image"]
    kube.cluster.apply(manifest)
    prior, generation = value(kube), kube.cluster.get("deployments", NS, "web")["metadata"]["generation"]
    uid = kube.cluster.get("deployments", NS, "web")["metadata"]["uid"]
    directory = tmp_path / "playbooks"
    directory.mkdir()
    (directory / "fix.yaml").write_text(playbook(
        f"- action: set_image\n  container: app\n  image: {params['image']}\n", on_failure="- action: undo\n"))
    settings = settings_factory(playbooks=str(directory), dry_run=False, data_dir=str(tmp_path / "data"),
                                worker={"step_timeout": "20s"})
    k = KubernetesSettings(mode="kubeconfig", request_timeout=TIMEOUT)
    kube.cluster.faults.hang(method="PATCH", path=PATCH)
    async with open_runtime(settings, clock=vclock, start_worker=False,
                            executors=(KubeExecutor(kube.api, vclock, k),
                                       KubeExecutor(kube.api, vclock, k, server_dry_run=True))) as rt:
        h = Harness(rt, kube, vclock)
        task = h.start()
        await kube.cluster.requests.arrival("PATCH", PATCH)
        kube.cluster.faults.hang(method="GET", path=PATCH)  # hold undo's read until the PATCH has landed
        await h.advance(await vclock.sleeping(lambda left: math.isclose(left, 20.0)))
        await kube.cluster.requests.arrival("GET", PATCH, seen=False)
        kube.cluster.faults.release()
        await h.until_done(task)
        full = await h.execution()
    assert steps_of(full) == [("main", "set_image", "failed"), ("on_failure", "undo", "ok")]
    cut = full["results"][0]
    assert cut["message"] == "step did not finish within 20s"
    assert cut["details"] == {"wrote": True,
                              "intent": {"image": params["image"], "from": prior, "generation": generation,
                                         "uid": uid}}
    assert full["results"][1]["details"]["steps"][0]["outcome"] == "undone"
    assert value(kube) == prior


async def test_a_failed_step_whose_intent_says_nothing_is_still_not_undone(
    vclock: VirtualClock, kube: FakeKube
) -> None:
    """A step whose result records a write but no intent (a result written before failed results kept
    theirs): undo cannot know what it may have set, and says so rather than guessing."""
    manifest, _, _, _ = CASES["set_image"]
    kube.cluster.apply(manifest)
    cut_off = (PlannedStep(0, "set_image", {"container": "app", "image": "x:2"}),
               StepResult("failed", "step did not finish within 900s", details={"wrote": True}))
    before = writes(kube)

    result = await executor(kube, vclock).run(UNDO, context(vclock, (cut_off,)))

    assert result.status == "failed" and writes(kube) == before
    [entry] = result.details["steps"]
    assert entry["outcome"] == "not undone" and "does not record the value" in entry["reason"]


async def test_on_failure_undo_reverts_the_write_of_the_step_that_failed(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """Through the pipeline and the store: set_image's PATCH lands but its answer is lost and the
    retries are used up; the step fails, on_failure runs (the execution changed something) and its
    undo puts the image back."""
    manifest, params, value, _ = CASES["set_image"]
    kube.cluster.apply(manifest)
    prior, generation = value(kube), kube.cluster.get("deployments", NS, "web")["metadata"]["generation"]
    uid = kube.cluster.get("deployments", NS, "web")["metadata"]["uid"]
    books = {"fix": playbook(f"- action: set_image\n  container: app\n  image: {params['image']}\n",
                             on_failure="- action: undo\n")}
    kube.cluster.faults.hang(method="PATCH", path=PATCH)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books, request_timeout=TIMEOUT,
                            retries=1) as h:
        task = h.start()
        await kube.cluster.requests.arrival("PATCH", PATCH)
        # the undo's read is held too, so the PATCH (held first, released first) lands before undo reads
        kube.cluster.faults.hang(method="GET", path=PATCH)
        await h.advance(await vclock.sleeping(lambda left: math.isclose(left, TIMEOUT)))
        await kube.cluster.requests.arrival("GET", PATCH, seen=False)
        kube.cluster.faults.release()
        await h.until_done(task)
        full = await h.execution()
    assert steps_of(full) == [("main", "set_image", "failed"), ("on_failure", "undo", "ok")]
    assert full["results"][0]["details"]["intent"] == {"image": params["image"], "from": prior,
                                                       "generation": generation, "uid": uid}
    [entry] = full["results"][1]["details"]["steps"]
    assert (entry["outcome"], entry["from"], entry["to"]) == ("undone", prior, params["image"])
    assert value(kube) == prior
