"""From (playbook, alert) to a concrete plan: rendered target, key and steps.

Pure: it reads nothing but its arguments.  A plan that cannot be made (missing
label, forbidden namespace, invalid name) is a :class:`Refusal`, never an exception.

Because it is pure, plans are remembered (a bounded LRU): the same playbook planned for
an alert that shows its templates the same values gets the same plan, without rendering
them again.  Rendering was the largest part of deciding an alert that matched (a replay
of a million alerts renders the same few thousand label sets over and over).  A plan is
shared by every decision it is remembered for: like the decisions holding it, it is
never changed once made.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes

from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.core.errors import TemplateError
from remediator.core.frozen import fast_frozen
from remediator.core.names import DNS_LABEL, DNS_SUBDOMAIN, name_problem, shown
from remediator.core.playbooks import Playbook, Step, check_param_problem
from remediator.core.templates import CONTEXT_NAMES, alert_context, environment, render, render_value

#: Plans remembered: (playbook, what its templates read of the alert) each; a plan is a few kB.
PLANS_KEPT = 4096
#: The most characters of labels and annotations (names and values) a remembered plan is keyed by.
#: An alert with more (an annotation holding a log excerpt: a webhook body may be 1 MiB) is planned
#: afresh: 4,096 such keys held gigabytes after their alerts were long gone.
MEMO_KEY_CHARS = 16_384
#: The one filter whose output is not a function of its input.
_UNREPEATABLE_FILTERS = frozenset({"random"})


@fast_frozen
@dataclass(frozen=True)
class Plan:
    playbook: Playbook
    target: ResolvedTarget
    limit_key: str
    steps: tuple[PlannedStep, ...]
    on_failure: tuple[PlannedStep, ...]
    dry_run: bool


@fast_frozen
@dataclass(frozen=True)
class Refusal:
    reason: str
    target: ResolvedTarget | None = None


def _kubelet_literal(context: Mapping[str, Any]) -> dict[str, Any]:
    """``context`` with every ``$`` of what the alert said doubled: its labels, annotations and
    ``generatorURL`` (any string its sender wrote; a fingerprint, status and time cannot hold one).

    The kubelet expands ``$(NAME)`` in a container's env values to the value of the variable NAME
    defined before it (a secret's, say), and reads ``$$`` as ``$``.  A value ``set_env`` renders from
    the alert must reach the container as the alert said it, never as another variable's content:
    an annotation ``$(DB_PASSWORD)`` would otherwise put the password in a variable the application
    may log.  What the playbook's author wrote around it is left as written.
    """
    def doubled(values: Mapping[str, str]) -> dict[str, str]:
        return {k: v.replace("$", "$$") for k, v in values.items()}

    literal = {**context, "labels": doubled(context["labels"]), "annotations": doubled(context["annotations"])}
    if "generatorURL" in context:  # a remembered plan's context holds only what its templates read
        literal["generatorURL"] = context["generatorURL"].replace("$", "$$")
    return literal


def _params(step: Step, context: Mapping[str, Any]) -> dict[str, Any]:
    params = dict(render_value(dict(step.params), context))
    if step.action == "set_env" and "{" in step.params.get("value", ""):
        params["value"] = render_value(step.params["value"], _kubelet_literal(context))
    return params


def _steps(steps: tuple[Step, ...], context: Mapping[str, Any], phase: str) -> tuple[PlannedStep, ...]:
    planned = tuple(
        PlannedStep(index=i, action=s.action, params=_params(s, context), phase=phase,
                    approval=s.approval if s.approval is not None and s.approval.required else None)
        for i, s in enumerate(steps)
    )
    for step in planned:
        for key, value in step.params.items():
            # a rendered URL or query is held to its rules here, so a refused one is a decision
            # (not_allowed, with the reason) and no request is ever made with it
            if problem := name_problem(step.action, key, value) or check_param_problem(step.action, key, value):
                raise TemplateError(f"{'on_failure' if phase == 'on_failure' else 'steps'}[{step.index}] {problem}")
    return planned


#: Actions that can take serving capacity away, guarded by ``min_healthy_replicas``.
CAPACITY_ACTIONS = frozenset({"scale", "delete_pod"})


def _guarded(step: PlannedStep, playbook: Playbook) -> PlannedStep:
    """The playbook-wide guardrails that travel with a step, so the executor applies them: the ceiling
    (``max_replicas``) of each scale step, and the floor of ready replicas (``min_healthy_replicas``)
    of each step that can take capacity away, unless the step sets its own floor."""
    g = playbook.guardrails
    extra: dict[str, Any] = {}
    if step.action == "scale" and g.max_replicas is not None:
        extra["max_replicas"] = g.max_replicas
    if step.action in CAPACITY_ACTIONS and g.min_healthy_replicas is not None:
        extra["min_healthy_replicas"] = step.params.get("min_healthy_replicas", g.min_healthy_replicas)
    return PlannedStep(step.index, step.action, {**step.params, **extra}, step.phase, step.approval) if extra else step


class _Same:
    """A playbook as a cache key, by identity: playbooks hold mappings and cannot be hashed, and
    an edited playbook is a new object.  The key holds the playbook, so its id is never reused
    while it is remembered."""

    __slots__ = ("playbook",)

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook

    def __hash__(self) -> int:
        return id(self.playbook)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.playbook is self.playbook


def _templates(playbook: Playbook) -> Iterator[str]:
    """Every string :func:`make_plan` renders (one without ``{`` renders as itself)."""
    yield playbook.target.namespace
    yield playbook.target.name
    for step in (*playbook.steps, *playbook.on_failure):
        yield from _strings(dict(step.params))
    rl = playbook.guardrails.rate_limit
    if rl and rl.key:
        yield rl.key


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


@lru_cache(maxsize=PLANS_KEPT)
def _scalars_read(book: _Same) -> tuple[str, ...] | None:
    """The alert's values besides labels and annotations that the playbook's templates read
    (``status``, ``startsAt``...), or None when its plans must not be remembered: a template
    that draws at random, or that reads a name the alert's context does not have (a playbook
    built without validation; it is refused at every alert, as it was)."""
    read: set[str] = set()
    for source in _templates(book.playbook):
        if "{" not in source:
            continue
        try:
            ast = environment().parse(source)
        except jinja2.TemplateSyntaxError:
            return None
        if any(f.name in _UNREPEATABLE_FILTERS for f in ast.find_all(nodes.Filter)):
            return None
        read |= jinja2.meta.find_undeclared_variables(ast)
    if not read <= CONTEXT_NAMES:
        return None
    return tuple(sorted(read - {"labels", "annotations"}))


def make_plan(playbook: Playbook, alert: Alert, *, global_dry_run: bool) -> Plan | Refusal:
    book = _Same(playbook)
    scalars = _scalars_read(book)
    if scalars is None:
        return _make_plan(playbook, alert_context(alert), global_dry_run)
    # In order: a template that iterates over the labels sees them in the alert's order.
    labels, annotations = tuple(alert.labels.items()), tuple(alert.annotations.items())
    if sum(len(k) + len(v) for k, v in (*labels, *annotations)) > MEMO_KEY_CHARS:
        return _make_plan(playbook, alert_context(alert), global_dry_run)
    context = alert_context(alert) if scalars else {}
    shown = (labels, annotations, tuple(context[n] for n in scalars))
    try:
        return _remembered(book, shown, global_dry_run)
    except TypeError:  # a value that cannot be hashed (an Alert built by hand): planned afresh
        return _make_plan(playbook, alert_context(alert), global_dry_run)


@lru_cache(maxsize=PLANS_KEPT)
def _remembered(
    book: _Same, shown: tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[Any, ...]],
    global_dry_run: bool,
) -> Plan | Refusal:
    """The plan for an alert that shows the playbook's templates ``shown`` (see :func:`make_plan`)."""
    labels, annotations, values = shown
    scalars = _scalars_read(book) or ()
    context = {"labels": dict(labels), "annotations": dict(annotations), **dict(zip(scalars, values, strict=True))}
    return _make_plan(book.playbook, context, global_dry_run)


def _make_plan(playbook: Playbook, context: Mapping[str, Any], global_dry_run: bool) -> Plan | Refusal:
    try:
        namespace = render(playbook.target.namespace, context)
        name = render(playbook.target.name, context)
    except TemplateError as exc:
        return Refusal(f"invalid target: {exc}")
    target = ResolvedTarget(playbook.target.kind, namespace, name)
    if not DNS_LABEL.match(namespace):
        return Refusal(f"invalid target: namespace {shown(namespace)} is not a valid Kubernetes namespace "
                       "(DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)", target)
    if not DNS_SUBDOMAIN.match(name):
        return Refusal(f"invalid target: name {shown(name)} is not a valid Kubernetes object name "
                       "(DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253 characters)",
                       target)
    allowed = playbook.guardrails.namespaces
    if allowed and namespace not in allowed:
        return Refusal(f"namespace {namespace!r} is not in the playbook's allowlist {list(allowed)}", target)
    try:
        steps = _steps(playbook.steps, context, "main")
        on_failure = _steps(playbook.on_failure, context, "on_failure")
        steps, on_failure = (tuple(_guarded(s, playbook) for s in group) for group in (steps, on_failure))
        rl = playbook.guardrails.rate_limit
        key = render(rl.key, context) if rl and rl.key else target.key
    except TemplateError as exc:
        return Refusal(f"invalid step parameters: {exc}", target)
    # The daemon's dry-run is absolute: a playbook may only add dry-run, never lift it, so that
    # `serve --dry-run` acts on nothing whatever the playbooks say (one may be promoted to live by
    # running the daemon live and marking the others `dry_run: true`).
    dry = global_dry_run or bool(playbook.guardrails.dry_run)
    return Plan(playbook, target, f"{playbook.name}|{key}", steps, on_failure, dry)


def desired_amount(current: int, params: Mapping[str, Any], *, ceiling: int | None = None) -> int:
    """The new replica count or pool size for ``to``/``by``/``factor`` within ``min``/``max``.

    ``factor`` rounds away from the current value (growing 3 by 1.5 gives 5) so a
    small service still moves.

    The bounds (``min``, ``max`` and the ``ceiling``, the playbook's ``max_replicas``) limit
    what the step does, they never turn it around: a raise (``to`` at or above the current
    value, ``by`` >= 0, ``factor`` >= 1) never lowers a value someone already took above the
    ceiling (12 replicas, ``by: 2``, ``max: 10`` stays 12), and a lowering never raises a
    value already below ``min`` (1 replica, ``by: -1``, ``min: 3`` stays 1).
    """
    raising = True
    if "to" in params:
        value = int(params["to"])
        raising = value >= current
    elif "by" in params:
        value = current + int(params["by"])
        raising = int(params["by"]) >= 0
    elif "factor" in params:
        factor = float(params["factor"])
        raw = current * factor
        value = math.ceil(raw) if raw >= current else math.floor(raw)
        raising = factor >= 1
    else:
        value = current
    if params.get("min") is not None:
        value = max(value, int(params["min"]))
    if params.get("max") is not None:
        value = min(value, int(params["max"]))
    if ceiling is not None:
        value = min(value, ceiling)
    value = max(value, current) if raising else min(value, current)
    return max(value, 0)
