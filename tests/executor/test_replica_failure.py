"""wait_healthy's verdict names a ReplicaFailure condition: why a rollout's new pods cannot be created.

The Deployment controller copies its new ReplicaSet's ``ReplicaFailure`` condition (an admission refusal of
its pods: a LimitRange, a ResourceQuota, a policy) and removes it once a create succeeds.  The shape below is
the real control plane's (v1.36.2, a LimitRange of at most 500m cpu; tests/real_kube/test_health.py runs it).
"""

from __future__ import annotations

from typing import Any

from remediator.core import rollout

REFUSED = ('Pod "web-596cbb9685-84r26" is invalid: spec.containers[0].resources.requests: Invalid value: "1": '
           "must be less than or equal to cpu limit of 500m")


def deployment(status: dict[str, Any], *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, **status, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}, *conditions]}}


def failure(status: str = "True") -> dict[str, Any]:
    return {"type": "ReplicaFailure", "status": status, "reason": "FailedCreate", "message": REFUSED}


STUCK = {"replicas": 2, "updatedReplicas": 0, "availableReplicas": 2}


def test_a_rollout_whose_pods_are_refused_says_why() -> None:
    health = rollout.health("Deployment", deployment(STUCK, failure()))
    assert (health.done, health.failed) == (False, False)  # a quota may free up: not failed by itself
    assert health.message == f"0 out of 2 new replicas have been updated... (ReplicaFailure (FailedCreate): {REFUSED})"


def test_no_failure_no_mention() -> None:
    assert rollout.health("Deployment", deployment(STUCK)).message == "0 out of 2 new replicas have been updated..."
    assert "ReplicaFailure" not in rollout.health("Deployment", deployment(STUCK, failure("False"))).message


def test_a_rollout_done_is_done_whatever_an_old_condition_says() -> None:
    done = rollout.health("Deployment", deployment({"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
                                                   failure()))
    assert done.done and done.message == 'deployment "web" successfully rolled out'
