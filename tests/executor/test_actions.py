"""Each action, run by the pipeline through kubernetes-asyncio, changes the fake's objects exactly as kubectl would.

Assertions are on the fake's stored objects and on the requests it received (method,
content type, body), not on what the executor says it did.  Semantics:
shared/spec/kubernetes.md §1-5.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from remediator.core.rollout import HASH_LABEL, REVISION
from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, db, playbook, steps_of, web

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"


def without(obj: dict[str, Any], *paths: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for path in paths:
        cur = out
        for key in path[:-1]:
            cur = cur.get(key) or {}
        cur.pop(path[-1], None)
    return out


# -- restart ------------------------------------------------------------------------------


async def test_restart_sets_the_restarted_at_annotation_and_rolls_out(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: restart\n")}) as h:
        h.cluster.apply(web())
        before = h.get()
        ex = await h.fire()
        after = h.get()

    assert steps_of(ex) == [("main", "restart", "ok")]
    stamp = h.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert after["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: stamp}
    # exactly that change: the rest of the spec is as it was, and the template change is a new generation
    assert without(after["spec"], ("template", "metadata", "annotations")) == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    [patch] = h.cluster.requests.matching("PATCH", f"/namespaces/{NS}/deployments/web$")
    assert patch.content_type == "application/strategic-merge-patch+json"
    # kubectl's patch, with the resourceVersion read (as every other write: a change since is a 409)
    read_version = ex["results"][0]["before"]["metadata"]["resourceVersion"]
    assert patch.body == {"metadata": {"resourceVersion": read_version},
                          "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    # the controller rolled the pods: a second ReplicaSet now owns them all
    old, new = h.cluster.replicasets_of(NS, "web")
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 3)
    result = ex["results"][0]
    assert {"path": "/spec/template/metadata/annotations", "op": "add",
            "after": {RESTARTED_AT: stamp}} in result["details"]["diff"]


async def test_restart_refuses_a_paused_deployment(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: restart\n")}) as h:
        h.cluster.apply(web(paused=True))
        rv = h.get()["metadata"]["resourceVersion"]
        ex = await h.fire()
        assert h.get()["metadata"]["resourceVersion"] == rv
        assert h.cluster.requests.writes() == []
    assert ex["status"] == "failed"
    assert "can't restart paused deployment (run rollout resume first)" in ex["results"][0]["message"]


# -- scale --------------------------------------------------------------------------------


async def test_scale_puts_the_scale_subresource_with_its_resource_version(harness: OpenHarness) -> None:
    steps = "- action: scale\n  factor: 1.5\n  max: 10\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(web(replicas=3))
        before = h.get()
        ex = await h.fire()
        after = h.get()

    assert steps_of(ex) == [("main", "scale", "ok")]
    assert after["spec"]["replicas"] == 5
    assert without(after["spec"], ("replicas",)) == without(before["spec"], ("replicas",))
    [put] = h.cluster.requests.matching("PUT", "/deployments/web/scale$")
    assert put.body["kind"] == "Scale" and put.body["spec"] == {"replicas": 5}
    assert put.body["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert h.cluster.requests.matching("PATCH") == []
    details = ex["results"][0]["details"]
    assert (details["from"], details["to"]) == (3, 5)
    assert len(h.cluster.pods_of(NS, "web")) == 5


async def test_scale_is_clamped_by_the_step_max_and_the_playbook_max_replicas(harness: OpenHarness) -> None:
    pbs = {
        "a": playbook("- action: scale\n  by: 10\n  max: 8\n", name="by-ten", alertname="Slow"),
        "b": playbook("- action: scale\n  to: 50\n", name="to-fifty", alertname="Hot", guardrails="max_replicas: 6\n"),
    }
    async with harness(pbs) as h:
        h.cluster.apply(web("api", replicas=2))
        h.cluster.apply(web("cart", replicas=2))
        await h.record("api", alertname="Slow")
        await h.record("cart", alertname="Hot")
        await h.until_done(h.rt.worker.drain())
        executions = {e["playbook"]: e for e in await h.rt.store.list_executions()}
        assert (h.get("api")["spec"]["replicas"], h.get("cart")["spec"]["replicas"]) == (8, 6)
        full = await h.rt.store.get_execution(executions["to-fifty"]["id"])
    assert {name: e["status"] for name, e in executions.items()} == {"by-ten": "succeeded", "to-fifty": "succeeded"}
    assert full is not None and (full["results"][0]["details"]["from"], full["results"][0]["details"]["to"]) == (2, 6)


def autoscaler(name: str, deployment: str, **spec: int) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}, **spec}}


async def test_scale_refuses_a_workload_an_autoscaler_owns(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: scale\n  by: 2\n")}) as h:
        h.cluster.apply(web(replicas=3))
        h.cluster.apply(autoscaler("web-cpu", "web", minReplicas=2, maxReplicas=6))
        ex = await h.fire()
        writes = h.cluster.requests.writes()
        replicas = h.get()["spec"]["replicas"]
    assert ex["status"] == "failed" and writes == [] and replicas == 3
    assert ex["results"][0]["message"] == (
        "scale on Deployment/shop/web: Deployment/shop/web is scaled by HorizontalPodAutoscaler web-cpu "
        "(minReplicas 2, maxReplicas 6): a manual scale would be undone at its next sync; change the "
        "autoscaler's bounds instead")


async def test_an_autoscaler_of_another_workload_does_not_stop_a_scale(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: scale\n  by: 2\n")}) as h:
        h.cluster.apply(web(replicas=3))
        h.cluster.apply(autoscaler("api", "api", maxReplicas=6))
        ex = await h.fire()
        assert h.get()["spec"]["replicas"] == 5
    assert ex["status"] == "succeeded"


async def test_scale_down_by_a_factor_respects_min(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: scale\n  factor: 0.2\n  min: 2\n")}) as h:
        h.cluster.apply(web(replicas=4))
        ex = await h.fire()
        assert h.get()["spec"]["replicas"] == 2
    assert (ex["results"][0]["details"]["from"], ex["results"][0]["details"]["to"]) == (4, 2)


# -- resize_pool ----------------------------------------------------------------------------


POOL = "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n  max: 50\n"


async def test_resize_pool_patches_one_env_var_with_a_resource_version(harness: OpenHarness) -> None:
    env = [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_POOL_MAX_SIZE", "value": "20"},
           {"name": "REGION", "value": "eu"}]
    async with harness({"fix": playbook(POOL)}) as h:
        h.cluster.apply(web(env=env))
        before = h.get()
        ex = await h.fire()
        after = h.get()

    assert steps_of(ex) == [("main", "resize_pool", "ok")]
    app, sidecar = after["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_POOL_MAX_SIZE", "value": "30"},
                          {"name": "REGION", "value": "eu"}]
    assert sidecar == before["spec"]["template"]["spec"]["containers"][1]
    [patch] = h.cluster.requests.matching("PATCH", "/deployments/web$")
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "DB_POOL_MAX_SIZE", "value": "30"}]}]}}},
    }
    details = ex["results"][0]["details"]
    assert (details["from"], details["to"]) == (20, 30)
    assert {"path": "/spec/template/spec/containers/0/env/1/value", "op": "replace", "before": "20",
            "after": "30"} in details["diff"]


async def test_resize_pool_replaces_a_value_from_reference_with_value_from_null(harness: OpenHarness) -> None:
    env = [{"name": "DB_POOL_MAX_SIZE", "valueFrom": {"configMapKeyRef": {"name": "pool", "key": "size"}}}]
    steps = "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  to: 40\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(web(env=env))
        ex = await h.fire()
        after = h.get()
    assert steps_of(ex) == [("main", "resize_pool", "ok")], ex["results"]
    assert after["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "DB_POOL_MAX_SIZE", "value": "40"}]
    [patch] = h.cluster.requests.matching("PATCH", "/deployments/web$")
    assert patch.body["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "DB_POOL_MAX_SIZE", "value": "40", "valueFrom": None}]


async def test_resize_pool_adds_a_missing_variable_only_with_to(harness: OpenHarness) -> None:
    steps = "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  to: 25\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(web(env=[{"name": "LOG_LEVEL", "value": "info"}]))
        await h.fire()
        env = h.get()["spec"]["template"]["spec"]["containers"][0]["env"]
    # a strategic-merge patch puts a new list entry first, as kube-apiserver does
    assert env == [{"name": "DB_POOL_MAX_SIZE", "value": "25"}, {"name": "LOG_LEVEL", "value": "info"}]


async def test_resize_pool_failures_are_clear_and_change_nothing(harness: OpenHarness) -> None:
    pbs = {
        "a": playbook(POOL.replace("container: app", "container: worker"), name="no-container", alertname="A"),
        "b": playbook(POOL, name="not-a-number", alertname="B"),
        "c": playbook(POOL, name="unset", alertname="C"),
    }
    async with harness(pbs) as h:
        h.cluster.apply(web("api", env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        h.cluster.apply(web("cart", env=[{"name": "DB_POOL_MAX_SIZE", "value": "lots"}]))
        h.cluster.apply(web("orders", env=[]))
        for name, alertname in (("api", "A"), ("cart", "B"), ("orders", "C")):
            await h.record(name, alertname=alertname)
        await h.until_done(h.rt.worker.drain())
        executions = await h.rt.store.list_executions(limit=20)
        messages = []
        for e in executions:
            full = await h.rt.store.get_execution(e["id"])
            messages += [r["message"] for r in full["results"] if r["status"] == "failed"]
        writes = h.cluster.requests.writes()
    assert writes == []
    text = "\n".join(messages)
    assert "container 'worker' not found in Deployment/shop/api (containers: app, sidecar)" in text
    assert "env DB_POOL_MAX_SIZE in container 'app' does not hold a whole number" in text and "lots" not in text
    assert "env DB_POOL_MAX_SIZE in container 'app' is not set: only `to:` can set it" in text


# -- rollback -----------------------------------------------------------------------------


def two_revisions(h: Any, *, cause: str = "deploy 1.0") -> tuple[dict[str, Any], dict[str, Any]]:
    v1 = web()
    v1["metadata"]["annotations"] = {CHANGE_CAUSE: cause}
    h.cluster.apply(v1)
    first = h.get()
    v2 = web(image="registry.example/web:2.0")
    v2["metadata"]["annotations"] = {CHANGE_CAUSE: "deploy 2.0"}
    h.cluster.apply(v2)
    return first, h.get()


async def test_rollback_restores_the_previous_template_and_reuses_its_replica_set(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: rollback\n")}) as h:
        first, second = two_revisions(h)
        assert second["metadata"]["annotations"][REVISION] == "2"
        rs_v1 = h.cluster.replicasets_of(NS, "web")[0]
        ex = await h.fire()
        after = h.get()
        replicasets = h.cluster.replicasets_of(NS, "web")

    assert steps_of(ex) == [("main", "rollback", "ok")]
    assert after["spec"]["template"] == first["spec"]["template"]
    # the controller reused revision 1's ReplicaSet: it is now revision 3, with 1 in its history
    assert after["metadata"]["annotations"][REVISION] == "3"
    assert after["metadata"]["annotations"][CHANGE_CAUSE] == "deploy 1.0"
    assert len(replicasets) == 2
    reused = next(rs for rs in replicasets if rs["metadata"]["name"] == rs_v1["metadata"]["name"])
    assert reused["metadata"]["annotations"][REVISION] == "3"
    assert reused["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert reused["spec"]["replicas"] == 3
    [patch] = h.cluster.requests.matching("PATCH", "/deployments/web$")
    assert patch.content_type == "application/json-patch+json"
    template = copy.deepcopy(rs_v1["spec"]["template"])
    template["metadata"]["labels"].pop(HASH_LABEL)
    assert patch.body[0] == {"op": "replace", "path": "/spec/template", "value": template}
    assert patch.body[1]["path"] == "/metadata/annotations"
    assert patch.body[1]["value"][CHANGE_CAUSE] == "deploy 1.0"
    assert patch.body[1]["value"][REVISION] == "2"  # the deployment's own revision annotation is kept
    assert ex["results"][0]["details"]["revision"] == 1


async def test_rollback_twice_walks_the_revision_history(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: rollback\n", guardrails="cooldown: 0s\n")}) as h:
        two_revisions(h)
        await h.fire()
        h.clock.advance_sync(60)
        await h.record(severity="again")
        await h.until_done(h.rt.worker.drain())
        after = h.get()
        replicasets = {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs
                       for rs in h.cluster.replicasets_of(NS, "web")}
    # undo of the undo: back on 2.0, whose ReplicaSet is now revision 4 and remembers 2
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:2.0"
    assert after["metadata"]["annotations"][REVISION] == "4"
    assert replicasets["registry.example/web:2.0"]["metadata"]["annotations"][REVISION_HISTORY] == "2"
    assert replicasets["registry.example/web:1.0"]["metadata"]["annotations"][REVISION_HISTORY] == "1"


async def test_rollback_to_a_named_revision(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: rollback\n  to_revision: 1\n")}) as h:
        first, _ = two_revisions(h)
        h.cluster.apply(web(image="registry.example/web:3.0"))
        ex = await h.fire()
        after = h.get()
    assert ex["results"][0]["details"]["revision"] == 1
    assert after["spec"]["template"] == first["spec"]["template"]
    assert after["metadata"]["annotations"][REVISION] == "4"


@pytest.mark.parametrize(("step", "refusal"), [
    ("- action: rollback\n", 'no rollout history found for deployment "fresh"'),
    ("- action: rollback\n  to_revision: 7\n", "unable to find specified revision 7 in history"),
], ids=["previous", "to-revision"])
async def test_rollback_refusals_are_kubectls(harness: OpenHarness, step: str, refusal: str) -> None:
    async with harness({"a": playbook(step, name="undo")}) as h:
        h.cluster.apply(web("fresh"))  # one revision only
        ex = await h.fire("fresh")
        writes = h.cluster.requests.writes()
    assert refusal in ex["results"][0]["message"]
    assert writes == []


async def test_rollback_to_the_current_template_is_skipped(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: rollback\n  to_revision: 2\n")}) as h:
        two_revisions(h)
        rv = h.get()["metadata"]["resourceVersion"]
        ex = await h.fire()
        assert h.get()["metadata"]["resourceVersion"] == rv
    assert steps_of(ex) == [("main", "rollback", "skipped")]
    assert ex["results"][0]["message"] == "skipped rollback (current template already matches revision 2)"


async def test_rollback_refuses_a_paused_deployment(harness: OpenHarness) -> None:
    async with harness({"fix": playbook("- action: rollback\n")}) as h:
        two_revisions(h)
        h.cluster.patch("deployments", NS, "web", "application/merge-patch+json", {"spec": {"paused": True}})
        ex = await h.fire()
    assert ex["status"] == "failed"
    assert "you cannot rollback a paused deployment; resume it first" in ex["results"][0]["message"]


# -- delete_pod ---------------------------------------------------------------------------


async def test_delete_pod_deletes_that_pod_with_a_uid_precondition(harness: OpenHarness) -> None:
    async with harness({"fix": playbook('- action: delete_pod\n  pod: "{{ labels.pod }}"\n')}) as h:
        h.cluster.apply(web(replicas=2))
        victim, survivor = sorted(h.cluster.pods_of(NS, "web"), key=lambda p: p["metadata"]["name"])
        ex = await h.fire(pod=victim["metadata"]["name"])
        pods = {p["metadata"]["name"] for p in h.cluster.pods_of(NS, "web")}
    assert steps_of(ex) == [("main", "delete_pod", "ok")]
    assert victim["metadata"]["name"] not in pods and survivor["metadata"]["name"] in pods
    assert len(pods) == 2  # the ReplicaSet replaced it
    [delete] = h.cluster.requests.matching("DELETE", "/pods/")
    assert delete.path.endswith(f"/namespaces/{NS}/pods/{victim['metadata']['name']}")
    assert delete.body["preconditions"] == {"uid": victim["metadata"]["uid"]}


async def test_delete_pod_leaves_a_terminating_pod_alone(harness: OpenHarness) -> None:
    """A bound pod deleted by someone else stays Terminating for its grace period: deleting it
    again would change nothing, so the step says so and sends no DELETE."""
    async with harness({"fix": playbook('- action: delete_pod\n  pod: "{{ labels.pod }}"\n')}) as h:
        h.cluster.termination_delay = 30
        h.cluster.apply(web(replicas=2))
        victim = sorted(p["metadata"]["name"] for p in h.cluster.pods_of(NS, "web"))[0]
        h.cluster.delete("pods", NS, victim)
        terminating = h.cluster.get("pods", NS, victim)
        assert terminating is not None and terminating["metadata"]["deletionTimestamp"]
        ex = await h.fire(pod=victim)
        deletes = h.cluster.requests.matching("DELETE", "/pods/")
    assert steps_of(ex) == [("main", "delete_pod", "ok")]
    assert ex["results"][0]["message"] == f"pod {victim} is already terminating"
    assert ex["results"][0]["details"]["terminating"] is True
    assert deletes == []


async def test_delete_pod_refuses_a_pod_of_another_workload(harness: OpenHarness) -> None:
    async with harness({"fix": playbook('- action: delete_pod\n  pod: "{{ labels.pod }}"\n')}) as h:
        h.cluster.apply(web(replicas=1))
        h.cluster.apply(web("db", replicas=1))
        [other] = h.cluster.pods_of(NS, "db")
        ex = await h.fire(pod=other["metadata"]["name"])
        assert h.cluster.requests.matching("DELETE") == []
    assert f"pod {other['metadata']['name']} does not belong to Deployment/shop/web" in ex["results"][0]["message"]


DELETE_NAMED_POD = playbook('- action: delete_pod\n  pod: "{{ labels.pod }}"\n', on_failure="- action: rollback\n")


def _refused_and_kept(h: Any, ex: dict[str, Any], pod: str, target: str = "Deployment/shop/web") -> None:
    """Refused as input (nothing changed, so no on_failure), no DELETE sent, and the pod still there."""
    assert steps_of(ex) == [("main", "delete_pod", "failed")]
    assert f"pod {pod} does not belong to {target}" in ex["results"][0]["message"]
    assert ex["results"][0]["details"]["refused_input"] is True
    assert "wrote" not in ex["results"][0]["details"]
    assert h.cluster.requests.matching("DELETE") == []
    assert h.cluster.get("pods", NS, pod) is not None


async def test_delete_pod_refuses_a_pod_of_a_workload_whose_labels_include_the_targets(harness: OpenHarness) -> None:
    """Labels are not ownership: web-canary's pods carry app=web (and track=canary), so they match web's
    selector, but web's ReplicaSets do not own them.  An alert naming one must not delete it for web."""
    canary = web("web-canary", replicas=1)
    canary["spec"]["selector"]["matchLabels"] = {"app": "web", "track": "canary"}
    canary["spec"]["template"]["metadata"]["labels"] = {"app": "web", "track": "canary"}
    async with harness({"fix": DELETE_NAMED_POD}) as h:
        h.cluster.apply(web(replicas=2))
        h.cluster.apply(canary)
        [victim] = h.cluster.pods_of(NS, "web-canary")
        ex = await h.fire(pod=victim["metadata"]["name"])
        _refused_and_kept(h, ex, victim["metadata"]["name"])


