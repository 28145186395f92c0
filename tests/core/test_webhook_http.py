"""The webhook over real HTTP: bad input gets a 4xx with a JSON reason, never a 500,
and no amount of it stops the daemon from recording the next good delivery."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import logging
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from remediator.logs import DisconnectsAtDebug
from remediator.runtime import RUNTIME
from remediator.settings import WebhookSettings
from tests.core.conftest import Client, OpenClient
from tests.core.malformed import CASES, ENCODING_CASES, valid_body
from tests.payloads import alert_json, payload

URL = "/webhooks/alertmanager"
AUTH = {"Authorization": "Bearer t1"}
LIMIT = WebhookSettings().max_body_bytes  # the default


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
    """A delivery refused whole is a 400 with its reason; one whose only bad alert sits beside a good
    one is a 200 that records the good one and names the bad one's reason under ``refused``."""
    wrong = []
    for case in CASES:
        r = await client.post(URL, data=case.body, headers={**AUTH, "Content-Type": "application/json"})
        body = await r.json()  # JSON even for errors
        if case.one_alert:
            ok = r.status == 200 and body["alerts"] == 1 and [x[:len(case.reason)] for x in body["refused"]] == [
                case.reason]
        else:
            ok = r.status == 400 and set(body) == {"error"} and body["error"].startswith(case.reason)
        if not ok:
            wrong.append(f"{case.id}: {r.status} {body}")
    assert not wrong, "\n".join(wrong)
    partial = [c for c in CASES if c.one_alert]
    assert 0 < len(partial) < len(CASES)
    assert await rejected(client, "malformed") == len(CASES) - len(partial)
    text = await (await client.get("/metrics")).text()
    assert f"remediator_alerts_refused_total {float(len(partial))}" in text
    # what was taken: the good alert beside each bad one (the same two fingerprints, kept once each)
    assert set(await recorded_fingerprints(client)) <= {"0123456789abcdef", "fedcba9876543210"}
    assert await recorded_fingerprints(client)


async def test_a_huge_body_is_a_413_whether_announced_or_streamed(client: Client) -> None:
    huge = b'{"version": "4", "alerts": [' + b" " * (2 * LIMIT) + b"]}"
    r = await client.post(URL, data=io.BytesIO(huge), headers=AUTH)  # sent with its Content-Length
    assert r.status == 413
    assert await r.json() == {"error": f"body larger than {LIMIT} bytes"}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(2 * LIMIT // 65536):
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
        assert (await client.post(URL, data=case.body, headers=AUTH)).status == (200 if case.one_alert else 400)
    for encoded in ENCODING_CASES:
        r = await client.post(URL, data=encoded.body, headers={**AUTH, "Content-Encoding": encoded.encoding})
        assert r.status == encoded.status, encoded
    assert (await client.post(URL, data=io.BytesIO(b"x" * (2 * LIMIT)), headers=AUTH)).status == 413
    for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": basic("t1", "t3")}):
        assert (await client.post(URL, json=valid_body(), headers=header)).status == 401
    assert (await client.get(URL)).status == 405  # and even that answers JSON
    assert set(await (await client.get(URL)).json()) == {"error"}

    assert (await client.get("/healthz")).status == 200
    before = await recorded_fingerprints(client)  # the good alerts beside the bad ones (one_alert cases)
    body = valid_body()
    for i, alert in enumerate(body["alerts"]):
        alert["fingerprint"] = f"{i + 1:016x}"  # alerts none of the abuse carried
    r = await client.post(URL, json=body, headers={"Authorization": "Bearer t2"})
    assert r.status == 200
    assert await r.json() == {"status": "accepted", "alerts": 2, "new": 2, "duplicates": 0, "truncatedAlerts": 0}
    assert sorted(await recorded_fingerprints(client)) == sorted(before + [a["fingerprint"] for a in body["alerts"]])

    # Alertmanager redelivers: accepted again, recorded once
    r = await client.post(URL, json=body, headers={"Authorization": basic("alertmanager", "t1")})
    assert r.status == 200 and (await r.json())["duplicates"] == 2
    assert len(await recorded_fingerprints(client)) == len(before) + 2
    assert await rejected(client, "malformed") == (sum(not c.one_alert for c in CASES)
                                                   + sum(c.status == 400 for c in ENCODING_CASES))
    assert await rejected(client, "unauthorized") == 3


async def test_a_body_that_does_not_match_its_content_encoding_is_a_4xx_with_its_reason(client: Client) -> None:
    wrong = []
    for case in ENCODING_CASES:
        r = await client.post(URL, data=case.body, headers={**AUTH, "Content-Encoding": case.encoding})
        body = await r.json()
        if r.status != case.status or set(body) != {"error"} or not body["error"].startswith(case.reason):
            wrong.append(f"{case.id}: {r.status} {body}")
    assert not wrong, "\n".join(wrong)
    assert await recorded_fingerprints(client) == []
    assert await rejected(client, "unsupported_encoding") == sum(c.status == 415 for c in ENCODING_CASES)


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "identity", "gzip, identity", "deflate, gzip"])
async def test_a_compressed_delivery_is_accepted(client: Client, encoding: str) -> None:
    body = good_payload(f"compressed-{encoding}")
    data = json.dumps(body).encode()
    for coding in (c.strip() for c in encoding.split(",")):
        data = {"gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": zlib.compress}.get(coding, bytes)(data)
    r = await client.post(URL, data=data, headers={**AUTH, "Content-Encoding": encoding,
                                                   "Content-Type": "application/json"})
    assert r.status == 200, await r.text()
    assert await recorded_fingerprints(client) == [body["alerts"][0]["fingerprint"]]


