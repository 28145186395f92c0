"""API defaulting (``pkg/apis/apps/v1/defaults.go``, ``pkg/apis/core/v1/defaults.go``), and the canonical
form of resource quantities the apiserver stores (:mod:`.quantity`).

Defaults matter beyond looks: the deployment controller finds its new ReplicaSet by
template equality, and kubectl's rollback compares templates, so a template stored
without the apiserver's defaults would compare differently than on a real cluster.
Every function works on a copy and returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediator.testing.kube import quantity
from remediator.testing.kube import resources as r
from remediator.testing.kube.objects import clone

_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or untagged images, ``IfNotPresent`` otherwise (digests included)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if isinstance(c.get("image"), str):
        c.setdefault("imagePullPolicy", image_pull_policy(c["image"]))
    c["resources"] = quantity.canonical_resources(c.get("resources") or {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        field_ref = ((env or {}).get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")
    for name in _PROBES:
        probe = c.get(name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")


def _volume(v: dict[str, Any]) -> None:
    for source in ("secret", "configMap", "projected", "downwardAPI"):
        if isinstance(v.get(source), dict):
            v[source].setdefault("defaultMode", 420)
    if set(v) == {"name"}:
        v["emptyDir"] = {}
    empty_dir = v.get("emptyDir")
    if isinstance(empty_dir, dict) and "sizeLimit" in empty_dir:
        empty_dir["sizeLimit"] = quantity.canonical(empty_dir["sizeLimit"])


def pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out = clone(spec)
    out.setdefault("restartPolicy", "Always")
    out.setdefault("terminationGracePeriodSeconds", 30)
    out.setdefault("dnsPolicy", "ClusterFirst")
    out.setdefault("securityContext", {})
    out.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for c in out.get(key) or []:
            if isinstance(c, dict):
                _container(c)
    for v in out.get("volumes") or []:
        if isinstance(v, dict):
            _volume(v)
    if "resources" in out:  # pod-level resources
        out["resources"] = quantity.canonical_resources(out["resources"])
    return out


def pod_template(template: Any) -> Any:
    if not isinstance(template, dict):
        return template
    out = clone(template)
    if isinstance(out.get("spec"), dict):
        out["spec"] = pod_spec(out["spec"])
    return out


def deployment(obj: dict[str, Any]) -> dict[str, Any]:
    out = clone(obj)
    spec = out.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec["template"] = pod_template(spec.get("template"))
    return out


def _update_strategy(strategy: Any) -> Any:
    """A StatefulSet's ``updateStrategy`` as ``SetDefaults_StatefulSet`` leaves it: an empty type becomes
    RollingUpdate with a ``rollingUpdate``, and a RollingUpdate's ``rollingUpdate``, when there is one, gets
    partition 0.  Given the type alone, no ``rollingUpdate`` is added (the apiserver stores
    ``{"type": "RollingUpdate"}`` as sent, and a patch from OnDelete to that type leaves it so).  A null is
    an absent field, as Go's nil pointer: not stored."""
    if strategy is None:
        strategy = {}
    if not isinstance(strategy, dict):
        return strategy
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
        if strategy.get("rollingUpdate") is None:
            strategy["rollingUpdate"] = {}
    rolling = strategy.get("rollingUpdate")
    if rolling is None:
        strategy.pop("rollingUpdate", None)
    elif strategy["type"] == "RollingUpdate" and isinstance(rolling, dict) and rolling.get("partition") is None:
        rolling["partition"] = 0
    return strategy


def statefulset(obj: dict[str, Any]) -> dict[str, Any]:
    out = clone(obj)
    spec = out.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec["updateStrategy"] = _update_strategy(spec.get("updateStrategy"))
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    spec["template"] = pod_template(spec.get("template"))
    for claim in spec.get("volumeClaimTemplates") or []:
        if isinstance(claim, dict):
            claim_spec = claim.setdefault("spec", {})
            claim_spec.setdefault("volumeMode", "Filesystem")
            if isinstance(claim_spec.get("resources"), dict):
                claim_spec["resources"] = quantity.canonical_resources(claim_spec["resources"])
    return out


def replicaset(obj: dict[str, Any]) -> dict[str, Any]:
    out = clone(obj)
    spec = out.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec["template"] = pod_template(spec.get("template"))
    return out


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    """Pod defaults plus what admission adds (service account, default tolerations)."""
    out = clone(obj)
    spec = pod_spec(out.get("spec") or {})
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for taint in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == taint for t in tolerations if isinstance(t, dict)):
            tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    out["spec"] = spec
    return out


def hpa(obj: dict[str, Any]) -> dict[str, Any]:
    out = clone(obj)
    out.setdefault("spec", {}).setdefault("minReplicas", 1)
    return out


def namespace(obj: dict[str, Any]) -> dict[str, Any]:
    """The name label the apiserver sets on every namespace, and the ``kubernetes`` finalizer."""
    out = clone(obj)
    name = (out.get("metadata") or {}).get("name")
    if isinstance(name, str):
        out["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    out.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    return out


def _none(obj: dict[str, Any]) -> dict[str, Any]:
    return clone(obj)


def for_resource(res: r.Resource) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return {
        r.DEPLOYMENTS.plural: deployment,
        r.STATEFULSETS.plural: statefulset,
        r.REPLICASETS.plural: replicaset,
        r.PODS.plural: pod,
        r.HPAS.plural: hpa,
        r.NAMESPACES.plural: namespace,
    }.get(res.plural, _none)
