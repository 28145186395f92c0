"""The ReplicaSet controller: keep ``spec.replicas`` pods alive and report them in status.

Deleted pods come back under a new name, as on a real cluster, which is what makes a
``delete_pod`` remediation observable.  Surplus pods are removed least-ready and newest
first, approximating the kube-controller-manager's ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from remediator.testing.kube import resources as r
from remediator.testing.kube.api import ObjectAPI
from remediator.testing.kube.objects import (
    Object,
    int_field,
    meta,
    name_of,
    namespace_of,
    omit_zero,
    spec_of,
    status_of,
    uid_of,
)
from remediator.testing.kube.pods import PENDING, READY, UNREADY, Pods, state_of
from remediator.testing.kube.selectors import from_label_selector_object

#: Deletion order for surplus pods: not yet running first, ready ones last.
_RANK: Mapping[str, int] = MappingProxyType({PENDING: 0, UNREADY: 1, READY: 2})


class ReplicaSetController:
    def __init__(self, api: ObjectAPI, pods: Pods) -> None:
        self.api = api
        self.pods = pods

    def owned_pods(self, rs: Object) -> list[Object]:
        return self.api.store.owned_view(r.PODS.plural, uid_of(rs))  # read-only

    def sync(self, rs: Object) -> None:
        if meta(rs).get("deletionTimestamp"):
            return
        spec = spec_of(rs)
        want = int_field(spec, "replicas", 1)
        pods = [p for p in self.owned_pods(rs) if _active(p)]  # a terminating pod is already being replaced
        if len(pods) < want:
            for _ in range(want - len(pods)):
                self.pods.create(r.REPLICASETS, rs, spec.get("template"))
        elif len(pods) > want:
            ranked = sorted(pods, key=lambda p: (_RANK.get(state_of(p) or "", 3), -self.pods.born(p)))
            for victim in ranked[: len(pods) - want]:
                self.api.system_delete(r.PODS, namespace_of(victim), name_of(victim))
        self._update_status(rs, self.owned_pods(rs))

    def _update_status(self, rs: Object, owned: list[Object]) -> None:
        min_ready = int_field(spec_of(rs), "minReadySeconds")
        selector = from_label_selector_object(spec_of(rs).get("selector"))
        pods = [p for p in owned if _active(p)]
        status = omit_zero(
            {
                "replicas": len(pods),
                "fullyLabeledReplicas": sum(1 for p in pods if selector.matches(meta(p).get("labels"))),
                "readyReplicas": sum(1 for p in pods if state_of(p) == READY),
                "availableReplicas": sum(1 for p in pods if self.pods.is_available(p, min_ready)),
                # DeploymentReplicaSetTerminatingReplicas (on by default): reported even when 0
                "terminatingReplicas": sum(1 for p in owned if meta(p).get("deletionTimestamp")),
                "observedGeneration": int_field(meta(rs), "generation"),
            },
            keep=("replicas", "terminatingReplicas"),
        )
        conditions = status_of(rs).get("conditions")
        if conditions:
            status["conditions"] = conditions
        if status != status_of(rs):
            rs["status"] = status
            self.api.system_update(r.REPLICASETS, rs)

    def waits_on_time(self, key: tuple[str, str]) -> bool:
        """Whether a ready pod of this ReplicaSet has yet to count as available (minReadySeconds)."""
        rs = self.api.store.peek(r.REPLICASETS.plural, *key)
        return rs is not None and _waits_for_min_ready(rs)

    def next_due(self) -> float | None:
        """When a ready pod of a ReplicaSet with minReadySeconds becomes available."""
        now = self.pods.clock()
        due: list[float] = []
        for rs in self.api.store.iter(r.REPLICASETS.plural):
            min_ready = int_field(spec_of(rs), "minReadySeconds")
            if not min_ready:
                continue
            for pod in self.owned_pods(rs):
                since = self.pods.ready_since(pod)
                if since is not None and since + min_ready > now:
                    due.append(since + min_ready)
        return min(due) if due else None


def _waits_for_min_ready(obj: Object) -> bool:
    """Ready pods not yet available: they become so ``minReadySeconds`` after turning ready."""
    status = status_of(obj)
    return bool(int_field(spec_of(obj), "minReadySeconds")) and (
        int_field(status, "availableReplicas") < int_field(status, "readyReplicas"))


def _active(pod: Object) -> bool:
    """controller.FilterActivePods: neither terminating nor finished."""
    return not meta(pod).get("deletionTimestamp") and status_of(pod).get("phase") not in ("Succeeded", "Failed")
