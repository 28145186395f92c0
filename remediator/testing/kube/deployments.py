"""The deployment controller (``pkg/controller/deployment``), reduced to what clients can observe.

It reproduces the parts remediation depends on: which ReplicaSet is "new" (template
equality ignoring ``pod-template-hash``), revision numbering and its reuse on
rollback, rolling updates bounded by maxSurge/maxUnavailable, Recreate, paused
deployments, proportional scaling, status counters, the Available and Progressing
conditions with their exact reasons and messages, and pruning beyond
revisionHistoryLimit.  Each :meth:`DeploymentController.sync` takes one step, like
one controller sync; the caller repeats until nothing changes.
"""

from __future__ import annotations

import math
from typing import Any

from remediator.testing.kube import resources as r
from remediator.testing.kube.api import ObjectAPI
from remediator.testing.kube.clock import parse_rfc3339, rfc3339
from remediator.testing.kube.objects import (
    Object,
    annotations_of,
    clone,
    condition,
    int_field,
    meta,
    name_of,
    namespace_of,
    omit_zero,
    owner_reference,
    set_condition,
    spec_of,
    status_of,
    template_hash,
    uid_of,
)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
#: Deployment annotations never copied onto ReplicaSets (``annotationsToSkip``).
SKIP_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
})
#: progressDeadlineSeconds = MaxInt32 means "no deadline".
NO_DEADLINE = 2**31 - 1

AVAILABLE, PROGRESSING = "Available", "Progressing"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED, RESUMED = "DeploymentPaused", "DeploymentResumed"


def revision(rs: Object) -> int:
    try:
        return int(annotations_of(rs).get(REVISION, "0"))
    except ValueError:
        return 0


