"""A remediation that makes things worse: wait_healthy fails within its timeout and on_failure puts it back.

The bad release is the fake's readiness fault: every new pod of the deployment runs but
never becomes ready, as when a pool size the database rejects crashes the app's probe.
"""

from __future__ import annotations

from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, playbook, steps_of, web

REVISION = "deployment.kubernetes.io/revision"
RESIZE_THEN_WAIT = playbook(
    "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n"
    "- action: wait_healthy\n  timeout: 2m\n",
    on_failure="- action: rollback\n",
)


def env_of(dep: dict[str, object]) -> dict[str, str]:
    containers = dep["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    return {e["name"]: e["value"] for e in containers[0]["env"]}


async def test_a_rollout_that_never_becomes_healthy_fails_at_its_timeout_and_rolls_back(
    harness: OpenHarness,
) -> None:
    async with harness({"fix": RESIZE_THEN_WAIT}) as h:
        h.cluster.ready_delay = 5
        h.cluster.apply(web(replicas=2, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        await h.advance(5)
        h.cluster.faults.never_ready(NS, "web")
        task = h.start()
        await h.cluster.requests.arrival(where=lambda r: r.watch)
        await h.advance(119)
        await h.advance(1)
        await h.until_done(task)
        ex = await h.execution()
        after = h.get()
        replicasets = h.cluster.replicasets_of(NS, "web")
        await h.advance(10)  # the old pods never went away (maxUnavailable 0): the rollback is healthy at once
        healthy_pods = [p for p in h.cluster.pods_of(NS, "web")
                        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])]

    assert ex["status"] == "failed"
    assert steps_of(ex) == [("main", "resize_pool", "ok"), ("main", "wait_healthy", "failed"),
                            ("on_failure", "rollback", "ok")]
    wait = ex["results"][1]
    assert wait["message"].startswith("wait_healthy on Deployment/shop/web: Deployment/shop/web did not become "
                                      "healthy within 120s (last seen: ")
    assert (wait["started_at"], wait["finished_at"]) == ("2026-11-22T10:00:05Z", "2026-11-22T10:02:05Z")
    # on_failure put the old pool size back, on revision 1's ReplicaSet (now revision 3)
    assert env_of(after) == {"DB_POOL_MAX_SIZE": "20"}
    assert after["metadata"]["annotations"][REVISION] == "3"
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in replicasets) == ["2", "3"]
    assert len(healthy_pods) == 2


async def test_progress_deadline_exceeded_fails_wait_healthy_before_its_timeout(harness: OpenHarness) -> None:
    playbooks = {"fix": RESIZE_THEN_WAIT.replace("timeout: 2m", "timeout: 10m")}
    async with harness(playbooks) as h:
        h.cluster.ready_delay = 5
        h.cluster.apply(web(replicas=2, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}],
                            progressDeadlineSeconds=60))
        await h.advance(5)
        h.cluster.faults.never_ready(NS, "web")
        task = h.start()
        await h.cluster.requests.arrival(where=lambda r: r.watch)
        await h.advance(61)
        await h.until_done(task)
        ex = await h.execution()
        after = h.get()
    assert steps_of(ex) == [("main", "resize_pool", "ok"), ("main", "wait_healthy", "failed"),
                            ("on_failure", "rollback", "ok")]
    assert ex["results"][1]["message"] == (
        'wait_healthy on Deployment/shop/web: deployment "web" exceeded its progress deadline')
    assert ex["results"][1]["finished_at"] < "2026-11-22T10:02:00Z"  # long before the 10-minute timeout
    assert env_of(after) == {"DB_POOL_MAX_SIZE": "20"}


async def test_a_deployment_deleted_while_waiting_fails_clearly(harness: OpenHarness) -> None:
    steps = "- action: restart\n- action: wait_healthy\n  timeout: 5m\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.ready_delay = 5
        h.cluster.apply(web())
        await h.advance(5)
        task = h.start()
        await h.cluster.requests.arrival(where=lambda r: r.watch)
        h.cluster.delete("deployments", NS, "web")
        await h.until_done(task)
        ex = await h.execution()
    assert ex["results"][1]["message"] == (
        "wait_healthy on Deployment/shop/web: Deployment/shop/web was deleted while waiting for it")


async def test_a_broken_watch_is_reopened_within_the_same_timeout(harness: OpenHarness) -> None:
    steps = "- action: restart\n- action: wait_healthy\n  timeout: 5m\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.ready_delay = 20
        h.cluster.apply(web(replicas=1))
        await h.advance(20)
        h.cluster.faults.server_error(503, method="GET", path="/deployments$", times=1)
        task = h.start()
        backoff = await h.clock.sleeping(lambda left: left <= 15)  # the watch got a 503
        await h.advance(backoff)  # then it reads and watches again
        await h.cluster.requests.arrival(where=lambda r: len([w for w in h.cluster.requests if w.watch]) == 2)
        await h.advance(20)
        await h.until_done(task)
        ex = await h.execution()
        watches = [w.status for w in h.cluster.requests if w.watch]
    assert steps_of(ex) == [("main", "restart", "ok"), ("main", "wait_healthy", "ok")]
    assert watches[0] == 503 and len(watches) == 2  # (a stream's status is logged when it ends)
