"""set_image, set_env, set_resources: server-side dry-run, and a crash mid-step.

Dry-run sends the same PATCH with ``dryRun=All``: nothing on the fake changes, and
the audit records the diff the live run makes.  A crash after the PATCH reached the
apiserver is resumed from the write-ahead intent (the value planned from, the value
set): the change is made once, not twice; if it never landed it is made then; and if
someone changed the object meanwhile the step is ``superseded``: nothing is written,
no ``on_failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube
from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, Harness, open_harness, playbook, steps_of, web
from tests.executor.test_dry_run import comparable, run_once, state
from tests.executor.test_resume import crash_while
from tests.executor.test_superseded import writes_after

PATCH = f"/namespaces/{NS}/deployments/web$"


def with_image(image: str) -> dict[str, Any]:
    return web(image=image)


def with_env(value: str) -> dict[str, Any]:
    return web(env=[{"name": "JAVA_OPTS", "value": value}])


def with_memory(limit: str) -> dict[str, Any]:
    manifest = web()
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"memory": limit}}
    return manifest


def app(h: Harness) -> dict[str, Any]:
    container: dict[str, Any] = h.get()["spec"]["template"]["spec"]["containers"][0]
    return container


class Case:
    """One action: its step, and the object holding the planned-from, the set and a later value."""

    def __init__(self, steps: str, manifest: Callable[[str], dict[str, Any]], read: Callable[[dict[str, Any]], Any],
                 planned: tuple[str, str], later: str, recorded: tuple[Any, Any, Any]) -> None:
        self.books = {"fix": playbook(steps, guardrails="lock_ttl: 10m\n", on_failure="- action: rollback\n")}
        self.steps, self.manifest, self.read, self.planned, self.later = steps, manifest, read, planned, later
        self.recorded = recorded  # the audit's from, to and current after a later change

    def value(self, h: Harness) -> Any:
        return self.read(app(h))


CASES = {
    "set_image": Case("- action: set_image\n  container: app\n  image: registry.example/web:1.9\n", with_image,
                      lambda c: c["image"], ("registry.example/web:2.0", "registry.example/web:1.9"),
                      "registry.example/web:3.0",
                      ("registry.example/web:2.0", "registry.example/web:1.9", "registry.example/web:3.0")),
    "set_env": Case('- action: set_env\n  container: app\n  name: JAVA_OPTS\n  value: "-Xmx4g"\n', with_env,
                    lambda c: c["env"][0]["value"], ("-Xmx1g", "-Xmx4g"), "-Xmx8g",
                    ({"value": "-Xmx1g"}, {"value": "-Xmx4g"}, {"value": "-Xmx8g"})),
    "set_resources": Case("- action: set_resources\n  container: app\n  limits: {memory: {factor: 1.5, max: 4Gi}}\n",
                          with_memory, lambda c: c["resources"]["limits"]["memory"], ("2Gi", "3Gi"), "8Gi",
                          ({"limits": {"memory": "2Gi"}}, {"limits": {"memory": "3Gi"}},
                           {"limits": {"memory": "8Gi"}})),
}


# -- server-side dry-run ------------------------------------------------------------------------


@pytest.mark.parametrize("action", sorted(CASES))
async def test_server_side_dry_run_changes_nothing_and_records_the_live_diff(
    action: str, tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    case = CASES[action]

    def seed(c: FakeCluster) -> dict[str, str]:
        c.apply(case.manifest(case.planned[0]))
        return {}

    dry, cluster, before, after = await run_once(tmp_path / "dry", settings_factory, case.steps, seed, dry_run=True)
    assert steps_of(dry) == [("main", action, "planned")] and dry["status"] == "dry_run"
    assert after == before  # not one object, not one resourceVersion changed
    writes = cluster.requests.writes()
    assert [w.method for w in writes] == ["PATCH"] and writes[0].query.get("dryRun") == "All"
    assert dry["results"][0]["message"].startswith("dry-run (server-side): would have set ")

    live, live_cluster, _, _ = await run_once(tmp_path / "live", settings_factory, case.steps, seed, dry_run=False)
    assert steps_of(live) == [("main", action, "ok")]
    assert state(live_cluster) != before
    assert comparable(dry["results"][0]["details"]["diff"]) == comparable(live["results"][0]["details"]["diff"])
    assert comparable(dry["results"][0]["details"]["diff"])  # and it is not empty


# -- crash and resume ---------------------------------------------------------------------------


async def crashed_after_the_write_landed(
    case: Case, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The PATCH lands at the apiserver; the daemon dies before recording it; its lock and lease lapse."""
    kube.cluster.apply(web(image="registry.example/web:0.9"))  # a release a wrongly run rollback would go back to
    kube.cluster.apply(case.manifest(case.planned[0]))
    kube.cluster.faults.hang(method="PATCH", path=PATCH)
    async with open_harness(tmp_path, settings_factory, vclock, kube, case.books) as h:
        await crash_while(h, h.start(), "PATCH", PATCH)
        assert case.value(h) == case.planned[1]
    kube.cluster.faults.clear()
    await h.advance(601)