async def test_delete_pod_refuses_an_unowned_pod_carrying_the_targets_labels(harness: OpenHarness) -> None:
    """A debug pod someone started by hand with app=web belongs to no workload: web's controller would not
    replace it, so deleting it is not a remediation of web."""
    async with harness({"fix": DELETE_NAMED_POD}) as h:
        h.cluster.apply(web(replicas=2))
        h.cluster.apply({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "debug-shell", "namespace": NS, "labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "sh", "image": "busybox"}]}})
        ex = await h.fire(pod="debug-shell")
        _refused_and_kept(h, ex, "debug-shell")


async def test_delete_pod_refuses_a_pod_the_targets_match_expressions_exclude(harness: OpenHarness) -> None:
    """web selects app=web, track NotIn (canary): a canary pod matches the matchLabels alone, not the selector."""
    target = web(replicas=1)
    target["spec"]["selector"]["matchExpressions"] = [{"key": "track", "operator": "NotIn", "values": ["canary"]}]
    canary = web("web-canary", replicas=1)
    canary["spec"]["selector"]["matchLabels"] = {"app": "web", "track": "canary"}
    canary["spec"]["template"]["metadata"]["labels"] = {"app": "web", "track": "canary"}
    async with harness({"fix": DELETE_NAMED_POD}) as h:
        h.cluster.apply(target)
        h.cluster.apply(canary)
        [victim] = h.cluster.pods_of(NS, "web-canary")
        ex = await h.fire(pod=victim["metadata"]["name"])
        _refused_and_kept(h, ex, victim["metadata"]["name"])


async def test_delete_pod_of_a_statefulset_refuses_a_pod_it_does_not_own(harness: OpenHarness) -> None:
    async with harness({"fix": playbook('- action: delete_pod\n  pod: "{{ labels.pod }}"\n', kind="StatefulSet")}) as h:
        h.cluster.apply(db(replicas=2))
        h.cluster.apply({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "db-debug", "namespace": NS, "labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "sh", "image": "busybox"}]}})
        ex = await h.fire("db", pod="db-debug")
        _refused_and_kept(h, ex, "db-debug", "StatefulSet/shop/db")
        own = sorted(p["metadata"]["name"] for p in h.cluster.pods_of(NS, "db", kind="StatefulSet"))[0]
        ex = await h.fire("db", pod=own, instance="2")
        [delete] = h.cluster.requests.matching("DELETE", "/pods/")
    assert steps_of(ex) == [("main", "delete_pod", "ok")]  # its own pod is still deleted
    assert delete.path.endswith(f"/pods/{own}")


# -- wait_healthy -------------------------------------------------------------------------


async def test_wait_healthy_follows_the_rollout_until_it_is_done(harness: OpenHarness) -> None:
    steps = "- action: restart\n- action: wait_healthy\n  timeout: 5m\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.ready_delay = 20
        h.cluster.apply(web(replicas=2))
        await h.advance(20)
        task = h.start()
        watch = await h.cluster.requests.arrival(where=lambda r: r.watch)
        assert watch.query["fieldSelector"] == "metadata.name=web" and watch.query["resourceVersion"]
        await h.advance(39)  # one new pod at a time (maxSurge 1, maxUnavailable 0), ready after 20 s each
        await h.advance(1)
        await h.until_done(task)
        ex = await h.execution()
    assert steps_of(ex) == [("main", "restart", "ok"), ("main", "wait_healthy", "ok")]
    assert ex["results"][1]["message"] == 'deployment "web" successfully rolled out'
    # it finished when the rollout did, not when its timeout ran out
    assert ex["results"][1]["started_at"] == "2026-11-22T10:00:20Z"
    assert ex["results"][1]["finished_at"] == "2026-11-22T10:01:00Z"
