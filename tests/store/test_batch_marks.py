"""Alerts marked processed inside a decision batch are marked together as it ends, after
their decisions, and never without them (embedded store; both stores' batched plan-only
executions: test_record_planned).

An alert marked processed whose decision was lost would never be decided: the one thing a
batched mark must not do.  So a batch that fails marks nothing, and neither does one under which
a transaction was rolled back (taking decisions with it, maybe of an alert half way through its
unit): its alerts are decided again, and find whatever decisions survived."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remediator.clock import VirtualClock
from remediator.core.errors import StoreUnavailable
from remediator.store.sqlite import SQLiteStore
from tests.store.test_contract import T0, a_decision, alerts, firing
from tests.store.test_record_planned import records


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


async def test_a_rolled_back_transaction_leaves_the_whole_batch_unmarked(store: SQLiteStore) -> None:
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
    assert await pending(store) == 2  # both decided again: a afresh, b finds its decision
    again = await store.claim_alerts("w", 10, 30)  # its worker takes them back
    assert [x.id for x in again] == [first.id, second.id]


async def test_an_alert_half_way_through_its_unit_is_not_marked_without_the_decision_it_lost(
    store: SQLiteStore,
) -> None:
    """Another writer's statement fails and rolls the shared transaction back after this alert's
    decision was written and before it was marked: marking it then would lose the alert."""
    await store.record_alerts(alerts(firing("a")))
    [item] = await store.claim_alerts("w", 10, 30)
    with pytest.raises(StoreUnavailable):
        async with store.decision_batch(), store.decision_unit():
            assert await store.record_decision(a_decision(item.received.alert))
            await store._shared._roll_back(RuntimeError("another writer's statement failed"))
            await store.mark_processed(item.id)
    assert await store.decision(a_decision(item.received.alert).execution_id or "") is None
    assert await pending(store) == 1  # decided again, not lost


async def test_a_rolled_back_transaction_drops_what_the_batch_was_to_write(store: SQLiteStore) -> None:
    """What the batch looked up no longer holds once a transaction was lost under it: its waiting
    plan-only executions are dropped with its marks, and their alerts are decided again."""
    a, b, c = alerts(firing("a"), firing("b"), firing("c"))
    await store.record_alerts([a, b, c])
    first, second, third = await store.claim_alerts("w", 10, 30)
    da, db, dc = (a_decision(x.alert) for x in (a, b, c))
    with pytest.raises(StoreUnavailable):  # the batch hears that part of it was lost
        async with store.decision_batch():
            assert await store.look_up([da.execution_id, db.execution_id], []) == ({}, set())
            assert await store.record_planned(da, records(da, "ours"), status="dry_run", finished=T0)
            await store.mark_processed(first.id)
            assert await store.record_decision(dc)  # written at once: in the transaction that is lost
            await store._shared._roll_back(RuntimeError("the disk refused the commit"))
            # looked up before the loss: written at once now, as if never looked up
            assert await store.record_planned(db, records(db, "ours"), status="dry_run", finished=T0)
            await store.mark_processed(second.id)
    assert [e["id"] for e in await store.list_executions()] == [db.execution_id]
    assert await store.decision(da.execution_id or "") is None
    assert await store.decision(dc.execution_id or "") is None
    assert [x.id for x in await store.claim_alerts("w", 10, 30)] == [first.id, second.id, third.id]  # again
