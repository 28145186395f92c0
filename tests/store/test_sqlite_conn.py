"""Where the embedded store's statements run (remediator.store.sqlite_conn): on the event loop's
thread inside a transaction and for reads, on the connection's own thread for whatever waits on
the disk (COMMIT, a statement that commits by itself, a caller's ``off_loop``).

Observed from inside SQLite: a function that records the thread calling it, used by the
statement itself (directly, or through a trigger)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remediator.store.sqlite_conn import InlineConnection


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[tuple[InlineConnection, list[int]]]:
    db = await InlineConnection.connect(str(tmp_path / "t.db"))
    seen: list[int] = []

    def where() -> int:
        seen.append(threading.get_ident())
        return 0

    await asyncio.to_thread(db._conn.create_function, "where_am_i", 0, where)
    await db.executescript("PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER);"
                           " CREATE TRIGGER t_seen AFTER INSERT ON t BEGIN SELECT where_am_i(); END;")
    yield db, seen
    await db.close()


async def test_inside_a_transaction_and_reads_on_the_loop_commits_on_the_connections_thread(
    conn: tuple[InlineConnection, list[int]],
) -> None:
    db, seen = conn
    loop_thread = threading.get_ident()
    await db.execute("SELECT where_am_i()")  # a read: on the loop
    await db.execute("INSERT INTO t VALUES (1)")  # commits by itself: waits on the disk
    await db.execute("BEGIN IMMEDIATE")
    await db.execute("INSERT INTO t VALUES (2)")  # inside the transaction: on the loop
    assert db.in_transaction
    await db.execute("COMMIT")
    await db.execute("INSERT INTO t VALUES (3)", off_loop=False)  # the caller's word wins
    assert [t == loop_thread for t in seen] == [True, False, True, True]
    rows = await (await db.execute("SELECT x FROM t ORDER BY x")).fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]


async def test_a_closed_connection_answers_value_error(conn: tuple[InlineConnection, list[int]]) -> None:
    db, _ = conn
    await db.close()
    with pytest.raises(ValueError, match="no active connection"):
        await db.execute("SELECT 1")
    await db.close()  # twice is fine


async def test_a_write_lock_held_by_another_process_is_waited_for_off_the_loop(tmp_path: Path) -> None:
    """Another process holding the file's write lock (``remediator export``, a ``sqlite3`` shell) made
    ``BEGIN IMMEDIATE`` wait up to ``busy_timeout`` (5 s) on the loop's thread: every request, the
    daemon's ``/healthz`` included, froze, and no ``asyncio.timeout`` (``http.store_timeout``) could
    fire.  Now the wait is on the connection's thread: the loop goes on, and the write lands once
    the lock is given back."""
    from remediator.clock import SystemClock
    from remediator.core.alerts import validate_payload
    from remediator.ports import ReceivedAlert
    from remediator.store.sqlite import SQLiteStore
    from tests.payloads import alert_json, payload

    path = tmp_path / "remediator.db"
    store = await SQLiteStore.open(path, SystemClock())
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process's write lock
        p = validate_payload(payload(alert_json({"alertname": "Down"})))
        write = asyncio.create_task(store.record_alerts([ReceivedAlert(a, SystemClock().now()) for a in p.alerts]))
        probe = asyncio.create_task(asyncio.sleep(0))  # anything else the loop has to do meanwhile
        done, _ = await asyncio.wait({write, probe}, return_when=asyncio.FIRST_COMPLETED)
        assert probe in done and not write.done()  # the loop was not held while the write waited
        other.execute("ROLLBACK")
        assert await write == 1
    finally:
        other.close()
        await store.close()
