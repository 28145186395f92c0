"""``record_planned``: a plan-only execution recorded with its decision, already over (issue 17).

Once: a second call for the same decision writes nothing (another replica, or a redelivery,
decided the alert first) and leaves the first one's steps as they were.  Whole: the decision
is never there without its steps, nor finished without them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.ports import BatchLookups, PlannedExecutions, StepRecord, StepResult
from tests.store.conftest import fresh_schema
from tests.store.test_contract import T0, a_decision, alerts, firing, resolved


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        from remediator.store.sqlite import SQLiteStore

        s: Any = await SQLiteStore.open(tmp_path / "store.db", vclock)
    else:
        from remediator.store.postgres import PostgresStore

        schema = fresh_schema()
        s = await PostgresStore.open((await schema.__aenter__()).dsn, vclock)
    try:
        yield s
    finally:
        await s.close()
        if request.param == "postgres":
            await schema.__aexit__(None, None, None)


def records(decision: Any, message: str) -> list[StepRecord]:
    return [StepRecord(step, StepResult("planned", f"{message} {step.action}"), T0, T0 + timedelta(seconds=1))
            for step in decision.steps]


async def test_recorded_once_with_its_steps_and_already_finished(store: Any) -> None:
    assert isinstance(store, PlannedExecutions)
    [a] = alerts(firing("web"))
    await store.record_alerts([a])
    decision = a_decision(a.alert)
    did = decision.execution_id
    assert await store.record_planned(decision, records(decision, "first"), status="dry_run", finished=T0)
    assert not await store.record_planned(decision, records(decision, "second"), status="dry_run", finished=T0)
    assert not await store.record_decision(decision)
    assert await store.unfinished_executions() == []
    assert not await store.unfinished(did)
    doc = await store.get_execution(did)
    assert doc["status"] == "dry_run" and doc["finished_at"]
    assert [(r["action"], r["status"], r["message"]) for r in doc["results"]] == [
        ("restart", "planned", "first restart"), ("scale", "planned", "first scale")]
    assert [r["params"] for r in doc["results"]] == [{}, {"to": 3}]
    [listed] = await store.list_executions()
    assert (listed["id"], listed["status"]) == (did, "dry_run")


async def test_a_decision_recorded_first_the_ordinary_way_is_left_alone(store: Any) -> None:
    [a] = alerts(firing("web"))
    await store.record_alerts([a])
    decision = a_decision(a.alert)
    assert await store.record_decision(decision)
    assert not await store.record_planned(decision, records(decision, "late"), status="dry_run", finished=T0)
    assert await store.unfinished_executions() == [decision.execution_id]  # still the queue's, untouched
    assert await store.step_results(decision.execution_id) == {}


async def test_a_decision_batch_writes_its_plan_only_executions_and_marks_together(store: Any) -> None:
    """Looked up and found unrecorded in the batch, a plan-only execution waits for the batch's
    end, with the alerts marked processed: one statement per batch, not two per alert.  One not
    looked up is written at once, as outside a batch; one another decider recorded meanwhile
    (its claim lease ran out under us) keeps its decision."""
    a, b, c = alerts(firing("a"), firing("b"), firing("c"))
    await store.record_alerts([a, b, c])
    claimed = await store.claim_alerts("w", 10, 30)
    da, db, dc = (a_decision(x.alert) for x in (a, b, c))
    with capture_logs() as logs:
        async with store.decision_batch():
            assert await store.look_up([da.execution_id, db.execution_id], []) == ({}, set())
            assert await store.record_planned(da, records(da, "ours"), status="dry_run", finished=T0)
            assert await store.record_planned(db, records(db, "ours"), status="dry_run", finished=T0)
            # not looked up in this batch: written at once, as outside one
            assert await store.record_planned(dc, records(dc, "ours"), status="dry_run", finished=T0)
            for item in claimed:
                await store.mark_processed(item.id)
            assert [e["id"] for e in await store.list_executions()] == [dc.execution_id]  # only c's, so far
            assert await store.undecided() == 3
            # the other decider, first: a write outside the batch (another task), committed before it ends
            assert await asyncio.create_task(store.record_decision(db))
    assert await store.undecided() == 0
    doc = await store.get_execution(da.execution_id)
    assert doc["status"] == "dry_run" and [r["message"] for r in doc["results"]] == ["ours restart", "ours scale"]
    assert await store.unfinished_executions() == [db.execution_id]  # theirs, untouched
    assert await store.step_results(db.execution_id) == {}
    assert [e["count"] for e in logs if "another decider" in e["event"]] == [1]


async def test_look_up_answers_a_batch_s_questions_at_once(store: Any) -> None:
    """Decided already?  Resolved already?  For a whole batch, in one round trip (PostgreSQL) or one
    statement (SQLite)."""
    assert isinstance(store, BatchLookups)
    [a] = alerts(firing("a"))
    [b] = alerts(firing("b"))
    await store.record_alerts([a, b, *alerts(resolved("b"))])
    da, db = a_decision(a.alert), a_decision(b.alert)
    assert await store.record_decision(da)
    episodes = [(x.alert.fingerprint, x.alert.starts_at) for x in (a, b)]
    decided, ended = await store.look_up([da.execution_id, db.execution_id], episodes)
    assert list(decided) == [da.execution_id] and decided[da.execution_id] == da
    assert ended == {(b.alert.fingerprint, b.alert.starts_at)}
    assert await store.look_up([], []) == ({}, set())
