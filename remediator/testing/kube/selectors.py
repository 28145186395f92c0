"""Label and field selectors, as the apiserver parses them from query strings.

The executor finds ReplicaSets and ControllerRevisions with ``labelSelector`` and
waits on one object with ``fieldSelector=metadata.name=...``; a fake that ignored
selectors would let a wrong selector pass unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


class SelectorError(ValueError):
    """The selector text does not parse (the apiserver answers 400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` value lists."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced parentheses in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced parentheses in {text!r}")
    parts.append("".join(current))
    return parts


def _check_key(key: str, whole: str) -> str:
    if not key or any(c.isspace() or c in "=!(),'\"" for c in key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {whole!r}")
    return key


def _parse_requirement(text: str) -> Requirement:
    part = text.strip()
    if not part:
        raise SelectorError("unable to parse requirement: found '', expected: identifier")
    for word, op in ((" notin ", "notin"), (" in ", "in")):
        idx = part.find(word)
        if idx > 0:
            key = _check_key(part[:idx].strip(), part)
            rest = part[idx + len(word):].strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise SelectorError(f"unable to parse requirement: expected '(' after {op!r} in {part!r}")
            values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
            return Requirement(key, op, values)
    if part.startswith("!"):
        return Requirement(_check_key(part[1:].strip(), part), "!")
    for token, op in (("!=", "!="), ("==", "="), ("=", "=")):
        if token in part:
            key, value = part.split(token, 1)
            return Requirement(_check_key(key.strip(), part), op, (value.strip(),))
    return Requirement(_check_key(part, part), "exists")


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_parse_requirement(p) for p in _split_top_level(text)))


def from_label_selector_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    if not selector:
        return LabelSelector()
    reqs = [Requirement(k, "=", (str(v),)) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(Requirement(expr.get("key", ""), ops.get(expr.get("operator", ""), "exists"),
                                tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """metav1.FormatLabelSelector: the string a Scale's ``status.selector`` carries."""
    parts = []
    for r in from_label_selector_object(selector).requirements:
        if r.op == "=":
            parts.append(f"{r.key}={r.values[0]}")
        elif r.op in ("in", "notin"):
            parts.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
        elif r.op == "exists":
            parts.append(r.key)
        else:
            parts.append(f"!{r.key}")
    return ",".join(parts)


#: Field selectors each resource supports besides metadata.name / metadata.namespace.
EXTRA_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "pods": ("status.phase", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName", "status.podIP"),
})


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, equal, value in self.terms:
            cur: Any = obj
            for step in path.split("."):
                cur = cur.get(step) if isinstance(cur, Mapping) else None
            if (str(cur if cur is not None else "") == value) != equal:
                return False
        return True


def parse_field_selector(text: str | None, plural: str) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    allowed: Sequence[str] = ("metadata.name", "metadata.namespace", *EXTRA_FIELDS.get(plural, ()))
    terms = [_field_term(raw.strip(), text) for raw in text.split(",")]
    for path, _, _ in terms:
        if path not in allowed:
            only = ", ".join(json.dumps(a) for a in allowed)
            raise SelectorError(f'"{path}" is not a known field selector: only {only}')
    return FieldSelector(tuple(terms))


def _field_term(part: str, whole: str) -> tuple[str, bool, str]:
    for token, equal in (("!=", False), ("==", True), ("=", True)):
        if token in part:
            path, value = part.split(token, 1)
            return path.strip(), equal, value.strip()
    raise SelectorError(f"invalid selector: '{whole}'; can't understand '{part}'")

