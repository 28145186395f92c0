"""The HTTP drain of a shutdown (remediator.http.Drain), in process: what each request in flight is answered.

The daemon's own stop (tests/deployed/test_shutdown.py) drains for one second; here the drain is begun
by hand with the grace each case needs, so nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from remediator.http import DRAIN
from tests.core.conftest import Client
from tests.payloads import alert_json, payload


def delivery() -> bytes:
    return json.dumps(payload(alert_json({"alertname": "Drained"}))).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    status_line, *lines = head.strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(status_line.split()[1]), headers, json.loads(body)


async def begin_delivery(client: Client, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Headers, and once the handler is reading (its ``100 Continue``) the body's first bytes."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t1\r\n"
                 b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
    writer.write(body[:20])
    await writer.drain()
    return reader, writer


async def test_a_body_that_comes_in_during_the_drain_is_recorded(client: Client) -> None:
    body = delivery()
    reader, writer = await begin_delivery(client, body)
    client.app[DRAIN].begin(grace=60.0)
    writer.write(body[20:])
    status, _, answer = await read_answer(reader)
    writer.close()
    assert (status, answer["new"]) == (200, 1)


async def test_a_body_cut_short_by_the_drain_is_a_503_to_retry_never_a_408(client: Client) -> None:
    reader, writer = await begin_delivery(client, delivery())
    client.app[DRAIN].begin(grace=0.0)
    status, headers, answer = await read_answer(reader)
    writer.close()
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
    assert answer["retry"] is True and "shutting down" in answer["error"]


async def test_a_request_that_starts_during_the_drain_is_a_503(client: Client) -> None:
    """The listener is closed first; a kept-alive connection can still bring a request."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader))[0] == 200
    client.app[DRAIN].begin(grace=60.0)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, answer = await read_answer(reader)
    assert status == 503 and headers["connection"] == "close" and answer["retry"] is True
    assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection is closed
    writer.close()
