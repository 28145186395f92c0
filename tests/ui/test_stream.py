"""``/ui/events``: the timeline's live updates, driven by the virtual clock (no sleeps)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientResponse

from remediator.clock import VirtualClock
from remediator.ports import DecisionQuery
from remediator.runtime import RUNTIME
from remediator.ui.stream import POLL
from remediator.ui.views import UI
from tests.payloads import db_pool_alert
from tests.tokens import READ, WEBHOOK
from tests.ui.conftest import Client, deliver


async def next_event(response: ClientResponse) -> tuple[str, Any]:
    """The next event of the stream (comments and ``retry`` skipped), as (name, data)."""
    async with asyncio.timeout(10):  # a guard against a hang, not a wait: the event is due already
        while True:
            block = (await response.content.readuntil(b"\n\n")).decode()
            fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if not line.startswith(":"))
            if "event" in fields:
                return fields["event"], json.loads(fields["data"])


async def poll(vclock: VirtualClock) -> None:
    """Let the stream poll once more: once it sleeps, move the clock past its sleep."""
    await vclock.sleeping(lambda left: 0 < left <= POLL)
    await vclock.advance(POLL)


async def test_a_new_decision_is_pushed_to_an_open_timeline(client: Client, vclock: VirtualClock) -> None:
    await deliver(client, db_pool_alert())
    async with client.get("/ui/events?namespace=kube-public", headers=READ) as stream:
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        await poll(vclock)  # nothing matches yet: nothing is sent
        await deliver(client, db_pool_alert(deployment="billing-api"))  # another namespace's: filtered out
        await deliver(client, db_pool_alert(namespace="kube-public", deployment="<b>dns</b>"))
        await poll(vclock)
        name, data = await next_event(stream)
    [decision] = await client.app[RUNTIME].store.query_decisions(DecisionQuery(namespace="kube-public"))
    assert name == "decision" and data["id"] == decision["id"]
    assert data["html"].startswith(f'<tr data-id="{decision["id"]}" class="kind-not_allowed">')
    assert "&lt;b&gt;dns&lt;/b&gt;" in data["html"] and "<b>" not in data["html"]


async def test_the_first_poll_sends_the_window_then_only_changes(client: Client, vclock: VirtualClock) -> None:
    await deliver(client, db_pool_alert())
    async with client.get("/ui/events", headers=READ) as stream:
        name, first = await next_event(stream)  # the page's rows, for the script to bring up to date
        assert name == "decision" and "succeeded" in first["html"]
        await poll(vclock)
        await deliver(client, db_pool_alert(deployment="billing-api"))
        await poll(vclock)
        name, second = await next_event(stream)
    assert name == "decision" and second["id"] != first["id"] and "billing-api" in second["html"]


async def test_a_stream_ends_after_its_lifetime(client: Client, vclock: VirtualClock) -> None:
    client.app[UI].stream_lifetime = 2 * POLL
    async with client.get("/ui/events", headers=READ) as stream:
        await poll(vclock)
        await poll(vclock)
        async with asyncio.timeout(10):
            rest = await stream.content.read()  # the end of the stream
    assert b"event:" not in rest
    assert not client.app[UI].streams


async def test_a_closed_browser_ends_its_stream(client: Client, vclock: VirtualClock) -> None:
    ui = client.app[UI]
    async with client.get("/ui/events", headers=READ) as stream:
        await vclock.sleeping(lambda left: 0 < left <= POLL)
        [task] = ui.streams
        stream.close()
    await vclock.advance(POLL)  # its next poll finds the connection gone
    async with asyncio.timeout(10):
        await asyncio.wait({task})
    assert not ui.streams


async def test_streams_are_bounded_and_need_a_read_token(client: Client) -> None:
    assert (await client.get("/ui/events")).status == 401
    assert (await client.get("/ui/events", headers=WEBHOOK)).status == 403
    bad = await client.get("/ui/events?decision=bogus", headers=READ)
    assert bad.status == 400 and "unknown kind" in (await bad.json())["error"]
    client.app[UI].max_streams = 0
    full = await client.get("/ui/events", headers=READ)
    assert full.status == 503 and "too many" in (await full.json())["error"]


async def test_shutting_down_closes_open_streams(client: Client, vclock: VirtualClock) -> None:
    """A stream sleeps on the clock between polls, its browser still connected: shutting the server
    down must not wait for it (aiohttp's shutdown timeout) nor for its lifetime."""
    stream = await client.get("/ui/events", headers=READ)
    await vclock.sleeping(lambda left: 0 < left <= POLL)
    [task] = client.app[UI].streams
    async with asyncio.timeout(10):  # aiohttp would otherwise wait its shutdown timeout (60 s) for the handler
        await client.server.close()
    assert task.done() and not client.app[UI].streams
    stream.close()


async def test_an_unreachable_store_is_told_and_the_stream_goes_on(client: Client, vclock: VirtualClock) -> None:
    async with client.get("/ui/events", headers=READ) as stream:
        await vclock.sleeping(lambda left: 0 < left <= POLL)
        await client.app[RUNTIME].store.close()
        await vclock.advance(POLL)
        assert await next_event(stream) == ("unavailable", {"error": "store unavailable"})
        await poll(vclock)  # still polling
        assert client.app[UI].streams
