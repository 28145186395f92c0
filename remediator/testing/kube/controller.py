"""The simulated control plane: garbage collector, workload controllers and kubelets in one loop.

:meth:`Controller.reconcile` runs the controllers until nothing changes (a fixed point),
so after any write the cluster is as settled as it can be at the current (injected)
time.  Each change still goes through the store as its own write, so watchers see the
same sequence of intermediate states a real rollout produces.

Like kube-controller-manager, the controllers work from a queue rather than rescanning
the world: every stored change marks the object and its controller owner dirty (the
store's listener is the informer), and each pass syncs only what is dirty.  Objects
whose next state depends on time (a pending pod, a rollout waiting on its progress
deadline, a terminating pod) stay in a "timed" set and are looked at on every
reconcile.  A settled cluster of any size therefore costs nothing to reconcile, and
loading N Deployments is linear in N, not quadratic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from remediator.testing.kube import resources as r
from remediator.testing.kube.api import ObjectAPI
from remediator.testing.kube.clock import Clock
from remediator.testing.kube.deployments import DeploymentController
from remediator.testing.kube.objects import Object, controller_ref, meta, namespace_of
from remediator.testing.kube.pods import Pods, ReadinessBlock
from remediator.testing.kube.replicasets import ReplicaSetController
from remediator.testing.kube.statefulsets import StatefulSetController
from remediator.testing.kube.store import Event

#: A rollout of a few hundred replicas settles in far fewer passes; more means a controller bug.
MAX_PASSES = 500

#: Owner kinds whose dependents the garbage collector removes when the owner is gone.
_OWNERS = (r.DEPLOYMENTS, r.STATEFULSETS, r.REPLICASETS)
_OWNER_KINDS = {res.kind: res for res in _OWNERS}
_DEPENDENTS = (r.REPLICASETS, r.CONTROLLERREVISIONS, r.PODS)
_OWNER_PLURALS = frozenset(res.plural for res in _OWNERS)
_DEPENDENT_PLURALS = frozenset(res.plural for res in _DEPENDENTS)
#: Resources with a controller of their own, in the order one pass syncs them (as before: workloads
#: first, then ReplicaSets, then the kubelets).
_SYNCED = (r.DEPLOYMENTS.plural, r.STATEFULSETS.plural, r.REPLICASETS.plural, r.PODS.plural)

Key = tuple[str, str]  # (namespace, name)


class _Syncs(Protocol):
    """A workload controller: one sync of an object, and whether its next change waits on time."""

    def sync(self, obj: Object) -> None: ...

    def waits_on_time(self, key: Key) -> bool: ...


class NotConverging(RuntimeError):
    """The controllers kept writing for MAX_PASSES passes: a bug in the fake, not in the client."""


class Controller:
    def __init__(
        self, api: ObjectAPI, clock: Clock, rng: random.Random, ready_delay: Callable[[], float],
        blocked: ReadinessBlock, termination_delay: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.api = api
        self.pods = Pods(api, clock, rng, ready_delay, blocked, termination_delay)
        self.deployments = DeploymentController(api)
        self.statefulsets = StatefulSetController(api, self.pods)
        self.replicasets = ReplicaSetController(api, self.pods)
        self._dirty: dict[str, set[Key]] = {plural: set() for plural in _SYNCED}
        self._timed: dict[str, set[Key]] = {plural: set() for plural in _SYNCED}
        self._suspects: set[tuple[str, Key]] = set()  # dependents whose owner may be gone
        self._namespaces_dirty: set[str] = set()
        api.store.subscribe(self._observe)

    # -- the informer: what a change makes dirty --------------------------------------------

    def _observe(self, event: Event) -> None:
        key = (namespace_of(event.object), str(meta(event.object).get("name") or ""))
        if event.resource in self._dirty:
            self._dirty[event.resource].add(key)
        if event.type == "DELETED":
            self._timed.get(event.resource, set()).discard(key)
            if event.resource == r.PODS.plural:
                self.pods.forget(event.object)
        for obj in (event.object, event.previous):
            ref = controller_ref(obj) if obj is not None else None
            owner = _OWNER_KINDS.get(str(ref.get("kind"))) if ref is not None else None
            if owner is not None:
                self._dirty[owner.plural].add((key[0], str(ref.get("name") if ref else "")))
        if event.resource in _DEPENDENT_PLURALS and controller_ref(event.object) is not None:
            self._suspects.add((event.resource, key))
        if event.type == "DELETED" and event.resource in _OWNER_PLURALS:
            uid = str(meta(event.object).get("uid") or "")
            for dependent in _DEPENDENTS:
                for owned in self.api.store.owned_keys(dependent.plural, uid):
                    self._suspects.add((dependent.plural, owned))
        if event.resource == r.NAMESPACES.plural and meta(event.object).get("deletionTimestamp"):
            self._namespaces_dirty.add(key[1])

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        for plural, keys in self._timed.items():
            self._dirty[plural] |= keys
        for _ in range(MAX_PASSES):
            if not (any(self._dirty.values()) or self._suspects or self._namespaces_dirty):
                return
            self._finalize_namespaces()
            self._collect_garbage()
            self._sync(r.DEPLOYMENTS.plural, self._syncer(r.DEPLOYMENTS, self.deployments, shared=True))
            self._sync(r.STATEFULSETS.plural, self._syncer(r.STATEFULSETS, self.statefulsets, shared=True))
            self._sync(r.REPLICASETS.plural, self._syncer(r.REPLICASETS, self.replicasets))
            self._sync(r.PODS.plural, self.pods.sync)
        raise NotConverging(f"the fake cluster did not settle after {MAX_PASSES} passes")

    def _sync(self, plural: str, sync: Callable[[Key], bool]) -> None:
        """Sync each dirty object once, in (namespace, name) order; remember those that wait on time."""
        keys = sorted(self._dirty[plural])
        self._dirty[plural].clear()
        for key in keys:
            if sync(key):
                self._timed[plural].add(key)
            else:
                self._timed[plural].discard(key)

    def _syncer(self, res: r.Resource, controller: _Syncs, *, shared: bool = False) -> Callable[[Key], bool]:
        """``shared``: the controller never changes the object it is handed (it copies first), so it may
        be given the stored one instead of a copy."""

        def sync(key: Key) -> bool:
            obj = self.api.store.peek(res.plural, *key) if shared else self.api.store.get(res.plural, *key)
            if obj is None:
                return False
            controller.sync(obj)
            return controller.waits_on_time(key)

        return sync

    def _collect_garbage(self) -> None:
        """Background cascading deletion: dependents whose controller owner is gone are deleted."""
        store = self.api.store
        suspects = sorted(self._suspects)
        self._suspects.clear()
        for plural, (namespace, name) in suspects:
            obj = store.peek(plural, namespace, name)
            ref = controller_ref(obj) if obj is not None else None
            if ref is None or ref.get("kind") not in _OWNER_KINDS or store.has_uid(str(ref.get("uid"))):
                continue
            self.api.system_delete(r.resolve(plural), namespace, name)

    def _finalize_namespaces(self) -> None:
        """The namespace controller: a deleted namespace is emptied, then removed."""
        names = sorted(self._namespaces_dirty)
        self._namespaces_dirty.clear()
        for name in names:
            self.api.finalize_namespace(name)

    def next_due(self) -> float | None:
        """The next moment something happens on its own (a pod starts, a deadline passes)."""
        due = [t for t in (self.pods.next_due(), self.replicasets.next_due(), self.deployments.next_due())
               if t is not None]
        return min(due) if due else None
