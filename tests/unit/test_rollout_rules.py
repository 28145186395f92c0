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
           "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "a",
                      "updateRevision": "b"}}
    assert not rollout.statefulset_health(sts).done
    sts["status"]["currentRevision"] = "b"
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
    ],
)
def test_desired_amount(current: int, params: dict[str, Any], ceiling: int | None, expected: int) -> None:
    assert desired_amount(current, params, ceiling=ceiling) == expected
