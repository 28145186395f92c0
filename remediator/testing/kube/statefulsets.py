"""The StatefulSet controller, simplified but faithful where clients look.

ControllerRevisions are what ``kubectl rollout undo`` reads for StatefulSets, so they
are modelled exactly: named ``<sts>-<hash>``, ``.revision`` numbered max+1, ``.data``
holding ``{"spec":{"template":{..., "$patch":"replace"}}}``, and an equal older
revision reused with a bumped number on rollback.  Pods are ``<sts>-<ordinal>``,
created in order (OrderedReady) and replaced from the highest ordinal down to the
partition during a RollingUpdate; status carries currentRevision/updateRevision the
way ``kubectl rollout status`` expects.
"""

from __future__ import annotations

from typing import Any

from remediator.testing.kube import resources as r
from remediator.testing.kube.api import ObjectAPI
from remediator.testing.kube.objects import (
    Object,
    clone,
    int_field,
    labels_of,
    meta,
    name_of,
    namespace_of,
    omit_zero,
    owner_reference,
    spec_of,
    status_of,
    template_hash,
    uid_of,
)
from remediator.testing.kube.pods import READY, Pods, state_of

REVISION_LABEL = "controller-revision-hash"
HASH_LABEL = "controller.kubernetes.io/hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def revision_data(sts: Object) -> dict[str, Any]:
    """A revision's ``.data``: the template as a strategic-merge patch that replaces it wholesale."""
    return {"spec": {"template": {**clone(spec_of(sts).get("template") or {}), "$patch": "replace"}}}


