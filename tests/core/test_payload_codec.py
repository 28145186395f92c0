"""The compiled fast path never accepts what the validating path refuses, and agrees on the rest.

``parse_webhook`` tries :mod:`remediator.core.payload_codec` first and falls back to the
validating path for anything it does not accept; so the two must agree: same payload for a
valid body, and for an invalid one the fast path steps aside (None) and the answer is the
validating path's reason, word for word.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from remediator.core.alerts import (
    MAX_ANNOTATION_VALUE,
    MAX_LABEL_NAME,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    parse_webhook,
    parse_webhook_validating,
)
from remediator.core.errors import PayloadError
from remediator.core.payload_codec import PayloadDecoder
from tests.core.malformed import CASES, Case, refusal, valid_body

FAST = PayloadDecoder()


def outcome(parse: Any, body: bytes) -> Any:
    try:
        return parse(body)
    except PayloadError as exc:
        return f"PayloadError: {exc}"


def assert_agree(body: bytes) -> None:
    slow = outcome(parse_webhook_validating, body)
    try:
        fast = FAST.decode(body)
    except PayloadError as exc:
        fast = f"PayloadError: {exc}"
    if fast is not None:  # accepted (or refused for its timestamps): exactly as the validating path
        assert fast == slow
    assert outcome(parse_webhook, body) == slow


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_malformed_body_keeps_its_reason(case: Case) -> None:
    assert refusal(case.body)[0].startswith(case.reason)
    assert FAST.decode(case.body) is None  # every refusal, whole or of one alert, is the validating path's
    assert_agree(case.body)


def test_a_valid_body_takes_the_fast_path_and_reads_the_same() -> None:
    body = json.dumps({**valid_body(), "futureField": {"nested": [1, 2]}, "truncatedAlerts": 3}).encode()
    fast = FAST.decode(body)
    assert fast is not None and fast == parse_webhook_validating(body)


@pytest.mark.parametrize("body", [
    # what msgspec alone would let through in a field nobody reads, and json.loads refuses
    b'{"version": "4", "status": "firing", "alerts": [], "x": 1' + b"0" * 5000 + b"}",
    # a surrogate pair is fine, a lone one is not Unicode: both go the validating way
    b'{"version": "4", "status": "firing", "alerts": [], "receiver": "\\ud83d\\ude00"}',
    b'{"version": "4", "status": "firing", "alerts": [], "x": "\\udc00"}',
    # JSON Schema's "integer" takes 1.0; msgspec's int does not: the validating path decides
    b'{"version": "4", "status": "firing", "alerts": [], "truncatedAlerts": 1.0}',
], ids=["endless-ignored-number", "surrogate-pair", "ignored-lone-surrogate", "integral-float"])
def test_what_only_json_loads_refuses_is_left_to_the_validating_path(body: bytes) -> None:
    assert FAST.decode(body) is None
    assert_agree(body)


def _mutations(rng: random.Random) -> Any:
    """Edits at and around every limit and type the schema states."""
    limits = {"name": MAX_LABEL_NAME, "value": MAX_LABEL_VALUE, "annotation": MAX_ANNOTATION_VALUE}
    char = rng.choice(["a", "é", "😀"])  # length is counted in characters, not bytes
    near = {k: char * (v + rng.choice([-1, 0, 1])) for k, v in limits.items()}
    odd = rng.choice([None, 1, 1.5, True, [], {}, "", "x", "firing", "4", 4, -1, 0, "0001-01-01T00:00:00Z",
                      "2026-13-40T00:00:00Z", "abc", "a" * 65, "ab-c"])
    return rng.choice([
        ("version", odd), ("status", odd), ("receiver", odd), ("groupKey", odd), ("truncatedAlerts", odd),
        ("externalURL", odd), ("groupLabels", odd), ("commonLabels", {"k": odd}), ("alerts", odd),
        ("alerts.0", odd), ("alerts.0.status", odd), ("alerts.0.labels", odd), ("alerts.0.labels.k", odd),
        ("alerts.0.startsAt", odd), ("alerts.0.endsAt", odd), ("alerts.0.fingerprint", odd),
        ("alerts.0.generatorURL", odd), ("alerts.0.annotations", {"k": odd}),
        ("alerts.0.labels", {near["name"]: "v"}), ("alerts.0.labels", {"k": near["value"]}),
        ("alerts.0.annotations", {"k": near["annotation"]}),
        ("alerts.0.labels", {f"l{i}": "v" for i in range(MAX_LABELS + rng.choice([-1, 0, 1]))}),
        ("commonAnnotations", {f"a{i}": "v" for i in range(MAX_LABELS + rng.choice([0, 1]))}),
        ("alerts.1", None),  # dropped
    ])


@pytest.mark.parametrize("seed", range(10))
def test_generated_bodies_get_the_same_answer_on_both_paths(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        body: Any = copy.deepcopy(valid_body())
        for _ in range(rng.randint(1, 3)):
            path, value = _mutations(rng)
            *parents, last = path.split(".")
            node = body
            try:
                for key in parents:
                    node = node[int(key)] if key.isdigit() else node[key]
                if value is None and last.isdigit():
                    del node[int(last)]
                else:
                    node[int(last) if last.isdigit() else last] = value
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit removed what this one edits
        assert_agree(json.dumps(body, ensure_ascii=rng.random() < 0.5).encode())
