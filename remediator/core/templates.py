"""Sandboxed rendering of playbook templates against an alert.

Alert labels are attacker-adjacent input (anything that can push a metric label can
shape them), so templates run in Jinja's immutable sandbox with strict undefineds:
a missing label is a clear error, never an empty Kubernetes name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from remediator.core.alerts import Alert, format_time
from remediator.core.errors import TemplateError

#: The names a playbook template may use.
CONTEXT_NAMES = frozenset({"labels", "annotations", "status", "fingerprint", "startsAt", "generatorURL"})


class _Undefined(jinja2.StrictUndefined):
    """Strict, but with a message an SRE understands at 3 a.m."""

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        name = self._undefined_name
        raise TemplateError(f"the alert has no {name!r}" if name else "undefined value in template")

    __str__ = _fail_with_undefined_error


def _env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=_Undefined, autoescape=False, keep_trailing_newline=False)
    # Jinja's globals (range, lipsum, dict, cycler, joiner, namespace): nothing a playbook or a message
    # needs, and check_template's unknown-name check cannot see them.  range() is what made a template
    # cost minutes at render ({% for %} nested over range(100000), each within the sandbox's cap), and
    # lipsum is random where plans are memoized.
    env.globals.clear()
    return env


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """One shared environment: compiled templates are cached per source string."""
    return _env()


@lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    try:
        return environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {source!r}: {exc.message}") from None


def check_template(source: str) -> None:
    """Raise TemplateError for anything that would fail for every alert.

    That is: syntax errors, unknown filters or tests (Jinja reports those only when
    compiling), names outside :data:`CONTEXT_NAMES`, and include/import/extends
    (there are no other templates to load).
    """
    try:
        ast = environment().parse(source)
        unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - CONTEXT_NAMES)
    except jinja2.TemplateSyntaxError as exc:  # includes TemplateAssertionError (unknown filter/test)
        raise TemplateError(f"template {source!r}: {exc.message}") from None
    if unknown:
        raise TemplateError(
            f"template {source!r} uses unknown name(s) {', '.join(unknown)}; "
            f"available: {', '.join(sorted(CONTEXT_NAMES))}"
        )
    if any(True for _ in jinja2.meta.find_referenced_templates(ast)):
        raise TemplateError(f"template {source!r}: include, import and extends are not available in playbooks")
    _compile(source)


#: Filters that stand in for a missing value, so a label under one of them may be absent.
_DEFAULT_FILTERS = frozenset({"default", "d"})
#: Tests that ask whether a value exists: a template that asks may handle the absence itself.
_PRESENCE_TESTS = frozenset({"defined", "undefined", "none"})


def _label_name(node: nodes.Node) -> str | None:
    """The label a node reads, for ``labels.x`` and ``labels['x']`` (None for anything else).

    ``labels.get``/``labels.items`` are the dict's methods (Jinja tries attributes first),
    not labels, so they are not label reads.
    """
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "labels":
        return None if hasattr(dict, node.attr) else node.attr
    if (isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == "labels"
            and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
        return node.arg.value
    return None


@lru_cache(maxsize=4096)
def required_labels(source: str) -> frozenset[str]:
    """The labels ``source`` cannot render without: those it reads with no fallback.

    A read is covered by a fallback when it sits directly under ``default``, when it is
    ``labels.get('x', fallback)``, or when the template asks ``labels.x is defined`` /
    ``'x' in labels`` anywhere (it then chooses what to do without it).  A computed key
    (``labels[annotations.k]``) cannot be known here and is left to render time.
    Used at load time to find targets that an alert selected by the playbook may not be
    able to name; the template must already have passed :func:`check_template`.
    Cached per source, like :func:`_compile`: a thousand playbooks mostly share a handful of
    target templates, and every load checks every target again.
    """
    ast = environment().parse(source)
    covered_nodes = {id(f.node) for f in ast.find_all(nodes.Filter) if f.name in _DEFAULT_FILTERS and f.node}
    asked: set[str] = set()
    for test in ast.find_all(nodes.Test):
        if test.name in _PRESENCE_TESTS and (name := _label_name(test.node)):
            asked.add(name)
    for compare in ast.find_all(nodes.Compare):
        for operand in compare.ops:
            if (operand.op in ("in", "notin") and isinstance(operand.expr, nodes.Name)
                    and operand.expr.name == "labels" and isinstance(compare.expr, nodes.Const)):
                asked.add(str(compare.expr.value))
    needed: set[str] = set()
    for call in ast.find_all(nodes.Call):
        method = call.node
        if (isinstance(method, nodes.Getattr) and method.attr == "get" and isinstance(method.node, nodes.Name)
                and method.node.name == "labels" and call.args and isinstance(call.args[0], nodes.Const)
                and len(call.args) + len(call.kwargs) < 2):
            needed.add(str(call.args[0].value))  # labels.get('x') renders "None" when x is absent
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        name = _label_name(node)
        if name is not None and id(node) not in covered_nodes:
            needed.add(name)
    return frozenset(needed - asked)


def alert_context(alert: Alert) -> dict[str, Any]:
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "status": alert.status,
        "fingerprint": alert.fingerprint,
        "startsAt": format_time(alert.starts_at),
        "generatorURL": alert.generator_url,
    }


#: A template that is one label and nothing else, as most targets are (``{{ labels.deployment }}``).
_ONE_LABEL = re.compile(r"\{\{ *labels\.([A-Za-z_][A-Za-z0-9_]*) *\}\}\Z")


@lru_cache(maxsize=4096)
def _one_label(source: str) -> str | None:
    """The label a template renders as it is, when it is nothing else (None otherwise): what
    Jinja would do for it is a dictionary lookup, without its some 10 µs a render.  Not a name
    that is an attribute of the labels' dict (``labels.items``: Jinja tries attributes first)."""
    m = _ONE_LABEL.match(source)
    return m.group(1) if m and not hasattr(dict, m.group(1)) else None


def render(source: str, context: Mapping[str, Any]) -> str:
    if "{" not in source:
        return source
    label = _one_label(source)
    if label is not None:
        value = context["labels"].get(label)
        if type(value) is str:
            return value  # anything else (absent: the error) as Jinja says it
    try:
        # Not stripped: a label " shop" must reach validation as " shop" and be refused, not be
        # silently trimmed into the name of another object.
        return _compile(source).render(context)
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {source!r}: {exc}") from None
    except Exception as exc:  # a sandbox violation or a filter misuse, still the playbook's fault
        raise TemplateError(f"template {source!r}: {type(exc).__name__}: {exc}") from None


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render strings inside nested step parameters; other values pass through."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, context) for v in value]
    return value
