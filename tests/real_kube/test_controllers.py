"""The executor against controllers that run asynchronously: every mutating action, several times in a row,
while the Deployment and ReplicaSet controllers and the kubelet keep writing status.

On a real cluster a write is followed by the controllers' own writes: the Deployment's
``observedGeneration`` lags its ``generation``, and each status write changes the
``resourceVersion`` a patch may carry (a 409 for us).  None of that is a failure: the
executor re-reads and retries conflicts on a budget of their own, and plans a rollback only
from history the controller has caught up with: an observed generation is not enough (a
loaded controller that meets the scale and the template changes in one sync observes the
generation before it makes the template's ReplicaSet; planned then, rollbacks went to
revisions [4, 6, 7], the first one two changes back: test_rollback_history.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from remediator.clock import SystemClock
from remediator.core import rollout
from remediator.executors.kube import RESTARTED_AT, KubeExecutor
from remediator.ports import StepResult
from remediator.settings import KubernetesSettings
from remediator.testing.control_plane import Kubelet, PodPolicy, poll_until
from tests.real_kube.helpers import SETTLE_TIMEOUT, apply_web, run_step, update_web

REPEATS = 3
#: What the executor may retry here: conflicts with the controllers' status writes, and a rollback waiting
#: for the Deployment controller to observe the last write and give its template a revision.
ROUTINE = ("409", "the Deployment controller has not yet observed",
           "the Deployment controller has no revision of the current pod template yet",
           "the Deployment controller records revision")


async def a_pod_of_the_current_template(api: Any, namespace: str) -> str:
    """A live pod of the ReplicaSet that runs web's current template.

    The rollout deletes pods of the old ReplicaSets as it scales them down, at any moment:
    a pod picked from the whole namespace may be gone (or going) by the time the step
    reads it, and the executor then rightly refuses or skips it.  The current template's
    ReplicaSet is only scaled up, so only the step deletes its pods.  It exists once the
    controller has caught up with the last template change; that is polled (bounded).  (So
    the first rollback here no longer meets the window before that ReplicaSet exists, which
    it met only under load: test_rollback_history.py holds that window open every time.)
    """
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)

    async def pick() -> str | None:
        dep = api.sanitize_for_serialization(await apps.read_namespaced_deployment("web", namespace))
        template = rollout.template_without_hash(dep["spec"]["template"])
        listed = api.sanitize_for_serialization(await apps.list_namespaced_replica_set(namespace))
        current = [rs for rs in listed["items"] if rollout.template_without_hash(rs["spec"]["template"]) == template]
        if not current:
            return None
        pod_hash = current[0]["metadata"]["labels"][rollout.HASH_LABEL]
        pods = await core.list_namespaced_pod(namespace, label_selector=f"{rollout.HASH_LABEL}={pod_hash}")
        live = sorted(p.metadata.name for p in pods.items if not p.metadata.deletion_timestamp)
        return live[0] if live else None

    return await poll_until(pick, limit=SETTLE_TIMEOUT, what="a live pod of web's current ReplicaSet")


class SteppingClock(SystemClock):
    """Real time, except that each reading is one second later than the last.

    A restart's stamp has kubectl's resolution (one second); three restarts within one
    second would be one restart and two "already applied".  Stepping the stamp keeps
    each restart a real one without the test waiting a second between them.
    """

    def __init__(self) -> None:
        self.readings = 0

    def now(self) -> datetime:
        self.readings += 1
        return super().now() + timedelta(seconds=self.readings)


async def test_every_action_several_times_in_a_row_while_controllers_write_has_no_spurious_failure(
    kube_admin: Any, namespace: str, kubelet: Kubelet
) -> None:
    # Pods become ready a moment after binding, and deleted pods linger: status writes all along.
    kubelet.manage(namespace, PodPolicy(ready_after=0.2, finalize_after=0.3))
    await apply_web(kube_admin, namespace, mark=False, env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}])
    await update_web(kube_admin, namespace, "registry.example/web:2.0", mark=False)
    kube = KubeExecutor(kube_admin, SteppingClock(), KubernetesSettings(request_timeout=10.0, retries=1))
    results: list[tuple[str, StepResult]] = []

    async def run(action: str, params: dict[str, Any]) -> StepResult:
        result = await run_step(kube, namespace, action, params)
        results.append((action, result))
        return result

    for _ in range(REPEATS):
        await run("restart", {})
    for _ in range(REPEATS):
        await run("scale", {"by": 1})
    for _ in range(REPEATS):
        await run("resize_pool", {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 10})
    for _ in range(REPEATS):
        await run("delete_pod", {"pod": await a_pod_of_the_current_template(kube_admin, namespace)})
    rollbacks = [await run("rollback", {}) for _ in range(REPEATS)]

    failures = [(action, r.status, r.message) for action, r in results if r.status != "ok"]
    assert not failures, failures
    stamps = [r.details["restartedAt"] for action, r in results if action == "restart"]
    assert len(set(stamps)) == REPEATS
    scaled = [(r.details["from"], r.details["to"]) for action, r in results if action == "scale"]
    assert scaled == [(2, 3), (3, 4), (4, 5)]
    pool = [(r.details["from"], r.details["to"]) for action, r in results if action == "resize_pool"]
    assert pool == [(20, 30), (30, 40), (40, 50)]
    deleted = [r.message for action, r in results if action == "delete_pod"]
    assert all(m.startswith("deleted pod ") for m in deleted), deleted
    # Each rollback saw the history its predecessor left, once the controller had renumbered it:
    # revision N goes back to N-1's template, which becomes N+1 (kubectl's undo, twice, toggles).
    revisions = [r.details["revision"] for r in rollbacks]
    assert revisions[1] == revisions[0] + 1 and revisions[2] == revisions[1] + 1, revisions

    healthy = await run_step(kube, namespace, "wait_healthy", {"timeout": 30})
    assert healthy.status == "ok", healthy.message
    dep = kube_admin.sanitize_for_serialization(await client.AppsV1Api(kube_admin).read_namespaced_deployment(
        "web", namespace))
    assert dep["spec"]["replicas"] == 5
    assert RESTARTED_AT in (dep["spec"]["template"]["metadata"].get("annotations") or {})
    retried = {action: r.details.get("retried", []) for action, r in results if r.details.get("retried")}
    assert all(all(e.startswith(ROUTINE) for e in errors) for errors in retried.values()), retried
