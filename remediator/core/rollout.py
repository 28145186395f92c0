"""kubectl's rollout rules, as pure functions over Kubernetes objects (plain dicts).

Sources: kubectl ``pkg/polymorphichelpers`` (rollout_status.go, rollback.go) and
``pkg/util/deployment``, as summarised in shared/spec/kubernetes.md §3-4.  Keeping
them pure lets the executor, the tests and replay share one definition of "healthy".
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
#: The label a StatefulSet's controller puts on each pod: the name of the ControllerRevision it runs.
REVISION_LABEL = "controller-revision-hash"
#: Annotations kubectl keeps from the deployment (not copied from the ReplicaSet) on undo.
SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)


@dataclass(frozen=True)
class Health:
    done: bool
    failed: bool
    message: str


def _get(obj: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur or cur[p] is None:
            return default
        cur = cur[p]
    return cur


def deployment_health(dep: dict[str, Any], replicasets: list[dict[str, Any]] | None = None) -> Health:
    """kubectl rollout status for a Deployment, made exact by its ReplicaSets where they are given.

    Two of kubectl's verdicts depend on which ReplicaSet holds the current pod template,
    which the Deployment alone does not say (``replicasets``: its ReplicaSets, listed after
    it was read; None judges as kubectl does):

    * a ``ProgressDeadlineExceeded`` condition counts only when it is this rollout's
      (:func:`_deadline_is_current`): the controller keeps the condition of a rollout that
      timed out, unchanged, after it has observed the next one, until that one progresses.
      Right after a rollback of a timed-out release (Recreate: the new pods wait for the
      old ones to go) the status reads "observed, exceeded its progress deadline", and
      kubectl's rule fails the rollback that is working;
    * a paused Deployment whose template has not rolled out fails at once, saying so: its
      controller creates no ReplicaSet for the new template until it is resumed
      (:func:`_paused_before_rollout`), so waiting would only run out the timeout.

    A rollout still under way whose pods cannot be created (an admission refusal: a LimitRange,
    a ResourceQuota, a policy) carries the ``ReplicaFailure`` condition, which its controller
    copies from the ReplicaSet and removes once a create succeeds; its message is added to the
    verdict (:func:`_replica_failure`), so that a wait running out says why, not only what.  It
    does not fail the rollout by itself: a quota may free up and the controller retries.
    """
    health = _deployment_health(dep, replicasets)
    failure = _replica_failure(dep)
    if health.done or health.failed or failure is None:
        return health
    return replace(health, message=f"{health.message} ({failure})")


def _replica_failure(dep: Mapping[str, Any]) -> str | None:
    """What the Deployment's ``ReplicaFailure`` condition (status True) says, e.g. ``ReplicaFailure (FailedCreate):
    pods "web-5d9c-x7" is forbidden: maximum cpu usage per Container is 500m, but limit is 1``; None without one."""
    for cond in _get(dep, "status", "conditions", default=[]):
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            reason = f" ({cond['reason']})" if cond.get("reason") else ""
            return f"ReplicaFailure{reason}: {cond.get('message') or 'no message'}"
    return None


def _deployment_health(dep: dict[str, Any], replicasets: list[dict[str, Any]] | None) -> Health:
    name = _get(dep, "metadata", "name", default="")
    generation = _get(dep, "metadata", "generation", default=0)
    observed = _get(dep, "status", "observedGeneration", default=0)
    if generation > observed:
        return Health(False, False, "Waiting for deployment spec update to be observed...")
    deadline = _deadline_condition(dep)
    if deadline is not None and (replicasets is None or _deadline_is_current(deadline, dep, replicasets)):
        return Health(False, True, f'deployment "{name}" exceeded its progress deadline')
    want = _get(dep, "spec", "replicas", default=1)
    updated = _get(dep, "status", "updatedReplicas", default=0)
    replicas = _get(dep, "status", "replicas", default=0)
    available = _get(dep, "status", "availableReplicas", default=0)
    if updated < want:
        if replicasets is not None and _paused_before_rollout(dep, replicasets):
            return Health(False, True, (
                f'deployment "{name}" is paused: its pod template has not rolled out ({updated} of {want} '
                f"replicas updated) and will not until it is resumed (kubectl rollout resume deployment/{name})"))
        return Health(False, False, f"{updated} out of {want} new replicas have been updated...")
    if replicas > updated:
        return Health(False, False, f"{replicas - updated} old replicas are pending termination...")
    if available < updated:
        return Health(False, False, f"{available} of {updated} updated replicas are available...")
    return Health(True, False, f'deployment "{name}" successfully rolled out')


#: The subject of the controller's Progressing messages: ``ReplicaSet "web-5d9c" has timed out progressing.``,
#: or ``Deployment "web" ...`` when no ReplicaSet held the template then (deployment/sync.go).
_PROGRESS_SUBJECT = re.compile(r'(ReplicaSet|Deployment) "([^"]*)"')


def _deadline_condition(dep: Mapping[str, Any]) -> dict[str, Any] | None:
    for cond in _get(dep, "status", "conditions", default=[]):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return dict(cond)
    return None


def needs_replicasets(dep: Mapping[str, Any]) -> bool:
    """Whether :func:`deployment_health`'s verdict on ``dep`` depends on its ReplicaSets: a
    ``ProgressDeadlineExceeded`` condition (maybe an earlier rollout's), or a pause."""
    return bool(_get(dep, "spec", "paused", default=False)) or _deadline_condition(dep) is not None


def template_replicaset(dep: Mapping[str, Any], replicasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's current pod template, or None while its controller has made none
    (its pod-template-hash label left out; the oldest of equal ones, as the controller picks)."""
    uid = _get(dep, "metadata", "uid", default="")
    template = template_without_hash(_get(dep, "spec", "template", default={}))
    same = [rs for rs in replicasets
            if owned_by(rs, uid) and template_without_hash(_get(rs, "spec", "template", default={})) == template]
    return min(same, key=lambda rs: (str(_get(rs, "metadata", "creationTimestamp", default="")),
                                     str(_get(rs, "metadata", "name", default=""))), default=None)


def _deadline_is_current(cond: Mapping[str, Any], dep: Mapping[str, Any], replicasets: list[dict[str, Any]]) -> bool:
    """Whether a ``ProgressDeadlineExceeded`` condition is the current rollout's, by the subject it names.

    The controller writes it naming the ReplicaSet that was new when it timed out, and once
    timed out does not look again (DeploymentTimedOut returns true on its own reason) until
    the next rollout shows progress: a condition naming another ReplicaSet than the current
    template's is an earlier rollout's.  One naming the Deployment was written when no
    ReplicaSet held the template: it is current while none does.  A wording this rule does
    not know counts, as kubectl counts it.
    """
    found = _PROGRESS_SUBJECT.match(str(cond.get("message") or ""))
    if found is None:
        return True
    subject, named = found.groups()
    current = template_replicaset(dep, replicasets)
    if subject == "Deployment":
        return current is None
    return current is not None and _get(current, "metadata", "name") == named


def _paused_before_rollout(dep: Mapping[str, Any], replicasets: list[dict[str, Any]]) -> bool:
    """A paused Deployment whose current template will not roll out: its controller only scales the
    ReplicaSets it has, and creates none for a new template.  So no ReplicaSet holds the template, or
    the one that does was sized below the Deployment's replicas (paused mid-rollout); one sized to
    them is a scale up whose pods are on their way."""
    if not _get(dep, "spec", "paused", default=False):
        return False
    current = template_replicaset(dep, replicasets)
    return current is None or _get(current, "spec", "replicas", default=1) < _get(dep, "spec", "replicas", default=1)


def statefulset_health(sts: dict[str, Any]) -> Health:
    """kubectl rollout status for a StatefulSet, as its status tells it.

    Its status may lag a pod's delete; :func:`pods_health` is the check on the pods themselves.
    A partitioned rollout is done once the pods from the partition up are updated, as kubectl
    says, whatever ``currentRevision`` holds: the controller moves it to the update revision
    only when ``status.replicas`` (which counts a pod stuck Terminating outside the set's
    range, a condemned pod whose node is gone) equals the updated ones, so a rollout could
    be complete and never read as done.  The pods' revisions are checked by :func:`pods_health`.

    kubectl refuses OnDelete ("rollout status is only available for RollingUpdate"): its
    controller replaces a pod only when someone deletes it.  Here an OnDelete set is done once
    every pod is updated and ready; :func:`pods_health` fails it at once while a pod that is
    not being deleted still runs an earlier revision, since nothing will replace it.
    """
    strategy = _get(sts, "spec", "updateStrategy", "type", default="RollingUpdate")
    if strategy not in ("RollingUpdate", "OnDelete"):
        return Health(False, True, f"rollout status is only available for RollingUpdate and OnDelete, not {strategy}")
    observed = _get(sts, "status", "observedGeneration", default=0)
    if not observed or observed < _get(sts, "metadata", "generation", default=0):
        return Health(False, False, "Waiting for statefulset spec update to be observed...")
    want = _get(sts, "spec", "replicas", default=1)
    ready = _get(sts, "status", "readyReplicas", default=0)
    if ready < want:
        return Health(False, False, f"Waiting for {want - ready} pods to be ready...")
    updated = _get(sts, "status", "updatedReplicas", default=0)
    if strategy == "OnDelete":
        if updated < want:
            return Health(False, False, f"Waiting for {want - updated} pods to be updated (updateStrategy OnDelete: "
                                        "a pod is updated when it is deleted)...")
        return Health(True, False, "statefulset rolled out (updateStrategy OnDelete: every pod updated)")
    partition = _get(sts, "spec", "updateStrategy", "rollingUpdate", "partition", default=0)
    if not partition and updated < want:
        # The StatefulSet controller counts a Terminating pod as ready (its status may still say
        # so for the whole grace period) but not as updated: after a pod is deleted, readyReplicas
        # alone would call the rollout done before the pod's replacement even exists.
        return Health(False, False, f"Waiting for {want - updated} pods to be replaced (terminating or not created)...")
    if partition:
        if updated < want - partition:
            return Health(False, False, f"Waiting for partitioned roll out to finish: {updated} of {want - partition}")
        return Health(True, False, "partitioned roll out complete")
    return Health(True, False, "statefulset rolling update complete")


def health(kind: str, obj: dict[str, Any], replicasets: list[dict[str, Any]] | None = None) -> Health:
    """``replicasets``: a Deployment's, when :func:`needs_replicasets` (see :func:`deployment_health`)."""
    return deployment_health(obj, replicasets) if kind == "Deployment" else statefulset_health(obj)


def needs_pods(kind: str, workload: Mapping[str, Any]) -> bool:
    """Whether the pods are to be read before the status says done: an OnDelete StatefulSet whose spec is
    observed, whose pods at an earlier revision fail it at once (:func:`pods_health`), since its
    controller never replaces them; waiting on its status would run out the timeout."""
    strategy = _get(workload, "spec", "updateStrategy", "type", default="RollingUpdate")
    observed = _get(workload, "status", "observedGeneration", default=0)
    return (kind == "StatefulSet" and strategy == "OnDelete" and bool(observed)
            and observed >= _get(workload, "metadata", "generation", default=0))


def selector_text(workload: Mapping[str, Any]) -> str:
    """The workload's ``spec.selector`` as a list/watch ``labelSelector``: its ``matchLabels`` and its
    ``matchExpressions`` (In, NotIn, Exists, DoesNotExist), so that a set selected by expressions
    alone is not listed as the whole namespace."""
    selector = _get(workload, "spec", "selector", default={})
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key", ""), e.get("operator", ""), ",".join(e.get("values") or [])
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, ""))
    return ",".join(t for t in terms if t)


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True (its status may still say so while it is Terminating)."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in _get(pod, "status", "conditions", default=[]))