def template_of_revision(rev: Object) -> dict[str, Any]:
    template = clone(((rev.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


class StatefulSetController:
    def __init__(self, api: ObjectAPI, pods: Pods) -> None:
        self.api = api
        self.pods = pods

    def revisions(self, sts: Object) -> list[Object]:
        owned = self.api.store.owned_view(r.CONTROLLERREVISIONS.plural, uid_of(sts))  # read-only
        return sorted(owned, key=lambda rev: int_field(rev, "revision"))

    def sync(self, sts: Object) -> None:
        if meta(sts).get("deletionTimestamp"):
            return
        update_rev = self._update_revision(sts)
        revisions = {name_of(rev): rev for rev in self.revisions(sts)}
        current_name = status_of(sts).get("currentRevision")
        current_rev = revisions.get(str(current_name)) or update_rev
        self._sync_pods(sts, current_rev, update_rev)
        self._update_status(sts, current_rev, update_rev)
        self._truncate_history(sts)

    def waits_on_time(self, key: tuple[str, str]) -> bool:
        """Whether a ready pod has yet to count as available (minReadySeconds)."""
        sts = self.api.store.peek(r.STATEFULSETS.plural, *key)
        if sts is None or not int_field(spec_of(sts), "minReadySeconds"):
            return False
        status = status_of(sts)
        return int_field(status, "availableReplicas") < int_field(status, "readyReplicas")

    def _update_revision(self, sts: Object) -> Object:
        data = revision_data(sts)
        revisions = self.revisions(sts)
        latest = max((int_field(rev, "revision") for rev in revisions), default=0)
        equal = [rev for rev in revisions if rev.get("data") == data]
        if equal:
            chosen = equal[-1]
            if int_field(chosen, "revision") < latest:  # rollback to an old template: renumber it
                chosen = clone(chosen)
                chosen["revision"] = latest + 1
                chosen = self.api.system_update(r.CONTROLLERREVISIONS, chosen)
            return chosen
        collisions = int_field(status_of(sts), "collisionCount")
        digest = template_hash(data, collisions)
        name = f"{name_of(sts)}-{digest}"
        if self.api.store.peek(r.CONTROLLERREVISIONS.plural, namespace_of(sts), name) is not None:
            name = f"{name_of(sts)}-{template_hash(data, collisions + 1)}"
        labels = dict(labels_of(spec_of(sts).get("template") or {}))
        labels[HASH_LABEL] = digest
        labels[REVISION_LABEL] = name
        return self.api.system_create(r.CONTROLLERREVISIONS, {
            "metadata": {
                "name": name,
                "namespace": namespace_of(sts),
                "labels": labels,
                "ownerReferences": [owner_reference(r.STATEFULSETS, sts)],
            },
            "data": data,
            "revision": latest + 1,
        })

    def _pods_by_ordinal(self, sts: Object) -> dict[int, Object]:
        prefix = f"{name_of(sts)}-"
        out: dict[int, Object] = {}
        for pod in self.api.store.owned_view(r.PODS.plural, uid_of(sts)):  # read-only
            suffix = name_of(pod)[len(prefix):]
            if name_of(pod).startswith(prefix) and suffix.isdigit():
                out[int(suffix)] = pod
        return out

    def _sync_pods(self, sts: Object, current_rev: Object, update_rev: Object) -> None:
        spec = spec_of(sts)
        want = int_field(spec, "replicas", 1)
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        strategy = spec.get("updateStrategy") or {}
        partition = int_field(strategy.get("rollingUpdate") or {}, "partition")
        pods = self._pods_by_ordinal(sts)
        for ordinal in range(want):
            pod = pods.get(ordinal)
            if pod is None:
                self._create_pod(sts, ordinal, update_rev if ordinal >= partition else current_rev)
                if ordered:
                    return
            elif ordered and not _healthy(pod):
                return
        surplus = sorted((o for o in pods if o >= want), reverse=True)
        for ordinal in surplus:
            if meta(pods[ordinal]).get("deletionTimestamp"):
                # processCondemned: already being deleted, it goes when its kubelet is done (an OrderedReady
                # set waits for that); removing it here would hide a pod stuck Terminating, which the real
                # controller keeps counting in status.replicas.
                if ordered:
                    return
                continue
            self.api.system_delete(r.PODS, namespace_of(sts), name_of(pods[ordinal]))
            if ordered:
                return
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        if any(not _healthy(pods[o]) for o in range(want) if o in pods):
            return
        for ordinal in range(want - 1, partition - 1, -1):
            pod = pods.get(ordinal)
            if pod is not None and labels_of(pod).get(REVISION_LABEL) != name_of(update_rev):
                self.api.system_delete(r.PODS, namespace_of(sts), name_of(pod))
                return

    def _create_pod(self, sts: Object, ordinal: int, rev: Object) -> None:
        name = f"{name_of(sts)}-{ordinal}"
        extra_spec: dict[str, Any] = {"hostname": name}
        if spec_of(sts).get("serviceName"):
            extra_spec["subdomain"] = spec_of(sts)["serviceName"]
        self.pods.create(
            r.STATEFULSETS, sts, template_of_revision(rev), name=name,
            extra_labels={REVISION_LABEL: name_of(rev), POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal)},
            extra_spec=extra_spec,
        )

    def _update_status(self, sts: Object, current_rev: Object, update_rev: Object) -> None:
        pods = list(self._pods_by_ordinal(sts).values())
        min_ready = int_field(spec_of(sts), "minReadySeconds")

        def at(rev: Object) -> int:
            """computeReplicaStatus: a Terminating pod counts in ``replicas`` and, while its status says so,
            ``readyReplicas``, but is neither current nor updated (``isCreated && !isTerminating``)."""
            return sum(1 for p in pods if labels_of(p).get(REVISION_LABEL) == name_of(rev)
                       and not meta(p).get("deletionTimestamp"))

        status: dict[str, Any] = {
            "observedGeneration": int_field(meta(sts), "generation"),
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if state_of(p) == READY),
            "currentReplicas": at(current_rev),
            "updatedReplicas": at(update_rev),
            "availableReplicas": sum(1 for p in pods if self.pods.is_available(p, min_ready)),
            "currentRevision": name_of(current_rev),
            "updateRevision": name_of(update_rev),
            "collisionCount": int_field(status_of(sts), "collisionCount"),
        }
        rolling = (spec_of(sts).get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
        if rolling and status["updatedReplicas"] == status["replicas"] == status["readyReplicas"]:
            status["currentRevision"], status["currentReplicas"] = status["updateRevision"], status["updatedReplicas"]
        status = omit_zero(status, keep=("replicas", "availableReplicas"))
        if status != status_of(sts):
            fresh = clone(sts)
            fresh["status"] = status
            self.api.system_update(r.STATEFULSETS, fresh)

    def _truncate_history(self, sts: Object) -> None:
        fresh = self.api.store.peek(r.STATEFULSETS.plural, namespace_of(sts), name_of(sts)) or sts
        live = {status_of(fresh).get("currentRevision"), status_of(fresh).get("updateRevision")}
        live |= {labels_of(p).get(REVISION_LABEL) for p in self._pods_by_ordinal(sts).values()}
        limit = spec_of(sts).get("revisionHistoryLimit")
        if not isinstance(limit, int):
            return
        history = [rev for rev in self.revisions(sts) if name_of(rev) not in live]
        for rev in history[: max(0, len(history) - limit)]:
            self.api.system_delete(r.CONTROLLERREVISIONS, namespace_of(rev), name_of(rev))


def _healthy(pod: Object) -> bool:
    """The controller's ``isHealthy``: Running and Ready, and not Terminating (whatever its status says).

    An OrderedReady set goes no further (creates, removes or replaces no other pod) while one
    of its pods is not; so with a pod Terminating, a scale down waits for its replacement.
    """
    return state_of(pod) == READY and not meta(pod).get("deletionTimestamp")
