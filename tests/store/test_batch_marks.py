"""Alerts marked processed inside a decision batch are marked together as it ends, after
their decisions, and never without them (embedded store; PostgreSQL: test_record_planned).

An alert marked processed whose decision was lost would never be decided: the one thing a
batched mark must not do.  So a batch that fails marks nothing, and a transaction rolled back
under the batch (taking decisions with it) unmarks what the batch had marked so far."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remediator.clock import VirtualClock
from remediator.core.errors import StoreUnavailable
from remediator.store.sqlite import SQLiteStore
from tests.store.test_contract import a_decision, alerts, firing


@pytest.fixture
async def store(tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "store.db", vclock)
    yield s
    await s.close()


async def pending(store: SQLiteStore) -> int:
    return await store.undecided()


async def test_a_batch_marks_its_alerts_as_it_ends(store: SQLiteStore) -> None:
    received = alerts(firing("a"), firing("b"))
    await store.record_alerts(received)
    claimed = await store.claim_alerts("w", 10, 30)
    async with store.decision_batch():
        for item in claimed:
            async with store.decision_unit():
                assert await store.record_decision(a_decision(item.received.alert))
                await store.mark_processed(item.id)
        assert await pending(store) == 2  # not yet: with the batch's end
    assert await pending(store) == 0
    assert await store.claim_alerts("w2", 10, 30) == []


async def test_a_failed_batch_marks_nothing(store: SQLiteStore) -> None:
    await store.record_alerts(alerts(firing("a")))
    [item] = await store.claim_alerts("w", 10, 30)
    with pytest.raises(RuntimeError):
        async with store.decision_batch():
            assert await store.record_decision(a_decision(item.received.alert))
            await store.mark_processed(item.id)
            raise RuntimeError("the batch fails")
    assert await pending(store) == 1  # decided again later: it finds its decision recorded
    assert await store.decision(a_decision(item.received.alert).execution_id or "") is not None


async def test_a_rolled_back_transaction_unmarks_the_batch(store: SQLiteStore) -> None:
    await store.record_alerts(alerts(firing("a"), firing("b")))
    first, second = await store.claim_alerts("w", 10, 30)
    with pytest.raises(StoreUnavailable):  # the batch hears that part of it was lost
        async with store.decision_batch():
            assert await store.record_decision(a_decision(first.received.alert))
            await store.mark_processed(first.id)
            await store._shared._roll_back(RuntimeError("the disk refused the commit"))  # a's decision lost
            assert await store.record_decision(a_decision(second.received.alert))
            await store.mark_processed(second.id)
    assert await store.decision(a_decision(first.received.alert).execution_id or "") is None
    assert await store.decision(a_decision(second.received.alert).execution_id or "") is not None
    assert await pending(store) == 1  # a, unmarked with its decision: it is decided again
    [again] = await store.claim_alerts("w", 10, 30)  # its worker takes it back
    assert again.id == first.id
