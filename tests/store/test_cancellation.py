"""A write cancelled half way through its transaction takes no other write with it.

The embedded store has one connection.  A task cancelled between BEGIN and COMMIT (a
webhook whose client went away, retention stopped at shutdown) used to leave that
connection inside the transaction: later writes joined it although their callers were
told they were done, and the next ROLLBACK (or closing the file) discarded them all.

To cancel at a known point, a gate (an SQL function behind a temporary trigger) holds
the store's database thread *inside* the transaction until the test opens it.  The store runs
most statements on the event loop's thread, where nothing can cancel one half way; what runs
on its thread (COMMIT, a large delivery's insert) can be, and the gate tests put every
statement there to stop one at a known point.  The
PostgreSQL store is checked the same way, with a table lock as the gate.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from remediator.clock import VirtualClock
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SQLiteStore
from tests.store.conftest import Schema
from tests.store.test_contract import a_decision, alerts, firing, resolved

T = TypeVar("T")
HANG_GUARD = 30.0  # only so that a regression fails instead of hanging; never a speed check


class Gate:
    """``rt_gate(name)`` in SQL: reports that it was reached, then waits until opened."""

    def __init__(self) -> None:
        self._reached: queue.Queue[str] = queue.Queue()
        self._open = threading.Semaphore(0)

    def __call__(self, name: str) -> int:  # on the store's database thread
        self._reached.put(name)
        self._open.acquire(timeout=HANG_GUARD)
        return 0

    async def reached(self) -> str:
        return await asyncio.to_thread(self._reached.get, timeout=HANG_GUARD)

    def open(self) -> None:
        self._open.release()

    @classmethod
    async def install(cls, store: SQLiteStore, trigger: str) -> Gate:
        gate = cls()
        db = store._db
        db.inline = False  # statements on the connection's thread, where the gate can hold one half way
        await asyncio.to_thread(db._conn.create_function, "rt_gate", 1, gate)
        await db.execute(f"CREATE TEMP TRIGGER rt_gate_{len(trigger)} {trigger}")
        return gate


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD)


@pytest.fixture
async def sqlite_store(tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(tmp_path / "store.db", vclock)
    yield store
    await store.close()


SLOW_INSERT = (
    "BEFORE INSERT ON alerts WHEN json_extract(NEW.alert, '$.labels.app') LIKE 'slow%'"
    " BEGIN SELECT rt_gate(json_extract(NEW.alert, '$.labels.app')); END"
)


async def cancelled_intake(store: SQLiteStore, gate: Gate, app: str = "slow") -> None:
    """Start recording an alert, and cancel the request while its INSERT runs inside the transaction."""
    task = asyncio.create_task(store.record_alerts(alerts(firing(app))))
    assert await gate.reached() == app
    task.cancel()
    gate.open()
    with pytest.raises(asyncio.CancelledError):
        await within(task)


async def reopened(tmp_path: Path, vclock: VirtualClock) -> SQLiteStore:
    """The file as the next run finds it (claims released: whatever is unprocessed is claimable)."""
    return await SQLiteStore.open(tmp_path / "store.db", vclock)


async def test_writes_acknowledged_after_a_cancelled_intake_survive_the_next_intake(
    sqlite_store: SQLiteStore, tmp_path: Path, vclock: VirtualClock
) -> None:
    [a] = alerts(firing("a"))
    await sqlite_store.record_alerts([a])
    [claimed] = await sqlite_store.claim_alerts("w", 10, 30)
    gate = await Gate.install(sqlite_store, SLOW_INSERT)
    await cancelled_intake(sqlite_store, gate)
    # acknowledged: the worker moves on believing both are durable
    await sqlite_store.mark_processed(claimed.id)
    assert await sqlite_store.record_decision(a_decision(a.alert))
    # the next delivery (before the fix: "cannot start a transaction within a transaction",
    # a 503, and a ROLLBACK reaching back to the cancelled request's BEGIN)
    assert await sqlite_store.record_alerts(alerts(firing("b"))) == 1
    await sqlite_store.close()
    store = await reopened(tmp_path, vclock)
    try:
        assert [s.received.alert.labels["app"] for s in await store.claim_alerts("w2", 10, 30)] == ["slow", "b"]
        assert await store.decision(a_decision(a.alert).execution_id or "") is not None
    finally:
        await store.close()


async def test_writes_acknowledged_after_a_cancelled_intake_survive_a_restart(
    sqlite_store: SQLiteStore, tmp_path: Path, vclock: VirtualClock
) -> None:
    [a] = alerts(firing("a"))
    await sqlite_store.record_alerts([a])
    [claimed] = await sqlite_store.claim_alerts("w", 10, 30)
    gate = await Gate.install(sqlite_store, SLOW_INSERT)
    await cancelled_intake(sqlite_store, gate)
    await sqlite_store.mark_processed(claimed.id)
    await sqlite_store.close()  # before the fix: closing rolled back the open transaction, and with it this
    store = await reopened(tmp_path, vclock)
    try:  # "a" stays processed (before the fix it came back, to be processed twice)
        assert [s.received.alert.labels["app"] for s in await store.claim_alerts("w2", 10, 30)] == ["slow"]
    finally:
        await store.close()


async def test_requests_sharing_a_cancelled_requests_commit_are_still_answered(
    sqlite_store: SQLiteStore, tmp_path: Path, vclock: VirtualClock
) -> None:
    """Group commit: a request whose rows rode in the cancelled request's batch is answered,
    and its alert is durable (before the fix it waited forever for an answer)."""
    gate = await Gate.install(sqlite_store, SLOW_INSERT)
    holder = asyncio.create_task(sqlite_store.record_alerts(alerts(firing("slow-holder"))))
    assert await gate.reached() == "slow-holder"
    # two more requests queue behind the commit in flight: they will share the next one
    leader = asyncio.create_task(sqlite_store.record_alerts(alerts(firing("slow-leader"))))
    follower = asyncio.create_task(sqlite_store.record_alerts(alerts(firing("follower"))))
    await asyncio.sleep(0)
    gate.open()
    # the queued statements run before the commit the holder waits for: all three share it
    assert await gate.reached() == "slow-leader"  # the shared commit is under way
    leader.cancel()
    gate.open()
    assert await within(holder) == 1
    assert await within(follower) == 1
    with pytest.raises(asyncio.CancelledError):
        await leader
    await sqlite_store.close()
    store = await reopened(tmp_path, vclock)
    try:
        assert await store.count_alerts() == 3
    finally:
        await store.close()


async def test_a_cancelled_retention_batch_leaves_no_transaction_open(
    sqlite_store: SQLiteStore, tmp_path: Path, vclock: VirtualClock
) -> None:
    [fired] = alerts(firing("old"))
    await sqlite_store.record_alerts([fired, *alerts(resolved("old"))])
    for item in await sqlite_store.claim_alerts("w", 10, 30):
        await sqlite_store.mark_processed(item.id)
    d = a_decision(fired.alert)
    await sqlite_store.record_decision(d)
    await sqlite_store.record_notification(d.execution_id or "", {"result": "sent"})
    await sqlite_store.finish_execution(d.execution_id or "", "succeeded", vclock.now())
    await vclock.advance(31 * 86400)
    gate = await Gate.install(
        sqlite_store, "BEFORE DELETE ON notifications BEGIN SELECT rt_gate('retention'); END"
    )
    task = asyncio.create_task(sqlite_store.delete_older_than(30))
    assert await gate.reached() == "retention"  # the batch has deleted steps: mid-transaction
    task.cancel()
    gate.open()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    assert await sqlite_store.record_alerts(alerts(firing("new"))) == 1  # acknowledged
    await sqlite_store.close()
    store = await reopened(tmp_path, vclock)
    try:
        assert await store.count_alerts() == 3  # the new alert is durable
        # the cancelled batch went whole: retention goes on with the alerts
        counts = await store.delete_older_than(30)
        assert counts == {"decisions": 0, "steps": 0, "notifications": 0, "alerts": 2, "kill_switch": 0}
    finally:
        await store.close()


async def test_postgres_a_cancelled_retention_batch_is_rolled_back_whole(
    pg_schema: Schema, vclock: VirtualClock
) -> None:
    """What was checked of the PostgreSQL store: each transaction runs on its own pooled
    connection inside ``conn.transaction()``; cancelled, asyncpg cancels the statement on
    the server, the context manager rolls back, and the pool resets (rolls back) or
    drops the connection before reusing it.  So nothing else can join the transaction."""
    store = await PostgresStore.open(pg_schema.dsn, vclock)
    try:
        [fired] = alerts(firing("old"))
        await store.record_alerts([fired, *alerts(resolved("old"))])
        for item in await store.claim_alerts("w", 10, 30):
            await store.mark_processed(item.id)
        d = a_decision(fired.alert)
        await store.record_decision(d)
        await store.record_notification(d.execution_id or "", {"result": "sent"})
        await store.finish_execution(d.execution_id or "", "succeeded", vclock.now())
        await vclock.advance(31 * 86400)
        blocker = pg_schema.conn.transaction()
        await blocker.start()
        await pg_schema.conn.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(store.delete_older_than(30))
        for _ in range(int(HANG_GUARD / 0.05)):  # until the batch waits on the lock, steps already deleted
            waiting = await pg_schema.conn.fetchval(  # pg_locks is live (pg_stat_activity is cached per transaction)
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'notifications'::regclass"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("retention never reached the locked table")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(task)
        await blocker.rollback()
        assert await store.record_alerts(alerts(firing("new"))) == 1
        assert await pg_schema.count("SELECT count(*) FROM steps") == 0  # there were none to begin with
        assert await pg_schema.count("SELECT count(*) FROM decisions") == 1  # rolled back whole
        assert await pg_schema.count("SELECT count(*) FROM notifications") == 1
        assert await store.delete_older_than(30) == {"decisions": 1, "steps": 0, "notifications": 1, "alerts": 2,
                                                     "kill_switch": 0}
        assert await store.count_alerts() == 1
    finally:
        await store.close()


async def test_a_store_that_cannot_be_opened_leaves_no_thread_behind(tmp_path: Path, vclock: VirtualClock) -> None:
    """Else the daemon, failing at start, could not exit: the database thread is not a daemon thread."""
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not an SQLite file" * 100)
    before = set(threading.enumerate())
    with pytest.raises(Exception, match="not a database"):
        await SQLiteStore.open(path, vclock)
    for thread in set(threading.enumerate()) - before:
        await asyncio.to_thread(thread.join, HANG_GUARD)
        assert not thread.is_alive()

