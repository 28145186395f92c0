"""The resource types the fake serves, described once.

Routing, error messages (``deployments.apps "web"``, ``Deployment.apps "web"``), list
kinds and the generation rule all derive from this table, so adding a resource is one
entry rather than edits scattered over the HTTP layer and the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class GenerationRule(Enum):
    """When an update bumps metadata.generation (per registry strategy)."""

    NONE = "none"
    SPEC = "spec"
    SPEC_AND_ANNOTATIONS = "spec+annotations"  # apps/v1 Deployment's strategy also watches annotations


READ = frozenset({"get", "list", "watch"})
ALL = READ | {"create", "update", "patch", "delete"}


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    kind: str
    group: str
    version: str
    verbs: frozenset[str]
    generation: GenerationRule = GenerationRule.NONE
    has_status: bool = True
    scale: bool = False
    short_names: tuple[str, ...] = ()
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps``: how the apiserver names the resource in NotFound/Conflict."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Deployment.apps``: how the apiserver names the kind in Invalid errors."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


DEPLOYMENTS = Resource(
    "deployments", "deployment", "Deployment", "apps", "v1", ALL, GenerationRule.SPEC_AND_ANNOTATIONS,
    scale=True, short_names=("deploy",),
)
STATEFULSETS = Resource(
    "statefulsets", "statefulset", "StatefulSet", "apps", "v1", ALL, GenerationRule.SPEC, scale=True,
    short_names=("sts",),
)
REPLICASETS = Resource("replicasets", "replicaset", "ReplicaSet", "apps", "v1", READ, GenerationRule.SPEC,
                       short_names=("rs",))
CONTROLLERREVISIONS = Resource(
    "controllerrevisions", "controllerrevision", "ControllerRevision", "apps", "v1", READ, has_status=False
)
#: Pods carry metadata.generation (PodObservedGenerationTracking): 1 at creation, +1 on a graceful delete.
PODS = Resource("pods", "pod", "Pod", "", "v1", READ | {"create", "delete"}, GenerationRule.SPEC,
                short_names=("po",))
#: Cluster-scoped: a namespaced object can only be created in a namespace that exists.
NAMESPACES = Resource("namespaces", "namespace", "Namespace", "", "v1", READ | {"create", "delete"},
                      short_names=("ns",), namespaced=False)
LEASES = Resource("leases", "lease", "Lease", "coordination.k8s.io", "v1", ALL, has_status=False)
#: Served so that clients can see which workloads an autoscaler owns; nothing acts on them.
HPAS = Resource(
    "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", "autoscaling", "v2", ALL,
    GenerationRule.SPEC, short_names=("hpa",),
)

RESOURCES: tuple[Resource, ...] = (
    DEPLOYMENTS, STATEFULSETS, REPLICASETS, CONTROLLERREVISIONS, PODS, LEASES, HPAS, NAMESPACES,
)
#: Namespaces that exist in every cluster from the start.
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")


def lookup(group: str, version: str, plural: str) -> Resource | None:
    """The resource served at ``/apis/{group}/{version}/.../{plural}`` (group "" for ``/api``)."""
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None


def resolve(name: str | Resource) -> Resource:
    """Accept what a test author would type: ``deployments``, ``Deployment``, ``deploy``, ``deployments.apps``."""
    if isinstance(name, Resource):
        return name
    wanted = name.lower()
    for res in RESOURCES:
        if wanted in (res.plural, res.singular, res.kind.lower(), res.qualified, *res.short_names):
            return res
    raise KeyError(f"the fake Kubernetes API does not serve {name!r}")


def group_versions() -> list[tuple[str, str]]:
    """(group, version) pairs in discovery order, core first."""
    seen: list[tuple[str, str]] = []
    for res in RESOURCES:
        if (res.group, res.version) not in seen:
            seen.append((res.group, res.version))
    return seen
