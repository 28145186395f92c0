"""The same actions on a StatefulSet: restart, scale and rollback through ControllerRevisions, rollout status."""

from __future__ import annotations

from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, db, playbook, steps_of

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def sts_playbook(steps: str) -> dict[str, str]:
    return {"fix": playbook(steps, kind="StatefulSet")}


async def test_restart_and_wait_on_a_statefulset(harness: OpenHarness) -> None:
    async with harness(sts_playbook("- action: restart\n- action: wait_healthy\n  timeout: 10m\n")) as h:
        h.cluster.ready_delay = 10
        h.cluster.apply(db(replicas=2))
        await h.advance(30)
        before = h.get("db", "statefulsets")
        task = h.start("db")
        assert "/statefulsets" in (await h.cluster.requests.arrival(where=lambda r: r.watch)).path
        await h.advance(60)
        await h.until_done(task)
        ex = await h.execution()
        after = h.get("db", "statefulsets")
        revisions = h.cluster.revisions_of(NS, "db")
    assert steps_of(ex) == [("main", "restart", "ok"), ("main", "wait_healthy", "ok")]
    assert RESTARTED_AT in after["spec"]["template"]["metadata"]["annotations"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert [r["revision"] for r in revisions] == [1, 2]
    assert after["status"]["currentRevision"] == after["status"]["updateRevision"]
    assert ex["results"][1]["message"] == "statefulset rolling update complete"


async def test_scale_a_statefulset_through_its_scale_subresource(harness: OpenHarness) -> None:
    async with harness(sts_playbook("- action: scale\n  to: 5\n")) as h:
        h.cluster.apply(db(replicas=3))
        ex = await h.fire("db")
        [put] = h.cluster.requests.matching("PUT", "/statefulsets/db/scale$")
        replicas = h.get("db", "statefulsets")["spec"]["replicas"]
    assert steps_of(ex) == [("main", "scale", "ok")]
    assert replicas == 5 and put.body["spec"] == {"replicas": 5}


async def test_rollback_a_statefulset_to_its_previous_controller_revision(harness: OpenHarness) -> None:
    async with harness(sts_playbook("- action: rollback\n")) as h:
        h.cluster.apply(db())
        first = h.get("db", "statefulsets")
        h.cluster.apply(db(image="registry.example/db:2.0"))
        ex = await h.fire("db")
        after = h.get("db", "statefulsets")
        [patch] = h.cluster.requests.matching("PATCH", "/statefulsets/db$")
        revisions = h.cluster.revisions_of(NS, "db")
    assert steps_of(ex) == [("main", "rollback", "ok")]
    assert after["spec"]["template"] == first["spec"]["template"]
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body["spec"]["template"]["$patch"] == "replace"
    assert ex["results"][0]["details"]["revision"] == 1
    # the controller re-used revision 1's data as the newest revision
    assert revisions[-1]["revision"] == 3


async def test_rollback_a_statefulset_without_history_fails_clearly(harness: OpenHarness) -> None:
    async with harness(sts_playbook("- action: rollback\n")) as h:
        h.cluster.apply(db())
        ex = await h.fire("db")
    assert ex["results"][0]["message"] == "rollback on StatefulSet/shop/db: no last revision to roll back to"


async def test_a_partial_restart_names_the_pods_it_keeps_by_their_ordinals(harness: OpenHarness) -> None:
    """Pods are numbered from spec.ordinals.start; the partition counts from there (the controller's
    replica index), so with start 5 and partition 2 the restart replaces db-7 and up and keeps db-5, db-6.
    (The fake names its pods from 0 whatever the start: only the message is asserted; the rest of partial
    restarts is in tests/contract/test_statefulsets.py, on both backends.)"""
    manifest = db(replicas=4)
    manifest["spec"]["ordinals"] = {"start": 5}
    manifest["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    async with harness(sts_playbook("- action: restart\n")) as h:
        h.cluster.apply(manifest)
        ex = await h.fire("db")
        stamp = h.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        annotations = h.get("db", "statefulsets")["spec"]["template"]["metadata"]["annotations"]
    assert steps_of(ex) == [("main", "restart", "ok")]
    assert ex["results"][0]["message"] == (
        f"restarted StatefulSet/{NS}/db (restartedAt {stamp}); only pods with ordinal >= 7 are replaced "
        "(partition 2): db-5, db-6 not restarted")
    assert annotations[RESTARTED_AT] == stamp