async def test_a_client_that_sends_its_body_too_slowly_gets_a_408(open_client: OpenClient) -> None:
    """The body's bytes stop coming: the handler gives up after ``http.read_timeout``, not never."""
    stalled = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"version": "4", '
        await stalled.wait()  # never set: the client stalls mid-body

    async with open_client(http={"read_timeout": "200ms"}) as c:
        r = await c.post(URL, data=trickle(), headers=AUTH)
        assert r.status == 408
        assert await r.json() == {"error": "body not received within 0.2s"}
        assert await rejected(c, "timeout") == 1


async def test_a_client_that_never_finishes_its_headers_is_disconnected(open_client: OpenClient) -> None:
    async with open_client(http={"read_timeout": "200ms"}) as c:
        reader, writer = await asyncio.open_connection(c.host, c.port)
        writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t1\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""  # closed by the server, nothing sent
        writer.close()
        assert (await c.get("/healthz")).status == 200


class FrozenStore:
    """A store whose every call hangs, as PostgreSQL does when its host stops answering."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def hang(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            await asyncio.Event().wait()

        return hang if name in ("record_alerts", "ping", "list_executions", "get_execution") else getattr(
            self._real, name)


async def test_a_frozen_store_answers_503_within_the_bound(open_client: OpenClient) -> None:
    async with open_client(http={"store_timeout": "100ms"}, api={"read_tokens": ["r1"]}) as c:
        rt = c.app[RUNTIME]
        frozen = FrozenStore(rt.store)
        rt.store = frozen
        r = await c.post(URL, json=valid_body(), headers=AUTH)
        assert r.status == 503 and await r.json() == {"error": "cannot record alerts right now; retry", "retry": True}
        assert r.headers["Retry-After"] == "5"  # as the backlog's 503: a person or a script knows when to retry
        ready = await c.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["store"] == "unavailable: no answer within 0.1s"
        r = await c.get("/api/v1/executions", headers={"Authorization": "Bearer r1"})
        assert r.status == 503 and await r.json() == {"error": "store unavailable"} and r.headers["Retry-After"] == "5"
        assert frozen.calls == ["record_alerts", "ping", "list_executions"]
        rt.store = frozen._real  # back: the next delivery is recorded
        assert (await c.post(URL, json=valid_body(), headers=AUTH)).status == 200


def test_store_calls_on_the_request_path_are_bounded_at_five_seconds_by_default() -> None:
    from remediator.settings import load_settings

    assert load_settings(None, env={}).http.store_timeout == 5.0


class Recorded(logging.Handler):
    """Records of one stdlib logger, and an event set by the first one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.arrived.set()


