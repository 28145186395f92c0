"""An unreliable apiserver: conflicts, throttling, 5xx and hung requests are retried within bounds;
client errors fail at once with the apiserver's own words.  Every case ends in a recorded result.

Retry backoffs and request timeouts run on the virtual clock: the tests move time exactly
when the executor has started waiting (``VirtualClock.sleeping``), never by real sleeps.
"""

from __future__ import annotations

import pytest

from remediator.executors.kube import ROUTINE_ATTEMPTS
from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, db, playbook, steps_of, web

RESTART = playbook("- action: restart\n")
POOL = playbook("- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n")
SCALE = playbook("- action: scale\n  by: 2\n")
PATCH = f"/namespaces/{NS}/deployments/web$"


async def test_a_real_conflict_rereads_and_reapplies_on_top_of_the_other_change(harness: OpenHarness) -> None:
    async with harness({"fix": POOL}) as h:
        h.cluster.apply(web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        h.cluster.faults.hang(method="PATCH", path=PATCH)
        task = h.start()
        await h.cluster.requests.arrival("PATCH", PATCH)
        # someone else changes the deployment while our patch is in flight: our resourceVersion is stale now
        h.cluster.patch("deployments", NS, "web", "application/strategic-merge-patch+json",
                        {"spec": {"template": {"spec": {"containers": [
                            {"name": "app", "env": [{"name": "LOG_LEVEL", "value": "debug"}]}]}}}})
        h.cluster.faults.release()
        await h.until_done(task)
        ex = await h.execution()
        after = h.get()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert ex is not None and steps_of(ex) == [("main", "resize_pool", "ok")]
    assert [p.status for p in patches] == [409, 200]
    assert patches[0].body["metadata"]["resourceVersion"] != patches[1].body["metadata"]["resourceVersion"]
    env = {e["name"]: e["value"] for e in after["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"DB_POOL_MAX_SIZE": "30", "LOG_LEVEL": "debug"}  # both changes, neither lost


async def test_a_conflict_with_someone_elses_scale_builds_on_their_change(harness: OpenHarness) -> None:
    """A 409 means our write was refused: the retry plans again from the object as it is now."""
    async with harness({"fix": SCALE}) as h:
        h.cluster.apply(web(replicas=3))
        h.cluster.faults.hang(method="PUT", path="/scale$")
        task = h.start()
        await h.cluster.requests.arrival("PUT", "/scale$")
        h.cluster.patch_scale("deployments", NS, "web", "application/merge-patch+json",
                              {"spec": {"replicas": 10}})  # a person scales up by hand meanwhile
        h.cluster.faults.release()
        await h.until_done(task)
        ex = await h.execution()
        puts = h.cluster.requests.matching("PUT", "/scale$")
        replicas = h.get()["spec"]["replicas"]
    assert [p.status for p in puts] == [409, 200]
    assert replicas == 12  # by 2 on top of their 10, never back down to 5
    assert (ex["results"][0]["details"]["from"], ex["results"][0]["details"]["to"]) == (10, 12)


async def test_an_injected_conflict_on_the_scale_put_is_retried_with_a_fresh_read(harness: OpenHarness) -> None:
    async with harness({"fix": SCALE}) as h:
        h.cluster.apply(web(replicas=3))
        h.cluster.faults.conflict(method="PUT", path="/scale$", times=2)
        ex = await h.fire()
        puts = h.cluster.requests.matching("PUT", "/scale$")
        gets = h.cluster.requests.matching("GET", "/scale$")
        replicas = h.get()["spec"]["replicas"]
    assert steps_of(ex) == [("main", "scale", "ok")]
    assert [p.status for p in puts] == [409, 409, 200] and len(gets) == 3
    assert replicas == 5  # by 2 once, not three times


async def test_conflicts_have_their_own_bound_and_do_not_spend_the_fault_budget(harness: OpenHarness) -> None:
    """A 409 is a controller's status write between our read and our write, not a fault: with
    ``retries: 1`` (no retry for faults) three conflicts in a row are still re-read and retried."""
    async with harness({"fix": SCALE}, retries=1) as h:
        h.cluster.apply(web(replicas=3))
        h.cluster.faults.conflict(method="PUT", path="/scale$", times=3)
        ex = await h.fire()
        puts = h.cluster.requests.matching("PUT", "/scale$")
    assert steps_of(ex) == [("main", "scale", "ok")]
    assert [p.status for p in puts] == [409, 409, 409, 200]
    assert ex["results"][0]["details"]["attempts"] == 4


async def test_endless_conflicts_give_up_after_the_routine_bound(harness: OpenHarness) -> None:
    async with harness({"fix": SCALE}) as h:
        h.cluster.apply(web(replicas=3))
        h.cluster.faults.conflict(method="PUT", path="/scale$", times=None)
        ex = await h.fire()
        puts = h.cluster.requests.matching("PUT", "/scale$")
        replicas = h.get()["spec"]["replicas"]
    assert ex["status"] == "failed" and replicas == 3
    assert len(puts) == ROUTINE_ATTEMPTS
    assert f"gave up after {ROUTINE_ATTEMPTS} attempts" in ex["results"][0]["message"]


async def test_429_waits_exactly_the_retry_after_the_apiserver_asked_for(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}) as h:
        h.cluster.apply(web())
        h.cluster.faults.throttle(method="PATCH", path=PATCH, retry_after=7)
        task = h.start()
        assert await h.sleeping_for(7)
        assert [p.status for p in h.cluster.requests.matching("PATCH", PATCH)] == [429]
        await h.advance(7)
        await h.until_done(task)
        ex = await h.execution()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert steps_of(ex) == [("main", "restart", "ok")]
    assert [p.status for p in patches] == [429, 200]
    assert (ex["results"][0]["started_at"], ex["results"][0]["finished_at"]) == ("2026-11-22T10:00:00Z",
                                                                                 "2026-11-22T10:00:07Z")


async def test_a_status_bodied_429_is_honoured_too(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}) as h:
        h.cluster.apply(web())
        h.cluster.faults.throttle(method="GET", path=PATCH, retry_after=3, status_body=True)
        task = h.start()
        assert await h.sleeping_for(3)
        await h.advance(3)
        await h.until_done(task)
        ex = await h.execution()
    assert steps_of(ex) == [("main", "restart", "ok")]


async def test_5xx_is_retried_with_backoff_until_it_succeeds(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}) as h:
        h.cluster.apply(web())
        h.cluster.faults.server_error(503, method="PATCH", path=PATCH, times=2)
        ex = await h.fire()
        statuses = [p.status for p in h.cluster.requests.matching("PATCH", PATCH)]
        annotations = h.get()["spec"]["template"]["metadata"]["annotations"]
    assert steps_of(ex) == [("main", "restart", "ok")]
    assert statuses == [503, 503, 200]
    details = ex["results"][0]["details"]
    assert details["attempts"] == 3 and all(e.startswith("503 Service Unavailable") for e in details["retried"])
    assert "kubectl.kubernetes.io/restartedAt" in annotations


