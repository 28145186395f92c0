"""Kubernetes' name rules for what alert content may name, and the rules for the values it may set.

Alert labels and annotations are input from anyone who can shape a metric's labels or
an alert rule.  Whatever a playbook renders from them into a namespace, object, pod or
container name is held to the rules the apiserver itself applies (apimachinery's
IsDNS1123Label and IsDNS1123Subdomain) before any request is built from it: a label of
"..", "a/b" or " shop" must never become another URL path or a silently trimmed name.
Values a step sets are held to their own grammar the same way: an image reference
(distribution's reference grammar), an env var name (a C identifier), an env value (a
bounded string), a resource quantity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from remediator.core.errors import MatcherError
from remediator.core.quantities import QuantityError, parse_quantity
from remediator.core.regex import compile_re2

# Kubernetes' own name rules (apimachinery validation: IsDNS1123Label, IsDNS1123Subdomain).
# \Z, not $: "$" also matches before a final newline, which would let "web\n" through.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
#: An env var name as ``set_env`` accepts it: a C identifier (apimachinery's IsCIdentifier), the
#: rule every shell and JVM launcher can read back.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}\Z")
#: The longest env value ``set_env`` sends: room for any JAVA_OPTS, not for a rendered payload.
MAX_ENV_VALUE = 4096

# distribution/reference's grammar: [domain "/"] path-component ("/" path-component)* [":" tag] ["@" digest],
# with the digest held to sha256.  Each part's alternatives are disjoint, so matching stays linear.
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?"
IMAGE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?\Z"
)
#: Longer texts are refused before the grammar is even tried.
MAX_IMAGE = 512

_CONTAINER = "a valid container name (DNS-1123 label: lowercase letters, digits and '-', at most 63 characters)"


def _rule(pattern: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and pattern.match(value) else f"{shown(value)} is not {what}"

    return check


def _image(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= MAX_IMAGE and IMAGE.match(value):
        return None
    return (f"{shown(value)} is not a valid image reference (registry/repository[:tag][@sha256:digest], "
            "lowercase repository)")


def _env_value(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"{shown(value)} is not a string"
    if len(value) > MAX_ENV_VALUE:
        return f"{shown(value)} is longer than {MAX_ENV_VALUE} characters"
    if "\x00" in value:
        return f"{shown(value)} contains a NUL character"
    return None


def _parses(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A rule from a parser: its error message is the problem (it names the value)."""

    def check(value: Any) -> str | None:
        try:
            parse(value)
        except (MatcherError, QuantityError) as exc:
            return str(exc)
        return None

    return check


def _regex(value: Any) -> Any:
    if not isinstance(value, str):
        raise MatcherError(f"{shown(value)} is not a string")
    return compile_re2(value)


_pattern = _parses(_regex)
_quantity = _parses(parse_quantity)


def _resources(value: Any) -> str | None:
    """``set_resources``' ``requests``/``limits``: each resource's ``to`` and ``max`` must be quantities."""
    if not isinstance(value, Mapping):
        return None  # the schema reports the shape
    for resource, spec in value.items():
        for key in ("to", "max"):
            if isinstance(spec, Mapping) and key in spec and (problem := _quantity(spec[key])):
                return f"{resource}.{key}: {problem}"
    return None


#: Step parameters that name a Kubernetes object or part of one, or set a value in one, and the
#: rule each must pass once rendered.  Alert content reaches the API only through these and the target.
PARAM_RULES: dict[tuple[str, str], Callable[[Any], str | None]] = {
    ("delete_pod", "pod"): _rule(DNS_SUBDOMAIN, "a valid pod name (DNS-1123 subdomain: lowercase letters, digits, "
                                                "'-' and '.', at most 253 characters)"),
    ("resize_pool", "container"): _rule(DNS_LABEL, _CONTAINER),
    ("set_image", "container"): _rule(DNS_LABEL, _CONTAINER),
    ("set_image", "image"): _image,
    ("set_image", "only_if_current"): _pattern,
    ("set_env", "container"): _rule(DNS_LABEL, _CONTAINER),
    ("set_env", "name"): _rule(ENV_NAME, "a valid env var name (a C identifier: letters, digits and '_', "
                                         "not starting with a digit)"),
    ("set_env", "value"): _env_value,
    ("set_resources", "container"): _rule(DNS_LABEL, _CONTAINER),
    ("set_resources", "requests"): _resources,
    ("set_resources", "limits"): _resources,
}


def name_problem(action: str, key: str, value: Any) -> str | None:
    """Why a step parameter's value is not valid for what it names or sets (None: it is, or the
    parameter has no rule).  Used at plan time on rendered values, and at load time on
    static ones so that a typo fails validation rather than the first alert."""
    rule = PARAM_RULES.get((action, key))
    problem = rule(value) if rule is not None else None
    return None if problem is None else f"{action}.{key} {problem}"


def shown(value: Any) -> str:
    """A hostile value as it may appear in a reason: quoted, and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(str(value))} characters)"
