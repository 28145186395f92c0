"""A TCP pass-through to Redis that can lose a reply: the command runs, its answer never comes back.

That is what a connection cut at the wrong moment does to a client: Redis has applied the
command, and the client sees only a reset connection.  redis-py then sends the command again
on a new connection (the adapter opens its client with one immediate retry), so whatever the
command changes, it changes twice unless it is written to be applied once.

:meth:`LossyRedis.lose_reply_to` arms the loss: the first command whose bytes hold ``marker``
(an EVALSHA holds its script's SHA-1) is forwarded, Redis' reply to it is read and thrown
away, and the client's connection is reset (RST).  Everything else passes unchanged.  One
command at a time per connection is assumed, as the adapter's calls make (no pipelining).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
from collections.abc import AsyncIterator


def sha(script: str) -> bytes:
    """The SHA-1 that names a Lua script in EVALSHA, as it goes over the wire."""
    return hashlib.sha1(script.encode()).hexdigest().encode()


class LossyRedis:
    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._armed: list[tuple[bytes, asyncio.Event]] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def lose_reply_to(self, marker: bytes) -> asyncio.Event:
        """Lose the reply to the next command holding ``marker``; the event is set once Redis has
        answered it (so it ran) and the client's connection has been reset instead."""
        lost = asyncio.Event()
        self._armed.append((marker, lost))
        return lost

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LossyRedis]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                up_r, up_w = await asyncio.open_connection(*self._upstream)
            except OSError:
                _reset(client_w)
                return
            losing: list[asyncio.Event] = []  # the reply to lose next, if any
            try:
                await asyncio.gather(self._to_redis(client_r, up_w, losing),
                                     self._to_client(up_r, client_w, losing))
            finally:
                up_w.close()
                client_w.close()
        finally:
            self._handlers.discard(task)

    async def _to_redis(self, client_r: asyncio.StreamReader, up_w: asyncio.StreamWriter,
                        losing: list[asyncio.Event]) -> None:
        with contextlib.suppress(OSError):
            while data := await client_r.read(65536):
                hit = next((a for a in self._armed if a[0] in data), None)
                if hit is not None:
                    self._armed.remove(hit)
                    losing.append(hit[1])
                up_w.write(data)
                await up_w.drain()
        up_w.close()

    async def _to_client(self, up_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                         losing: list[asyncio.Event]) -> None:
        with contextlib.suppress(OSError):
            while data := await up_r.read(65536):
                if losing:  # the reply to the marked command: Redis ran it, the client never hears so
                    _reset(client_w)
                    losing.pop(0).set()
                    return
                client_w.write(data)
                await client_w.drain()
        client_w.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: the client sees its connection reset, as when a network cut it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