def own_pods(
    kind: str, workload: dict[str, Any], pods: list[dict[str, Any]], replicasets: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The workload's own pods among ``pods``, by controller ownership, not by labels alone.

    A StatefulSet owns its pods; a Deployment owns them through its ReplicaSets
    (``replicasets`` is unused for a StatefulSet).  A pod another workload's selector
    also matches is not this workload's capacity.
    """
    uid = _get(workload, "metadata", "uid", default="")
    if kind == "Deployment":
        owners = {_get(rs, "metadata", "uid") for rs in replicasets if owned_by(rs, uid)}
        return [p for p in pods if any(ref.get("controller") and ref.get("uid") in owners
                                       for ref in _get(p, "metadata", "ownerReferences", default=[]))]
    return [p for p in pods if owned_by(p, uid)]


def serving(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods that serve: Ready and not Terminating."""
    return [p for p in pods if pod_ready(p) and not _get(p, "metadata", "deletionTimestamp")]


def serving_after_scale_down(kind: str, workload: dict[str, Any], up: list[dict[str, Any]], replicas: int) -> int:
    """How many of the serving pods ``up`` a scale down to ``replicas`` keeps, at best.

    A ReplicaSet removes unready pods first, so a Deployment keeps ``min(len(up), replicas)``.
    So does an OrderedReady StatefulSet (the default): its controller removes a pod only
    once every pod it keeps is Running and Ready.  A Parallel one removes the highest
    ordinals at once, whatever their state: it keeps only the serving pods whose ordinal
    stays below ``replicas`` (counted from ``spec.ordinals.start``).
    """
    if kind == "Deployment" or _get(workload, "spec", "podManagementPolicy", default="OrderedReady") != "Parallel":
        return min(len(up), replicas)
    name = _get(workload, "metadata", "name", default="")
    start = _get(workload, "spec", "ordinals", "start", default=0)
    kept = {f"{name}-{ordinal}" for ordinal in range(start, start + replicas)}
    return sum(1 for p in up if _get(p, "metadata", "name") in kept)


def pods_health(kind: str, workload: dict[str, Any], own: list[dict[str, Any]]) -> Health:
    """The rollout rule's second half: the workload's own pods agree with its status.

    A workload's status is written by its controller after it sees a change, so right
    after a pod is deleted it still reads as before: a Deployment's ``availableReplicas``
    still counts the deleted pod, a StatefulSet's ``updatedReplicas`` too.  kubectl's
    rule alone calls that healthy.  Read from the pods themselves, health needs
    ``spec.replicas`` pods serving (Ready, not Terminating); for a StatefulSet, every
    ordinal's pod, since it recreates a deleted pod under the same name only once the
    old one is gone, at the update revision (``status.updateRevision``, from the
    partition up): the status' counts, not kubectl's ``currentRevision``, say a rollout is
    done (:func:`statefulset_health`), and the pods say which ones it reached.  An OnDelete
    set with a pod at an earlier revision that is not being deleted fails: its controller
    never replaces it.  ``own`` is :func:`own_pods`.
    """
    want = _get(workload, "spec", "replicas", default=1)
    up = serving(own)
    if kind == "Deployment":
        if len(up) < want:
            return Health(False, False, f"{len(up)} of {want} pods are ready and not terminating...")
        return Health(True, False, f"{len(up)} of {want} pods are ready and not terminating")
    name = _get(workload, "metadata", "name", default="")
    start = _get(workload, "spec", "ordinals", "start", default=0)
    update = _get(workload, "status", "updateRevision")
    strategy = _get(workload, "spec", "updateStrategy", "type", default="RollingUpdate")
    partition = _get(workload, "spec", "updateStrategy", "rollingUpdate", "partition", default=0)
    first_updated = start + (partition if strategy == "RollingUpdate" else 0)
    by_name = {_get(p, "metadata", "name"): p for p in own}

    def behind(pod: dict[str, Any], ordinal: int) -> bool:
        """At another revision than the update revision, where the rollout puts that one."""
        return bool(update) and ordinal >= first_updated and _get(pod, "metadata", "labels", REVISION_LABEL) != update

    if strategy == "OnDelete":
        stale = [f"{name}-{o}" for o in range(start, start + want) if (pod := by_name.get(f"{name}-{o}")) is not None
                 and not _get(pod, "metadata", "deletionTimestamp") and behind(pod, o)]
        if stale:
            return Health(False, True, (
                f'statefulset "{name}" replaces a pod only when it is deleted (updateStrategy OnDelete): '
                f"{', '.join(stale)} still run{'s' if len(stale) == 1 else ''} an earlier revision than {update}, "
                "and nothing will replace them (delete them, e.g. with delete_pod, to roll them)"))
    for ordinal in range(start, start + want):
        pod_name = f"{name}-{ordinal}"
        pod = by_name.get(pod_name)
        if pod is None:
            return Health(False, False, f"Waiting for pod {pod_name} to be created...")
        if _get(pod, "metadata", "deletionTimestamp"):
            return Health(False, False, f"Waiting for pod {pod_name} to be replaced (terminating)...")
        if behind(pod, ordinal):
            return Health(False, False, f"Waiting for pod {pod_name} to be updated to revision {update}...")
        if not pod_ready(pod):
            return Health(False, False, f"Waiting for pod {pod_name} to be ready...")
    return Health(True, False, f"all {want} pods are ready and not terminating")


def revision_of(obj: dict[str, Any]) -> int:
    try:
        return int(_get(obj, "metadata", "annotations", REVISION, default="0"))
    except ValueError:
        return 0


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(
        ref.get("controller") and ref.get("uid") == uid for ref in _get(obj, "metadata", "ownerReferences", default=[])
    )


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = _get(t, "metadata", "labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def template_digest(template: dict[str, Any] | None) -> str:
    """A short fingerprint of a pod template (its pod-template-hash label left out).

    A rollback's write-ahead intent records the digest of the template it rolls back
    *from*: a resumed rollback re-applies only while the workload still runs that
    template, so a release someone made since is never rolled back by a stale intent.
    """
    canonical = json.dumps(template_without_hash(template or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RollbackError(ValueError):
    """kubectl would refuse this rollback; the message is kubectl's."""


@dataclass(frozen=True)
class RollbackPlan:
    revision: int
    patch: list[dict[str, Any]] | None  # None: nothing to do (template already matches)
    message: str
    replicaset: str = ""  # the ReplicaSet rolled back to: its name outlives its revision number


def deployment_history_lag(dep: dict[str, Any], replicasets: list[dict[str, Any]]) -> str | None:
    """Why the ReplicaSets read are not yet the revision history of the Deployment read (None: they are).

    kubectl's undo takes "the revision before the newest", which means "the one before the
    current template" only once the newest ReplicaSet *is* the current template.
    ``observedGeneration`` does not promise that: the Deployment controller handles a write
    that changes ``replicas`` as a scaling event (sync.go: the active ReplicaSets'
    ``desired-replicas`` differ), scales the ReplicaSets it has without creating the new
    template's, and still reports the generation observed; the new ReplicaSet and its
    revision number come on a later sync.  Planned in that window, undo goes two changes
    back.  The same check catches a ReplicaSet list older than the Deployment read (the
    Deployment's own revision annotation, which the controller copies from its newest
    ReplicaSet, names another revision).
    """
    name = _get(dep, "metadata", "name", default="")
    generation = _get(dep, "metadata", "generation", default=0)
    observed = _get(dep, "status", "observedGeneration", default=0)
    if observed < generation:
        return f"has not yet observed generation {generation} (observed {observed})"
    if _get(dep, "spec", "paused", default=False):
        return None  # paused: no ReplicaSet for a new template by design, and the plan refuses it with kubectl's words
    uid = _get(dep, "metadata", "uid", default="")
    owned = [rs for rs in replicasets if owned_by(rs, uid)]
    if not owned:
        return f'has no ReplicaSet for deployment "{name}" yet'
    newest = max(owned, key=revision_of)
    template = template_without_hash(_get(dep, "spec", "template", default={}))
    if template_without_hash(_get(newest, "spec", "template", default={})) != template:
        return (f"has no revision of the current pod template yet (the newest, revision {revision_of(newest)}, "
                "holds another)")
    recorded = _get(dep, "metadata", "annotations", REVISION)
    if recorded is not None and str(recorded) != str(revision_of(newest)):
        return (f"records revision {recorded} on the deployment, but the newest ReplicaSet read is revision "
                f"{revision_of(newest)}")
    return None


def statefulset_history_lag(sts: dict[str, Any], revisions: list[dict[str, Any]]) -> str | None:
    """Why the ControllerRevisions read are not yet the history of the StatefulSet read (None: they are).

    The StatefulSet controller creates (or renumbers) the current template's revision before
    it reports the generation observed, and names it in ``status.updateRevision``; the newest
    revision read must be that one, or the list is older than the StatefulSet read.
    """
    generation = _get(sts, "metadata", "generation", default=0)
    observed = _get(sts, "status", "observedGeneration", default=0)
    if observed < generation:
        return f"has not yet observed generation {generation} (observed {observed})"
    update = _get(sts, "status", "updateRevision")
    uid = _get(sts, "metadata", "uid", default="")
    owned = [r for r in revisions if owned_by(r, uid)]
    if update and owned:
        newest = max(owned, key=lambda r: int(r.get("revision", 0)))
        if _get(newest, "metadata", "name") != update:
            return (f"has no revision of the current pod template in the history read yet (the newest is "
                    f"{_get(newest, 'metadata', 'name')}, the update revision {update})")
    return None


def plan_deployment_rollback(
    dep: dict[str, Any], replicasets: list[dict[str, Any]], to_revision: int = 0
) -> RollbackPlan:
    """The JSON patch ``kubectl rollout undo`` would send (spec §3)."""
    name = _get(dep, "metadata", "name", default="")
    if _get(dep, "spec", "paused", default=False):
        raise RollbackError(
            "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
        )
    uid = _get(dep, "metadata", "uid", default="")
    owned = [rs for rs in replicasets if owned_by(rs, uid)]
    by_rev = {revision_of(rs): rs for rs in owned}
    if to_revision:
        if to_revision not in by_rev:
            raise RollbackError(f"unable to find specified revision {to_revision} in history")
        chosen = to_revision
    else:
        revs = sorted(by_rev, reverse=True)
        if len(revs) < 2:
            raise RollbackError(f'no rollout history found for deployment "{name}"')
        chosen = revs[1]
    rs = by_rev[chosen]
    rs_name = str(_get(rs, "metadata", "name", default=""))
    target = template_without_hash(_get(rs, "spec", "template", default={}))
    if target == template_without_hash(_get(dep, "spec", "template", default={})):
        message = f"skipped rollback (current template already matches revision {chosen})"
        return RollbackPlan(chosen, None, message, rs_name)
    dep_ann = _get(dep, "metadata", "annotations", default={}) or {}
    annotations = {k: v for k, v in dep_ann.items() if k in SKIP_ANNOTATIONS}
    for k, v in (_get(rs, "metadata", "annotations", default={}) or {}).items():
        if k not in SKIP_ANNOTATIONS:
            annotations[k] = v
    patch = [
        {"op": "replace", "path": "/spec/template", "value": target},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]
    return RollbackPlan(chosen, patch, f"rolled back to revision {chosen}", rs_name)


def plan_statefulset_rollback(
    sts: dict[str, Any], revisions: list[dict[str, Any]], to_revision: int = 0
) -> tuple[int, dict[str, Any], str]:
    """The strategic-merge patch kubectl sends for a StatefulSet undo (the revision's raw data),
    with the revision's number and its ControllerRevision's name."""
    uid = _get(sts, "metadata", "uid", default="")
    owned = {int(r.get("revision", 0)): r for r in revisions if owned_by(r, uid)}
    if to_revision:
        if to_revision not in owned:
            raise RollbackError(f"unable to find specified revision {to_revision} in history")
        chosen = to_revision
    else:
        revs = sorted(owned, reverse=True)
        if len(revs) < 2 or revs[1] <= 0:
            raise RollbackError("no last revision to roll back to")
        chosen = revs[1]
    data = owned[chosen].get("data") or {}
    return chosen, data, str(_get(owned[chosen], "metadata", "name", default=""))


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """A small structural diff for the audit: which paths changed, from what, to what."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key not in before:
                out.append({"path": sub, "op": "add", "after": after[key]})
            elif key not in after:
                out.append({"path": sub, "op": "remove", "before": before[key]})
            else:
                out += diff(before[key], after[key], sub)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out += diff(b, a, f"{path}/{i}")
        return out
    if before != after:
        return [{"path": path or "/", "op": "replace", "before": before, "after": after}]
    return []
