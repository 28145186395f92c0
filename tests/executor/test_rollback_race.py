"""A release that lands while a rollback is in flight is not silently rolled back.

The rollback reads the workload (running 2.0), plans the revision before it (1.0), and writes.
If a person ships 3.0 between that read and that write, the write must be refused (409: it
carries the resourceVersion it read, as every other write does), and the retry must re-check
the running pod template against the one the rollback was planned from (its intent's digest):
it changed, so the step is ``superseded`` and 3.0 stays.  Re-planning afresh instead would roll
3.0 back, the release nobody alerted on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.executors.kube import KubeExecutor
from remediator.settings import KubernetesSettings
from remediator.testing.kube import FakeCluster, running_fake_kube
from remediator.testing.kube.faults import RecordedRequest
from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, Harness, db, playbook, steps_of, web
from tests.executor.test_undo import context

SMP = "application/strategic-merge-patch+json"
#: kind -> (the workload's resource path, its manifest, its container, its image without the tag)
CASES: dict[str, tuple[str, Callable[[str], dict[str, Any]], str, str]] = {
    "Deployment": ("deployments/web", lambda image: web(image=image), "app", "registry.example/web"),
    "StatefulSet": ("statefulsets/db", lambda image: db(image=image), "db", "registry.example/db"),
}


async def rollback_meanwhile(
    h: Harness, kind: str, change: Callable[[Harness], None]
) -> tuple[dict[str, Any], dict[str, Any], list[RecordedRequest], str]:
    """2.0 rolled back to 1.0, with ``change`` made between the rollback's read and its (first) write.
    Returns the execution, the workload after, the rollback's PATCHes, and the resourceVersion it read."""
    resource, manifest, _, image = CASES[kind]
    plural, name = resource.split("/")
    path = f"/namespaces/{NS}/{resource}$"
    h.cluster.apply(manifest(f"{image}:1.0"))
    h.cluster.apply(manifest(f"{image}:2.0"))
    await h.settle()
    read_version = h.cluster.get(plural, NS, name)["metadata"]["resourceVersion"]
    h.cluster.faults.hang(method="PATCH", path=path)
    task = h.start(name)
    await h.cluster.requests.arrival("PATCH", path)
    change(h)
    h.cluster.faults.release()
    await h.until_done(task)
    patches = h.cluster.requests.matching("PATCH", path)
    return await h.execution(), h.cluster.get(plural, NS, name), patches, read_version


