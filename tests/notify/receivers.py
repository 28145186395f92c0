"""Local HTTP receivers standing in for Slack, a webhook consumer and PagerDuty.

They run on 127.0.0.1 with aiohttp and record every request (raw body, headers and
the virtual time it arrived).  A script of answers makes a receiver fail, rate-limit
or hang on purpose.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from remediator.clock import VirtualClock
from remediator.notify.dispatcher import Dispatcher

HANG = "hang"


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # virtual monotonic seconds
    wall: float  # virtual Unix time
    answer: int | str

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(
        self, clock: VirtualClock, script: Sequence[int | str] = (), *, ok: int = 200, retry_after: str = ""
    ) -> None:
        self.clock = clock
        self.script = list(script)
        self.ok = ok
        self.retry_after = retry_after
        self.requests: list[Seen] = []
        self.gate = asyncio.Event()  # set: hanging requests return (only at teardown)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def _handle(self, request: web.Request) -> web.Response:
        answer = self.script.pop(0) if self.script else self.ok
        self.requests.append(
            Seen(
                request.path,
                dict(request.headers),
                await request.read(),
                self.clock.monotonic(),
                self.clock.now().timestamp(),
                answer,
            )
        )
        if answer == HANG:
            await self.gate.wait()
            return web.Response(status=503)
        assert isinstance(answer, int)
        headers = {"Retry-After": self.retry_after} if answer in (429, 503) and self.retry_after else {}
        return web.json_response({"status": "ok"}, status=answer, headers=headers)

    @property
    def accepted(self) -> list[Seen]:
        return [r for r in self.requests if isinstance(r.answer, int) and 200 <= r.answer < 300]

    async def __aenter__(self) -> Receiver:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gate.set()
        await self.server.close()

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))


class PagerDuty(Receiver):
    """The Events API v2 as PagerDuty documents it: a ``trigger`` opens (or updates) the alert of
    its ``dedup_key``; an ``acknowledge`` or a ``resolve`` applies to an open one and is dropped
    otherwise, answered 202 all the same.  The first ``throttle`` triggers get 429 (no Retry-After).

    ``pages`` are the notifications a human gets: a trigger that opens an alert notifies; one on
    an open alert does not, and an acknowledged alert "won't generate any additional notifications,
    even if it receives new trigger events".  ``acknowledge_by_hand`` is the on-call answering a page."""

    def __init__(self, clock: VirtualClock, *, throttle: int = 0) -> None:
        super().__init__(clock)
        self.throttle = throttle
        self.open: dict[str, str] = {}  # dedup_key -> triggered / acknowledged
        self.seen: list[tuple[str, str]] = []  # (event_action, what happened)
        self.pages: list[str] = []  # the dedup_key of each notification a human got

    def acknowledge_by_hand(self, key: str) -> None:
        assert self.open.get(key) == "triggered", f"no triggered alert {key}: {self.open}"
        self.open[key] = "acknowledged"

    async def _handle(self, request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        key, action = event["dedup_key"], event["event_action"]
        if action == "trigger" and self.throttle:
            self.throttle -= 1
            what, status = "throttled", 429
        elif action == "trigger":
            what, status = "opened" if key not in self.open else "updated", 202
            if key not in self.open:
                self.pages.append(key)
            self.open.setdefault(key, "triggered")
        elif key not in self.open:
            what, status = "dropped: no open alert", 202
        else:
            what, status = "applied", 202
            if action == "resolve":
                del self.open[key]
            else:
                self.open[key] = "acknowledged"
        self.seen.append((action, what))
        self.requests.append(Seen(request.path, dict(request.headers), json.dumps(event).encode(),
                                  self.clock.monotonic(), self.clock.now().timestamp(), status))
        return web.json_response({"status": "success" if status == 202 else "throttle event", "dedup_key": key},
                                 status=status)


def down_url() -> str:
    """A URL on which nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def requests_seen(rx: Receiver, n: int) -> None:
    """Wait (for local socket I/O, not for time) until ``rx`` has had ``n`` requests."""
    for _ in range(2000):
        if len(rx.requests) >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(rx.requests)} request(s), expected {n}")


async def settle(clock: VirtualClock, dispatcher: Dispatcher, *, step: float = 1.0, rounds: int = 2000) -> None:
    """Let deliveries finish: real time for local socket I/O, virtual time for backoff and timeouts.

    Bounded: fails the test instead of spinning forever if deliveries never finish.
    """
    for _ in range(rounds):
        if dispatcher.pending() == 0:
            return
        await asyncio.sleep(0.005)  # local socket I/O, not a stand-in for time passing
        await clock.advance(step)
    raise AssertionError(f"{dispatcher.pending()} notification(s) still pending")
