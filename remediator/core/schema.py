"""The published JSON Schema of playbook format v1 (``remediator schema``).

Structure lives here, declaratively; checks a schema cannot express (regex
compilation, template names, duplicate names across files) live in ``playbooks``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema

from remediator.core.names import MAX_ENV_VALUE

ACTIONS = (
    "restart", "scale", "resize_pool", "set_image", "set_env", "set_resources", "rollback", "delete_pod",
    "wait_healthy", "http_check", "prometheus_check", "wait_resolved", "notify", "undo",
)
#: Actions that change the cluster: guarded by the lock and dry-run.
MUTATING_ACTIONS = frozenset(
    {"restart", "scale", "resize_pool", "set_image", "set_env", "set_resources", "rollback", "delete_pod", "undo"}
)
#: Verification steps: they only read (an HTTP endpoint, Prometheus, the recorded alerts), so
#: they take no lock round trip and, in dry-run, are planned rather than run (docs/playbooks.md).
CHECK_ACTIONS = frozenset({"http_check", "prometheus_check", "wait_resolved"})
#: Resources ``set_resources`` may change.
RESOURCES = ("cpu", "memory")

DURATION: dict[str, Any] = {
    "description": "Prometheus-style duration such as 30s, 10m, 1h30m (units from largest to smallest)",
    "anyOf": [
        {"type": "string", "pattern": r"^(?=\d)(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$"},
        {"type": "integer", "minimum": 0},
    ],
}
_TEMPLATE = {"type": "string", "minLength": 1, "maxLength": 1024}
_AMOUNT = {
    "to": {"type": "integer", "minimum": 0},
    "by": {"type": "integer"},
    "factor": {"type": "number", "exclusiveMinimum": 0},
    "min": {"type": "integer", "minimum": 0},
    "max": {"type": "integer", "minimum": 0},
}
_ONE_AMOUNT = {
    "oneOf": [{"required": ["to"]}, {"required": ["by"]}, {"required": ["factor"]}],
}
#: ``approval:`` of a playbook (every execution) or of one step (the execution stops before it).
#: An approver: ``sha256:`` and at least 12 hex digits of the SHA-256 of an admin token (what the
#: kill switch's record and the audit show as ``admin token sha256:...``).
APPROVER_PATTERN = r"^sha256:[0-9a-f]{12,64}$"
APPROVAL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "required": {"type": "boolean"},
        "timeout": DURATION,
        # admin tokens by fingerprint (tokens are plain secrets, with no name of their own)
        "approvers": {"type": "array", "items": {"type": "string", "pattern": APPROVER_PATTERN}},
    },
}
_COMMON_STEP = {"action": {"enum": list(ACTIONS)}, "description": {"type": "string"}, "approval": APPROVAL}
#: For the actions that can take serving capacity away (scale, delete_pod): refuse below this many ready.
_MIN_HEALTHY = {"min_healthy_replicas": {"type": "integer", "minimum": 0}}
_QUANTITY = {"type": ["string", "number"], "description": "a Kubernetes quantity: 500m, 2, 1.5Gi, 4Gi"}
#: One resource of ``set_resources``: ``to`` a quantity or ``factor`` a number, within ``min`` and ``max``.
_RESOURCE_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"to": _QUANTITY, "factor": {"type": "number", "exclusiveMinimum": 0}, "max": _QUANTITY,
                   "min": _QUANTITY},
    "oneOf": [{"required": ["to"]}, {"required": ["factor"]}],
    "dependentRequired": {"factor": ["max"]},
}
_RESOURCE_SECTION = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {r: _RESOURCE_CHANGE for r in RESOURCES},
}

#: Every verification step waits within ``timeout``, trying every ``interval``; ``for`` (where it
#: applies) is how long the condition must hold without a single failed attempt.
_CHECK_TIMING = {"timeout": DURATION, "interval": DURATION}
_HOLDS_FOR = {"for": DURATION}
_STATUS = {"type": "integer", "minimum": 100, "maximum": 599}

_ACTION_PARAMS: dict[str, dict[str, Any]] = {
    "restart": {"properties": {}},
    "scale": {"properties": {**_AMOUNT, **_MIN_HEALTHY}, **_ONE_AMOUNT},
    "resize_pool": {
        "properties": {
            "container": {"type": "string", "minLength": 1},
            "env": {"type": "string", "pattern": r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"},
            **_AMOUNT,
        },
        "required": ["container", "env"],
        **_ONE_AMOUNT,
    },
    "set_image": {
        "properties": {"container": _TEMPLATE, "image": _TEMPLATE, "only_if_current": _TEMPLATE},
        "required": ["container", "image"],
    },
    "set_env": {
        "properties": {
            "container": _TEMPLATE, "name": _TEMPLATE, "value": {"type": "string", "maxLength": MAX_ENV_VALUE},
        },
        "required": ["container", "name", "value"],
    },
    "set_resources": {
        "properties": {"container": _TEMPLATE, "requests": _RESOURCE_SECTION, "limits": _RESOURCE_SECTION},
        "required": ["container"],
        "anyOf": [{"required": ["requests"]}, {"required": ["limits"]}],
    },
    "rollback": {"properties": {"to_revision": {"type": "integer", "minimum": 0}}},
    "delete_pod": {"properties": {"pod": _TEMPLATE, **_MIN_HEALTHY}, "required": ["pod"]},
    "wait_healthy": {"properties": {"timeout": DURATION}},
    "http_check": {
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 2048},
            "method": {"enum": ["GET", "HEAD"]},
            "expect_status": {"anyOf": [_STATUS, {"type": "array", "items": _STATUS, "minItems": 1}]},
            "body_matches": {"type": "string", "minLength": 1, "maxLength": 1024},
            "request_timeout": DURATION,
            "insecure_skip_verify": {"type": "boolean"},
            "ca_file": {"type": "string", "minLength": 1},
            **_CHECK_TIMING,
            **_HOLDS_FOR,
        },
        "required": ["url"],
    },
    "prometheus_check": {
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 8192},
            "condition": {"type": "string", "minLength": 1, "maxLength": 64},
            "on_empty": {"enum": ["fail", "pass"]},
            **_CHECK_TIMING,
            **_HOLDS_FOR,
        },
        "required": ["query", "condition"],
    },
    "wait_resolved": {"properties": {**_CHECK_TIMING}},
    # reverts what this execution's earlier steps changed (docs/playbooks.md): it takes no parameters
    "undo": {"properties": {}},
    "notify": {
        "properties": {"channel": {"type": "string", "minLength": 1}, "message": {"type": "string"}},
        "required": ["channel"],
    },
}


def _step_schema() -> dict[str, Any]:
    branches = []
    for action, spec in _ACTION_PARAMS.items():
        then: dict[str, Any] = {
            # approval's shape is checked once, by the common properties (not again in each branch)
            "properties": {"action": _COMMON_STEP["action"], "description": _COMMON_STEP["description"],
                           **spec["properties"], "approval": True},
            "additionalProperties": False,
        }
        for key in ("required", "oneOf", "anyOf"):
            if key in spec:
                then[key] = spec[key]
        branches.append({"if": {"properties": {"action": {"const": action}}}, "then": then})
    return {
        "type": "object",
        "required": ["action"],
        "properties": _COMMON_STEP,
        "allOf": branches,
    }


def playbook_schema() -> dict[str, Any]:
    step = _step_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://remediator.dev/schemas/playbook-v1.json",
        "title": "remediator playbook, format v1",
        "type": "object",
        "required": ["name", "match", "target", "steps"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9_.]{0,126}[a-z0-9])?$"},
            "description": {"type": "string"},
            "match": {
                "type": "object",
                "additionalProperties": False,
                "anyOf": [{"required": ["alertname"]}, {"required": ["matchers"]}],
                "properties": {
                    "alertname": {"type": "string", "minLength": 1},
                    "matchers": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "status": {"enum": ["firing", "resolved", "any"]},
                },
            },
            "target": {
                "type": "object",
                "required": ["kind", "namespace", "name"],
                "additionalProperties": False,
                "properties": {
                    "kind": {"enum": ["Deployment", "StatefulSet"]},
                    "namespace": _TEMPLATE,
                    "name": _TEMPLATE,
                },
            },
            "guardrails": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "namespaces": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    "rate_limit": {
                        "type": "object",
                        "required": ["max", "per"],
                        "additionalProperties": False,
                        "properties": {
                            "max": {"type": "integer", "minimum": 1},
                            "per": DURATION,
                            "key": _TEMPLATE,
                        },
                    },
                    "cooldown": DURATION,
                    "dry_run": {"type": "boolean"},
                    "for": DURATION,
                    "min_occurrences": {"type": "integer", "minimum": 1},
                    "max_replicas": {"type": "integer", "minimum": 1},
                    **_MIN_HEALTHY,
                    "lock_ttl": DURATION,
                    "max_age": DURATION,
                },
            },
            "steps": {"type": "array", "minItems": 1, "items": step},
            "on_failure": {"type": "array", "items": step},
            "notify": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "approval": APPROVAL,
        },
    }


def document_schema() -> dict[str, Any]:
    """A file holds one playbook, a list of them, or ``{playbooks: [...]}``."""
    pb = playbook_schema()
    return {
        "$schema": pb["$schema"],
        "$id": "https://remediator.dev/schemas/playbook-file-v1.json",
        "title": "remediator playbook file, format v1",
        "$defs": {"playbook": {k: v for k, v in pb.items() if not k.startswith("$")}},
        "anyOf": [
            {"$ref": "#/$defs/playbook"},
            {"type": "array", "items": {"$ref": "#/$defs/playbook"}},
            {
                "type": "object",
                "required": ["playbooks"],
                "additionalProperties": False,
                "properties": {"playbooks": {"type": "array", "items": {"$ref": "#/$defs/playbook"}}},
            },
        ],
    }


def _branch_action(branch: Any) -> str | None:
    """The action a step branch (``{"if": {"properties": {"action": {"const": a}}}, "then": ...}``,
    with no ``else``) applies to; None for any other subschema."""
    if not isinstance(branch, Mapping) or set(branch) != {"if", "then"}:
        return None
    test = branch["if"]
    if not isinstance(test, Mapping) or set(test) != {"properties"}:
        return None
    props = test["properties"]
    if not isinstance(props, Mapping) or set(props) != {"action"}:
        return None
    const = props["action"]
    if not isinstance(const, Mapping) or set(const) != {"const"} or not isinstance(const["const"], str):
        return None
    return const["const"]


def _step_all_of(steps: list[Any]) -> Callable[..., Iterator[jsonschema.ValidationError]]:
    """jsonschema's ``allOf``, skipping the branches of the step schema (``steps``) that cannot apply.

    A step's schema is fourteen ``if action == X then ...`` branches; jsonschema evaluates every
    ``if`` in full, which was half the CPU of loading a thousand playbooks.  For a step whose
    ``action`` is a string, the ``if`` of a branch for another action is false (``const`` compares
    strings with ``==``) and a branch with no ``else`` then reports nothing: skipping it changes no
    error.  Every other case (no action, one that is not a string, any other ``allOf``) goes
    through every branch exactly as the library would.
    """
    actions = [_branch_action(branch) for branch in steps]

    def all_of(
        validator: jsonschema.Draft202012Validator, all_of: list[Any], instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[jsonschema.ValidationError]:
        action = instance.get("action") if all_of is steps and isinstance(instance, dict) else None
        for index, subschema in enumerate(all_of):
            if isinstance(action, str) and actions[index] not in (None, action):
                continue
            yield from validator.descend(instance, subschema, schema_path=index)

    return all_of


def playbook_validator() -> jsonschema.Draft202012Validator:
    """A validator of one playbook against :func:`playbook_schema` (draft 2020-12, with the cheaper
    ``allOf`` of :func:`_step_all_of`: the same errors, in the same order), built once by its user."""
    schema = playbook_schema()
    steps = schema["properties"]["steps"]["items"]["allOf"]
    cls: type[jsonschema.Draft202012Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"allOf": _step_all_of(steps)}
    )
    return cls(schema)
