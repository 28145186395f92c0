"""Kubernetes' name rules for what alert content may name.

Alert labels are input from anyone who can shape a metric's labels.  Whatever a
playbook renders from them into a namespace, object, pod or container name is held
to the rules the apiserver itself applies (apimachinery's IsDNS1123Label and
IsDNS1123Subdomain) before any request is built from it: a label of "..", "a/b" or
" shop" must never become another URL path or a silently trimmed name.
"""

from __future__ import annotations

import re
from typing import Any

# Kubernetes' own name rules (apimachinery validation: IsDNS1123Label, IsDNS1123Subdomain).
# \Z, not $: "$" also matches before a final newline, which would let "web\n" through.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

#: Step parameters that name a Kubernetes object or part of one, and the rule each must pass
#: once rendered.  Alert content reaches the API only through these and the target.
NAMED_PARAMS: dict[tuple[str, str], tuple[re.Pattern[str], str]] = {
    ("delete_pod", "pod"): (DNS_SUBDOMAIN, "a valid pod name (DNS-1123 subdomain: lowercase letters, digits, "
                                            "'-' and '.', at most 253 characters)"),
    ("resize_pool", "container"): (DNS_LABEL, "a valid container name (DNS-1123 label: lowercase letters, "
                                               "digits and '-', at most 63 characters)"),
}


def name_problem(action: str, key: str, value: Any) -> str | None:
    """Why a step parameter's value is not a valid name for what it names (None: it is, or the
    parameter names nothing).  Used at plan time on rendered values, and at load time on
    static ones so that a typo fails validation rather than the first alert."""
    rule = NAMED_PARAMS.get((action, key))
    if rule is None or (isinstance(value, str) and rule[0].match(value)):
        return None
    return f"{action}.{key} {shown(value)} is not {rule[1]}"


def shown(value: Any) -> str:
    """A hostile value as it may appear in a reason: quoted, and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(str(value))} characters)"