async def test_a_client_that_disconnects_mid_body_is_logged_at_debug_only(client: Client) -> None:
    """The handler logs the disconnect at DEBUG; aiohttp's own record of it carries the
    ConnectionResetError that the daemon's log filter lowers to DEBUG (tests/unit/test_logs.py)."""
    server_log = logging.getLogger("aiohttp.server")
    recorded = Recorded()
    server_log.addHandler(recorded)
    try:
        with structlog.testing.capture_logs() as logs:
            _, writer = await asyncio.open_connection(client.host, client.port)
            writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"version\": ")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            await asyncio.wait_for(recorded.arrived.wait(), timeout=30)
    finally:
        server_log.removeHandler(recorded)
    assert [(e["event"], e["log_level"]) for e in logs] == [("client disconnected", "debug")]
    [record] = recorded.records
    assert record.exc_info is not None and isinstance(record.exc_info[1], ConnectionResetError)
    assert DisconnectsAtDebug(logging.INFO).filter(record) is False and record.levelno == logging.DEBUG
    assert await recorded_fingerprints(client) == []
    assert (await client.post(URL, json=valid_body(), headers=AUTH)).status == 200


async def test_a_delivery_is_in_progress_for_the_decider_from_its_parse_to_its_answer(client: Client) -> None:
    """The decider gives way to deliveries being taken in (worker.Pacer): the webhook tells it which."""
    rt = client.app[RUNTIME]
    pacer = rt.worker.pacer
    reached, release = asyncio.Event(), asyncio.Event()
    record = rt.store.record_alerts

    async def held_record(alerts: Any) -> int:
        reached.set()
        await release.wait()
        return await record(alerts)

    rt.store.record_alerts = held_record  # type: ignore[method-assign]
    try:
        posting = asyncio.create_task(client.post(URL, json=good_payload("web"), headers=AUTH))
        await asyncio.wait_for(reached.wait(), 10)
        assert pacer.in_progress == 1  # in progress while its alerts are recorded
        release.set()
        assert (await posting).status == 200
        assert pacer.in_progress == 0
        bad = await client.post(URL, data=b"{", headers={**AUTH, "Content-Type": "application/json"})
        assert bad.status == 400 and pacer.in_progress == 0  # over with its answer, good or bad
    finally:
        rt.store.record_alerts = record  # type: ignore[method-assign]


async def test_a_token_with_bytes_that_are_not_utf8_is_refused_not_a_500(client: Client) -> None:
    body = json.dumps(valid_body()).encode()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t1\xff\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert json.loads(answer.rsplit(b"\r\n\r\n", 1)[1])["error"]
    assert await recorded_fingerprints(client) == []


async def test_a_frozen_backlog_count_does_not_hold_the_delivery(open_client: OpenClient) -> None:
    """The intake bound's count is a store call on the webhook's path too: bounded by http.store_timeout,
    and uncounted then (recording tells whether the store answers)."""
    async with open_client(http={"store_timeout": "100ms"}, worker={"max_backlog": 10}) as c:
        rt = c.app[RUNTIME]
        real = rt.worker._counts

        class FrozenCount:
            async def undecided(self) -> int:
                await asyncio.Event().wait()
                return 0

        rt.worker._counts = FrozenCount()
        r = await c.post(URL, json=valid_body(), headers=AUTH)
        assert r.status == 200  # uncounted, and recorded: the store itself answers
        rt.worker._counts = real
        assert len(await recorded_fingerprints(c)) == len(valid_body()["alerts"])
