"""When a workload's revision history read is not yet the history of the workload read (pure).

A rollback plans "the revision before the newest" only from a history whose newest revision
is the current template: tests/real_kube/test_rollback_history.py shows the real Deployment
controller reporting the generation observed before that revision exists.
"""

from __future__ import annotations

from typing import Any

from remediator.core import rollout
from tests.unit.test_rollout_rules import dep, rs


def test_a_history_whose_newest_revision_is_the_current_template_is_current() -> None:
    assert rollout.deployment_history_lag(dep(), [rs(1, "v1"), rs(2, "v2")]) is None


def test_a_generation_not_yet_observed_is_lag() -> None:
    lag = rollout.deployment_history_lag(dep(observedGeneration=1), [rs(1, "v1"), rs(2, "v2")])
    assert lag == "has not yet observed generation 2 (observed 1)"


def test_an_observed_generation_whose_template_has_no_revision_yet_is_lag() -> None:
    # The controller met a write that scales and changes the template as a scaling event: generation
    # observed, no ReplicaSet for v3.  "The revision before the newest" would be v1, two changes back.
    d = dep()
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "v3"
    lag = rollout.deployment_history_lag(d, [rs(1, "v1"), rs(2, "v2")])
    assert lag is not None and "no revision of the current pod template yet" in lag and "revision 2" in lag


def test_a_replicaset_list_older_than_the_deployment_read_is_lag() -> None:
    # A rollback to v1 landed: the controller renumbered v1's ReplicaSet to 3 and recorded 3 on the
    # Deployment, but the list read still shows it as revision 1.
    d = dep()
    d["metadata"]["annotations"][rollout.REVISION] = "3"
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "v1"
    assert "no revision of the current pod template" in str(
        rollout.deployment_history_lag(d, [rs(1, "v1"), rs(2, "v2")]))
    # Newest matches, but the Deployment names a later revision than any read.
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "v2"
    lag = rollout.deployment_history_lag(d, [rs(1, "v1"), rs(2, "v2")])
    assert lag == "records revision 3 on the deployment, but the newest ReplicaSet read is revision 2"


def test_only_owned_replicasets_count_and_none_is_lag() -> None:
    assert rollout.deployment_history_lag(dep(), [rs(5, "v9", owner="other"), rs(1, "v1"), rs(2, "v2")]) is None
    assert rollout.deployment_history_lag(dep(), [rs(2, "v2", owner="other")]) == (
        'has no ReplicaSet for deployment "web" yet')


def test_a_paused_deployment_is_left_to_the_plans_refusal() -> None:
    d = dep()
    d["spec"]["paused"] = True
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "v3"
    assert rollout.deployment_history_lag(d, [rs(1, "v1"), rs(2, "v2")]) is None


def sts(update: str, observed: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "db", "uid": "s1", "generation": 2},
            "status": {"observedGeneration": observed, "updateRevision": update}}


def revision(name: str, number: int, owner: str = "s1") -> dict[str, Any]:
    return {"metadata": {"name": name, "ownerReferences": [{"uid": owner, "controller": True}]}, "revision": number}


def test_a_statefulset_history_is_current_when_its_newest_revision_is_the_update_revision() -> None:
    history = [revision("db-a", 1), revision("db-b", 2), revision("db-x", 9, owner="other")]
    assert rollout.statefulset_history_lag(sts("db-b"), history) is None
    assert rollout.statefulset_history_lag(sts("db-b", observed=1), history) == (
        "has not yet observed generation 2 (observed 1)")
    # A rollback to db-a landed (renumbered to 3 and named the update revision) after the list was read.
    lag = rollout.statefulset_history_lag(sts("db-a"), history)
    assert lag is not None and "the newest is db-b, the update revision db-a" in lag