def _without_hash(template: Any) -> Any:
    t = clone(template)
    labels = (t.get("metadata") or {}).get("labels") if isinstance(t, dict) else None
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def _scaled(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return 0


def _replicas(obj: Object) -> int:
    return int_field(spec_of(obj), "replicas", 1)


def _rolling(d: Object) -> bool:
    return bool((spec_of(d).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate")


def fenceposts(d: Object) -> tuple[int, int]:
    """ResolveFenceposts: (maxSurge rounded up, maxUnavailable rounded down), never both zero."""
    rolling = (spec_of(d).get("strategy") or {}).get("rollingUpdate") or {}
    want = _replicas(d)
    surge = _scaled(rolling.get("maxSurge", "25%"), want, True)
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), want, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Object) -> int:
    return fenceposts(d)[0] if _rolling(d) else 0


def max_unavailable(d: Object) -> int:
    want = _replicas(d)
    if not _rolling(d) or want == 0:
        return 0
    return min(fenceposts(d)[1], want)


def _has_deadline(d: Object) -> bool:
    deadline = spec_of(d).get("progressDeadlineSeconds")
    return bool(isinstance(deadline, int) and deadline != NO_DEADLINE)


def _available(rs: Object) -> int:
    return int_field(status_of(rs), "availableReplicas")


def _by_age(rss: list[Object]) -> list[Object]:
    return sorted(rss, key=lambda rs: (meta(rs).get("creationTimestamp", ""), name_of(rs)))


class DeploymentController:
    def __init__(self, api: ObjectAPI) -> None:
        self.api = api

    def _now(self) -> str:
        return rfc3339(self.api.clock())

    def _cond(self, kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        now = self._now()
        return {"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
                "reason": reason, "message": message}

    def replicasets(self, d: Object) -> list[Object]:
        return self.api.store.owned_view(r.REPLICASETS.plural, uid_of(d))  # read-only: cloned before changes

    # -- one sync -------------------------------------------------------------------------

    def sync(self, d: Object) -> None:
        if meta(d).get("deletionTimestamp"):
            return
        d = self._check_paused_condition(d)
        rss = self.replicasets(d)
        template = spec_of(d).get("template")
        new_rs = next((rs for rs in rss if _without_hash(spec_of(rs).get("template")) == template), None)
        old = [rs for rs in rss if rs is not new_rs]

        if spec_of(d).get("paused") or self._is_scaling_event(d, rss):
            new_rs, d = self._sync_revision(d, new_rs, old, create=False)
            self._scale(d, new_rs, old)
            if spec_of(d).get("paused"):
                self._cleanup(d, old)
            fresh_new = self._fresh(new_rs) if new_rs is not None else None
            self._write_status(d, self._calculate_status(d, self.replicasets(d), fresh_new))
            return

        if not _rolling(d):
            self._recreate(d, new_rs, old)
            return

        new_rs, d = self._sync_revision(d, new_rs, old, create=True)
        if new_rs is not None:
            self._reconcile_new(d, new_rs, old)
            old = [self._fresh(rs) for rs in old]
            self._reconcile_old(d, self._fresh(new_rs), old)
        self._finish(d, new_rs)

    def _finish(self, d: Object, new_rs: Object | None) -> None:
        new_rs = self._fresh(new_rs) if new_rs is not None else None
        rss = self.replicasets(d)
        d = self._sync_rollout_status(d, rss, new_rs)
        if self._complete(d, status_of(d)):
            self._cleanup(d, [rs for rs in rss if new_rs is None or name_of(rs) != name_of(new_rs)])

    def _fresh(self, rs: Object) -> Object:
        return self.api.store.peek(r.REPLICASETS.plural, namespace_of(rs), name_of(rs)) or rs  # read-only

    # -- new ReplicaSet and revisions -------------------------------------------------------

    def _sync_revision(
        self, d: Object, new_rs: Object | None, old: list[Object], *, create: bool
    ) -> tuple[Object | None, Object]:
        """getNewReplicaSet: bring the new RS's revision to max(old)+1, or create the RS."""
        new_revision = max((revision(rs) for rs in old), default=0) + 1
        d_annotations = {k: v for k, v in annotations_of(d).items() if k not in SKIP_ANNOTATIONS}
        if new_rs is not None:
            rs = clone(new_rs)
            min_ready = int_field(spec_of(d), "minReadySeconds")
            if int_field(spec_of(rs), "minReadySeconds") != min_ready:
                rs["spec"]["minReadySeconds"] = min_ready
            annotations = rs["metadata"].setdefault("annotations", {})
            annotations.update(d_annotations)
            current = annotations.get(REVISION, "")
            if revision(rs) < new_revision:
                if current:
                    history = annotations.get(REVISION_HISTORY)
                    annotations[REVISION_HISTORY] = f"{history},{current}" if history else current
                annotations[REVISION] = str(new_revision)
            if rs != new_rs:
                rs = self.api.system_update(r.REPLICASETS, rs)
            d = clone(d)
            d["metadata"].setdefault("annotations", {})[REVISION] = annotations[REVISION]
            if _has_deadline(d) and condition(status_of(d), PROGRESSING) is None:
                set_condition(d.setdefault("status", {}), self._cond(
                    PROGRESSING, "True", "FoundNewReplicaSet", f'Found new replica set "{name_of(rs)}"'))
            return rs, self.api.system_update(r.DEPLOYMENTS, d)
        if not create:
            return None, d
        return self._create_new_rs(d, old, new_revision, d_annotations)

    def _create_new_rs(
        self, d: Object, old: list[Object], new_revision: int, d_annotations: dict[str, str]
    ) -> tuple[Object | None, Object]:
        spec = spec_of(d)
        collisions = int_field(status_of(d), "collisionCount")
        pod_hash = template_hash(spec.get("template"), collisions)
        name = f"{name_of(d)}-{pod_hash}"
        if self.api.store.peek(r.REPLICASETS.plural, namespace_of(d), name) is not None:
            # Same name, different template (or owner): count the collision and rehash next time.
            d = clone(d)
            d.setdefault("status", {})["collisionCount"] = collisions + 1
            return None, self.api.system_update(r.DEPLOYMENTS, d)
        template = clone(spec.get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        selector = clone(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        want = _replicas(d)
        rs_spec: dict[str, Any] = {
            "replicas": self._new_rs_replicas(d, old, None),
            "selector": selector,
            "template": template,
        }
        if int_field(spec, "minReadySeconds"):
            rs_spec["minReadySeconds"] = spec["minReadySeconds"]
        rs = self.api.system_create(r.REPLICASETS, {
            "metadata": {
                "name": name,
                "namespace": namespace_of(d),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    **d_annotations,
                    DESIRED_REPLICAS: str(want),
                    MAX_REPLICAS: str(want + max_surge(d)),
                    REVISION: str(new_revision),
                },
                "ownerReferences": [owner_reference(r.DEPLOYMENTS, d)],
            },
            "spec": rs_spec,
            "status": {"replicas": 0},
        })
        d = clone(d)
        d["metadata"].setdefault("annotations", {})[REVISION] = str(new_revision)
        if _has_deadline(d):
            set_condition(d.setdefault("status", {}), self._cond(
                PROGRESSING, "True", "NewReplicaSetCreated", f'Created new replica set "{name}"'))
        return rs, self.api.system_update(r.DEPLOYMENTS, d)

    # -- scaling ----------------------------------------------------------------------------

    def _scale_rs(self, d: Object, rs: Object, replicas: int) -> None:
        updated = clone(rs)
        want = _replicas(d)
        annotations = updated["metadata"].setdefault("annotations", {})
        annotations[DESIRED_REPLICAS] = str(want)
        annotations[MAX_REPLICAS] = str(want + max_surge(d))
        if _replicas(updated) != replicas:
            updated["spec"]["replicas"] = replicas
            updated["metadata"]["generation"] = int_field(meta(updated), "generation") + 1
        if updated != rs:
            self.api.system_update(r.REPLICASETS, updated)

    def _new_rs_replicas(self, d: Object, old: list[Object], new_rs: Object | None) -> int:
        """NewRSNewReplicas: how far the new RS may grow now without breaking maxSurge."""
        want = _replicas(d)
        if not _rolling(d):
            return want
        current_new = _replicas(new_rs) if new_rs is not None else 0
        current = sum(_replicas(rs) for rs in old) + current_new
        ceiling = want + max_surge(d)
        if current >= ceiling:
            return current_new
        return current_new + min(ceiling - current, max(0, want - current_new))

    def _reconcile_new(self, d: Object, new_rs: Object, old: list[Object]) -> None:
        want = _replicas(d)
        if _replicas(new_rs) > want:
            self._scale_rs(d, new_rs, want)
        elif _replicas(new_rs) < want:
            self._scale_rs(d, new_rs, self._new_rs_replicas(d, old, new_rs))

    def _reconcile_old(self, d: Object, new_rs: Object, old: list[Object]) -> None:
        if sum(_replicas(rs) for rs in old) == 0:
            return
        all_pods = sum(_replicas(rs) for rs in old) + _replicas(new_rs)
        min_available = _replicas(d) - max_unavailable(d)
        new_unavailable = _replicas(new_rs) - _available(new_rs)
        budget = all_pods - min_available - new_unavailable
        if budget <= 0:
            return
        # First drop old pods that are not available anyway: they count against nobody.
        for rs in _by_age(old):
            if budget <= 0:
                break
            unhealthy = _replicas(rs) - _available(rs)
            if _replicas(rs) == 0 or unhealthy <= 0:
                continue
            step = min(budget, unhealthy)
            self._scale_rs(d, rs, _replicas(rs) - step)
            budget -= step
        old = [self._fresh(rs) for rs in old]
        available = sum(_available(rs) for rs in old) + _available(new_rs)
        allowed = available - min_available
        for rs in _by_age(old):
            if allowed <= 0:
                break
            if _replicas(rs) == 0:
                continue
            step = min(_replicas(rs), allowed)
            self._scale_rs(d, rs, _replicas(rs) - step)
            allowed -= step

    def _is_scaling_event(self, d: Object, rss: list[Object]) -> bool:
        want = str(_replicas(d))
        return any(
            _replicas(rs) > 0 and annotations_of(rs).get(DESIRED_REPLICAS, want) != want for rs in rss
        )

    def _scale(self, d: Object, new_rs: Object | None, old: list[Object]) -> None:
        """dc.scale: one active RS takes the new size; several share the change proportionally."""
        everyone = ([new_rs] if new_rs is not None else []) + old
        active = [rs for rs in everyone if _replicas(rs) > 0]
        want = _replicas(d)
        if len(active) <= 1:
            target = active[0] if active else (new_rs or (_by_age(old)[-1] if old else None))
            if target is not None:
                self._scale_rs(d, target, want)
            return
        if new_rs is not None and _replicas(new_rs) == want and _available(new_rs) == want:
            for rs in old:
                self._scale_rs(d, rs, 0)
            return
        allowed = want + max_surge(d)
        current = sum(_replicas(rs) for rs in active)
        delta = allowed - current
        # Bigger (and, when growing, newer) ReplicaSets first; leftovers go to the first.
        ordered = sorted(active, key=lambda rs: (-_replicas(rs), meta(rs).get("creationTimestamp", "")))
        shares = [int(_replicas(rs) * delta / current) for rs in ordered]
        shares[0] += delta - sum(shares)
        for rs, share in zip(ordered, shares, strict=True):
            self._scale_rs(d, rs, max(0, _replicas(rs) + share))

    def _recreate(self, d: Object, new_rs: Object | None, old: list[Object]) -> None:
        if any(_replicas(rs) > 0 for rs in old):
            for rs in old:
                self._scale_rs(d, rs, 0)
            self._write_status(d, self._calculate_status(d, self.replicasets(d), new_rs))
            return
        if any(int_field(status_of(rs), "replicas") > 0 for rs in old) or self._old_pods_running(old):
            self._write_status(d, self._calculate_status(d, self.replicasets(d), new_rs))
            return
        new_rs, d = self._sync_revision(d, new_rs, old, create=True)
        if new_rs is not None and _replicas(new_rs) != _replicas(d):
            self._scale_rs(d, new_rs, _replicas(d))
        self._finish(d, new_rs)

    def _old_pods_running(self, old: list[Object]) -> bool:
        """oldPodsRunning: a pod of an old ReplicaSet that has not finished, Terminating ones included (a
        ReplicaSet's status no longer counts those): Recreate starts no new pod beside an old one."""
        return any(
            status_of(pod).get("phase") not in ("Succeeded", "Failed")
            for rs in old for pod in self.api.store.owned_view(r.PODS.plural, uid_of(rs))
        )

    def _cleanup(self, d: Object, old: list[Object]) -> None:
        limit = spec_of(d).get("revisionHistoryLimit")
        if not isinstance(limit, int):
            return
        cleanable = [
            rs for rs in old
            if _replicas(rs) == 0 and int_field(status_of(rs), "replicas") == 0
            and not meta(rs).get("deletionTimestamp")
        ]
        excess = len(cleanable) - limit
        for rs in sorted(cleanable, key=revision)[: max(0, excess)]:
            self.api.system_delete(r.REPLICASETS, namespace_of(rs), name_of(rs))

    # -- status ------------------------------------------------------------------------------

    def _calculate_status(self, d: Object, rss: list[Object], new_rs: Object | None) -> dict[str, Any]:
        available = sum(_available(rs) for rs in rss)
        total = sum(_replicas(rs) for rs in rss)
        previous = status_of(d)
        status: dict[str, Any] = {
            "observedGeneration": int_field(meta(d), "generation"),
            "replicas": sum(int_field(status_of(rs), "replicas") for rs in rss),
            "updatedReplicas": int_field(status_of(new_rs), "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(int_field(status_of(rs), "readyReplicas") for rs in rss),
            "availableReplicas": available,
            "unavailableReplicas": max(0, total - available),
        }
        status = omit_zero(status)
        status["terminatingReplicas"] = sum(int_field(status_of(rs), "terminatingReplicas") for rs in rss)
        if previous.get("conditions"):
            status["conditions"] = clone(previous["conditions"])
        if "collisionCount" in previous:
            status["collisionCount"] = previous["collisionCount"]
        if available >= _replicas(d) - max_unavailable(d):
            set_condition(status, self._cond(AVAILABLE, "True", "MinimumReplicasAvailable",
                                             "Deployment has minimum availability."))
        else:
            set_condition(status, self._cond(AVAILABLE, "False", "MinimumReplicasUnavailable",
                                             "Deployment does not have minimum availability."))
        return status

    def _complete(self, d: Object, status: dict[str, Any]) -> bool:
        want = _replicas(d)
        return (
            int_field(status, "updatedReplicas") == want
            and int_field(status, "replicas") == want
            and int_field(status, "availableReplicas") == want
            and int_field(status, "observedGeneration") >= int_field(meta(d), "generation")
        )

    def _progressing(self, d: Object, new: dict[str, Any]) -> bool:
        old = status_of(d)

        def olds(s: dict[str, Any]) -> int:
            return int_field(s, "replicas") - int_field(s, "updatedReplicas")

        return (
            int_field(new, "updatedReplicas") > int_field(old, "updatedReplicas")
            or olds(new) < olds(old)
            or int_field(new, "readyReplicas") > int_field(old, "readyReplicas")
            or int_field(new, "availableReplicas") > int_field(old, "availableReplicas")
        )

    def _timed_out(self, d: Object, status: dict[str, Any]) -> bool:
        if not _has_deadline(d):
            return False
        cond = condition(status, PROGRESSING)
        if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
            return False
        if cond.get("reason") == TIMED_OUT:
            return True
        since = parse_rfc3339(cond.get("lastUpdateTime"))
        return since is not None and since + int_field(spec_of(d), "progressDeadlineSeconds") < self.api.clock()

    def _sync_rollout_status(self, d: Object, rss: list[Object], new_rs: Object | None) -> Object:
        status = self._calculate_status(d, rss, new_rs)
        if not _has_deadline(d):
            status["conditions"] = [c for c in status.get("conditions", []) if c.get("type") != PROGRESSING]
        current = condition(status_of(d), PROGRESSING)
        complete_already = (
            int_field(status, "replicas") == int_field(status, "updatedReplicas")
            and current is not None and current.get("reason") == NEW_RS_AVAILABLE
        )
        subject = f'ReplicaSet "{name_of(new_rs)}"' if new_rs is not None else f'Deployment "{name_of(d)}"'
        if _has_deadline(d) and not complete_already:
            if self._complete(d, status):
                set_condition(status, self._cond(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                                 f"{subject} has successfully progressed."))
            elif self._progressing(d, status):
                cond = self._cond(PROGRESSING, "True", "ReplicaSetUpdated", f"{subject} is progressing.")
                if current is not None and current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                status["conditions"] = [c for c in status.get("conditions", []) if c.get("type") != PROGRESSING]
                status["conditions"].append(cond)
            elif self._timed_out(d, status):
                set_condition(status, self._cond(PROGRESSING, "False", TIMED_OUT,
                                                 f"{subject} has timed out progressing."))
        return self._write_status(d, status)

    def _check_paused_condition(self, d: Object) -> Object:
        if not _has_deadline(d):
            return d
        current = condition(status_of(d), PROGRESSING)
        if current is not None and current.get("reason") == TIMED_OUT:
            return d
        paused = bool(spec_of(d).get("paused"))
        shown = current is not None and current.get("reason") == PAUSED
        if paused == shown:
            return d
        status = clone(status_of(d))
        if paused:
            set_condition(status, self._cond(PROGRESSING, "Unknown", PAUSED, "Deployment is paused"))
        else:
            set_condition(status, self._cond(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed"))
        return self._write_status(d, status)

    def _write_status(self, d: Object, status: dict[str, Any]) -> Object:
        fresh = self.api.store.get(r.DEPLOYMENTS.plural, namespace_of(d), name_of(d))
        if fresh is None or fresh.get("status") == status:
            return fresh or d
        fresh["status"] = status
        return self.api.system_update(r.DEPLOYMENTS, fresh)

    # -- time ---------------------------------------------------------------------------------

    def waits_on_time(self, key: tuple[str, str]) -> bool:
        """Whether this Deployment's next change may come from time alone (its progress deadline)."""
        d = self.api.store.peek(r.DEPLOYMENTS.plural, *key)
        if d is None or spec_of(d).get("paused") or not _has_deadline(d):
            return False
        cond = condition(status_of(d), PROGRESSING)
        return cond is not None and cond.get("reason") not in (NEW_RS_AVAILABLE, TIMED_OUT)

    def next_due(self) -> float | None:
        """When the earliest progress deadline expires (for stepping a manual clock)."""
        now = self.api.clock()
        due: list[float] = []
        for d in self.api.store.iter(r.DEPLOYMENTS.plural):
            cond = condition(status_of(d), PROGRESSING)
            if spec_of(d).get("paused") or not _has_deadline(d) or cond is None:
                continue
            if cond.get("reason") in (NEW_RS_AVAILABLE, TIMED_OUT):
                continue
            since = parse_rfc3339(cond.get("lastUpdateTime"))
            if since is not None:
                deadline = since + int_field(spec_of(d), "progressDeadlineSeconds") + 0.001
                if deadline > now:
                    due.append(deadline)
        return min(due) if due else None