async def test_5xx_that_never_stops_gives_up_after_the_bounded_attempts(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}, retries=4) as h:
        h.cluster.apply(web())
        h.cluster.faults.server_error(500, method="PATCH", path=PATCH, times=None, message="etcdserver: leader changed")
        ex = await h.fire()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert ex["status"] == "failed"
    assert len(patches) == 4
    message = ex["results"][0]["message"]
    assert "500" in message and "etcdserver: leader changed" in message and "gave up after 4 attempts" in message


async def test_a_hung_api_times_out_on_the_clock_and_the_retry_succeeds(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}, request_timeout=30) as h:
        h.cluster.apply(web())
        h.cluster.faults.hang(method="PATCH", path=PATCH)
        task = h.start()
        await h.cluster.requests.arrival("PATCH", PATCH)
        assert await h.sleeping_for(30)
        await h.advance(30)
        await h.until_done(task)
        ex = await h.execution()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert steps_of(ex) == [("main", "restart", "ok")]
    assert len(patches) == 2 and patches[1].status == 200


async def test_an_api_that_always_hangs_ends_in_a_recorded_failure_not_a_hang(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}, request_timeout=30, retries=3) as h:
        h.cluster.apply(web())
        h.cluster.faults.hang(method="PATCH", path=PATCH, times=None)
        task = h.start()
        for n in (1, 2, 3):
            await h.cluster.requests.arrival(where=lambda r, n=n: len(h.cluster.requests.matching("PATCH", PATCH)) >= n)
            await h.sleeping_for(30)
            await h.advance(30)
            if n < 3:  # the backoff before the next attempt
                await h.advance(await h.clock.sleeping(lambda left: left <= 15))
        await h.until_done(task)
        ex = await h.execution()
    assert ex["status"] == "failed"
    assert ex["results"][0]["message"] == (
        "restart on Deployment/shop/web: the Kubernetes API did not answer in time (gave up after 3 attempts)")


async def test_404_fails_at_once_with_the_apiservers_message(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}) as h:
        ex = await h.fire("ghost")
        requests = h.cluster.requests.matching(path="/deployments/ghost")
    assert len(requests) == 1
    assert ex["results"][0]["message"] == (
        'restart on Deployment/shop/ghost: 404 Not Found: deployments.apps "ghost" not found')


async def test_403_fails_at_once_with_the_apiservers_message(harness: OpenHarness) -> None:
    async with harness({"fix": RESTART}) as h:
        h.cluster.apply(web())
        h.cluster.faults.fail(403, method="PATCH", path=PATCH)
        ex = await h.fire()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert len(patches) == 1
    message = ex["results"][0]["message"]
    assert message.startswith(
        'restart on Deployment/shop/web: 403 Forbidden: deployments.apps "web" is forbidden: User "')
    assert 'cannot patch resource "deployments" in API group "apps" in the namespace "shop"' in message


