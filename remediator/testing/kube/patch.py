"""The three PATCH algorithms the apiserver accepts, as pure functions over JSON values.

Kept free of HTTP and storage so each can be unit-tested against its RFC (6902, 7386)
or, for strategic merge, against the merge keys of the Kubernetes types.  Inputs are
never mutated; every function returns a new document.

Strategic merge patch needs the Go struct tags of the patched type.  The fake serves
only workloads, pods and leases, so a field-name table (:data:`MERGE_KEYS`) stands in
for the per-type schema: the same field name has the same merge key everywhere in
those types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from remediator.testing.kube.objects import clone


class PatchError(ValueError):
    """The patch cannot be used.

    ``malformed`` patches do not decode into operations (the apiserver answers 400);
    the others decode but do not apply, e.g. a failed ``test`` (422).
    """

    def __init__(self, message: str, *, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


def go_json_type(value: Any) -> str:
    """How Go's encoding/json names a JSON value's type in an unmarshal error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "null"


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike ``==`` in Python, ``true`` is not ``1`` and ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# -- RFC 6902 JSON patch ------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"JSON pointer must be a string, got {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer must be empty or start with a "/": {path!r}')
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(token: str, size: int, *, for_insert: bool) -> int:
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    idx = int(token)
    if idx > size or (idx == size and not for_insert):
        raise PatchError(f"array index {idx} out of bounds (length {size})")
    return idx


def _walk(doc: Any, tokens: Sequence[str], path: str, op: str) -> Any:
    cur = doc
    for tok in tokens:
        if isinstance(cur, dict) and tok in cur:
            cur = cur[tok]
        elif isinstance(cur, list):
            try:
                cur = cur[_index(tok, len(cur), for_insert=False)]
            except PatchError:
                raise PatchError(f"{op} operation does not apply: doc is missing path: {path!r}") from None
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path!r}")
    return cur


def _get(doc: Any, path: str, op: str) -> Any:
    return _walk(doc, _pointer(path), path, op)


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], path, op)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                parent.insert(_index(last, len(parent), for_insert=True), value)
            except PatchError as exc:
                raise PatchError(f"{op} operation does not apply: {exc}") from None
    else:
        raise PatchError(f"{op} operation does not apply: doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError(f"{op} operation does not apply: cannot remove the whole document")
    parent = _walk(doc, tokens[:-1], path, op)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(_index(last, len(parent), for_insert=False))
        except PatchError:
            pass
    raise PatchError(f"{op} operation does not apply: doc is missing path: {path!r}")


def _replace(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1], path, "replace")
    last = tokens[-1]
    if isinstance(parent, dict):  # json-patch v4, as the apiserver uses it: a missing key is simply set
        parent[last] = value
        return doc
    if isinstance(parent, list):
        try:
            parent[_index(last, len(parent), for_insert=False)] = value
            return doc
        except PatchError:
            pass
    raise PatchError(f"replace operation does not apply: doc is missing key: {path}: missing value")


def apply_json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902: all operations apply, in order, or none does."""
    if not isinstance(operations, list):
        raise PatchError(
            f"error decoding patch: json: cannot unmarshal {go_json_type(operations)} into Go value of type "
            "[]handlers.jsonPatchOp", malformed=True)
    result = clone(doc)
    for raw in operations:
        if not isinstance(raw, dict):
            raise PatchError(f"a JSON patch operation must be an object, got {raw!r}", malformed=True)
        op, path = raw.get("op"), raw.get("path")
        if not isinstance(path, str):
            raise PatchError(f"{op} operation has no valid path: {raw!r}")
        source = raw.get("from")
        if op in ("move", "copy") and not isinstance(source, str):
            raise PatchError(f"{op} operation has no valid from: {raw!r}")
        source = str(source)
        if op in ("add", "replace", "test") and "value" not in raw:
            raise PatchError(f"{op} operation has no value: {raw!r}")
        value = clone(raw.get("value"))
        if op == "add":
            result = _add(result, path, value)
        elif op == "remove":
            result, _ = _remove(result, path)
        elif op == "replace":
            result = _replace(result, path, value)
        elif op == "move":
            if path.startswith(source + "/"):
                raise PatchError(f"move operation does not apply: {path!r} is inside {source!r}")
            result, moved = _remove(result, source, "move")
            result = _add(result, path, moved, "move")
        elif op == "copy":
            result = _add(result, path, clone(_get(result, source, "copy")), "copy")
        elif op == "test":
            try:
                current = _get(result, path, "test")
            except PatchError:
                raise PatchError(f"testing value {path} failed: test failed") from None
            if not json_equal(current, value):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"unexpected kind of operation: {op!r}")
    return result


# -- RFC 7386 JSON merge patch --------------------------------------------------------------


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces (lists too)."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# -- strategic merge patch ------------------------------------------------------------------

#: Lists merged element-wise, by field name -> merge key (patchStrategy "merge").
MERGE_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "containers": "name",
        "initContainers": "name",
        "ephemeralContainers": "name",
        "env": "name",
        "volumes": "name",
        "imagePullSecrets": "name",
        "resourceClaims": "name",
        "ports": "containerPort",
        "volumeMounts": "mountPath",
        "volumeDevices": "devicePath",
        "hostAliases": "ip",
        "conditions": "type",
        "ownerReferences": "uid",
        "readinessGates": "conditionType",
    }
)
#: Lists of scalars merged as sets (patchStrategy "merge" without a key).
MERGED_SCALAR_LISTS = frozenset({"finalizers"})

_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_FROM = "$deleteFromPrimitiveList/"


class _Delete:
    """Marker: the map carrying ``$patch: delete`` removes itself from its parent."""


_DELETED = _Delete()


def _strip(value: Any) -> Any:
    """A patch value used as-is (new key or replaced list): drop directives and nulls."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None and not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get(_DIRECTIVE) == "replace")]
    return value


