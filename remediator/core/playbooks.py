"""Playbook model and its construction from YAML, with ``file:line`` problems.

A playbook set is immutable once built: reloads build a new set and swap it in
whole, so an alert is always matched against one consistent version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Literal

import jsonschema

from remediator.core.alerts import Alert
from remediator.core.decisions import DEFAULT_APPROVAL_TIMEOUT, Approval
from remediator.core.durations import parse_duration
from remediator.core.errors import DurationError, MatcherError, TemplateError
from remediator.core.matchers import Matcher, Op, parse_matcher
from remediator.core.names import name_problem, shown
from remediator.core.quantities import Quantity, QuantityError, parse_quantity
from remediator.core.regex import compile_re2
from remediator.core.schema import ACTIONS, CHECK_ACTIONS, DURATION, playbook_validator
from remediator.core.templates import check_template, required_labels
from remediator.core.yamllines import Document, Problem, load_documents

MatchStatus = Literal["firing", "resolved", "any"]
_VALIDATOR = playbook_validator()
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_WAIT_TIMEOUT = 300.0
#: A verification step's timing when the playbook gives none: try every 10s for up to 5m, one pass
#: is enough; an HTTP attempt that has no answer within 10s counts as a failed attempt.
CHECK_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"timeout": DEFAULT_WAIT_TIMEOUT, "interval": 10.0, "for": 0.0}
)
HTTP_REQUEST_TIMEOUT = 10.0
MAX_URL = 2048
MAX_QUERY = 8192


@dataclass(frozen=True)
class Match:
    matchers: tuple[Matcher, ...]
    status: MatchStatus = "firing"
    # Each matcher's (label, test), taken once: every alert asks every candidate playbook.
    _tests: tuple[tuple[str, Callable[[str], bool]], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tests", tuple((m.name, m.test) for m in self.matchers))

    def selects(self, alert: Alert) -> bool:
        if self.status != "any" and alert.status != self.status:
            return False
        labels = alert.labels
        for name, test in self._tests:  # noqa: SIM110 - all() over a generator costs a third more here
            if not test(labels.get(name, "")):
                return False
        return True

    def guaranteed_labels(self) -> frozenset[str]:
        """The labels every alert this selects carries with a non-empty value.

        A label is guaranteed exactly when one of its matchers refuses the empty value
        (``=`` a non-empty value, ``!=""``, ``=~`` a regex that cannot match ``""``, ``!~``
        one that can): Alertmanager reads a missing label as ``""``, so such a matcher can
        only hold for an alert that has it.  ``deployment!="x"`` does not guarantee it.
        """
        return frozenset(m.name for m in self.matchers if not m.matches({}))


@dataclass(frozen=True)
class Target:
    kind: str
    namespace: str
    name: str
    #: where ``namespace`` and ``name`` are written, for problems found after loading
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), compare=False)


@dataclass(frozen=True)
class RateLimit:
    max: int
    per: float
    key: str | None = None


@dataclass(frozen=True)
class Guardrails:
    namespaces: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    cooldown: float = 0.0
    dry_run: bool | None = None
    stabilize_for: float = 0.0
    min_occurrences: int = 1
    max_replicas: int | None = None
    #: the floor of ready replicas for every step of the playbook that takes capacity away (a scale
    #: down, delete_pod) that does not set its own ``min_healthy_replicas``
    min_healthy_replicas: int | None = None
    lock_ttl: float = 600.0
    max_age: float = 0.0  # act only on alerts that started at most this long ago (0: any age)


@dataclass(frozen=True)
class Step:
    action: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    line: int = 0
    approval: Approval | None = None  # ``approval:`` on the step: a human approves it before it runs

    def to_json(self) -> dict[str, Any]:
        out = {"action": self.action, **dict(self.params)}
        if self.approval is not None:
            out["approval"] = self.approval.to_json()
        return out


@dataclass(frozen=True)
class Playbook:
    name: str
    match: Match
    target: Target
    steps: tuple[Step, ...]
    guardrails: Guardrails = Guardrails()
    on_failure: tuple[Step, ...] = ()
    notify: tuple[str, ...] = ()
    description: str = ""
    source: str = "<memory>"
    line: int = 1
    version: str = ""
    approval: Approval | None = None  # None, or not required: executions run without asking

    @property
    def needs_approval(self) -> bool:
        """Each execution waits for a human before it runs (``approval:`` on the playbook)."""
        return self.approval is not None and self.approval.required

    @property
    def asks_approval(self) -> bool:
        """An execution may wait for a human: before it runs, or before one of its steps."""
        return self.needs_approval or any(s.approval is not None and s.approval.required for s in self.steps)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"


def _index_key(match: Match) -> tuple[str, str] | None:
    """The equality a playbook can be looked up by: ``alertname`` if it has one, else its
    first equality matcher; None when it has none (it is then tried for every alert).

    Any equality works, an empty value included: a missing label reads as ``""`` for
    Alertmanager's matchers, and the lookup reads it the same way.
    """
    equalities = [m for m in match.matchers if m.op is Op.EQ]
    best = next((m for m in equalities if m.name == "alertname"), equalities[0] if equalities else None)
    return (best.name, best.value) if best is not None else None


@dataclass(frozen=True)
class _Index:
    """Playbook positions by (label name -> value), plus those with no equality matcher."""

    by_label: Mapping[str, Mapping[str, tuple[int, ...]]]
    always: tuple[int, ...]

    @classmethod
    def build(cls, playbooks: tuple[Playbook, ...]) -> _Index:
        by_label: dict[str, dict[str, list[int]]] = {}
        always: list[int] = []
        for i, p in enumerate(playbooks):
            key = _index_key(p.match)
            if key is None:
                always.append(i)
            else:
                by_label.setdefault(key[0], {}).setdefault(key[1], []).append(i)
        return cls({n: {v: tuple(ix) for v, ix in values.items()} for n, values in by_label.items()}, tuple(always))

    def candidates(self, labels: Mapping[str, str]) -> list[int]:
        found = list(self.always)
        for name, values in self.by_label.items():
            found += values.get(labels.get(name, ""), ())
        found.sort()  # playbooks apply in the order they were loaded
        return found


@dataclass(frozen=True)
class PlaybookSet:
    """The loaded playbooks, in load order, with an index for matching.

    Matching stays linear in the playbooks that could select the alert, not in all of
    them: each playbook is filed under one equality matcher (``alertname`` when it has
    one), so an alert is only tried against the playbooks filed under its own values.
    """

    playbooks: tuple[Playbook, ...] = ()
    _index: _Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _Index.build(self.playbooks))

    def matching(self, alert: Alert) -> list[Playbook]:
        books = self.playbooks
        return [books[i] for i in self._index.candidates(alert.labels) if books[i].match.selects(alert)]

    def by_name(self, name: str) -> Playbook | None:
        return next((p for p in self.playbooks if p.name == name), None)

    @property
    def version(self) -> str:
        digest = hashlib.sha256("".join(p.version for p in self.playbooks).encode()).hexdigest()
        return digest[:12]


_COMPARE: Mapping[str, Callable[[float, float], bool]] = MappingProxyType({
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
})
# RFC 3986's own split of a URL (appendix B), for an absolute one: scheme, authority, the rest.
# urllib.parse would do, but the core stays within the modules its architecture test allows.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([/?#].*)?\Z", re.S)
# The authority without user info: a DNS name, an IPv4 address or a bracketed IPv6 one, and a port.
_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)(?::(\d{1,5}))?\Z")
_CONDITION = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*\Z")


@dataclass(frozen=True)
class Condition:
    """``prometheus_check``'s ``condition``: a comparison every sample must satisfy (``< 0.01``).

    Parsed when the playbook loads, so a typo fails validation rather than the first
    verification.  NaN satisfies only ``!=``, as in PromQL's own comparisons.
    """

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


def parse_condition(text: Any) -> Condition:
    found = _CONDITION.match(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"{shown(text)} is not a condition: expected an operator (< <= > >= == !=) "
                         "and a number, e.g. '< 0.01'")
    threshold = float(found.group(2))
    if not math.isfinite(threshold):
        raise ValueError(f"{shown(text)}: the threshold must be a finite number")
    return Condition(found.group(1), threshold)


def url_problem(value: Any) -> str | None:
    """A URL ``http_check`` may request: http or https, a host, no credentials in it (they would be
    recorded in the audit, and an alert must not be able to supply them), nothing unprintable."""
    if not isinstance(value, str):
        return f"{shown(value)} is not a string"
    if len(value) > MAX_URL:
        return f"{shown(value)} is longer than {MAX_URL} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"{shown(value)} contains whitespace or control characters"
    parts = _URL.match(value)
    if parts is None or parts.group(1).lower() not in ("http", "https"):
        return f"{shown(value)} is not an absolute http or https URL"
    if "@" in parts.group(2):
        return f"{shown(value)} carries credentials (user info); they are not allowed in a check URL"
    authority = _AUTHORITY.match(parts.group(2))
    if authority is None:
        return f"{shown(value)} has no valid host"
    if authority.group(2) is not None and not 0 < int(authority.group(2)) < 65536:
        return f"{shown(value)} has a port out of range"
    return None


def _query_problem(value: Any) -> str | None:
    """A PromQL expression as sent: bounded, and free of NUL and other control characters that
    no expression needs (an alert label could carry them into the rendered query)."""
    if not isinstance(value, str):
        return f"{shown(value)} is not a string"
    if not value.strip():
        return "is empty"
    if len(value) > MAX_QUERY:
        return f"{shown(value)} is longer than {MAX_QUERY} characters"
    if any(not ch.isprintable() and ch not in "\n\t\r" for ch in value):
        return f"{shown(value)} contains control characters"
    return None


#: Rules for the rendered values of verification steps, beside names.PARAM_RULES for the names
#: mutating steps act on: checked at load time on fixed values, at plan time on rendered ones,
#: and so before any request is made with them.
_CHECK_RULES = {("http_check", "url"): url_problem, ("prometheus_check", "query"): _query_problem}


def check_param_problem(action: str, key: str, value: Any) -> str | None:
    """Why a verification step's parameter value may not be used (None: it may, or has no rule)."""
    rule = _CHECK_RULES.get((action, key))
    problem = rule(value) if rule is not None else None
    return None if problem is None else f"{action}.{key} {problem}"


