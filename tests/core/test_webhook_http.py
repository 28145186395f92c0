"""The webhook over real HTTP: bad input gets a 4xx with a JSON reason, never a 500,
and no amount of it stops the daemon from recording the next good delivery."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from remediator.runtime import RUNTIME
from tests.core.conftest import Client
from tests.core.malformed import CASES, valid_body
from tests.payloads import alert_json, payload

URL = "/webhooks/alertmanager"
AUTH = {"Authorization": "Bearer t1"}
LIMIT = 1024 * 1024  # the default webhook.max_body_bytes
async def recorded_fingerprints(client: Client) -> list[str]:
    store = client.app[RUNTIME].store
    since, until = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
    return [s.received.alert.fingerprint async for s in store.alerts_between(since, until)]


async def rejected(client: Client, reason: str) -> float:
    text = await (await client.get("/metrics")).text()
    prefix = f'remediator_webhook_rejected_total{{reason="{reason}"}} '
    return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def good_payload(name: str) -> dict[str, Any]:
    return payload(alert_json({"alertname": "ServiceDown", "severity": "critical", "namespace": "shop",
                               "deployment": name}, fingerprint=f"{abs(hash(name)):016x}"[:16]))


async def test_every_malformed_body_is_a_400_with_its_reason(client: Client) -> None:
    wrong = []
    for case in CASES:
        r = await client.post(URL, data=case.body, headers={**AUTH, "Content-Type": "application/json"})
        body = await r.json()  # JSON even for errors
        if r.status != 400 or set(body) != {"error"} or not body["error"].startswith(case.reason):
            wrong.append(f"{case.id}: {r.status} {body}")
    assert not wrong, "\n".join(wrong)
    assert await rejected(client, "malformed") == len(CASES)
    assert await recorded_fingerprints(client) == []


async def test_a_huge_body_is_a_413_whether_announced_or_streamed(client: Client) -> None:
    huge = b'{"version": "4", "alerts": [' + b" " * (10 * 1024 * 1024) + b"]}"
    r = await client.post(URL, data=io.BytesIO(huge), headers=AUTH)  # sent with its Content-Length
    assert r.status == 413
    assert await r.json() == {"error": f"body larger than {LIMIT} bytes"}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(10 * 16):
            yield b" " * 65536

    r = await client.post(URL, data=chunks(), headers=AUTH)
    assert r.status == 413
    assert await r.json() == {"error": f"body larger than {LIMIT} bytes"}
    assert await rejected(client, "too_large") == 2
    # just under the limit is read and parsed (and here refused for what it says, not for its size)
    r = await client.post(URL, data=io.BytesIO(b" " * (LIMIT - 1)), headers=AUTH)
    assert r.status == 400 and (await r.json())["error"].startswith("body is not valid JSON")


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Bearer ",
        "Bearer t1x",
        "Bearer t",
        "Token t1",
        "t1",
        basic("alertmanager", "wrong"),
        basic("t1", ""),  # the token is the password, not the user name
        basic("alertmanager", ""),
        "Basic " + base64.b64encode(b"no-colon-t1").decode(),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"user:\xfft1").decode(),
    ],
)
async def test_missing_or_wrong_credentials_are_a_401(client: Client, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for body in (json.dumps(valid_body()).encode(), b"{not json"):  # credentials are checked before the body
        r = await client.post(URL, data=body, headers=headers)
        assert r.status == 401
        assert await r.json() == {"error": "missing or invalid credentials"}
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert await recorded_fingerprints(client) == []


@pytest.mark.parametrize(
    "authorization",
    ["Bearer t1", "Bearer t2", "bearer t2", "Bearer  t1 ", basic("alertmanager", "t1"), basic("", "t2")],
)
async def test_every_rotation_token_is_accepted_as_bearer_or_basic(client: Client, authorization: str) -> None:
    body = good_payload("api")
    r = await client.post(URL, json=body, headers={"Authorization": authorization})
    assert r.status == 200, await r.text()
    assert (await r.json())["new"] == 1
    assert await recorded_fingerprints(client) == [body["alerts"][0]["fingerprint"]]


async def test_after_all_the_abuse_the_daemon_still_records_good_deliveries(client: Client) -> None:
    for case in CASES:
        assert (await client.post(URL, data=case.body, headers=AUTH)).status == 400
    assert (await client.post(URL, data=io.BytesIO(b"x" * (10 * 1024 * 1024)), headers=AUTH)).status == 413
    for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": basic("t1", "t3")}):
        assert (await client.post(URL, json=valid_body(), headers=header)).status == 401
    assert (await client.get(URL)).status == 405  # and even that answers JSON
    assert set(await (await client.get(URL)).json()) == {"error"}

    assert (await client.get("/healthz")).status == 200
    body = valid_body()
    r = await client.post(URL, json=body, headers={"Authorization": "Bearer t2"})
    assert r.status == 200
    assert await r.json() == {"status": "accepted", "alerts": 2, "new": 2, "duplicates": 0, "truncatedAlerts": 0}
    assert sorted(await recorded_fingerprints(client)) == sorted(a["fingerprint"] for a in body["alerts"])

    # Alertmanager redelivers: accepted again, recorded once
    r = await client.post(URL, json=body, headers={"Authorization": basic("alertmanager", "t1")})
    assert r.status == 200 and (await r.json())["duplicates"] == 2
    assert len(await recorded_fingerprints(client)) == 2
    assert await rejected(client, "malformed") == len(CASES)
    assert await rejected(client, "unauthorized") == 3