def _merge_map(original: Mapping[str, Any], patch: Mapping[str, Any], keys: Mapping[str, str]) -> Any:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != _DIRECTIVE})
    if directive is not None:
        raise PatchError(f"unknown patch type: {directive!r} in map")

    result = clone(dict(original))
    retain = patch.get(_RETAIN)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError(f"$retainKeys must be a list, got {retain!r}")
        result = {k: v for k, v in result.items() if k in retain}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER):
            orders[key[len(_ORDER):]] = list(value or [])
            continue
        if key.startswith(_DELETE_FROM):
            field = key[len(_DELETE_FROM):]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if not any(json_equal(v, d) for d in value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _merge_map(current if isinstance(current, dict) else {}, value, keys)
            if merged is _DELETED:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, keys)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            before = original.get(field)
            result[field] = _reorder(result[field], order, before if isinstance(before, list) else [], keys.get(field))
    return result


def _merge_list(field: str, original: Any, patch: list[Any], keys: Mapping[str, str]) -> list[Any]:
    """mergeSlice: merge element by element, then put the patch's elements in the patch's order, ahead of
    the server's own wherever the server's order does not place them (a new entry comes first)."""
    if any(isinstance(e, dict) and e.get(_DIRECTIVE) == "replace" for e in patch):
        return [_strip(e) for e in patch if not (isinstance(e, dict) and e.get(_DIRECTIVE) == "replace")]
    current = clone(original) if isinstance(original, list) else []
    if field in MERGED_SCALAR_LISTS:
        merged = current + [v for v in patch if not any(json_equal(v, c) for c in current)]
        return _order_like_the_apiserver(merged, patch, current, None)
    merge_key = keys.get(field)
    if merge_key is None:
        return [_strip(e) for e in patch]
    plain: list[Any] = []
    for element in patch:
        if not isinstance(element, dict):
            raise PatchError(f"{field}: elements of a list merged by {merge_key!r} must be objects")
        if merge_key not in element:
            raise PatchError(f"map: {element!r} does not contain declared merge key: {merge_key}")
        if element.get(_DIRECTIVE) == "delete":
            current = [c for c in current if not (isinstance(c, dict) and json_equal(c.get(merge_key),
                                                                                       element[merge_key]))]
        else:
            plain.append(element)
    original_order = list(current)
    for element in plain:
        wanted = element[merge_key]
        match = next(
            (i for i, c in enumerate(current) if isinstance(c, dict) and json_equal(c.get(merge_key), wanted)), None
        )
        merged = _merge_map(current[match] if match is not None else {}, element, keys)
        if match is None:
            current.append(merged)
        else:
            current[match] = merged
    return _order_like_the_apiserver(current, plain, original_order, merge_key)


def _order_like_the_apiserver(
    merged: list[Any], patch_order: list[Any], server_order: list[Any], merge_key: str | None
) -> list[Any]:
    """normalizeElementOrder + mergeSortedSlice (apimachinery's strategicpatch).

    The merged items named by the patch keep the patch's order, the others (server-only)
    keep the server's; the two runs are then interleaved by the server's order where it
    knows both items, and otherwise the patch's item goes first.  So a new list entry
    lands before the server's entries, as the real apiserver puts it.
    """

    def ident(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    def index(seq: list[Any], item: Any) -> int:
        return next((i for i, v in enumerate(seq) if json_equal(ident(v), ident(item))), -1)

    in_patch = [item for item in merged if index(patch_order, item) >= 0]
    server_only = [item for item in merged if index(patch_order, item) < 0]
    in_patch.sort(key=lambda item: index(patch_order, item))
    server_only.sort(key=lambda item: index(server_order, item))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if j >= len(in_patch):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(in_patch[j])
            j += 1
        else:
            left, right = index(server_order, server_only[i]), index(server_order, in_patch[j])
            if left >= 0 and right >= 0 and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(in_patch[j])
                j += 1
    return out


def _reorder(items: list[Any], order: list[Any], server_order: list[Any], merge_key: str | None) -> list[Any]:
    """``$setElementOrder``: the listed elements in the given order, interleaved with the rest as above."""
    return _order_like_the_apiserver(items, order, server_order, merge_key)


def apply_strategic_merge_patch(
    original: Mapping[str, Any], patch: Any, merge_keys: Mapping[str, str] = MERGE_KEYS
) -> dict[str, Any]:
    """Strategic merge: merge-patch plus keyed list merges and the ``$`` directives."""
    if not isinstance(patch, dict):
        raise PatchError(
            f"json: cannot unmarshal {go_json_type(patch)} into Go value of type map[string]interface {{}}",
            malformed=True)
    merged = _merge_map(original, patch, merge_keys)
    if merged is _DELETED:
        raise PatchError("$patch: delete cannot remove the whole object")
    out: dict[str, Any] = merged
    return out