async def test_422_fails_at_once_with_the_apiservers_message(harness: OpenHarness) -> None:
    invalid = 'spec.template.spec.containers[0].env[0].value: Invalid value: "30": must be a number'
    async with harness({"fix": POOL}) as h:
        h.cluster.apply(web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        h.cluster.faults.fail(422, method="PATCH", path=PATCH, message=invalid)
        ex = await h.fire()
        patches = h.cluster.requests.matching("PATCH", PATCH)
    assert len(patches) == 1
    assert ex["status"] == "failed" and invalid in ex["results"][0]["message"]
    assert "422" in ex["results"][0]["message"]


LANDED_CASES = {
    # action: (playbook steps, (method, path) of the write that hangs)
    "scale": ("- action: scale\n  by: 2\n", ("PUT", "/scale$")),
    "resize_pool": ("- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n", ("PATCH", PATCH)),
    "rollback": ("- action: rollback\n", ("PATCH", PATCH)),
    "restart": ("- action: restart\n", ("PATCH", PATCH)),
}


@pytest.mark.parametrize("action", sorted(LANDED_CASES))
async def test_a_change_that_landed_although_its_answer_was_lost_is_not_applied_again(
    action: str, harness: OpenHarness
) -> None:
    """The apiserver commits the write, but the client has already timed out: the retry must see it is done."""
    steps, (method, path) = LANDED_CASES[action]
    async with harness({"fix": playbook(steps)}, request_timeout=30) as h:
        h.cluster.apply(web(replicas=3, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        h.cluster.apply(web(replicas=3, image="registry.example/web:2.0",
                            env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        generation = h.get()["metadata"]["generation"]
        h.cluster.faults.hang(method=method, path=path)
        task = h.start()
        await h.answer_lost(method, path, request_timeout=30)
        await h.until_done(task)
        ex = await h.execution()
        after = h.get()
    assert steps_of(ex) == [("main", action, "ok")]
    assert ex["results"][0]["details"]["attempts"] == 2
    assert after["metadata"]["generation"] == generation + 1  # one change, not two
    if action == "scale":
        assert after["spec"]["replicas"] == 5
    if action == "resize_pool":
        assert after["spec"]["template"]["spec"]["containers"][0]["env"] == [
            {"name": "DB_POOL_MAX_SIZE", "value": "30"}]
    if action == "rollback":  # not rolled forward again by a second "undo"
        assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:1.0"


async def test_a_statefulset_pod_deleted_although_the_answer_was_lost_is_not_deleted_again(
    harness: OpenHarness,
) -> None:
    """db-0 comes back under the same name: the retry must recognise the new pod and leave it alone."""
    steps = '- action: delete_pod\n  pod: "{{ labels.pod }}"\n'
    async with harness({"fix": playbook(steps, kind="StatefulSet")}, request_timeout=30) as h:
        h.cluster.apply(db(replicas=2))
        old_uid = h.get("db-0", "pods")["metadata"]["uid"]
        h.cluster.faults.hang(method="DELETE", path="/pods/db-0$")
        task = h.start("db", pod="db-0")
        # the client gives up; the apiserver deletes db-0, and the controller recreates it
        await h.answer_lost("DELETE", "/pods/db-0$", request_timeout=30, changes="pods")
        await h.until_done(task)
        ex = await h.execution()
        new_uid = h.get("db-0", "pods")["metadata"]["uid"]
        deletes = h.cluster.requests.matching("DELETE", "/pods/")
    assert steps_of(ex) == [("main", "delete_pod", "ok")]
    assert new_uid != old_uid
    assert len(deletes) == 1  # the new db-0 was not deleted too
    assert "already deleted" in ex["results"][0]["message"]


async def test_a_pod_someone_else_deleted_while_ours_was_in_flight_is_not_deleted_again(harness: OpenHarness) -> None:
    """Our DELETE carries the old pod's uid: its 409 means that pod is gone, and db-0 is now a new pod."""
    steps = '- action: delete_pod\n  pod: "{{ labels.pod }}"\n'
    async with harness({"fix": playbook(steps, kind="StatefulSet")}) as h:
        h.cluster.apply(db(replicas=2))
        h.cluster.faults.hang(method="DELETE", path="/pods/db-0$")
        task = h.start("db", pod="db-0")
        await h.cluster.requests.arrival("DELETE", "/pods/db-0$")
        h.cluster.delete("pods", NS, "db-0")  # someone else was quicker; the controller recreates db-0
        replacement = h.get("db-0", "pods")["metadata"]["uid"]
        h.cluster.faults.release()
        await h.until_done(task)
        ex = await h.execution()
        deletes = [r.status for r in h.cluster.requests.matching("DELETE", "/pods/")]
        still_there = h.get("db-0", "pods")["metadata"]["uid"]
    assert steps_of(ex) == [("main", "delete_pod", "ok")]
    assert deletes == [409] and still_there == replacement
    assert ex["results"][0]["message"] == "pod db-0 was already deleted (by someone else)"
