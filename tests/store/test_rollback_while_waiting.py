"""A transaction rolled back while a writer of the decision batch waits for the connection.

The embedded store's writes share one transaction (remediator.store.shared_tx).  When another
writer's statement fails and SQLite rolls that transaction back, everyone who wrote into it
must hear so, including a writer that was waiting for the connection's lock meanwhile: what it
then writes goes into a new transaction, and must not be what the lost one was the premise of.

The rollback is a real one: a large webhook delivery fills the database (``PRAGMA
max_page_count`` stands in for a full disk; SQLite then rolls the whole transaction back).  Its
INSERT runs on the connection's thread, holding the lock, and a gate (SQLite's progress handler,
on that thread only) holds it there until the test has put the writer that must wait in the
lock's queue: no sleeps, no timing.  (Not the trigger gate of test_cancellation: a statement with
a trigger keeps a statement journal, and SQLite then undoes only that statement.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from remediator.clock import VirtualClock
from remediator.core.errors import StoreUnavailable
from remediator.core.guardrails import Policy, Request
from remediator.guardstate.memory import MemoryGuardrails
from remediator.store.sqlite import SQLiteStore
from tests.payloads import alert_json
from tests.store.test_cancellation import Gate, within
from tests.store.test_contract import a_decision, alerts, firing


@pytest.fixture
async def store(tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "store.db", vclock)
    yield s
    await s.close()


class FillingDelivery:
    """A webhook delivery whose INSERT joins the open transaction, stops (the gate) while holding
    the connection's lock, and once let go fills the database: SQLite rolls the whole transaction
    back, and every writer in it hears ``StoreUnavailable``."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._gate = Gate()
        self._armed = False
        self.task: asyncio.Task[int] | None = None

    def _progress(self) -> int:
        """Every few SQLite instructions, on whichever thread runs the statement: stops the first
        statement on the connection's own thread once armed (never one on the event loop's)."""
        if self._armed and threading.current_thread().name.startswith("sqlite-disk"):
            self._armed = False
            self._gate("delivery")
        return 0  # go on

    @classmethod
    async def prepare(cls, store: SQLiteStore) -> FillingDelivery:
        delivery = cls(store)
        cur = await store._db.execute("PRAGMA page_count")
        row = await cur.fetchone()
        # Room for the decision batch's few rows, not for the delivery (some 300 pages).
        await store._db.execute(f"PRAGMA max_page_count = {row[0] + 40}")
        store._db._conn.set_progress_handler(delivery._progress, 100)
        return delivery

    async def holding_the_lock(self) -> None:
        """Start the delivery; return once its INSERT holds the lock, inside the open transaction."""
        big = [alert_json({"alertname": "Big", "i": str(i), "pad": "x" * 4000}) for i in range(300)]
        self._armed = True
        self.task = asyncio.create_task(self._store.record_alerts(alerts(*big)))  # on the thread: > ROWS_IN_LOOP
        assert await self._gate.reached() == "delivery"

    def let_go(self) -> None:
        """The INSERT goes on and fails.  Its end reaches the event loop only once the test's task
        waits: a write called right after this (in this task: not in a task of its own, whose first
        step could come after) waits for the lock the INSERT still holds."""
        self._gate.open()

    async def rolled_back(self) -> None:
        assert self.task is not None
        with pytest.raises(StoreUnavailable, match="full"):
            await within(self.task)
        self._store._db._conn.set_progress_handler(None, 0)
        await self._store._db.execute("PRAGMA max_page_count = 1073741823")  # room again