async def crash_then_resume(
    case: Case, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube,
    *, meanwhile: str | None = None,
) -> tuple[dict[str, Any], Any, list[str]]:
    """Crash after the write landed; the object then holds ``meanwhile`` (if given); another daemon resumes.

    Returns the execution's audit, the value the object ends with, and the writes the resumed run sent."""
    await crashed_after_the_write_landed(case, tmp_path, settings_factory, vclock, kube)
    if meanwhile is not None:
        kube.cluster.apply(case.manifest(meanwhile))
    async with open_harness(tmp_path, settings_factory, vclock, kube, case.books) as h:
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        return await h.execution(), case.value(h), writes_after(kube, writes)


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_write_that_landed_before_the_crash_is_not_made_again(
    action: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    case = CASES[action]
    full, value, writes = await crash_then_resume(case, tmp_path, settings_factory, vclock, kube)
    assert value == case.planned[1] and writes == []
    assert full["status"] == "succeeded"
    [result] = full["results"]
    assert (result["details"]["from"], result["details"]["to"]) == case.recorded[:2]
    assert "already" in result["message"]


@pytest.mark.parametrize("action", sorted(CASES))
async def test_the_old_value_put_back_meanwhile_is_not_reverted_by_the_resumed_step(
    action: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The write landed; a person then put the planned-from value back.  The object holds it again, but its
    spec changed since the intent (the generation moved): superseded, and the person's value stays."""
    case = CASES[action]
    full, value, writes = await crash_then_resume(case, tmp_path, settings_factory, vclock, kube,
                                                  meanwhile=case.planned[0])
    assert value == case.planned[0] and writes == []  # nothing written: no re-apply, no rollback
    assert full["status"] == "superseded"
    [result] = full["results"]
    assert (result["action"], result["status"]) == (action, "superseded")
    assert tuple(result["details"][k] for k in ("from", "to", "current")) == (*case.recorded[:2], case.recorded[0])
    assert result["details"]["generation"]["now"] == result["details"]["generation"]["intent"] + 2


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_write_that_never_landed_is_made_once_on_resume(
    action: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The PATCH is answered 503 (not applied) and the daemon dies in the backoff: the object holds the
    planned-from value at the generation the intent recorded, so the resumed step makes the write, once."""
    case = CASES[action]
    kube.cluster.apply(case.manifest(case.planned[0]))
    kube.cluster.faults.fail(503, method="PATCH", path=PATCH, times=None)
    async with open_harness(tmp_path, settings_factory, vclock, kube, case.books) as h:
        task = h.start()
        await h.cluster.requests.arrival("PATCH", PATCH)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        [started] = (await h.execution())["results"]
        assert started["details"]["intent"]["generation"] == h.get()["metadata"]["generation"]
    kube.cluster.faults.clear()
    await h.advance(601)
    async with open_harness(tmp_path, settings_factory, vclock, kube, case.books) as h:
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        full, value, sent = await h.execution(), case.value(h), writes_after(kube, writes)
    assert value == case.planned[1]
    assert sent == [f"PATCH /apis/apps/v1/namespaces/{NS}/deployments/web"]
    assert full["status"] == "succeeded"


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_change_made_meanwhile_is_not_reverted_by_the_resumed_step(
    action: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    case = CASES[action]  # a person changed it since
    full, value, writes = await crash_then_resume(case, tmp_path, settings_factory, vclock, kube,
                                                  meanwhile=case.later)
    assert value == case.later and writes == []  # nothing written: no re-apply, no rollback
    assert full["status"] == "superseded"
    [result] = full["results"]
    assert (result["action"], result["status"]) == (action, "superseded")
    assert tuple(result["details"][k] for k in ("from", "to", "current")) == case.recorded


# -- a lost answer, a conflict ------------------------------------------------------------------


@pytest.mark.parametrize("action", sorted(CASES))
async def test_a_write_that_landed_although_its_answer_was_lost_is_not_made_again(
    action: str, harness: OpenHarness
) -> None:
    """The client times out, the apiserver then commits: the retry re-applies the recorded intent, and
    finds it done (``factor: 1.5`` is not applied to its own result)."""
    case = CASES[action]
    async with harness(case.books, request_timeout=30) as h:
        h.cluster.apply(case.manifest(case.planned[0]))
        generation = h.get()["metadata"]["generation"]
        h.cluster.faults.hang(method="PATCH", path=PATCH)
        task = h.start()
        await h.answer_lost("PATCH", PATCH, request_timeout=30)
        await h.until_done(task)
        ex = await h.execution()
        after = h.get()
    assert steps_of(ex) == [("main", action, "ok")] and ex["results"][0]["details"]["attempts"] == 2
    assert after["metadata"]["generation"] == generation + 1  # one change, not two
    assert case.value(h) == case.planned[1]


async def test_a_conflict_replans_set_resources_on_top_of_the_other_change(harness: OpenHarness) -> None:
    """A 409 means ours was refused: the factor applies to the limit someone set meanwhile (2.5Gi x 1.5)."""
    case = CASES["set_resources"]
    async with harness(case.books) as h:
        h.cluster.apply(with_memory("2Gi"))
        h.cluster.faults.hang(method="PATCH", path=PATCH)
        task = h.start()
        await h.cluster.requests.arrival("PATCH", PATCH)
        h.cluster.patch("deployments", NS, "web", "application/strategic-merge-patch+json",
                        {"spec": {"template": {"spec": {"containers": [
                            {"name": "app", "resources": {"limits": {"memory": "2560Mi"}}}]}}}})
        h.cluster.faults.release()
        await h.until_done(task)
        ex = await h.execution()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert [p.status for p in patches] == [409, 200]
    assert case.value(h) == "3840Mi"
    assert (ex["results"][0]["details"]["from"], ex["results"][0]["details"]["to"]) == (
        {"limits": {"memory": "2560Mi"}}, {"limits": {"memory": "3840Mi"}})
