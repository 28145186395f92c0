"""Large webhook bodies are parsed off the event loop, with exactly the same answers.

Parsing a 2,500-alert delivery is over a second of CPU; on the event loop it would hold
up every other request (``/healthz`` included) for that long.  What is tested here is the
mechanism (where the parse runs, and that other requests are served meanwhile), never a
duration: ``bench/webhook_loop_bench.py`` measures the latency.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from remediator import http
from remediator.core.alerts import WebhookPayload, parse_webhook
from remediator.settings import WebhookSettings
from tests.core.conftest import Client
from tests.core.malformed import CASES, refusal, valid_body
from tests.payloads import alert_json, payload
from tests.threads import where

URL = "/webhooks/alertmanager"
AUTH = {"Authorization": "Bearer t1"}
LIMIT = WebhookSettings().max_body_bytes  # the default
HANG_GUARD = 30.0  # only so that a regression fails instead of hanging; never a speed check


def big_body(n: int = 2500) -> bytes:
    return json.dumps(payload(*(
        alert_json({"alertname": "Bulk", "namespace": "shop", "instance": f"i-{i}"}, fingerprint=f"{i:016x}")
        for i in range(n)
    ))).encode()


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Where each webhook body was parsed: on the event loop or on a thread without one."""
    seen: list[str] = []

    def spy(body: bytes) -> WebhookPayload:
        seen.append(where())
        return parse_webhook(body)

    monkeypatch.setattr(http, "parse_webhook", spy)
    return seen


async def test_large_bodies_are_parsed_off_the_loop_and_small_ones_in_place(
    client: Client, parses: list[str]
) -> None:
    body = big_body()
    assert http.PARSE_IN_LOOP_BYTES < len(body) <= LIMIT
    r = await client.post(URL, data=body, headers=AUTH)
    assert r.status == 200
    assert await r.json() == {"status": "accepted", "alerts": 2500, "new": 2500, "duplicates": 0,
                              "truncatedAlerts": 0}
    r = await client.post(URL, json=valid_body(), headers=AUTH)
    assert r.status == 200
    assert parses == ["thread", "loop"]


async def test_health_probes_are_answered_while_a_large_body_is_parsed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, done_probing = threading.Event(), threading.Event()
    answered_meanwhile: list[bool] = []

    def slow_parse(body: bytes) -> WebhookPayload:
        entered.set()
        # Parsed on the loop, this would stop the probe below until the guard ran out.
        answered_meanwhile.append(done_probing.wait(HANG_GUARD))
        return parse_webhook(body)

    monkeypatch.setattr(http, "parse_webhook", slow_parse)
    post = asyncio.create_task(client.post(URL, data=big_body(), headers=AUTH))
    assert await asyncio.to_thread(entered.wait, HANG_GUARD)
    probe = await client.get("/healthz")
    assert probe.status == 200
    done_probing.set()
    assert (await post).status == 200
    assert answered_meanwhile == [True]


def padded(body: bytes) -> bytes:
    """The same document made larger than the in-loop limit (trailing whitespace is insignificant in JSON)."""
    return body + b" " * (http.PARSE_IN_LOOP_BYTES + 1)


async def test_a_large_malformed_body_gets_exactly_the_answer_a_small_one_would(
    client: Client, parses: list[str]
) -> None:
    wrong = []
    cases = [c for c in CASES if len(padded(c.body)) <= LIMIT]
    assert len(cases) >= len(CASES) - 2  # nearly every case fits: the comparison is not vacuous
    for case in cases:
        body = padded(case.body)
        direct, _ = refusal(body)  # in this thread, as it would be on the loop
        r = await client.post(URL, data=body, headers={**AUTH, "Content-Type": "application/json"})
        answer = await r.json()
        said = answer["refused"][0] if case.one_alert and r.status == 200 else answer.get("error")
        if r.status != (200 if case.one_alert else 400) or said != direct:
            wrong.append(f"{case.id}: {r.status} {answer} != {direct}")
    assert not wrong, "\n".join(wrong)
    assert parses == ["thread"] * len(cases)

