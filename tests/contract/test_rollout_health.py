"""wait_healthy's Deployment rules that depend on which ReplicaSet holds the current template: a progress
deadline kept from an earlier rollout, and a pause.  The Deployment controller's status is the same on
both apiservers, and so is the executor's verdict.
"""

from __future__ import annotations

import asyncio
from typing import Any

from remediator.core import rollout
from remediator.testing.control_plane import poll_until
from tests.contract.conftest import LIMIT, Backend
from tests.contract.test_watch import events_until_healthy
from tests.real_kube.helpers import executor, run_step

BROKEN = "registry.example/web:broken"


def progressing(dep: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in dep["status"].get("conditions") or [] if c["type"] == "Progressing"), {})


async def replicasets(backend: Backend) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = backend.api.sanitize_for_serialization(
        await backend.apps.list_namespaced_replica_set(backend.namespace, label_selector="app=web"))["items"]
    return listed


def running(sets: list[dict[str, Any]], image: str) -> str:
    """The name of the ReplicaSet whose pods run ``image``."""
    [name] = [rs["metadata"]["name"] for rs in sets
              if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image]
    return str(name)


async def test_a_progress_deadline_kept_from_the_release_rolled_back_does_not_fail_the_rollback(
    backend: Backend,
) -> None:
    """A release times out; the rollback is observed before it shows progress (Recreate: its pods start once
    the broken ones are gone), and until then the status still says ProgressDeadlineExceeded, naming the
    broken release's ReplicaSet.  kubectl's rule alone fails the rollback there (and on_failure would run);
    judged with the ReplicaSets, that condition is the earlier rollout's and the wait goes on."""
    await backend.web(replicas=2, strategy={"type": "Recreate"}, progressDeadlineSeconds=2)
    backend.never_ready(BROKEN)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": BROKEN}]}}}}
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, body)

    polls = 0

    async def timed_out() -> dict[str, Any] | None:
        nonlocal polls
        backend.tick()
        dep = await backend.read()
        observed = dep["status"].get("observedGeneration") == dep["metadata"]["generation"]
        if observed and progressing(dep).get("reason") == "ProgressDeadlineExceeded":
            return dep
        polls += 1
        if backend.fake is None and polls % 30 == 0:
            # The real controller judges the deadline when it syncs the Deployment: it asks for a sync at
            # the deadline, and a busy one was seen to miss it (1 run in 3), with nothing else to wake it
            # (pods that never turn ready change nothing).  A cluster's informers resync; here an update
            # of the metadata (no spec change, no new generation) wakes it, every 3 s.
            await backend.apps.patch_namespaced_deployment(
                "web", backend.namespace, {"metadata": {"annotations": {"contract.test/nudge": str(polls)}}})
        return None

    dep = await poll_until(timed_out, limit=LIMIT, what="the broken release to exceed its progress deadline",
                           interval=0.1)
    timed_out_message = f'ReplicaSet "{running(await replicasets(backend), BROKEN)}" has timed out progressing.'
    assert progressing(dep)["message"] == timed_out_message
    backend.ready_again()
    watching = asyncio.create_task(events_until_healthy(backend, (await backend.read())["metadata"]["resourceVersion"]))
    kube = executor(backend.api, server_dry_run=False)

    rolled = await run_step(kube, backend.namespace, "rollback", {})
    waited = await run_step(kube, backend.namespace, "wait_healthy", {"timeout": LIMIT})
    seen = await watching

    assert rolled.status == "ok", rolled.message
    assert (waited.status, waited.message) == ("ok", 'deployment "web" successfully rolled out')
    generation = rolled.after["metadata"]["generation"]
    stale = [e["object"] for e in seen if e["object"]["status"].get("observedGeneration") == generation
             and progressing(e["object"]).get("reason") == "ProgressDeadlineExceeded"]
    assert stale, "both controllers report the rollback observed while the broken release's condition stays"
    held = await replicasets(backend)
    current = rollout.template_replicaset(stale[0], held)
    assert current is not None and current["metadata"]["name"] == running(held, "registry.example/web:1.0")
    for dep in stale:
        assert progressing(dep)["message"] == timed_out_message
        assert rollout.deployment_health(dep).failed  # kubectl's rule alone
        verdict = rollout.deployment_health(dep, held)
        assert (verdict.done, verdict.failed) == (False, False), verdict.message


async def test_a_paused_deployment_fails_wait_healthy_at_once_while_its_template_has_not_rolled_out(
    backend: Backend,
) -> None:
    """A paused Deployment's controller makes no ReplicaSet for a new template (resize_pool, set_env, set_image
    and set_resources write one): the wait fails at once, saying it is paused, instead of running out its
    timeout on "0 out of 3 new replicas".  Paused, it still scales, and a scale is waited for as usual."""
    await backend.web(replicas=2, env=[{"name": "POOL", "value": "10"}])
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, {"spec": {"paused": True}})
    await backend.settled()
    kube = executor(backend.api, server_dry_run=False)

    assert (await run_step(kube, backend.namespace, "scale", {"to": 3})).status == "ok"
    scaled = await run_step(kube, backend.namespace, "wait_healthy", {"timeout": LIMIT})
    assert (scaled.status, scaled.message) == ("ok", 'deployment "web" successfully rolled out')

    resized = await run_step(kube, backend.namespace, "resize_pool", {"container": "app", "env": "POOL", "by": 5})
    assert resized.status == "ok", resized.message
    waited = await run_step(kube, backend.namespace, "wait_healthy", {"timeout": LIMIT})
    assert (waited.status, waited.message) == ("failed", (
        f'wait_healthy on Deployment/{backend.namespace}/web: deployment "web" is paused: its pod template has not '
        "rolled out (0 of 3 replicas updated) and will not until it is resumed (kubectl rollout resume "
        "deployment/web)"))

    await backend.apps.patch_namespaced_deployment("web", backend.namespace, {"spec": {"paused": False}})
    resumed = await run_step(kube, backend.namespace, "wait_healthy", {"timeout": LIMIT})
    assert (resumed.status, resumed.message) == ("ok", 'deployment "web" successfully rolled out')
    [app] = (await backend.read())["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [{"name": "POOL", "value": "15"}]
