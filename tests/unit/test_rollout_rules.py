"""kubectl's rollout-status and rollout-undo rules (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from remediator.core import rollout
from remediator.core.planning import desired_amount


def dep(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {"name": "web", "uid": "u1", "generation": 2, "annotations": {rollout.REVISION: "2"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a",
                                                                                             "image": "v2"}]}}},
        "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
    }
    base["status"].update(status)
    return base


@pytest.mark.parametrize(
    ("status", "done", "failed", "fragment"),
    [
        ({}, True, False, "successfully rolled out"),
        ({"observedGeneration": 1}, False, False, "spec update to be observed"),
        ({"updatedReplicas": 1}, False, False, "1 out of 3 new replicas"),
        ({"replicas": 4}, False, False, "1 old replicas are pending termination"),
        ({"availableReplicas": 2}, False, False, "2 of 3 updated replicas are available"),
        ({"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
         False, True, "exceeded its progress deadline"),
    ],
)
def test_deployment_health_follows_kubectl(status: dict[str, Any], done: bool, failed: bool, fragment: str) -> None:
    h = rollout.deployment_health(dep(**status))
    assert (h.done, h.failed) == (done, failed) and fragment in h.message


def test_statefulset_health() -> None:
    sts = {"metadata": {"generation": 1}, "spec": {"replicas": 2},
           "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 1, "currentRevision": "a",
                      "updateRevision": "b"}}
    assert not rollout.statefulset_health(sts).done
    sts["status"]["updatedReplicas"] = 2
    assert rollout.statefulset_health(sts).done
    sts["status"]["updatedReplicas"] = 1  # a Terminating pod still counted ready; its replacement not there yet
    assert not rollout.statefulset_health(sts).done
    sts["status"]["updatedReplicas"] = 2
    sts["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    sts["status"]["updatedReplicas"] = 0
    assert not rollout.statefulset_health(sts).done


def rs(revision: int, image: str, owner: str = "u1", extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": f"web-{revision}", "annotations": {rollout.REVISION: str(revision), **(extra or {})},
                     "ownerReferences": [{"uid": owner, "controller": True}]},
        "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": f"h{revision}"}},
                              "spec": {"containers": [{"name": "a", "image": image}]}}},
    }


def pod(name: str, owner: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "ownerReferences": [{"uid": owner, "controller": True}]}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-30T00:00:30Z"
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_a_deployments_own_pods_are_those_of_its_replicasets() -> None:
    d = dep()
    sets = [{"metadata": {"uid": "rs1", "ownerReferences": [{"uid": "u1", "controller": True}]}},
            {"metadata": {"uid": "rs-other", "ownerReferences": [{"uid": "u9", "controller": True}]}}]
    pods = [pod("a", "rs1"), pod("b", "rs-other"), pod("c", "rs1", terminating=True),
            {"metadata": {"name": "orphan"}, "status": {}}]
    assert [p["metadata"]["name"] for p in rollout.own_pods("Deployment", d, pods, sets)] == ["a", "c"]


@pytest.mark.parametrize(("pods", "done", "message"), [
    ([pod("a", "rs1"), pod("b", "rs1"), pod("c", "rs1")], True, "3 of 3 pods are ready and not terminating"),
    ([pod("a", "rs1"), pod("b", "rs1"), pod("c", "rs1", terminating=True)], False,
     "2 of 3 pods are ready and not terminating..."),
    ([pod("a", "rs1"), pod("b", "rs1"), pod("c", "rs1", ready=False)], False,
     "2 of 3 pods are ready and not terminating..."),
    ([pod("a", "rs1"), pod("b", "rs1"), pod("c", "rs1", terminating=True), pod("d", "rs1")], True,
     "3 of 3 pods are ready and not terminating"),  # replaced: the old one may take its grace period
])
def test_a_deployment_is_healthy_by_its_pods_with_replicas_serving(
    pods: list[dict[str, Any]], done: bool, message: str
) -> None:
    h = rollout.pods_health("Deployment", dep(), pods)
    assert (h.done, h.failed, h.message) == (done, False, message)


def sts(replicas: int = 2, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "db", "uid": "s1"}, "spec": {"replicas": replicas, **spec}}


@pytest.mark.parametrize(("workload", "pods", "done", "message"), [
    (sts(), [pod("db-0", "s1"), pod("db-1", "s1")], True, "all 2 pods are ready and not terminating"),
    (sts(), [pod("db-0", "s1", terminating=True), pod("db-1", "s1")], False,
     "Waiting for pod db-0 to be replaced (terminating)..."),
    (sts(), [pod("db-1", "s1")], False, "Waiting for pod db-0 to be created..."),
    (sts(), [pod("db-0", "s1", ready=False), pod("db-1", "s1")], False, "Waiting for pod db-0 to be ready..."),
    # every ordinal, not a count: a surplus pod does not stand in for a missing one
    (sts(), [pod("db-1", "s1"), pod("db-2", "s1", terminating=True), pod("db-3", "s1")], False,
     "Waiting for pod db-0 to be created..."),
    (sts(1), [pod("db-0", "s1"), pod("db-1", "s1", terminating=True)], True,
     "all 1 pods are ready and not terminating"),  # scaled down: db-1 leaving is the point
    (sts(2, ordinals={"start": 5}), [pod("db-5", "s1"), pod("db-6", "s1")], True,
     "all 2 pods are ready and not terminating"),
    (sts(0), [], True, "all 0 pods are ready and not terminating"),
])
def test_a_statefulset_is_healthy_by_its_pods_with_every_ordinal_serving(
    workload: dict[str, Any], pods: list[dict[str, Any]], done: bool, message: str
) -> None:
    own = rollout.own_pods("StatefulSet", workload, [*pods, pod("db-0", "someone-else")], [])
    h = rollout.pods_health("StatefulSet", workload, own)
    assert (h.done, h.failed, h.message) == (done, False, message)


@pytest.mark.parametrize(("kind", "names", "replicas", "kept"), [
    ("Deployment", ["a", "b", "c"], 2, 2),  # the unready go first: at best every serving pod up to replicas
    ("Deployment", ["a"], 2, 1),
    ("StatefulSet", ["db-1", "db-2"], 2, 2),  # OrderedReady: db-2 goes only once db-0 serves again
    ("Parallel", ["db-1", "db-2"], 2, 1),  # db-2 goes at once, serving or not; db-0 is not serving
    ("Parallel", ["db-0", "db-1", "db-2"], 2, 2),
    ("Parallel", ["db-0"], 0, 0),
])
def test_what_a_scale_down_keeps_depends_on_the_kind(kind: str, names: list[str], replicas: int, kept: int) -> None:
    workload = dep() if kind == "Deployment" else sts(3, podManagementPolicy="Parallel" if kind == "Parallel" else
                                                      "OrderedReady")
    kind = "StatefulSet" if kind == "Parallel" else kind
    up = [pod(n, "x") for n in names]
    assert rollout.serving_after_scale_down(kind, workload, up, replicas) == kept


@pytest.mark.parametrize(("selector", "text"), [
    ({"matchLabels": {"app": "web", "tier": "front"}}, "app=web,tier=front"),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]},
                           {"key": "canary", "operator": "DoesNotExist"},
                           {"key": "tier", "operator": "NotIn", "values": ["db"]},
                           {"key": "team", "operator": "Exists"}]},
     "app in (web,api),!canary,tier notin (db),team"),
    ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]}]},
     "app=web,track in (stable)"),
    ({}, ""),
])
def test_a_selector_as_a_label_selector_query(selector: dict[str, Any], text: str) -> None:
    assert rollout.selector_text({"spec": {"selector": selector}}) == text


def test_rollback_to_previous_revision_builds_kubectls_patch() -> None:
    d = dep()
    d["metadata"]["annotations"]["other"] = "dropped"
    plan = rollout.plan_deployment_rollback(d, [rs(1, "v1", extra={"kubernetes.io/change-cause": "v1"}),
                                                rs(2, "v2"), rs(9, "v9", owner="someone-else")])
    assert plan.revision == 1
    assert plan.patch == [
        {"op": "replace", "path": "/spec/template",
         "value": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "v1"}]}}},
        {"op": "add", "path": "/metadata/annotations",
         "value": {rollout.REVISION: "2", "kubernetes.io/change-cause": "v1"}},
    ]


@pytest.mark.parametrize(
    ("d", "sets", "to", "message"),
    [
        (dep(), [rs(2, "v2")], 0, 'no rollout history found for deployment "web"'),
        (dep(), [rs(1, "v1"), rs(2, "v2")], 7, "unable to find specified revision 7 in history"),
    ],
)
def test_rollback_refusals_use_kubectls_messages(d: dict[str, Any], sets: list[dict[str, Any]], to: int,
                                                 message: str) -> None:
    with pytest.raises(rollout.RollbackError, match=message):
        rollout.plan_deployment_rollback(d, sets, to)


def test_rollback_refuses_paused_and_skips_identical_template() -> None:
    paused = dep()
    paused["spec"]["paused"] = True
    with pytest.raises(rollout.RollbackError, match="cannot rollback a paused deployment"):
        rollout.plan_deployment_rollback(paused, [rs(1, "v1"), rs(2, "v2")])
    same = rollout.plan_deployment_rollback(dep(), [rs(1, "v2"), rs(2, "v2")])
    assert same.patch is None and "already matches revision 1" in same.message


def test_diff_reports_changed_paths() -> None:
    a = dep()
    b = copy.deepcopy(a)
    b["spec"]["replicas"] = 5
    b["metadata"]["annotations"]["x/y"] = "1"
    assert rollout.diff(a, b) == [
        {"path": "/metadata/annotations/x~1y", "op": "add", "after": "1"},
        {"path": "/spec/replicas", "op": "replace", "before": 3, "after": 5},
    ]


@pytest.mark.parametrize(
    ("current", "params", "ceiling", "expected"),
    [
        (3, {"to": 5}, None, 5),
        (3, {"by": 2}, None, 5),
        (3, {"by": -5}, None, 0),
        (3, {"factor": 1.5}, None, 5),
        (4, {"factor": 0.5}, None, 2),
        (3, {"by": 10, "max": 8}, None, 8),
        (1, {"by": 1, "min": 3}, None, 3),
        (10, {"factor": 2}, 12, 12),
        (40, {"by": 10, "max": 50}, None, 50),
        # a raise never lowers a value someone already took above the ceiling: the bounds limit
        # what the step adds, they do not take away what is there
        (12, {"by": 2}, 10, 12),
        (12, {"to": 15}, 10, 12),
        (12, {"factor": 1.5}, 10, 12),
        (80, {"by": 10, "max": 50}, None, 80),
        (10, {"by": 2}, 10, 10),
        (9, {"by": 5}, 10, 10),
        (1, {"to": 2, "min": 3}, None, 3),
        # a lowering still lowers, within the bounds
        (12, {"to": 5}, 10, 5),
        (12, {"by": -1}, 10, 10),
        (5, {"by": -4, "min": 3}, None, 3),
        # and never raises a value already below the floor
        (1, {"by": -1, "min": 3}, None, 1),
        (1, {"to": 0, "min": 3}, None, 1),
        (2, {"factor": 0.5, "min": 3}, None, 2),
        (0, {"factor": 0.5, "min": 2}, None, 0),
    ],
)
def test_desired_amount(current: int, params: dict[str, Any], ceiling: int | None, expected: int) -> None:
    assert desired_amount(current, params, ceiling=ceiling) == expected


# -- a progress deadline, a pause: judged with the Deployment's ReplicaSets ---------------------------------


def timed_out(message: str, **status: Any) -> dict[str, Any]:
    return dep(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": message}], **status)


# dep()'s template runs image v2: rs(2, "v2") holds it, rs(1, "v1") held the release before
@pytest.mark.parametrize(("message", "sets", "failed"), [
    ('ReplicaSet "web-2" has timed out progressing.', [rs(1, "v1"), rs(2, "v2")], True),
    # rolled back (or on to another release) from the one that timed out: the controller keeps that
    # one's condition until the new rollout progresses
    ('ReplicaSet "web-1" has timed out progressing.', [rs(1, "v1"), rs(2, "v2")], False),
    ('ReplicaSet "web-1" has timed out progressing.', [rs(1, "v1")], False),  # Recreate: no new RS yet
    # timed out while no ReplicaSet held the template (Recreate waiting on old pods): current while none does
    ('Deployment "web" has timed out progressing.', [rs(1, "v1")], True),
    ('Deployment "web" has timed out progressing.', [rs(1, "v1"), rs(2, "v2")], False),
    ('ReplicaSet "web-2" has timed out progressing.', [rs(1, "v1"), rs(2, "v2", owner="u9")], False),
    ("a wording the rule does not know", [rs(1, "v1"), rs(2, "v2")], True),  # kubectl's rule
])
def test_a_progress_deadline_counts_only_for_the_current_templates_replicaset(
    message: str, sets: list[dict[str, Any]], failed: bool
) -> None:
    d = timed_out(message, updatedReplicas=0, availableReplicas=0)
    h = rollout.deployment_health(d, sets)
    assert (h.done, h.failed) == (False, failed)
    assert h.message == ('deployment "web" exceeded its progress deadline' if failed else
                         "0 out of 3 new replicas have been updated...")
    assert rollout.needs_replicasets(d)
    assert rollout.deployment_health(d).failed  # without them, kubectl's rule: any such condition fails


def paused(**status: Any) -> dict[str, Any]:
    d = dep(**status)
    d["spec"]["paused"] = True
    return d


def test_a_paused_deployment_whose_template_has_not_rolled_out_fails_at_once() -> None:
    assert rollout.needs_replicasets(paused()) and not rollout.needs_replicasets(dep())
    h = rollout.deployment_health(paused(updatedReplicas=0), [rs(1, "v1")])  # no ReplicaSet for v2 while paused
    assert (h.done, h.failed, h.message) == (False, True, (
        'deployment "web" is paused: its pod template has not rolled out (0 of 3 replicas updated) and will not '
        "until it is resumed (kubectl rollout resume deployment/web)"))
    assert not rollout.deployment_health(paused(updatedReplicas=0)).failed  # without the ReplicaSets: it waits

    mid = rs(2, "v2")
    mid["spec"]["replicas"] = 1  # paused mid-rollout: the new ReplicaSet stays at 1
    assert rollout.deployment_health(paused(updatedReplicas=1), [rs(1, "v1"), mid]).failed

    mid["spec"]["replicas"] = 3  # a scale up while paused: the template's ReplicaSet is sized, pods on their way
    h = rollout.deployment_health(paused(updatedReplicas=2), [mid])
    assert (h.done, h.failed, h.message) == (False, False, "2 out of 3 new replicas have been updated...")
    assert rollout.deployment_health(paused(), [mid]).done  # paused once rolled out: healthy


# -- StatefulSets: revisions of the pods, OnDelete -------------------------------------------------------------


def rev_pod(name: str, revision: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    out = pod(name, "s1", ready=ready, terminating=terminating)
    out["metadata"]["labels"] = {rollout.REVISION_LABEL: revision}
    return out


def rolled(replicas: int = 2, strategy: dict[str, Any] | None = None, updated: int = 2) -> dict[str, Any]:
    workload = sts(replicas, updateStrategy=strategy or {"type": "RollingUpdate",
                                                           "rollingUpdate": {"partition": 0}})
    workload["metadata"]["generation"] = 2
    workload["status"] = {"observedGeneration": 2, "replicas": replicas, "readyReplicas": replicas,
                          "updatedReplicas": updated, "currentRevision": "db-old", "updateRevision": "db-new"}
    return workload


def test_a_rolled_statefulset_is_done_whatever_its_current_revision_says() -> None:
    """A condemned pod stuck Terminating outside the range keeps status.replicas above the updated pods, so the
    controller never moves currentRevision: kubectl says done, and so do the pods."""
    workload = rolled()
    workload["status"]["replicas"] = 3
    assert rollout.statefulset_health(workload) == rollout.Health(True, False, "statefulset rolling update complete")
    pods = [rev_pod("db-0", "db-new"), rev_pod("db-1", "db-new"), rev_pod("db-2", "db-old", terminating=True)]
    assert rollout.pods_health("StatefulSet", workload, rollout.own_pods("StatefulSet", workload, pods, [])).done


@pytest.mark.parametrize(("partition", "pods", "message"), [
    (0, ["db-new", "db-old"], "Waiting for pod db-1 to be updated to revision db-new..."),  # the status lags
    (1, ["db-old", "db-new"], "all 2 pods are ready and not terminating"),  # below the partition: kept
    (1, ["db-new", "db-old"], "Waiting for pod db-1 to be updated to revision db-new..."),
])
def test_a_statefulsets_pods_from_the_partition_up_run_the_update_revision(
    partition: int, pods: list[str], message: str
) -> None:
    workload = rolled(strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": partition}})
    own = [rev_pod(f"db-{i}", revision) for i, revision in enumerate(pods)]
    h = rollout.pods_health("StatefulSet", workload, own)
    assert (h.done, h.failed, h.message) == (message.startswith("all"), False, message)


def test_an_on_delete_statefulset_is_done_by_its_pods_and_fails_on_one_nothing_will_replace() -> None:
    """kubectl refuses OnDelete; its controller updates a pod only when someone deletes it."""
    workload = rolled(strategy={"type": "OnDelete"}, updated=0)
    assert rollout.needs_pods("StatefulSet", workload) and not rollout.needs_pods("StatefulSet", rolled())
    status = rollout.statefulset_health(workload)
    assert (status.done, status.failed) == (False, False)
    h = rollout.pods_health("StatefulSet", workload, [rev_pod("db-0", "db-old"), rev_pod("db-1", "db-old")])
    assert (h.done, h.failed, h.message) == (False, True, (
        'statefulset "db" replaces a pod only when it is deleted (updateStrategy OnDelete): db-0, db-1 still run '
        "an earlier revision than db-new, and nothing will replace them (delete them, e.g. with delete_pod, to "
        "roll them)"))
    # one being deleted is on its way to the update revision; the other is not
    h = rollout.pods_health("StatefulSet", workload, [rev_pod("db-0", "db-old", terminating=True),
                                                      rev_pod("db-1", "db-old")])
    assert h.failed and "db-1 still runs an earlier revision than db-new" in h.message
    h = rollout.pods_health("StatefulSet", workload, [rev_pod("db-0", "db-old", terminating=True),
                                                      rev_pod("db-1", "db-new")])
    assert (h.failed, h.message) == (False, "Waiting for pod db-0 to be replaced (terminating)...")

    workload["status"]["updatedReplicas"] = 2
    assert rollout.statefulset_health(workload).done
    assert rollout.pods_health("StatefulSet", workload, [rev_pod("db-0", "db-new"), rev_pod("db-1", "db-new")]).done
