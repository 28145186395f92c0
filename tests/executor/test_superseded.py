"""A resumed step never reverts a change made after it was planned.

The daemon dies after its write reached the apiserver but before it recorded the
result; its target lock lapses; the target is changed again (by seven later
executions, or by a person); then the old execution resumes.  Re-applying its
write-ahead intent would put the old value back (21 -> 14).  Instead the step is
recorded ``superseded`` with the values involved, nothing is written, and the
execution stops without ``on_failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.ports import ReceivedAlert
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, Harness, open_harness, playbook, steps_of, web
from tests.executor.test_resume import crash_while
from tests.payloads import alert_json, payload

LOCK = "lock_ttl: 10m\n"
ROLLBACK = "- action: rollback\n"
POOL_BY_ONE = {"fix": playbook("- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 1\n",
                               guardrails=LOCK, on_failure=ROLLBACK)}
SCALE_BY_ONE = {"fix": playbook("- action: scale\n  by: 1\n", guardrails=LOCK, on_failure=ROLLBACK)}


def pool(h: Harness) -> int:
    [entry] = h.get()["spec"]["template"]["spec"]["containers"][0]["env"]
    return int(entry["value"])


def replicas(h: Harness) -> int:
    return int(h.get()["spec"]["replicas"])


CASES: dict[str, tuple[dict[str, str], str, str, Callable[[Harness], int], Callable[[int], dict[str, Any]]]] = {
    "resize_pool": (POOL_BY_ONE, "PATCH", f"/namespaces/{NS}/deployments/web$", pool,
                    lambda n: web(env=[{"name": "DB_POOL_MAX_SIZE", "value": str(n)}])),
    "scale": (SCALE_BY_ONE, "PUT", "/scale$", replicas, lambda n: web(replicas=n)),
}


async def crashed_after_13_to_14(
    case: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """13 -> 14 lands at the apiserver; the daemon dies before recording it; its lock and lease lapse."""
    books, method, path, value, manifest = CASES[case]
    kube.cluster.apply(manifest(13))
    kube.cluster.apply(web(image="registry.example/web:0.9", **_same(manifest(13))))  # a release to roll back to
    kube.cluster.apply(manifest(13))
    kube.cluster.faults.hang(method=method, path=path)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        await crash_while(h, h.start(), method, path)
        assert value(h) == 14
    kube.cluster.faults.clear()
    await h.advance(601)  # the 10-minute lock and the 5-minute lease have both lapsed


def _same(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    return {"replicas": spec["replicas"], "env": spec["template"]["spec"]["containers"][0].get("env")}


def writes_after(kube: FakeKube, before: int) -> list[str]:
    return [f"{r.method} {r.path}" for r in kube.cluster.requests.writes()[before:]]


@pytest.mark.parametrize("case", sorted(CASES))
async def test_seven_later_executions_are_not_reverted_by_the_resumed_one(
    case: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    books, _, _, value, _ = CASES[case]
    await crashed_after_13_to_14(case, tmp_path, settings_factory, vclock, kube)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        for i in range(7):  # seven later alerts, each its own execution on the now free target, decided and
            # run (by another replica, say) before anyone resumes the old one
            [alert] = validate_payload(payload(alert_json({"alertname": "Broken", "namespace": NS,
                                                           "deployment": "web", "instance": f"i{i}"}))).alerts
            await h.until_done(h.rt.pipeline.process(ReceivedAlert(alert, h.clock.now())))
        assert value(h) == 21
        [*later, first] = await h.rt.store.list_executions(limit=10)
        assert [e["status"] for e in later] == ["succeeded"] * 7
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        full = await h.rt.store.get_execution(first["id"])
        breakers = (await h.rt.guardrails.status()).breakers
        assert value(h) == 21  # not 14
        assert writes_after(kube, writes) == []  # nothing written, no rollback either
    assert full["status"] == "superseded"
    assert steps_of(full) == [("main", case, "superseded")]
    # the audit keeps what it had planned from (resize_pool: the var's whole state, a value or a reference)
    assert full["results"][0]["details"]["intent"]["from"] == ({"value": "13"} if case == "resize_pool" else 13)
    assert "fix" not in breakers or breakers["fix"]["consecutive_failures"] == 0


@pytest.mark.parametrize("theirs", [21, 13], ids=["another value", "the old value put back"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_change_made_by_hand_meanwhile_is_not_reverted_by_the_resumed_step(
    case: str, theirs: int, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
    kube: FakeKube,
) -> None:
    """Nobody else took the lock (a person used kubectl): the lock is taken back, and the executor itself
    sees the change.  21: the object holds neither the planned-from nor the planned-to value.  13: the
    person put back the value the step found, on purpose; the object holds the planned-from value again,
    but its spec changed since the intent (its generation moved twice: the step's write, then the
    person's), and re-applying 14 would revert the person."""
    books, _, _, value, manifest = CASES[case]
    await crashed_after_13_to_14(case, tmp_path, settings_factory, vclock, kube)
    kube.cluster.apply(manifest(theirs))
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        full = await h.execution()
        assert value(h) == theirs
        assert writes_after(kube, writes) == []  # no re-apply, no rollback
        now = h.get()["metadata"]["generation"]
    assert full["status"] == "superseded"
    [result] = full["results"]
    assert (result["action"], result["status"]) == (case, "superseded")
    assert {k: result["details"][k] for k in ("from", "to", "current")} == {"from": 13, "to": 14, "current": theirs}
    if theirs == 13:
        assert result["details"]["generation"] == {"intent": now - 2, "now": now}
        assert "its spec changed since this step's write-ahead intent" in result["message"]


_SETS = {"resize_pool": "value", "scale": "replicas"}


async def crashed_before_13_to_14_landed(
    case: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The intent of 13 -> 14 is recorded; its write is answered 503 (not applied); the daemon dies in the
    backoff before the retry; its lock and lease lapse."""
    books, method, path, value, manifest = CASES[case]
    kube.cluster.apply(manifest(13))
    kube.cluster.faults.fail(503, method=method, path=path, times=None)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        task = h.start()
        await h.cluster.requests.arrival(method, path)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert value(h) == 13
        [started] = (await h.execution())["results"]  # what the resume goes by
        generation, uid = h.get()["metadata"]["generation"], h.get()["metadata"]["uid"]
        assert started["details"]["intent"] == {_SETS[case]: 14, "from": {"value": "13"} if case == "resize_pool"
                                                else 13, "generation": generation, "uid": uid}
    kube.cluster.faults.clear()
    await h.advance(601)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_resumed_step_whose_write_never_landed_still_applies_it_once(
    case: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The object holds the planned-from value and its spec is as the intent found it (its generation has
    not moved; the controllers' status writes meanwhile do not move it): the intent is re-applied (13 -> 14,
    once)."""
    books, method, _, value, _ = CASES[case]
    await crashed_before_13_to_14_landed(case, tmp_path, settings_factory, vclock, kube)
    kube.cluster.reconcile()
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        full = await h.execution()
        assert value(h) == 14
        assert [w.method for w in kube.cluster.requests.writes()[writes:]] == [method]
    assert full["status"] == "succeeded"
    assert (full["results"][0]["details"]["from"], full["results"][0]["details"]["to"]) == (13, 14)


RESTART = {"fix": playbook("- action: restart\n", guardrails=LOCK, on_failure=ROLLBACK)}
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restarted_at(h: Harness) -> str | None:
    annotations = h.get()["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get(RESTARTED_AT)


def with_restart(stamp: str | None) -> dict[str, Any]:
    manifest = web()
    if stamp is not None:
        manifest["spec"]["template"]["metadata"].setdefault("annotations", {})[RESTARTED_AT] = stamp
    return manifest


async def crashed_restarting(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> str:
    """The restart's PATCH lands; the daemon dies before recording it; its lock and lease lapse.
    Returns the stamp it wrote."""
    kube.cluster.apply(web())
    kube.cluster.faults.hang(method="PATCH", path=f"/namespaces/{NS}/deployments/web$")
    async with open_harness(tmp_path, settings_factory, vclock, kube, RESTART) as h:
        await crash_while(h, h.start(), "PATCH", f"/namespaces/{NS}/deployments/web$")
        stamp = restarted_at(h)
    kube.cluster.faults.clear()
    await h.advance(601)
    assert stamp is not None
    return stamp


@pytest.mark.parametrize("since", ["restarted again by hand", "unchanged", "never landed"])
async def test_a_resumed_restart_restarts_once_and_never_over_a_later_restart(
    since: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """A restart is not a number, but the same holds: its intent records the annotation it found
    and the one it writes.  Resumed, it finds its own stamp (done, no write), the one it found (the
    write never landed: made once), or another (someone restarted it since: superseded, no write)."""
    stamp = await crashed_restarting(tmp_path, settings_factory, vclock, kube)
    later = "2026-11-22T10:30:00Z"
    if since == "restarted again by hand":
        kube.cluster.apply(with_restart(later))
    elif since == "never landed":
        kube.cluster.apply(with_restart(None))
    async with open_harness(tmp_path, settings_factory, vclock, kube, RESTART) as h:
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        full = await h.execution()
        now = restarted_at(h)
        written = writes_after(kube, writes)
    [result] = full["results"]
    if since == "restarted again by hand":
        assert (full["status"], result["status"], now, written) == ("superseded", "superseded", later, [])
        assert {k: result["details"][k] for k in ("from", "to", "current")} == {"from": None, "to": stamp,
                                                                                   "current": later}
    elif since == "unchanged":
        assert (full["status"], result["status"], now, written) == ("succeeded", "ok", stamp, [])
        assert result["message"] == f"restart at {stamp} was already applied"
    else:
        assert (full["status"], result["status"], now) == ("succeeded", "ok", stamp)
        assert written == [f"PATCH /apis/apps/v1/namespaces/{NS}/deployments/web"]
