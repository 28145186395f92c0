"""What the scheduler and the kubelet would do to pods: bind them, start them, make them ready, end them.

The fake has one node, ``fake-node``, with a kubelet.  The scheduler binds every pod
that asks for the default scheduler to it; a pod naming another ``schedulerName``
stays unbound, and a pod created with another ``nodeName`` has no kubelet: both stay
Pending forever, as on a cluster with no such scheduler or node.

A pod on ``fake-node`` becomes Running and Ready ``ready_delay`` seconds (on the
injected clock) after it was created, unless a fault says its workload never becomes
ready; then it runs with a failing readiness probe, which is what a broken rollout
looks like from the API.  Pods that are already ready stay ready, so a fault injected
mid-way only hurts new pods, as a bad release would.  A pod deleted gracefully stays
Terminating until its kubelet has stopped it, ``termination_delay`` seconds later;
without a kubelet (another node) it stays Terminating until deleted with grace 0.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from remediator.testing.kube import defaults
from remediator.testing.kube import resources as r
from remediator.testing.kube.api import ObjectAPI
from remediator.testing.kube.clock import Clock, parse_rfc3339, rfc3339
from remediator.testing.kube.objects import (
    Object,
    condition,
    controller_ref,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    random_suffix,
    spec_of,
    status_of,
    uid_of,
)

NODE_NAME = "fake-node"
HOST_IP = "10.0.0.10"

DEFAULT_SCHEDULER = "default-scheduler"

PENDING, UNREADY, READY = "pending", "unready", "ready"

#: (namespace, workload kind, workload name) -> readiness is blocked by a fault.
ReadinessBlock = Callable[[str, str, str], bool]


class Pods:
    def __init__(
        self, api: ObjectAPI, clock: Clock, rng: random.Random, ready_delay: Callable[[], float],
        blocked: ReadinessBlock, termination_delay: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.api = api
        self.clock = clock
        self.rng = rng
        self.ready_delay = ready_delay
        self.blocked = blocked
        self.termination_delay = termination_delay
        # Sub-second precision that creationTimestamp (whole seconds) cannot carry.
        self._born: dict[str, float] = {}
        self._ready_at: dict[str, float] = {}

    # -- creation -------------------------------------------------------------------------

    def create(
        self,
        owner_res: r.Resource,
        owner: Object,
        template: Any,
        *,
        name: str | None = None,
        extra_labels: dict[str, str] | None = None,
        extra_spec: dict[str, Any] | None = None,
    ) -> Object:
        namespace = namespace_of(owner)
        template = template if isinstance(template, dict) else {}
        tmeta = template.get("metadata") or {}
        metadata: dict[str, Any] = {"namespace": namespace}
        if name is None:
            prefix = f"{name_of(owner)}-"
            name = prefix + random_suffix(self.rng)
            while self.api.store.peek(r.PODS.plural, namespace, name) is not None:
                name = prefix + random_suffix(self.rng)
            metadata["generateName"] = prefix
        metadata["name"] = name
        metadata["labels"] = {**(tmeta.get("labels") or {}), **(extra_labels or {})}
        if tmeta.get("annotations"):
            metadata["annotations"] = dict(tmeta["annotations"])
        metadata["ownerReferences"] = [owner_reference(owner_res, owner)]
        spec = {**(template.get("spec") or {}), **(extra_spec or {}), "nodeName": NODE_NAME}
        pod = defaults.pod({"metadata": metadata, "spec": spec})
        pod["status"] = self._status(pod, PENDING, {})
        created = self.api.system_create(r.PODS, pod)
        self._born[uid_of(created)] = self.clock()
        return created

    # -- lifecycle ------------------------------------------------------------------------

    def sync(self, key: tuple[str, str]) -> bool:
        """Schedule, start, ready or finish one pod; True while its next step waits on time."""
        pod = self.api.store.get(r.PODS.plural, *key)
        if pod is None:
            return False
        spec = pod.setdefault("spec", {})
        if meta(pod).get("deletionTimestamp"):
            if spec.get("nodeName") != NODE_NAME:
                return False  # no kubelet to stop it: Terminating until deleted with grace 0
            if self.clock() < self._termination_started(pod) + self.termination_delay():
                return True
            self.api.system_delete(r.PODS, *key)
            return False
        if not spec.get("nodeName"):
            if spec.get("schedulerName", DEFAULT_SCHEDULER) != DEFAULT_SCHEDULER:
                return False  # no such scheduler here: it stays unbound
            spec["nodeName"] = NODE_NAME  # the scheduler binds it (with the status write below)
        elif spec["nodeName"] != NODE_NAME:
            return False  # bound to a node without a kubelet
        current = state_of(pod)
        wanted = self._wanted(pod, current)
        if wanted is None:
            return False
        if wanted != current or (current == PENDING and "containerStatuses" not in status_of(pod)):
            if wanted == READY:
                self._ready_at[uid_of(pod)] = self.clock()
            pod["status"] = self._status(pod, wanted, status_of(pod))
            self.api.system_update(r.PODS, pod)
        return wanted != READY

    def forget(self, pod: Object) -> None:
        """A pod is gone: drop what was remembered about it."""
        uid = uid_of(pod)
        self._born.pop(uid, None)
        self._ready_at.pop(uid, None)

    def _termination_started(self, pod: Object) -> float:
        m = meta(pod)
        deadline = parse_rfc3339(m.get("deletionTimestamp")) or self.clock()
        grace = m.get("deletionGracePeriodSeconds")
        return deadline - (grace if isinstance(grace, int) else 0)

    def _wanted(self, pod: Object, current: str | None) -> str | None:
        if current is None:
            return None  # Succeeded/Failed pods are left as they are
        if current == READY:
            return READY
        if current == PENDING and self.clock() < self.born(pod) + self.ready_delay():
            return PENDING
        kind, name = self.workload_of(pod)
        return UNREADY if self.blocked(namespace_of(pod), kind, name) else READY

    def next_due(self) -> float | None:
        """When the next pending pod is due to start, or a terminating one to go (for stepping a manual clock)."""
        now, delay, ending = self.clock(), self.ready_delay(), self.termination_delay()
        due: list[float] = []
        for p in self.api.store.iter(r.PODS.plural):
            if spec_of(p).get("nodeName", NODE_NAME) != NODE_NAME:
                continue
            if meta(p).get("deletionTimestamp"):
                due.append(self._termination_started(p) + ending)
            elif state_of(p) == PENDING:
                due.append(self.born(p) + delay)
        later = [t for t in due if t > now]
        return min(later) if later else None

    def born(self, pod: Object) -> float:
        known = self._born.get(uid_of(pod))
        if known is not None:
            return known
        return parse_rfc3339(meta(pod).get("creationTimestamp")) or self.clock()

    def ready_since(self, pod: Object) -> float | None:
        if state_of(pod) != READY:
            return None
        known = self._ready_at.get(uid_of(pod))
        if known is not None:
            return known
        ready = condition(status_of(pod), "Ready") or {}
        return parse_rfc3339(ready.get("lastTransitionTime")) or self.clock()

    def is_available(self, pod: Object, min_ready_seconds: int) -> bool:
        since = self.ready_since(pod)
        return since is not None and since + min_ready_seconds <= self.clock()

    def workload_of(self, pod: Object) -> tuple[str, str]:
        """The top-level owner (Deployment through its ReplicaSet), which faults are keyed on."""
        ref = controller_ref(pod)
        if ref is None:
            return "Pod", name_of(pod)
        if ref.get("kind") == "ReplicaSet":
            rs = self.api.store.get(r.REPLICASETS.plural, namespace_of(pod), str(ref.get("name")))
            top = controller_ref(rs) if rs else None
            if top is not None and top.get("kind") == "Deployment":
                return "Deployment", str(top.get("name"))
        return str(ref.get("kind")), str(ref.get("name"))

    # -- status ---------------------------------------------------------------------------

    def _status(self, pod: Object, state: str, previous: dict[str, Any]) -> dict[str, Any]:
        now = rfc3339(self.clock())
        containers = [c for c in spec_of(pod).get("containers") or [] if isinstance(c, dict)]
        running = state != PENDING
        ready = state == READY
        unready = "containers with unready status: [" + " ".join(str(c.get("name")) for c in containers) + "]"

        def cond(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
            before = condition(previous, kind)
            c: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
            same = before is not None and before.get("status") == c["status"]
            c["lastTransitionTime"] = before.get("lastTransitionTime", now) if same and before else now
            if not ok and reason:
                c["reason"], c["message"] = reason, message
            return c

        status: dict[str, Any] = {
            "phase": "Running" if running else "Pending",
            "conditions": [
                cond("PodReadyToStartContainers", running),
                cond("Initialized", True),
                cond("Ready", ready, "ContainersNotReady", unready),
                cond("ContainersReady", ready, "ContainersNotReady", unready),
                cond("PodScheduled", True),
            ],
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": previous.get("startTime", now),
            "qosClass": "BestEffort",
        }
        if running:
            ip = previous.get("podIP") or f"10.244.{self.rng.randint(0, 255)}.{self.rng.randint(2, 254)}"
            status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
        old_statuses = {s.get("name"): s for s in previous.get("containerStatuses") or []}
        status["containerStatuses"] = [
            self._container_status(c, running, ready, old_statuses.get(c.get("name")) or {}, now) for c in containers
        ]
        return status

    def _container_status(
        self, c: dict[str, Any], running: bool, ready: bool, previous: dict[str, Any], now: str
    ) -> dict[str, Any]:
        image = str(c.get("image") or "")
        out: dict[str, Any] = {"name": c.get("name"), "image": image, "restartCount": 0, "ready": ready}
        if not running:
            out.update(state={"waiting": {"reason": "ContainerCreating"}}, lastState={}, imageID="", started=False)
            return out
        started = ((previous.get("state") or {}).get("running") or {}).get("startedAt", now)
        digest = hashlib.sha256(image.encode()).hexdigest()
        out.update(
            state={"running": {"startedAt": started}},
            lastState={},
            imageID=f"{image.split(':')[0]}@sha256:{digest}",
            containerID=previous.get("containerID") or f"containerd://{self.rng.getrandbits(256):064x}",
            started=True,
        )
        return out


def state_of(pod: Object) -> str | None:
    """pending / unready / ready, or None for pods that finished (Succeeded, Failed)."""
    status = status_of(pod)
    phase = status.get("phase")
    if phase == "Running":
        ready = condition(status, "Ready")
        return READY if ready is not None and ready.get("status") == "True" else UNREADY
    if phase in (None, "Pending"):
        return PENDING
    return None
