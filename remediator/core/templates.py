"""Sandboxed rendering of playbook templates against an alert.

Alert labels are attacker-adjacent input (anything that can push a metric label can
shape them), so templates run in Jinja's immutable sandbox with strict undefineds:
a missing label is a clear error, never an empty Kubernetes name.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
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


#: The most characters one render may produce: a target is a name of at most 253, a chat message
#: well under Slack's 40,000.  Checked as the output is produced, so a loop over an alert's labels that
#: writes a label's value for each character of another stops here, not after megabytes.
MAX_RENDERED = 100_000
#: The widest a template may pad or fill one value (``center``, ``ljust``, ``'%5000d'``): wider is a
#: mistake, or a number taken from an alert to make one call allocate gigabytes.
MAX_WIDTH = 1_000
#: The largest number a power may make (in bits): ``9 ** 9 ** 9`` would run for minutes in one call.
MAX_POWER_BITS = 4_096

_PAD_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
# A %-format's width and precision: "%-*.*s", "%0999999999d" (the flags before them are skipped)
_PERCENT_WIDTHS = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
# A str.format spec's numbers and nested fields: "{:>999999999}", "{:{}}"
_SPEC_WIDTHS = re.compile(r"\d+|\{")


def _too_wide(what: str, width: object) -> None:
    if isinstance(width, int) and width > MAX_WIDTH:
        raise SecurityError(f"{what} wider than {MAX_WIDTH} characters ({width}) is not available in templates")


def _check_percent(fmt: str) -> None:
    for m in _PERCENT_WIDTHS.finditer(fmt):
        for part in m.groups():
            if part == "*":
                raise SecurityError("a %-format width or precision taken from its arguments (*) is not available "
                                    "in templates")
            if part is not None:
                _too_wide("a %-format width or precision", int(part))


def _check_format(fmt: str) -> None:
    for _text, _field, spec, _conversion in string.Formatter().parse(fmt):
        for token in _SPEC_WIDTHS.findall(spec or ""):
            if token == "{":
                raise SecurityError("a format width taken from its arguments ({:{}}) is not available in templates")
            _too_wide("a format width or precision", int(token))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse the operations whose result is far larger than their operands, before Python makes it."""
    if operator == "%" and isinstance(left, str):
        _check_percent(left)
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_RENDERED:
                raise SecurityError(f"a repetition longer than {MAX_RENDERED} is not available in templates")
    elif (operator == "**" and isinstance(left, int | float) and isinstance(right, int | float)
          and abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > MAX_POWER_BITS):
        raise SecurityError(f"a power larger than 2**{MAX_POWER_BITS} is not available in templates")


class _Bounded(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the operations that turn a small input into a huge output in
    one call bounded (Jinja's documented hooks: ``intercepted_binops``/``call_binop``, ``call``)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, str):
            if name in _PAD_METHODS:
                for width in (*args, *kwargs.values()):
                    _too_wide(f"str.{name}", width)
            elif name in ("format", "format_map"):
                _check_format(owner)
        return super().call(__context, __obj, *args, **kwargs)


def _bounded_filters(env: ImmutableSandboxedEnvironment) -> None:
    """``center``, ``indent`` and ``format`` with the widths :class:`_Bounded` allows methods."""
    center, indent, fmt = env.filters["center"], env.filters["indent"], env.filters["format"]

    def bounded_center(value: Any, width: int = 80) -> Any:
        _too_wide("center", width)
        return center(value, width)

    def bounded_indent(value: Any, width: int | str = 4, *args: Any, **kwargs: Any) -> Any:
        _too_wide("indent", width)
        if isinstance(width, str) and len(width) > MAX_WIDTH:
            raise SecurityError(f"an indent longer than {MAX_WIDTH} characters is not available in templates")
        return indent(value, width, *args, **kwargs)

    def bounded_format(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            _check_percent(value)
        return fmt(value, *args, **kwargs)

    env.filters.update(center=bounded_center, indent=bounded_indent, format=bounded_format)


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    """``tojson``'s JSON, printable characters as they are and the rest escaped.

    ``tojson`` is how a label is quoted into a PromQL string (docs/playbooks.md).  Python's default
    writes every non-ASCII character escaped, those outside the BMP as a surrogate pair
    (``"\\ud83d\\ude80"``), which PromQL refuses (HTTP 400: an emoji in a label failed every check
    of its alert at once).  PromQL takes UTF-8 as it is; what is not printable (a line separator,
    a zero-width space) stays escaped, so it reaches neither a query nor a message raw.
    """
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def _env() -> ImmutableSandboxedEnvironment:
    env = _Bounded(undefined=_Undefined, autoescape=False, keep_trailing_newline=False)
    # Jinja's globals (range, lipsum, dict, cycler, joiner, namespace): nothing a playbook or a message
    # needs, and check_template's unknown-name check cannot see them.  range() is what made a template
    # cost minutes at render ({% for %} nested over range(100000), each within the sandbox's cap), and
    # lipsum is random where plans are memoized.
    env.globals.clear()
    env.policies["json.dumps_function"] = _json_dumps
    _bounded_filters(env)
    return env


def cost_problem(ast: nodes.Template) -> str | None:
    """What makes a template's work grow faster than the alert it renders (None: nothing).

    With the limits above, one render's work is at most the template's size times the alert's:
    a loop runs once per item of a value that is bounded (128 labels, 4,096 characters each).
    Loops inside loops multiply those bounds (a label's characters times another's: millions of
    rounds that write nothing the output budget could stop), and macros can call themselves
    (twice per call is exponential).  Neither is needed to name a target or write a message.
    """
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            return "recursive loops are not available in templates"
        if any(isinstance(part, nodes.For) or any(True for _ in part.find_all(nodes.For)) for part in loop.body):
            return "a loop inside a loop is not available in templates (its cost is the product of two alert values)"
    if any(True for _ in ast.find_all((nodes.Macro, nodes.CallBlock))):
        return "macros are not available in templates"
    return None


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
    problem = cost_problem(ast)
    if problem is not None:
        raise TemplateError(f"template {source!r}: {problem}")
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


def _bounded_render(template: jinja2.Template, source: str, context: Mapping[str, Any]) -> str:
    """The template's output, stopped once it exceeds :data:`MAX_RENDERED` (produced piece by piece)."""
    parts: list[str] = []
    size = 0
    for part in template.generate(context):
        size += len(part)
        if size > MAX_RENDERED:
            raise TemplateError(f"template {source!r}: renders more than {MAX_RENDERED} characters for this alert")
        parts.append(part)
    return "".join(parts)


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
        return _bounded_render(_compile(source), source, context)
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
