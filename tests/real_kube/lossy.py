"""A pass-through proxy to the real apiserver that can lose an answer: the request lands, its reply never comes.

The fake apiserver injects that fault itself (``faults.hang``); to show the same against
the real apiserver, the executor talks to it through this proxy.  A request matching a
rule set with :meth:`LossyProxy.lose` is forwarded and answered by the apiserver (so its
change is made), but the answer is held back from the client until the proxy stops.
Everything else, watches included, is streamed through unchanged.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client

from remediator.testing.control_plane import ControlPlane

#: Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and those aiohttp sets itself.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                  "host", "content-length"})


@dataclass
class Loss:
    """One answer to lose: the first request matching ``method`` and ``path``."""

    method: str
    path: re.Pattern[str]
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None  # what the apiserver answered, which the client never hears


class LossyProxy:
    def __init__(self, plane: ControlPlane) -> None:
        self._upstream = plane.url
        self._tls = ssl.create_default_context(cafile=str(plane.ca_file))
        self._token = plane.admin_token
        self._losses: list[Loss] = []
        self._stopping = asyncio.Event()
        self.url = ""

    def lose(self, method: str, path: str) -> Loss:
        loss = Loss(method.upper(), re.compile(path))
        self._losses.append(loss)
        return loss

    def api_client(self) -> Any:
        """A kubernetes-asyncio ``ApiClient`` (the admin's) that goes through the proxy."""
        configuration = client.Configuration(host=self.url)
        configuration.api_key = {"BearerToken": self._token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(configuration)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        loss = next((x for x in self._losses if x.method == request.method and x.path.search(request.path)), None)
        if loss is not None:
            self._losses.remove(loss)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self._session.request(request.method, self._upstream + request.path_qs, data=body or None,
                                         headers=headers, ssl=self._tls) as upstream:
            if loss is not None:
                await upstream.read()
                loss.status = upstream.status
                loss.landed.set()
                await self._stopping.wait()  # the client gives up meanwhile; nobody hears this answer
                raise web.HTTPGatewayTimeout()
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP | {"content-encoding"}})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LossyProxy]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(auto_decompress=False) as self._session:
            try:
                yield self
            finally:
                self._stopping.set()
                await runner.cleanup()
