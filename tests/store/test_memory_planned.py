"""The in-memory store records a plan-only execution with its decision, already over, as the SQL
stores do (``tests/store/test_record_planned.py``), and forgets it with its alert when streaming."""

from __future__ import annotations

import pytest

from remediator.clock import VirtualClock
from remediator.ports import PlannedExecutions
from remediator.store.memory import MemoryStore
from tests.store.test_contract import T0, a_decision, alerts, firing
from tests.store.test_record_planned import records


@pytest.mark.parametrize("streaming", [False, True])
async def test_recorded_once_with_its_steps_and_already_finished(vclock: VirtualClock, streaming: bool) -> None:
    store = MemoryStore(vclock, streaming=streaming)
    assert isinstance(store, PlannedExecutions)
    [a] = alerts(firing("web"))
    await store.record_alerts([a])
    decision = a_decision(a.alert)
    did = decision.execution_id
    assert did is not None
    assert await store.record_planned(decision, records(decision, "first"), status="dry_run", finished=T0)
    assert not await store.record_planned(decision, records(decision, "second"), status="dry_run", finished=T0)
    assert not await store.record_decision(decision)
    assert await store.unfinished_executions() == [] and not await store.unfinished(did)
    doc = await store.get_execution(did)
    assert doc is not None and doc["status"] == "dry_run" and doc["finished_at"]
    assert [(r["action"], r["status"], r["message"]) for r in doc["results"]] == [
        ("restart", "planned", "first restart"), ("scale", "planned", "first scale")]
    [claimed] = await store.claim_alerts("w", 10, 30)
    await store.mark_processed(claimed.id)
    assert (await store.get_execution(did) is None) is streaming  # over, with its alert: forgotten


async def test_a_decision_recorded_first_the_ordinary_way_is_left_alone(vclock: VirtualClock) -> None:
    store = MemoryStore(vclock)
    [a] = alerts(firing("web"))
    await store.record_alerts([a])
    decision = a_decision(a.alert)
    assert await store.record_decision(decision)
    assert not await store.record_planned(decision, records(decision, "late"), status="dry_run", finished=T0)
    assert await store.unfinished_executions() == [decision.execution_id]
    assert decision.execution_id is not None and await store.step_results(decision.execution_id) == {}