def _schema_problems(raw: Any, doc: Document, base: tuple[str | int, ...], source: str) -> list[Problem]:
    out = []
    for error in _VALIDATOR.iter_errors(raw):
        path = base + tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            out += _unknown_fields(error, doc, path, source)
        elif not _said_by_a_value_rule(raw, error):
            out.append(Problem(source, doc.line(path), _describe(error)))
    return out


def _said_by_a_value_rule(raw: Any, error: jsonschema.ValidationError) -> bool:
    """A step value too long for the schema that a value rule (names.PARAM_RULES, the check rules)
    reports too, with the value shortened: one problem for one mistake, not two."""
    rel = tuple(error.absolute_path)
    if error.validator != "maxLength" or len(rel) != 3 or rel[0] not in ("steps", "on_failure"):
        return False
    step = raw[rel[0]][rel[1]]
    action, key = step.get("action", ""), str(rel[2])
    return bool(name_problem(action, key, error.instance) or check_param_problem(action, key, error.instance))


def _unknown_fields(
    error: jsonschema.ValidationError, doc: Document, path: tuple[str | int, ...], source: str
) -> list[Problem]:
    """One problem per unknown key, on the key's own line: that is where the typo is."""
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    known = list(schema.get("properties", {}))
    instance: Any = error.instance
    rel = tuple(error.absolute_path)
    where = _dotted(rel)
    action = instance.get("action")
    is_step = len(rel) == 2 and rel[0] in ("steps", "on_failure")
    owner = f" of action {action!r}" if is_step and isinstance(action, str) else ""
    return [
        Problem(
            source,
            doc.line((*path, key)),
            f"{where + '.' if where else ''}{key}: unknown field{owner}; expected one of {', '.join(known)}",
        )
        for key in instance
        if key not in known
    ]


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "playbook"
    validator = error.validator
    if validator == "required":
        return f"{where}: {error.message}"
    if validator == "enum" and where.endswith("action"):
        return f"{where}: unknown action {error.instance!r}; expected one of {', '.join(ACTIONS)}"
    if validator == "oneOf" and isinstance(error.instance, dict) and "action" in error.instance:
        given = [k for k in ("to", "by", "factor") if k in error.instance]
        return f"{where}: give exactly one of to, by, factor (got {', '.join(given) if given else 'none'})"
    if validator == "oneOf" and isinstance(error.instance, dict) and set(error.instance) <= {"to", "factor", "max",
                                                                                              "min"}:
        given = [k for k in ("to", "factor") if k in error.instance]
        return f"{where}: give exactly one of to, factor (got {', '.join(given) if given else 'none'})"
    if validator == "dependentRequired":
        return f"{where}: factor needs max (the most this step may set the resource to)"
    if validator == "anyOf" and isinstance(error.instance, dict) and error.instance.get("action") == "set_resources":
        return f"{where}: give requests or limits (or both)"
    if validator == "anyOf" and where == "match":
        return "match: give alertname or matchers (or both)"
    if error.schema is DURATION or (validator == "anyOf" and "pattern" in json.dumps(error.schema)):
        return f"{where}: invalid duration {error.instance!r}: expected e.g. 30s, 10m, 1h30m"
    if validator == "pattern" and where == "name":
        return f"name: {error.instance!r} is not a valid playbook name (lowercase letters, digits, - _ .)"
    return f"{where}: {error.message}"


