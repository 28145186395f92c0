"""A lean HTTP/1.1 POST client for load generators: keep-alive connections, one request in flight each.

Why not aiohttp's client: the load generator shares the machine's two cores with the server it
measures, and aiohttp's client spends about 0.25 ms of CPU per POST, half of what the daemon
spends answering it; a paced run at 1,000 POSTs/s then measures the generator's lateness as much
as the server.  This one writes prebuilt request bytes and reads the answer by its
``Content-Length``, some 0.03 ms per POST.  It only speaks what the benched servers answer (aiohttp:
``Content-Length`` bodies, keep-alive); anything else (a chunked answer, a dropped connection) is
an error, never a silent mismeasure.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class AnswerError(Exception):
    """An answer this client does not read (or none): the run is not measured."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(AnswerError(f"connection lost before the answer: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        waiter, self._waiter = self._waiter, None
        if "content-length" not in headers:
            waiter.set_exception(AnswerError(f"an answer without Content-Length: {head[0]!r}"))
            return
        size = int(headers["content-length"])
        if len(self._buffer) < end + 4 + size:
            self._waiter = waiter  # the body is still coming
            return
        body = bytes(self._buffer[end + 4:end + 4 + size])
        del self._buffer[:end + 4 + size]
        if headers.get("connection", "").lower() == "close" and self.transport is not None:
            self.transport.close()
            self.closed = True
        waiter.set_result((int(head[0].split(" ", 2)[1]), body))


class Poster:
    """POSTs to one URL with fixed headers over a pool of keep-alive connections (at most ``limit``)."""

    def __init__(self, url: str, headers: dict[str, str], limit: int = 256) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}Content-Length: "
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._all: list[_Connection] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """The answer's status and body."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            answer = await conn.request(f"{self._head}{len(body)}\r\n\r\n".encode() + body)
            if not conn.closed:
                self._idle.append(conn)
            return answer

    async def _connect(self) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, self._host, self._port)
        self._all.append(conn)
        return conn

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()
