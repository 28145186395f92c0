"""A TCP proxy, in the test's own event loop, between the daemon and a real server (PostgreSQL, Redis).

Why: the faults worth testing at an execution's end are the network's, not an exception from a
fake: a server that refuses connections for a moment, and a command that lands while its reply
never arrives.  The shared servers are not stopped; the daemon reaches them through this proxy.

``refuse`` resets new connections at once and :meth:`FaultyProxy.cut` resets the open ones (the
server is down).  :meth:`FaultyProxy.lose_reply` lets a command through and throws its reply away,
resetting the client's connection: the command ran, and the client cannot know it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field


@dataclass
class _Loss:
    marker: bytes
    after: int  # chunks after the one holding the marker, on the same connection
    landed: asyncio.Event = field(default_factory=asyncio.Event)


class FaultyProxy:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.refuse = False
        self._losses: list[_Loss] = []
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()

    def cut(self) -> None:
        """Reset every open connection (the client sees its connection lost)."""
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    def lose_reply(self, marker: bytes, *, after: int = 0) -> asyncio.Event:
        """Lose the reply to the first client chunk holding ``marker`` (``after``: to the n-th chunk after
        it on that connection; PostgreSQL executes a statement in the chunk after the one that parses
        its text).  The event is set once the server has answered, the command being applied."""
        loss = _Loss(marker, after)
        self._losses.append(loss)
        return loss.landed

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refuse:
            _reset(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(client_w)
            return
        self._open |= {client_w, server_w}
        armed: list[_Loss] = []  # seen on this connection, waiting for its chunk
        losing: list[_Loss] = []  # sent: the next reply is thrown away

        async def upstream() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await client_r.read(65536):
                    for loss in list(armed):
                        if loss.after == 0:
                            armed.remove(loss)
                            losing.append(loss)
                        else:
                            loss.after -= 1
                    for loss in list(self._losses):
                        if loss.marker in data:
                            self._losses.remove(loss)
                            (losing if loss.after == 0 else armed).append(loss)
                            if loss.after:
                                loss.after -= 1
                    server_w.write(data)
                    await server_w.drain()

        async def downstream() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await server_r.read(65536):
                    if losing:  # applied by the server; the client never hears of it
                        losing.pop(0).landed.set()
                        _reset(client_w)
                        break
                    client_w.write(data)
                    await client_w.drain()
            client_w.close()
            server_w.close()

        await asyncio.gather(upstream(), downstream())
        self._open -= {client_w, server_w}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a dropped connection looks to the client."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
