"""A rollback plans only from a revision history that already holds the Deployment's current template.

``observedGeneration == generation`` does not say that: the Deployment controller handles
a write that changes ``replicas`` (a "scaling event", seen from the ``desired-replicas``
annotation of the active ReplicaSets) by scaling the ReplicaSets it has, *without*
creating the one for a new template, and still reports the generation observed.  The
ReplicaSet for the new template (and its revision number) comes on a later sync.  Until
then the newest revision is the *previous* template, and "the revision before the newest"
(kubectl's undo) is two changes back.

Under load that window is a few hundred milliseconds (the every-action test in
test_controllers.py met it: revisions [4, 6, 7]).  Here a ResourceQuota that allows no
further ReplicaSet holds it open for as long as the test needs: the controller takes the
scaling path, reports the generation observed, and then fails to create the new ReplicaSet.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from remediator.core import rollout
from remediator.testing.control_plane import poll_until
from tests.real_kube.helpers import SETTLE_TIMEOUT, apply_web, executor, run_step, settled, update_web


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def read(api: Any, namespace: str) -> dict[str, Any]:
    dep: dict[str, Any] = api.sanitize_for_serialization(
        await client.AppsV1Api(api).read_namespaced_deployment("web", namespace))
    return dep


async def replicasets(api: Any, namespace: str) -> list[dict[str, Any]]:
    listed = api.sanitize_for_serialization(await client.AppsV1Api(api).list_namespaced_replica_set(namespace))
    return list(listed.get("items") or [])


async def allow_no_more_replicasets(api: Any, namespace: str) -> None:
    """A quota of exactly the ReplicaSets there are, in force (the quota controller has counted them)."""
    core = client.CoreV1Api(api)
    count = len(await replicasets(api, namespace))
    quota = {"metadata": {"name": "no-more-replicasets"}, "spec": {"hard": {"count/replicasets.apps": str(count)}}}
    await core.create_namespaced_resource_quota(namespace, quota)

    async def counted() -> bool | None:
        q = api.sanitize_for_serialization(await core.read_namespaced_resource_quota("no-more-replicasets", namespace))
        return True if (q.get("status") or {}).get("used", {}).get("count/replicasets.apps") == str(count) else None

    await poll_until(counted, limit=SETTLE_TIMEOUT, what="the quota controller to count the ReplicaSets")


async def test_a_rollback_waits_for_the_revision_of_the_current_template_not_just_the_observed_generation(
    kube_admin: Any, namespace: str
) -> None:
    await apply_web(kube_admin, namespace)  # revision 1: web:1.0
    await update_web(kube_admin, namespace, "registry.example/web:2.0")  # revision 2: web:2.0
    await allow_no_more_replicasets(kube_admin, namespace)
    # One write that scales and changes the template (as a release does): revision 3 would be web:3.0.
    body = {"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "app", "image": "registry.example/web:3.0"}]}}}}
    await client.AppsV1Api(kube_admin).patch_namespaced_deployment("web", namespace, body)

    async def observed_without_revision() -> dict[str, Any] | None:
        dep = await read(kube_admin, namespace)
        return dep if dep["status"].get("observedGeneration") == dep["metadata"]["generation"] else None

    dep = await poll_until(observed_without_revision, limit=SETTLE_TIMEOUT,
                           what="the Deployment controller to observe the scaling write")
    # The state this test is about, as the real controller leaves it: generation observed, no revision of web:3.0.
    history = {rollout.revision_of(rs): image_of(rs) for rs in await replicasets(kube_admin, namespace)}
    assert history == {1: "registry.example/web:1.0", 2: "registry.example/web:2.0"}, history
    assert image_of(dep) == "registry.example/web:3.0"

    live = executor(kube_admin, server_dry_run=False)
    waited = await run_step(live, namespace, "rollback", {})
    # kubectl's "revision before the newest" would be revision 1 (web:1.0), two changes back.
    assert waited.status == "failed", (waited.status, waited.message)
    assert "no revision of the current pod template yet" in waited.message, waited.message
    assert image_of(await read(kube_admin, namespace)) == "registry.example/web:3.0"  # nothing written

    # Once the controller may create the ReplicaSet, web:3.0 is revision 3 and the rollback goes to revision 2.
    await client.CoreV1Api(kube_admin).delete_namespaced_resource_quota("no-more-replicasets", namespace)
    # A metadata-only write wakes the controller (its retries of the refused create may have run out).
    await client.AppsV1Api(kube_admin).patch_namespaced_deployment(
        "web", namespace, {"metadata": {"annotations": {"example/nudge": "1"}}})
    await settled(kube_admin, namespace)
    rolled = await run_step(live, namespace, "rollback", {})
    assert rolled.status == "ok", rolled.message
    assert rolled.details["revision"] == 2
    assert image_of(await read(kube_admin, namespace)) == "registry.example/web:2.0"
