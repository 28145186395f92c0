"""Small accessors and builders over plain-dict Kubernetes objects, shared by the controllers.

Objects stay plain JSON dicts everywhere (no model classes) so that what the fake stores
is byte-for-byte what it serves, and the patch algorithms can work on it directly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

from remediator.testing.kube.resources import Resource

Object = dict[str, Any]

#: The alphabet Kubernetes uses for generated names (no vowels, no look-alike characters).
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


J = TypeVar("J")


def clone(value: J) -> J:
    """A deep copy of a JSON document (dicts, lists, scalars), several times faster than ``copy.deepcopy``.

    Every read and write of the store copies whole objects, so this is the fake's hottest
    function; JSON values need none of deepcopy's generality (memo, arbitrary classes).
    """
    return cast(J, _copy(value))


_CONTAINERS = (dict, list)


def _copy(value: Any) -> Any:
    # Leaves (most of a document) are taken as they are, without a call per leaf.
    if type(value) is dict:
        return {k: _copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) if type(v) in _CONTAINERS else v for v in value]
    return value


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid") or "")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = meta(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    annotations = meta(obj).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def status_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def int_field(mapping: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the owner with ``controller: true``: ownership, as controllers define it."""
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_reference(res: Resource, owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": res.api_version,
        "kind": res.kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(objects: Iterable[Object], owner: Mapping[str, Any]) -> list[Object]:
    uid = uid_of(owner)
    return [o for o in objects if controller_uid(o) == uid]


def strip_for_list(obj: Mapping[str, Any]) -> Object:
    """List items carry no kind/apiVersion on the wire; the List itself does."""
    return {k: clone(v) for k, v in obj.items() if k not in ("kind", "apiVersion")}


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == kind:
            return c
    return None


def set_condition(status: dict[str, Any], new: dict[str, Any]) -> None:
    """SetDeploymentCondition: same status and reason is a no-op; same status keeps the transition time."""
    current = condition(status, new["type"])
    if current is not None and current.get("status") == new["status"] and current.get("reason") == new["reason"]:
        return
    if current is not None and current.get("status") == new["status"]:
        new["lastTransitionTime"] = current.get("lastTransitionTime", new.get("lastTransitionTime"))
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != new["type"]] + [new]


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """rand.SafeEncodeString: map each byte into :data:`ALPHANUMS` so names never spell words."""
    return "".join(ALPHANUMS[b % len(ALPHANUMS)] for b in text.encode())


def template_hash(template: Any, collision_count: int = 0) -> str:
    """A pod-template-hash: FNV-32a over the template (and collision count), safely encoded.

    The hashed text is canonical JSON, not Go's struct dump, so values differ from a real
    cluster, but they have the same form and are equally stable for equal templates.
    """
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    if collision_count:
        text += str(collision_count)
    return safe_encode(str(fnv32a(text.encode())))


def random_suffix(rng: random.Random, length: int = 5) -> str:
    return "".join(rng.choice(ALPHANUMS) for _ in range(length))


def omit_zero(status: dict[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    """Go's ``omitempty`` for the integer status fields: zeros vanish unless the field lacks the tag."""
    kept = set(keep)
    return {k: v for k, v in status.items() if k in kept or (v is not None and not (v == 0 and isinstance(v, int)))}
