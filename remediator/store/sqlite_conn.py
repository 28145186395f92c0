"""One SQLite connection driven from the event loop: statements on the loop's thread, the
disk waits (COMMIT's fsync, opening, large batches) and the waits for another process's write
lock (``BEGIN IMMEDIATE``) on the connection's own thread.

Why not aiosqlite: it sends every statement to its thread and the answer back, two thread
hand-offs (and, on a busy machine, two scheduler slices) for a statement that itself takes
50-200 µs.  A decided and executed alert is some twenty statements; the 20k-alert storm
spent its time in those hand-offs, not in SQLite (bench/RESULTS.md).  Inside a transaction a
statement only touches pages in memory; what waits on the disk is COMMIT (WAL +
``synchronous=FULL``: one fsync) and a statement that commits on its own.  Those, and anything
the caller marks ``off_loop`` (a large insert, a report query), run on the thread; the rest
runs where it is called.

One user at a time: the store serialises every use of the connection with its lock (see
remediator.store.shared_tx), so a statement on the loop never meets one running on the thread.
SQLite's own connection mutex (serialized threading mode) would make that safe anyway, only slow.

Errors are the sqlite3 module's; a closed connection raises ``ValueError`` as aiosqlite's did
(the store answers ``StoreUnavailable`` for both).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: Statements that end a transaction: the disk waits for them.
_ENDS = ("COMMIT", "ROLLBACK", "END")
#: Statements that take the database's write lock at once: they wait (up to ``busy_timeout``) while
#: another process holds it (``remediator export``, a ``sqlite3`` shell), which on the loop's thread
#: froze every request, ``/healthz`` included, for seconds, out of reach of any ``asyncio.timeout``.
#: They are tried on the loop without waiting, and only a lock found taken is waited for on the
#: connection's thread: sending every one there cut the embedded intake to a third (a thread hop
#: per transaction, with the store's lock held across it).
_LOCKS = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Cursor:
    """A statement's outcome, read out at once (rows, rowcount): nothing stays open on the
    connection across another writer's turn."""

    __slots__ = ("_rows", "lastrowid", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    async def fetchall(self) -> list[Any]:
        return self._rows

    async def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


def _run(conn: sqlite3.Connection, sql: str, args: Sequence[Any] | Any) -> Cursor:
    cur = conn.execute(sql, args)
    try:
        return Cursor(cur.fetchall(), cur.rowcount, cur.lastrowid)
    finally:
        cur.close()


def _run_many(conn: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
    cur = conn.executemany(sql, rows)
    try:
        return Cursor([], cur.rowcount, cur.lastrowid)
    finally:
        cur.close()


class InlineConnection:
    """The subset of aiosqlite's ``Connection`` the store uses, with statements run inline."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-disk")
        self._closed = False
        self._busy_timeout: int | None = None  # the connection's, read at the first BEGIN IMMEDIATE (see _lock)
        #: False: every statement on the thread, as with aiosqlite.  Tests that stop a statement
        #: half way (a gate inside SQLite) need that; the store's cancellation safety is the same.
        self.inline = True

    @classmethod
    async def connect(cls, path: str) -> InlineConnection:
        """Open on the connection's thread (creating the file waits on the disk)."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-disk")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                thread, lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            )
        finally:
            thread.shutdown(wait=False)
        return cls(conn)

    @property
    def row_factory(self) -> Any:
        return self._conn.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self._conn.row_factory = factory

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def _live(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError("no active connection")
        return self._conn

    def _inline(self, sql: str, off_loop: bool | None) -> bool:
        """Whether ``sql`` runs on the loop: inside a transaction (no fsync until it ends) or a
        read; not a statement that ends a transaction or commits by itself."""
        if off_loop is not None or not self.inline:
            return self.inline and not off_loop
        head = sql.lstrip()[:8].upper()
        if head.startswith(_ENDS):
            return False
        return self._conn.in_transaction or head.startswith(("SELECT", "BEGIN"))

    async def _on_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def execute(self, sql: str, args: Sequence[Any] | Any = (), *, off_loop: bool | None = None) -> Cursor:
        conn = self._live()
        if self._inline(sql, off_loop):
            if sql.lstrip()[:16].upper().startswith(_LOCKS):
                return await self._lock(conn, sql, args)
            return _run(conn, sql, args)
        return await self._on_thread(lambda: _run(conn, sql, args))

    async def _lock(self, conn: sqlite3.Connection, sql: str, args: Sequence[Any] | Any) -> Cursor:
        """``BEGIN IMMEDIATE`` on the loop if the write lock is free (the usual case), else waited for on
        the connection's thread, up to the connection's ``busy_timeout`` (see :data:`_LOCKS`)."""
        if self._busy_timeout is None:
            self._busy_timeout = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        if self._busy_timeout:
            conn.execute("PRAGMA busy_timeout=0")
        try:
            return _run(conn, sql, args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in _BUSY or not self._busy_timeout:
                raise
        finally:
            if self._busy_timeout:
                conn.execute(f"PRAGMA busy_timeout={self._busy_timeout}")
        return await self._on_thread(lambda: _run(conn, sql, args))

    async def executemany(
        self, sql: str, rows: Iterable[Sequence[Any]], *, off_loop: bool | None = None
    ) -> Cursor:
        conn = self._live()
        if self._inline(sql, off_loop):
            return _run_many(conn, sql, rows)
        return await self._on_thread(lambda: _run_many(conn, sql, rows))

    async def executescript(self, script: str) -> None:
        conn = self._live()
        await self._on_thread(lambda: conn.executescript(script).close())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._on_thread(self._conn.close)
        finally:
            self._thread.shutdown(wait=False)