def image_in(obj: dict[str, Any], container: str) -> str:
    return str(next(c["image"] for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == container))


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_a_release_during_the_rollback_is_not_rolled_back(harness: OpenHarness, kind: str) -> None:
    resource, _, container, image = CASES[kind]
    plural, name = resource.split("/")

    def ships_3_0(h: Harness) -> None:  # a person ships 3.0 while the rollback (planned 2.0 -> 1.0) is in flight
        h.cluster.patch(plural, NS, name, SMP, {"spec": {"template": {"spec": {"containers": [
            {"name": container, "image": f"{image}:3.0"}]}}}})

    async with harness({"fix": playbook("- action: rollback\n", kind=kind)}) as h:
        ex, obj, patches, read_version = await rollback_meanwhile(h, kind, ships_3_0)
    assert image_in(obj, container) == f"{image}:3.0"
    assert [p.status for p in patches] == [409]  # refused, and not sent again once superseded
    assert steps_of(ex) == [("main", "rollback", "superseded")]
    assert not ex["results"][0]["details"].get("wrote")  # nothing of it landed: no on_failure either
    body = patches[0].body
    if kind == "Deployment":  # the JSON patch carries the version read, as the undo's does
        assert {"op": "replace", "path": "/metadata/resourceVersion", "value": read_version} in body
    else:
        assert body["metadata"] == {"resourceVersion": read_version}


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_a_rollback_made_on_its_retry_after_a_conflict_is_recorded_as_written(
    harness: OpenHarness, kind: str
) -> None:
    """A 409 (a controller's write between the read and the write: routine) refuses the first write; the retry
    makes it.  The step is recorded as having written, so the playbook's ``undo`` rolls it forward again:
    the retry did not record its intent again, and the step said it wrote nothing (undo passed over it)."""
    resource, manifest, _, image = CASES[kind]
    plural, name = resource.split("/")
    path = f"/namespaces/{NS}/{resource}$"
    fails = f"- action: set_image\n  container: missing\n  image: {image}:9.0\n"
    async with harness({"fix": playbook("- action: rollback\n" + fails, kind=kind,
                                        on_failure="- action: undo\n")}) as h:
        h.cluster.apply(manifest(f"{image}:1.0"))
        h.cluster.apply(manifest(f"{image}:2.0"))
        await h.settle()
        h.cluster.faults.conflict(method="PATCH", path=path)  # the rollback's first write, refused once
        await h.until_done(h.start(name))
        ex = await h.execution()
        running = h.cluster.get(plural, NS, name)["spec"]["template"]["spec"]["containers"][0]["image"]
        patches = [p.status for p in h.cluster.requests.matching("PATCH", path)]
    assert steps_of(ex) == [("main", "rollback", "ok"), ("main", "set_image", "failed"),
                            ("on_failure", "undo", "ok")]
    rollback, _, undo = ex["results"]
    assert rollback["details"]["wrote"] and rollback["details"]["attempts"] == 2
    assert [(e["action"], e["outcome"]) for e in undo["details"]["steps"]] == [("rollback", "undone")]
    assert running == f"{image}:2.0"  # rolled back to 1.0, then forward again by the undo
    assert patches == [409, 200, 200]


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_a_scale_during_the_rollback_refuses_its_write_and_the_retry_still_rolls_back(
    harness: OpenHarness, kind: str
) -> None:
    """A scale (an autoscaler's, a person's) between the read and the write: a 409, and the spec's generation
    moves, but the pod template is the one the rollback was planned from.  The refused write certainly did
    not land, so the moved generation says nothing of it: the retry rolls back (not superseded)."""
    resource, _, container, image = CASES[kind]
    plural, name = resource.split("/")

    def scales_to_5(h: Harness) -> None:
        h.cluster.patch_scale(plural, NS, name, "application/merge-patch+json", {"spec": {"replicas": 5}})

    async with harness({"fix": playbook("- action: rollback\n", kind=kind)}) as h:
        ex, obj, patches, _ = await rollback_meanwhile(h, kind, scales_to_5)
    assert steps_of(ex) == [("main", "rollback", "ok")]
    assert [p.status for p in patches] == [409, 200]
    assert (image_in(obj, container), obj["spec"]["replicas"]) == (f"{image}:1.0", 5)


async def test_a_release_during_the_rollback_stays_when_the_retry_waits_for_the_controller() -> None:
    """A release lands while the rollback's write is in flight (409), and the retry finds the Deployment
    controller not caught up with it yet (a routine wait on a real cluster): that second retry dropped
    the plan the conflict had pinned, planned afresh from the object as it was then, and rolled the
    new release back."""
    clock = VirtualClock()
    cluster = FakeCluster(clock=lambda: clock.now().timestamp())
    async with running_fake_kube(cluster) as kube:
        for version in ("1.0", "2.0"):
            cluster.apply(web(image=f"registry.example/web:{version}"))
            cluster.reconcile()
        path = f"/namespaces/{NS}/deployments/web$"
        cluster.faults.hang(method="PATCH", path=path)
        ex = KubeExecutor(kube.api, clock, KubernetesSettings(mode="kubeconfig", request_timeout=30))
        run = asyncio.create_task(ex.run(PlannedStep(0, "rollback", {}), context(clock)))
        await cluster.requests.arrival("PATCH", path)
        cluster.sync_controllers = False  # the controller has not seen the release yet
        cluster.patch("deployments", NS, "web", SMP, {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.example/web:3.0"}]}}}})
        cluster.faults.release()
        backoffs = 0
        while not run.done():
            due = asyncio.ensure_future(clock.sleeping(lambda left: left <= 15))
            await asyncio.wait({run, due}, return_when=asyncio.FIRST_COMPLETED)
            if not due.done():
                due.cancel()
                continue
            backoffs += 1
            if backoffs == 2:  # the controller catches up
                cluster.sync_controllers = True
                cluster.reconcile()
            await clock.advance(due.result())
        result = run.result()
        now = cluster.get("deployments", NS, "web")
    assert image_in(now, "app") == "registry.example/web:3.0"
    assert result.status == "superseded", result.message
