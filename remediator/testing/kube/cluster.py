"""FakeCluster: the whole fake control plane behind one object, without any HTTP.

Tests seed and inspect state here directly (``apply``, ``get``, ``pods_of``), move time
(``advance``) and inject faults (``faults``); the HTTP server is a thin translation of
requests into the API methods below.  Every successful write reconciles, so with a
ready delay of 0 a rollout has finished by the time the write returns.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediator.testing.kube import resources as r
from remediator.testing.kube.api import FieldValidation, ObjectAPI
from remediator.testing.kube.clock import Clock, ManualClock
from remediator.testing.kube.controller import Controller
from remediator.testing.kube.deployments import revision
from remediator.testing.kube.faults import Faults, RequestLog
from remediator.testing.kube.manifests import load_manifest_file, parse_manifests
from remediator.testing.kube.objects import Object, clone, int_field, meta, owned_by
from remediator.testing.kube.selectors import parse_label_selector
from remediator.testing.kube.status import ApiError
from remediator.testing.kube.store import Store, Watcher

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

ResourceName = str | r.Resource


@dataclass
class ApplyResult:
    applied: list[Object] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "Service/web": kinds the fake does not serve


class FakeCluster:
    def __init__(
        self,
        *,
        clock: Clock | None = None,
        ready_delay: float = 0.0,
        termination_delay: float = 0.0,
        history_size: int = 1000,
        seed: int | None = 0,
        namespaces: tuple[str, ...] = (),
        sync_controllers: bool = True,
    ) -> None:
        """``clock`` defaults to a :class:`ManualClock`; pass ``time.time`` for real time.

        ``termination_delay``: how long the kubelet of ``fake-node`` takes to stop a pod
        deleted gracefully (it stays Terminating meanwhile).  The system namespaces
        exist from the start, with ``namespaces`` besides; :meth:`apply` creates the
        namespace of what it seeds, but an API create into a namespace nobody created
        is a 404, as on a real cluster.

        ``sync_controllers=False``: a write through the API no longer runs the controllers
        before it returns; they run on :meth:`reconcile` (or the standalone server's ticker),
        as a real cluster's run in their own time.  A test then sees what a real client
        does: ``observedGeneration < generation`` after a write, and the controllers' status
        write making the resourceVersion it read stale.  Seeding (:meth:`apply`) still settles.
        """
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.ready_delay = ready_delay
        self.termination_delay = termination_delay
        self.sync_controllers = sync_controllers
        self.rng = random.Random(seed)
        self.store = Store(history_size)
        self.faults = Faults()
        self.requests = RequestLog()
        self.api = ObjectAPI(self.store, self.clock, self.rng)
        self.controller = Controller(self.api, self.clock, self.rng, lambda: self.ready_delay,
                                     self.faults.blocks_readiness, lambda: self.termination_delay)
        for name in (*r.SYSTEM_NAMESPACES, *namespaces):
            self.api.ensure_namespace(name)

    # -- time and convergence ---------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    @property
    def resource_version(self) -> str:
        return str(self.store.resource_version)

    def reconcile(self) -> None:
        """Let the controllers act at the current time (call after moving an external clock)."""
        self.controller.reconcile()

    def advance(self, seconds: float) -> None:
        """Move a ManualClock forward, stopping at every moment something is due on the way.

        Stepping (rather than jumping) gives pods their real ready times and conditions
        their real timestamps, so a deadline is judged as it would be on a live cluster.
        """
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a ManualClock; with another clock, move it and call reconcile()")
        target = self.clock() + seconds
        self.reconcile()
        while (due := self.controller.next_due()) is not None and due <= target:
            self.clock.set(due)
            self.reconcile()
        self.clock.set(target)
        self.reconcile()

    def compact_history(self) -> None:
        """Forget watch history: a watch from any older resourceVersion now gets 410 Expired."""
        self.store.compact()

    # -- seeding and inspection --------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any]) -> Object:
        """Create or update one object as ``kubectl apply`` would (no resourceVersion precondition)."""
        res = r.resolve(str(manifest.get("kind", "")))
        body = clone(dict(manifest))
        body.pop("status", None)
        m = body.setdefault("metadata", {})
        namespace = str(m.get("namespace") or "default") if res.namespaced else ""
        if res.namespaced:
            self.ensure_namespace(namespace)
        m.setdefault("annotations", {})[LAST_APPLIED] = json.dumps(manifest, separators=(",", ":")) + "\n"
        current = self.store.get(res.plural, namespace, str(m.get("name", "")))
        if current is None:
            applied = self.create(res, namespace, body)
        else:
            m.pop("resourceVersion", None)
            applied = self.replace(res, namespace, str(m["name"]), body)
        self.reconcile()  # seeding settles, whether or not API writes run the controllers
        return applied

    def ensure_namespace(self, name: str) -> None:
        """Create namespace ``name`` unless it exists, as an admin would before seeding it."""
        self.api.ensure_namespace(name)
        self.reconcile()

    def apply_manifests(self, text: str, source: str = "<manifest>") -> ApplyResult:
        """Apply every object of a multi-document YAML text; kinds the fake does not serve are skipped."""
        return self._apply_all(parse_manifests(text, source))

    def load_state(self, path: str | Path) -> ApplyResult:
        return self._apply_all(load_manifest_file(path))

    def _apply_all(self, objects: list[dict[str, Any]]) -> ApplyResult:
        result = ApplyResult()
        for obj in objects:
            try:
                r.resolve(str(obj.get("kind")))
            except KeyError:
                result.skipped.append(f"{obj.get('kind')}/{meta(obj).get('name', '')}")
                continue
            result.applied.append(self.apply(obj))
        return result

    def get(self, resource: ResourceName, namespace: str, name: str) -> Object | None:
        """The stored object (a copy), or None: for assertions, without API errors."""
        return self.store.get(r.resolve(resource).plural, namespace, name)

    def objects(
        self, resource: ResourceName, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[Object]:
        selector = parse_label_selector(label_selector)
        return [o for o in self.store.list(r.resolve(resource).plural, namespace)
                if selector.matches(meta(o).get("labels"))]

    def replicasets_of(self, namespace: str, deployment: str) -> list[Object]:
        """The Deployment's ReplicaSets, oldest revision first."""
        owner = self.get(r.DEPLOYMENTS, namespace, deployment)
        if owner is None:
            return []
        return sorted(owned_by(self.store.list(r.REPLICASETS.plural, namespace), owner), key=revision)

    def revisions_of(self, namespace: str, statefulset: str) -> list[Object]:
        """The StatefulSet's ControllerRevisions, lowest ``.revision`` first."""
        owner = self.get(r.STATEFULSETS, namespace, statefulset)
        if owner is None:
            return []
        owned = owned_by(self.store.list(r.CONTROLLERREVISIONS.plural, namespace), owner)
        return sorted(owned, key=lambda rev: int_field(rev, "revision"))

    def pods_of(self, namespace: str, name: str, kind: str = "Deployment") -> list[Object]:
        """Pods belonging to a workload (a Deployment's through its ReplicaSets)."""
        return [p for p in self.store.list(r.PODS.plural, namespace)
                if self.controller.pods.workload_of(p) == (kind, name)]

    # -- the API, as the HTTP layer calls it --------------------------------------------------

    def read(self, resource: ResourceName, namespace: str, name: str) -> Object:
        return self.api.read(r.resolve(resource), namespace, name)

    def list_objects(
        self,
        resource: ResourceName,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Object:
        return self.api.list(r.resolve(resource), namespace, label_selector=label_selector,
                             field_selector=field_selector, limit=limit, continue_token=continue_token)

    def create(
        self, resource: ResourceName, namespace: str, body: Any, *, dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Object:
        return self._write(dry_run, self.api.create(r.resolve(resource), namespace, body, dry_run=dry_run,
                                                    fields=fields))

    def replace(
        self, resource: ResourceName, namespace: str, name: str, body: Any, *, dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Object:
        res = r.resolve(resource)
        return self._write(dry_run, self.api.replace(res, namespace, name, body, dry_run=dry_run, fields=fields))

    def patch(
        self, resource: ResourceName, namespace: str, name: str, patch_type: str, patch: Any, *,
        dry_run: bool = False, fields: FieldValidation | None = None,
    ) -> Object:
        """``fields`` (FieldValidation): how unknown fields are treated; it collects the warnings."""
        res = r.resolve(resource)
        return self._write(dry_run, self.api.patch(res, namespace, name, patch_type, patch, dry_run=dry_run,
                                                   fields=fields))

    def delete(
        self, resource: ResourceName, namespace: str, name: str, options: Mapping[str, Any] | None = None, *,
        dry_run: bool = False, grace_period: int | None = None,
    ) -> Object:
        res = r.resolve(resource)
        return self._write(dry_run, self.api.delete(res, namespace, name, options, dry_run=dry_run,
                                                    grace_period=grace_period))

    def read_scale(self, resource: ResourceName, namespace: str, name: str) -> Object:
        return self.api.read_scale(self._scalable(resource), namespace, name)

    def replace_scale(
        self, resource: ResourceName, namespace: str, name: str, body: Any, *, dry_run: bool = False
    ) -> Object:
        res = self._scalable(resource)
        return self._write(dry_run, self.api.replace_scale(res, namespace, name, body, dry_run=dry_run))

    def patch_scale(
        self, resource: ResourceName, namespace: str, name: str, patch_type: str, patch: Any, *,
        dry_run: bool = False,
    ) -> Object:
        res = self._scalable(resource)
        return self._write(dry_run, self.api.patch_scale(res, namespace, name, patch_type, patch, dry_run=dry_run))

    def watch(self, resource: ResourceName, since: int | None) -> Watcher:
        """Subscribe to changes (raises :class:`~.store.TooOld`); pair with :meth:`unwatch`."""
        return self.store.watch(r.resolve(resource).plural, since)

    def unwatch(self, watcher: Watcher) -> None:
        self.store.unwatch(watcher)

    def _scalable(self, resource: ResourceName) -> r.Resource:
        res = r.resolve(resource)
        if not res.scale:
            raise ApiError(404, "the server could not find the requested resource")
        return res

    def _write(self, dry_run: bool, result: Object) -> Object:
        """Reconcile after a real write; the caller gets its own copy (stored objects are shared)."""
        result = clone(result)
        if not dry_run and self.sync_controllers:
            self.reconcile()
        return result
