"""Unknown fields: what the apiserver drops from a body, and the ``Warning: 299`` it answers with.

kube-apiserver decodes every body into its Go types; a field the type does not have is
dropped, and (``fieldValidation=Warn``, the default) reported once per field in a
``Warning`` header, or refused (``Strict``).  The fake stores plain JSON, so it needs the
types' field lists: kubernetes-asyncio's generated models carry exactly those (their
``attribute_map`` and ``openapi_types``, generated from the same OpenAPI document the
apiserver serves), so they are the schema here rather than a hand-kept copy.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from kubernetes_asyncio.client import models

from remediator.testing.kube import resources as r

#: The model of each resource the fake serves (the apiserver's Go type, as the client generated it).
MODELS = {
    r.DEPLOYMENTS.plural: "V1Deployment",
    r.STATEFULSETS.plural: "V1StatefulSet",
    r.REPLICASETS.plural: "V1ReplicaSet",
    r.CONTROLLERREVISIONS.plural: "V1ControllerRevision",
    r.PODS.plural: "V1Pod",
    r.LEASES.plural: "V1Lease",
    r.HPAS.plural: "V2HorizontalPodAutoscaler",
    r.NAMESPACES.plural: "V1Namespace",
}

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")


@cache
def _fields(model: str) -> dict[str, str]:
    """JSON field name -> type string (``V1PodSpec``, ``list[V1Container]``, ``dict(str, str)``, ``str``)."""
    cls = getattr(models, model)
    return {cls.attribute_map[attr]: kind for attr, kind in cls.openapi_types.items()}


def unknown_fields(res: r.Resource, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``obj`` without the fields its type lacks, and those fields' paths in the apiserver's notation
    (``spec.template.spec.containers[0].bar``), sorted as the apiserver reports them."""
    model = MODELS.get(res.plural)
    if model is None:
        return obj, []
    found: list[str] = []
    pruned = _prune(obj, model, "", found)
    return pruned, sorted(found)


def _prune(value: Any, kind: str, path: str, found: list[str]) -> Any:
    if value is None:
        return value
    if (m := _LIST.match(kind)) and isinstance(value, list):
        return [_prune(v, m.group(1), f"{path}[{i}]", found) for i, v in enumerate(value)]
    if (m := _DICT.match(kind)) and isinstance(value, dict):
        return {k: _prune(v, m.group(1), f"{path}.{k}", found) for k, v in value.items()}
    if not hasattr(models, kind) or not isinstance(value, dict):
        return value  # a scalar, or "object" (IntOrString, RawExtension): nothing to check beneath
    fields = _fields(kind)
    out: dict[str, Any] = {}
    for key, sub in value.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            found.append(where)
            continue
        out[key] = _prune(sub, fields[key], where, found)
    return out


def warning(path: str) -> str:
    """The ``Warning`` header value for one dropped field (RFC 7234 warn-code 299, quoted text)."""
    text = f'unknown field "{path}"'.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{text}"'
