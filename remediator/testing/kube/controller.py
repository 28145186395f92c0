"""The simulated control plane: garbage collector, workload controllers and kubelets in one loop.

:meth:`Controller.reconcile` runs every controller until nothing changes (a fixed
point), so after any write the cluster is as settled as it can be at the current
(injected) time.  Each change still goes through the store as its own write, so
watchers see the same sequence of intermediate states a real rollout produces.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from remediator.testing.kube import resources as r
from remediator.testing.kube.api import ObjectAPI
from remediator.testing.kube.clock import Clock
from remediator.testing.kube.deployments import DeploymentController
from remediator.testing.kube.objects import controller_ref, name_of, namespace_of, uid_of
from remediator.testing.kube.pods import Pods, ReadinessBlock
from remediator.testing.kube.replicasets import ReplicaSetController
from remediator.testing.kube.statefulsets import StatefulSetController

#: A rollout of a few hundred replicas settles in far fewer passes; more means a controller bug.
MAX_PASSES = 500

#: Owner kinds whose dependents the garbage collector removes when the owner is gone.
_OWNERS = (r.DEPLOYMENTS, r.STATEFULSETS, r.REPLICASETS)
_DEPENDENTS = (r.REPLICASETS, r.CONTROLLERREVISIONS, r.PODS)


class NotConverging(RuntimeError):
    """The controllers kept writing for MAX_PASSES passes: a bug in the fake, not in the client."""


class Controller:
    def __init__(
        self, api: ObjectAPI, clock: Clock, rng: random.Random, ready_delay: Callable[[], float],
        blocked: ReadinessBlock,
    ) -> None:
        self.api = api
        self.pods = Pods(api, clock, rng, ready_delay, blocked)
        self.deployments = DeploymentController(api)
        self.statefulsets = StatefulSetController(api, self.pods)
        self.replicasets = ReplicaSetController(api, self.pods)

    def reconcile(self) -> None:
        store = self.api.store
        for _ in range(MAX_PASSES):
            before = store.resource_version
            self._collect_garbage()
            for d in store.list(r.DEPLOYMENTS.plural):
                self.deployments.sync(d)
            for sts in store.list(r.STATEFULSETS.plural):
                self.statefulsets.sync(sts)
            for rs in store.list(r.REPLICASETS.plural):
                self.replicasets.sync(rs)
            self.pods.progress()
            if store.resource_version == before:
                return
        raise NotConverging(f"the fake cluster did not settle after {MAX_PASSES} passes")

    def _collect_garbage(self) -> None:
        """Background cascading deletion: dependents whose controller owner is gone are deleted."""
        store = self.api.store
        for _ in range(len(_DEPENDENTS) + 1):  # pods of a deleted RS of a deleted Deployment: a chain
            alive = {uid_of(o) for res in _OWNERS for o in store.iter(res.plural)}
            doomed = [
                (res, o) for res in _DEPENDENTS for o in store.list(res.plural)
                if (ref := controller_ref(o)) is not None and ref.get("uid") not in alive
                and ref.get("kind") in {x.kind for x in _OWNERS}
            ]
            if not doomed:
                return
            for res, o in doomed:
                self.api.system_delete(res, namespace_of(o), name_of(o))

    def next_due(self) -> float | None:
        """The next moment something happens on its own (a pod starts, a deadline passes)."""
        due = [t for t in (self.pods.next_due(), self.replicasets.next_due(), self.deployments.next_due())
               if t is not None]
        return min(due) if due else None