@lru_cache(maxsize=8192)
def _matcher(text: str) -> Matcher:
    """:func:`parse_matcher`, once per text: a matcher is checked, then built, and playbooks repeat
    theirs (``severity=~"warning|critical"``); one immutable matcher shared by all is also fewer
    objects for each reload to create and the collector to walk."""
    return parse_matcher(text)


def _template_problem(value: Any, path: tuple[str | int, ...]) -> str | None:
    if not isinstance(value, str):
        return None  # the schema reports the type
    error = _template_error(value)
    return None if error is None else f"{_dotted(path)}: {error}"


@lru_cache(maxsize=4096)
def _template_error(source: str) -> str | None:
    """What :func:`check_template` says of ``source`` (None: nothing), cached per source string: a
    thousand playbooks repeat a handful of templates (``{{ labels.namespace }}``), and parsing each
    again was a fifth of a load's CPU."""
    try:
        check_template(source)
    except TemplateError as exc:
        return str(exc)
    return None


def _approval_problems(value: Any, at: tuple[str | int, ...],
                       base: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """A step's ``approval:`` (its shape is the schema's): only on the playbook's own steps, with a
    positive timeout.  An ``on_failure`` step runs because a step failed, often to put back what
    the execution changed: it must not stop there and wait for a human."""
    if base[-1] == "on_failure":
        return [((*at, "approval"), f"{_dotted(at)}.approval: an on_failure step cannot wait for approval "
                                    "(it runs because a step failed); put approval on the step before it")]
    with contextlib.suppress(DurationError, TypeError, AttributeError):
        if isinstance(value, Mapping) and "timeout" in value and parse_duration(value["timeout"]) <= 0:
            return [((*at, "approval", "timeout"), f"{_dotted(at)}.approval.timeout: must be positive")]
    return []


def _step_problems(steps: Any, base: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if not isinstance(steps, list):
        return []
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            continue
        at = (*base, i)
        lo, hi = step.get("min"), step.get("max")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            found.append(((*at, "min"), f"{_dotted(at)}: min ({lo}) is greater than max ({hi})"))
        timeout = step.get("timeout")
        with contextlib.suppress(DurationError, TypeError):  # a malformed one is the schema's to report
            if timeout is not None and parse_duration(timeout) <= 0:
                found.append(((*at, "timeout"), f"{_dotted(at)}.timeout: must be positive"))
        action = step.get("action", "")
        for key, value in step.items():
            if key == "only_if_current" and isinstance(value, str) and _is_template(value):
                # a regex rendered from alert content could be made to match anything (or to backtrack)
                found.append(((*at, key), f"{_dotted(at)}.only_if_current: a fixed pattern, not a template"))
            elif key == "approval":
                found += _approval_problems(value, at, base)
            elif key not in ("action", "description") and (msg := _template_problem(value, (*at, key))):
                found.append(((*at, key), msg))
            elif isinstance(value, str) and not _is_template(value) and (
                bad := name_problem(action, key, value) or check_param_problem(action, key, value)
            ):
                found.append(((*at, key), f"{_dotted(at)}: {bad}"))
        if action == "set_resources":
            found += _resource_problems(step, at)
        if action in CHECK_ACTIONS:
            found += _check_problems(step, at)
    return found


def _check_problems(step: Mapping[str, Any], at: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """What makes a verification step unable ever to pass, or able to be steered by an alert."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    timing: dict[str, float] = {}
    for key in ("interval", "for", "request_timeout"):
        with contextlib.suppress(DurationError, TypeError):  # a malformed one is the schema's to report
            if key in step:
                timing[key] = parse_duration(step[key])
                if key != "for" and timing[key] <= 0:
                    found.append(((*at, key), f"{_dotted(at)}.{key}: must be positive"))
    with contextlib.suppress(DurationError, TypeError):
        timeout = parse_duration(step.get("timeout", CHECK_DEFAULTS["timeout"]))
        if timing.get("for", 0.0) >= timeout > 0:
            found.append(((*at, "for"), f"{_dotted(at)}.for ({step['for']}) must be shorter than the timeout "
                                        f"({step.get('timeout', '5m')}): the check could never pass"))
    for key in ("body_matches", "ca_file", "condition"):
        if isinstance(step.get(key), str) and _is_template(step[key]):
            # a pattern or file rendered from alert content would let an alert decide what passes
            found.append(((*at, key), f"{_dotted(at)}.{key}: a fixed value, not a template"))
    parsers: dict[str, Callable[[str], object]] = {"body_matches": compile_re2, "condition": parse_condition}
    for key, parse in parsers.items():
        value = step.get(key)
        if isinstance(value, str) and not _is_template(value):
            try:
                parse(value)
            except (MatcherError, ValueError) as exc:
                found.append(((*at, key), f"{_dotted(at)}.{key}: {exc}"))
    if step.get("method") == "HEAD" and "body_matches" in step:
        found.append(((*at, "body_matches"), f"{_dotted(at)}.body_matches: a HEAD answer has no body to match"))
    if step.get("insecure_skip_verify") is True and "ca_file" in step:
        found.append(((*at, "ca_file"), f"{_dotted(at)}: ca_file and insecure_skip_verify: true contradict "
                                        "each other"))
    return found


def _is_template(value: str) -> bool:
    return any(mark in value for mark in ("{{", "{%", "{#"))


def _resource_problems(step: Mapping[str, Any], at: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """``set_resources``' quantities: templates must compile, fixed ones parse, and ``to`` stay within
    ``min`` and ``max``."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for section in ("requests", "limits"):
        changes = step.get(section)
        for resource, change in (changes.items() if isinstance(changes, Mapping) else ()):
            if not isinstance(change, Mapping):
                continue
            where = (*at, section, resource)
            parsed: dict[str, Quantity] = {}
            for key in ("to", "max", "min"):
                value = change.get(key)
                if isinstance(value, str) and _is_template(value):
                    if msg := _template_problem(value, (*where, key)):
                        found.append(((*where, key), msg))
                elif value is not None:
                    try:
                        parsed[key] = parse_quantity(value)
                    except QuantityError as exc:
                        found.append(((*where, key), f"{_dotted((*where, key))}: {exc}"))
            if "to" in parsed and "max" in parsed and parsed["to"] > parsed["max"]:
                found.append(((*where, "to"), f"{_dotted(where)}: to ({change['to']}) is above max ({change['max']})"))
            if "to" in parsed and "min" in parsed and parsed["to"] < parsed["min"]:
                found.append(((*where, "to"), f"{_dotted(where)}: to ({change['to']}) is below min ({change['min']})"))
            if "min" in parsed and "max" in parsed and parsed["min"] > parsed["max"]:
                found.append(((*where, "min"),
                              f"{_dotted(where)}: min ({change['min']}) is above max ({change['max']})"))
    return found


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(map(str, path))


def _semantic_problems(raw: Any, doc: Document, base: tuple[str | int, ...], source: str) -> list[Problem]:
    """Checks a schema cannot express.  Each guards its own types, so one malformed
    field never hides the problems of the others."""
    if not isinstance(raw, Mapping):
        return []
    found: list[tuple[tuple[str | int, ...], str]] = []
    match = raw.get("match")
    matchers = match.get("matchers") if isinstance(match, Mapping) else None
    for i, text in enumerate(matchers if isinstance(matchers, list) else []):
        if isinstance(text, str) and text:
            try:
                _matcher(text)
            except MatcherError as exc:
                found.append((("match", "matchers", i), f"match.matchers.{i}: {exc}"))
    target = raw.get("target")
    target = target if isinstance(target, Mapping) else {}
    for key in ("namespace", "name"):
        if msg := _template_problem(target.get(key), ("target", key)):
            found.append((("target", key), msg))
    guard = raw.get("guardrails")
    guard = guard if isinstance(guard, Mapping) else {}
    allowed = guard.get("namespaces")
    static_ns = target.get("namespace")
    if isinstance(allowed, list) and isinstance(static_ns, str) and "{" not in static_ns and static_ns not in allowed:
        found.append((("target", "namespace"), f"target.namespace: {static_ns!r} is not in guardrails.namespaces"))
    for i, ns in enumerate(allowed if isinstance(allowed, list) else []):
        if isinstance(ns, str) and not _DNS1123.match(ns):
            found.append((("guardrails", "namespaces", i), f"guardrails.namespaces: {ns!r} is not a valid namespace"))
    rate = guard.get("rate_limit")
    if isinstance(rate, Mapping):
        if msg := _template_problem(rate.get("key"), ("guardrails", "rate_limit", "key")):
            found.append((("guardrails", "rate_limit", "key"), msg))
        with contextlib.suppress(DurationError, TypeError):
            if "per" in rate and parse_duration(rate["per"]) <= 0:
                found.append((("guardrails", "rate_limit", "per"), "guardrails.rate_limit.per: must be positive"))
    with contextlib.suppress(DurationError, TypeError):
        if "lock_ttl" in guard and parse_duration(guard["lock_ttl"]) <= 0:
            found.append((("guardrails", "lock_ttl"), "guardrails.lock_ttl: must be positive (the lock is renewed "
                                                      "every third of it)"))
    approval = raw.get("approval")
    with contextlib.suppress(DurationError, TypeError, AttributeError):
        if isinstance(approval, Mapping) and "timeout" in approval and parse_duration(approval["timeout"]) <= 0:
            found.append((("approval", "timeout"), "approval.timeout: must be positive"))
    found += _step_problems(raw.get("steps"), ("steps",))
    found += _step_problems(raw.get("on_failure"), ("on_failure",))
    for phase in ("steps", "on_failure"):
        found += _floor_problems(raw.get(phase), (phase,), guard.get("min_healthy_replicas"))
    return [Problem(source, doc.line(base + path), message) for path, message in found]


def _floor_problems(steps: Any, base: tuple[str | int, ...], guarded: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """A scale to zero under a floor of ready replicas above zero (its own, or the playbook's
    ``guardrails.min_healthy_replicas``) would be refused every time it could do anything: it always
    leaves none ready.  The runbook's "scale to 0 and back" opts out on its stop step, visibly."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, Mapping) or step.get("action") != "scale":
            continue
        own = "min_healthy_replicas" in step
        floor = step.get("min_healthy_replicas") if own else guarded
        zero = next((k for k in ("to", "max") if step.get(k) == 0 and not isinstance(step.get(k), bool)), None)
        if zero is None or not isinstance(floor, int) or isinstance(floor, bool) or floor <= 0:
            continue
        source = "its min_healthy_replicas" if own else "guardrails.min_healthy_replicas"
        found.append(((*base, i, "min_healthy_replicas" if own else zero),
                      f"{_dotted((*base, i))}: a scale {zero} 0 under {source} {floor} would always be refused (it "
                      "leaves no replica ready); to stop the workload on purpose (scale to 0 and back), give this "
                      "step min_healthy_replicas: 0"))
    return found


def _approval(raw: Mapping[str, Any] | None) -> Approval | None:
    if raw is None:
        return None
    return Approval(raw.get("required", True), parse_duration(raw.get("timeout", DEFAULT_APPROVAL_TIMEOUT)),
                    tuple(raw.get("approvers", ())))


def _build_step(raw: Mapping[str, Any], line: int) -> Step:
    params = {k: v for k, v in raw.items() if k not in ("action", "description", "approval")}
    if raw["action"] == "wait_healthy":
        params["timeout"] = parse_duration(params.get("timeout", DEFAULT_WAIT_TIMEOUT))
    if raw["action"] in CHECK_ACTIONS:
        # Durations as seconds, defaults written out: the audit shows exactly what was checked,
        # and the pipeline's step bound stretches to a long ``timeout``.
        for key, default in CHECK_DEFAULTS.items():
            if key != "for" or raw["action"] != "wait_resolved":
                params[key] = parse_duration(params.get(key, default))
    if raw["action"] == "http_check":
        params.setdefault("method", "GET")
        status = params.get("expect_status", 200)
        params["expect_status"] = list(status) if isinstance(status, list) else [status]
        params["request_timeout"] = parse_duration(params.get("request_timeout", HTTP_REQUEST_TIMEOUT))
        params.setdefault("insecure_skip_verify", False)
    if raw["action"] == "prometheus_check":
        params.setdefault("on_empty", "fail")
    return Step(action=raw["action"], params=MappingProxyType(params), line=line,
                approval=_approval(raw.get("approval")))


def build_playbook(raw: Mapping[str, Any], doc: Document, base: tuple[str | int, ...], source: str) -> Playbook:
    """Build from a mapping already checked by :func:`check_playbook`."""
    match_raw = raw["match"]
    matchers: list[Matcher] = []
    if "alertname" in match_raw:
        matchers.append(Matcher.create("alertname", Op.EQ, match_raw["alertname"]))
    matchers += [_matcher(t) for t in match_raw.get("matchers", [])]
    g = raw.get("guardrails", {})
    rl = g.get("rate_limit")
    guardrails = Guardrails(
        namespaces=tuple(g.get("namespaces", ())),
        rate_limit=RateLimit(rl["max"], parse_duration(rl["per"]), rl.get("key")) if rl else None,
        cooldown=parse_duration(g.get("cooldown", 0)),
        dry_run=g.get("dry_run"),
        stabilize_for=parse_duration(g.get("for", 0)),
        min_occurrences=g.get("min_occurrences", 1),
        max_replicas=g.get("max_replicas"),
        min_healthy_replicas=g.get("min_healthy_replicas"),
        lock_ttl=parse_duration(g.get("lock_ttl", 600)),
        max_age=parse_duration(g.get("max_age", 0)),
    )
    steps_base = (*base, "steps")
    fail_base = (*base, "on_failure")
    canonical = json.dumps(raw, sort_keys=True, default=str)
    approval = _approval(raw.get("approval"))
    return Playbook(
        name=raw["name"],
        description=raw.get("description", ""),
        match=Match(tuple(matchers), match_raw.get("status", "firing")),
        target=Target(
            raw["target"]["kind"], raw["target"]["namespace"], raw["target"]["name"],
            MappingProxyType({key: doc.line((*base, "target", key)) for key in ("namespace", "name")}),
        ),
        guardrails=guardrails,
        steps=tuple(_build_step(s, doc.line((*steps_base, i))) for i, s in enumerate(raw["steps"])),
        on_failure=tuple(_build_step(s, doc.line((*fail_base, i))) for i, s in enumerate(raw.get("on_failure", []))),
        notify=tuple(raw.get("notify", ())),
        source=source,
        line=doc.line(base),
        version=hashlib.sha256(canonical.encode()).hexdigest()[:16],
        approval=approval,
    )


def parse_playbooks(text: str, source: str) -> tuple[list[Playbook], list[Problem]]:
    """Parse one file's text.  A file holds one playbook per YAML document, or a list."""
    docs, problems = load_documents(text, source)
    playbooks: list[Playbook] = []
    for doc in docs:
        if doc.data is None:
            continue
        if isinstance(doc.data, list):
            items: list[tuple[Any, tuple[str | int, ...]]] = [(d, (i,)) for i, d in enumerate(doc.data)]
        elif isinstance(doc.data, dict) and set(doc.data) == {"playbooks"} and isinstance(doc.data["playbooks"], list):
            items = [(d, ("playbooks", i)) for i, d in enumerate(doc.data["playbooks"])]
        else:
            items = [(doc.data, ())]
        for raw, base in items:
            try:
                found = _schema_problems(raw, doc, base, source) + _semantic_problems(raw, doc, base, source)
                if not found:
                    playbooks.append(build_playbook(raw, doc, base, source))
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
                # A shape the checks above did not foresee (a list where a duration goes, say): still a
                # problem at the playbook's line, never an exception out of a reload, which would stop
                # the daemon's playbook watcher instead of keeping the previous set running.
                found = [Problem(source, doc.line(base), f"cannot be read as a playbook ({type(exc).__name__}: "
                                                         f"{str(exc)[:120]})")]
            problems += found
    problems.sort(key=lambda p: p.line)  # stable: a line's problems keep their order
    return playbooks, problems


def combine(sets: Iterable[tuple[list[Playbook], list[Problem]]]) -> tuple[PlaybookSet, list[Problem]]:
    """Join per-file results, reporting names defined twice (in any files)."""
    seen: dict[str, Playbook] = {}
    problems: list[Problem] = []
    ordered: list[Playbook] = []
    for pbs, probs in sets:
        problems += probs
        for pb in pbs:
            if pb.name in seen:
                first = seen[pb.name]
                problems.append(
                    Problem(
                        pb.source, pb.line, f"duplicate playbook name {pb.name!r} (first defined at {first.location})"
                    )
                )
                continue
            seen[pb.name] = pb
            ordered.append(pb)
    return PlaybookSet(tuple(ordered)), problems


def target_problem(match: Match, key: str, template: str) -> str | None:
    """Why the target's ``key`` (name or namespace) may fail to render for an alert the
    playbook selects: it reads a label that no matcher guarantees (None: it cannot fail so).

    The common case is an alert from an aggregated rule (``sum(rate(...))``), which carries
    no ``deployment`` or ``namespace`` label at all: such a playbook would match it and then
    refuse it at every firing.  Annotations are never guaranteed and are left to render time.
    """
    missing = sorted(required_labels(template) - match.guaranteed_labels())
    if not missing:
        return None
    reads = " and ".join(f"labels.{label}" for label in missing)
    fixes = ", ".join(str(Matcher.create(label, Op.RE, ".+")) for label in missing)
    it, such = ("it", "such label") if len(missing) == 1 else ("them", "such labels")
    return (f"target.{key} uses {reads}, which the matchers do not guarantee; alerts from aggregated "
            f"rules (sum(rate(...))) carry no {such}: match on {it} ({fixes}), "
            f"give {it} a default (| default('...')) or name the target statically")


def check_targets(playbooks: PlaybookSet) -> list[Problem]:
    """Each playbook's target must render for every alert it selects (see :func:`target_problem`)."""
    return [
        Problem(pb.source, pb.target.lines.get(key, pb.line), problem)
        for pb in playbooks.playbooks
        for key in ("namespace", "name")
        if (problem := target_problem(pb.match, key, getattr(pb.target, key)))
    ]


def check_channels(playbooks: PlaybookSet, channels: Iterable[str]) -> list[Problem]:
    """Playbooks may only notify channels the configuration defines."""
    known = set(channels)
    out = []
    for pb in playbooks.playbooks:
        for name in pb.notify:
            if name not in known:
                out.append(Problem(pb.source, pb.line, f"playbook {pb.name!r} notifies unknown channel {name!r}"))
        for step in pb.steps + pb.on_failure:
            channel = step.params.get("channel")
            if step.action == "notify" and channel not in known:
                out.append(Problem(pb.source, step.line, f"notify step uses unknown channel {channel!r}"))
    return out


def check_prometheus(playbooks: PlaybookSet) -> list[Problem]:
    """For a daemon with no ``prometheus.url``: each ``prometheus_check`` step is a problem at its line
    (refused at start and at reload alike, rather than failing the first verification after a change)."""
    return [
        Problem(pb.source, step.line, "prometheus_check steps need prometheus.url (REMEDIATOR_PROMETHEUS_URL)")
        for pb in playbooks.playbooks for step in pb.steps + pb.on_failure if step.action == "prometheus_check"
    ]