async def in_an_open_batch(store: SQLiteStore, write: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``write`` made in a decision batch (and unit) of another task, the decision loop, which stays
    open: not yet committed.  Returns what ends that batch, once it has heard that it was lost."""
    written, finish = asyncio.Event(), asyncio.Event()

    async def decider() -> None:
        async with store.decision_batch(), store.decision_unit():
            await write()
            written.set()
            await finish.wait()

    deciding = asyncio.create_task(decider())
    await written.wait()

    async def lost() -> None:
        finish.set()
        with pytest.raises(StoreUnavailable):
            await within(deciding)

    return lost


async def test_an_alert_is_not_marked_processed_after_its_decision_was_rolled_back(
    store: SQLiteStore, tmp_path: Path, vclock: VirtualClock
) -> None:
    """The batch's marks are written as it ends, in its final write, which waits for the lock.  If
    the transaction holding the batch's decisions is rolled back in that wait, the marks must not
    be written: before, the batch had already left the open batches the rollback tells, so its
    marks went into a new transaction that a later commit made durable (alert processed, decision
    gone: never decided again)."""
    await store.record_alerts(alerts(firing("a")))
    [item] = await store.claim_alerts("w", 10, 30)
    decision = a_decision(item.received.alert)
    delivery = await FillingDelivery.prepare(store)
    with pytest.raises(StoreUnavailable):  # the batch hears that its decision was lost
        async with store.decision_batch():
            async with store.decision_unit():
                assert await store.record_decision(decision)  # in the transaction, not yet committed
                await store.mark_processed(item.id)  # waits for the batch's end
            await delivery.holding_the_lock()  # a webhook writes into the same transaction
            delivery.let_go()
        # leaving: the marks' write waits for the lock, and the delivery rolls the transaction back
    await delivery.rolled_back()
    await store.close()  # commits whatever is still open

    again = await SQLiteStore.open(tmp_path / "store.db", vclock)
    try:
        assert await again.decision(decision.execution_id or "") is None
        assert await again.undecided() == 1  # decided again after the restart, not lost
    finally:
        await again.close()


async def test_a_unit_whose_transaction_was_rolled_back_records_no_decision_without_its_admission(
    store: SQLiteStore, tmp_path: Path, vclock: VirtualClock
) -> None:
    """One alert's unit: its guardrail admission, then its decision, in one transaction.  If that
    transaction is rolled back between the two (the decision's write waiting for the lock), the
    decision must not be written: before, it went into a new transaction and became durable, an
    EXECUTED decision whose admission (lock, rate, budget, running slot) never reached the disk, so
    never counted against the guardrails.  Now the unit's next write fails, and the alert is decided
    again from scratch."""
    guard = await MemoryGuardrails.open_in(store, Policy(), vclock, tmp_path / "guardrails.json")
    await store.record_alerts(alerts(firing("web")))
    [item] = await store.claim_alerts("w", 10, 30)
    decision = a_decision(item.received.alert)
    req = Request(decision.execution_id or "", "pb", "Deployment/shop/web", "pb|web", "shop", vclock.now().timestamp())
    delivery = await FillingDelivery.prepare(store)
    with pytest.raises(StoreUnavailable):
        async with store.decision_batch(), store.decision_unit():
            assert (await guard.admit(req)).admitted  # its rows in the transaction, not yet committed
            await delivery.holding_the_lock()
            delivery.let_go()
            await store.record_decision(decision)  # waits for the lock; the transaction is lost meanwhile
    await delivery.rolled_back()
    assert await store.decision(decision.execution_id or "") is None
    assert await store.guard_rows() == []

    async with store.decision_batch(), store.decision_unit():  # the alert decided again
        assert (await guard.admit(req)).admitted
        assert await store.record_decision(decision)
        await store.mark_processed(item.id)
    await guard.close()
    await store.close()
    again = await SQLiteStore.open(tmp_path / "store.db", vclock)
    try:
        assert await again.decision(decision.execution_id or "") is not None
        assert ("locks", "Deployment/shop/web") in {(m, k) for m, k, _ in await again.guard_rows()}
        assert await again.undecided() == 0
    finally:
        await again.close()



async def test_settled_hears_that_the_writes_it_waited_for_were_rolled_back(store: SQLiteStore) -> None:
    """``settled()`` is for an answer read from what has been written so far (a guardrail refusal):
    it must not return as if those writes were committed when their transaction is rolled back
    while it waits for the lock.  Before, it looked for the open transaction only once the lock was
    its own, found none (the rollback had cleared it), and returned normally."""
    [received] = alerts(firing("a"))

    async def decide() -> None:
        assert await store.record_decision(a_decision(received.alert))

    batch_lost = await in_an_open_batch(store, decide)
    delivery = await FillingDelivery.prepare(store)
    await delivery.holding_the_lock()
    delivery.let_go()
    with pytest.raises(StoreUnavailable):
        await store.settled()  # waits for the lock; the transaction is lost meanwhile
    await delivery.rolled_back()
    await batch_lost()
    assert await store.decision(a_decision(received.alert).execution_id or "") is None
