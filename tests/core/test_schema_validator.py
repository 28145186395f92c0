"""The playbook validator's cheaper ``allOf`` reports exactly what jsonschema's own does.

:func:`remediator.core.schema.playbook_validator` skips the step branches whose ``if`` cannot
hold; every error message an author reads is built from the errors, so they must be the same
errors, in the same order, with the same paths, for valid and invalid steps alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from remediator.core.schema import _ACTION_PARAMS, ACTIONS, playbook_schema, playbook_validator

ROOT = Path(__file__).resolve().parents[2]

STOCK = jsonschema.Draft202012Validator(playbook_schema())
OURS = playbook_validator()


def _errors(validator: jsonschema.Draft202012Validator, instance: Any) -> list[tuple[Any, ...]]:
    return [
        (tuple(e.absolute_path), tuple(e.absolute_schema_path), e.validator, e.message, e.schema)
        for e in validator.iter_errors(instance)
    ]


def _playbook(*steps: Any) -> dict[str, Any]:
    return {
        "name": "p", "match": {"alertname": "A"},
        "target": {"kind": "Deployment", "namespace": "shop", "name": "web"},
        "steps": list(steps), "on_failure": list(steps),
    }


def _sample(spec: Any) -> Any:
    """A value of roughly the type a property schema asks for (right or wrong does not matter here)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    return {"integer": 3, "number": 1.5, "boolean": True, "object": {}, "array": []}.get(str(kind), "5m")


def _steps() -> list[Any]:
    """Steps of every action, bare and with every parameter of every action (most of them unknown
    to it), plus the steps the shortcut must leave to jsonschema: no action, one that is not a
    string, an unknown one, and steps that are not mappings."""
    every_param = {
        key: _sample(spec) for params in _ACTION_PARAMS.values() for key, spec in params["properties"].items()
    }
    steps: list[Any] = []
    for action in ACTIONS:
        steps.append({"action": action})
        steps.append({"action": action, **every_param})
        steps += [{"action": action, key: value} for key, value in every_param.items()]
    steps += [
        {}, {"to": 3}, {"action": None}, {"action": 3}, {"action": ["scale"]}, {"action": {"const": "scale"}},
        {"action": "nope", "to": 3}, {"action": "Scale"}, "restart", ["restart"], 7, None,
    ]
    return steps


@pytest.mark.parametrize("step", _steps(), ids=repr)
def test_a_step_gets_the_same_errors_as_from_jsonschema(step: Any) -> None:
    instance = _playbook(step, {"action": "restart"})
    assert _errors(OURS, instance) == _errors(STOCK, instance)


def _files() -> list[Path]:
    return sorted(p for p in ROOT.glob("**/*.y*ml") if ".venv" not in p.parts and "node_modules" not in p.parts)


def test_every_playbook_in_the_repository_gets_the_same_errors_as_from_jsonschema() -> None:
    checked = 0
    for path in _files():
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError:
            continue
        for doc in docs:
            items = doc if isinstance(doc, list) else doc.get("playbooks", [doc]) if isinstance(doc, dict) else []
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "steps" in item:
                    assert _errors(OURS, item) == _errors(STOCK, item), f"{path}: {item.get('name')}"
                    checked += 1
    assert checked >= 20  # the examples, the deployed starter set and the malformed ones at least

