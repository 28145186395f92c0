"""One scenario, both stores: the read API's JSON documents must come out byte for byte alike.

The contract tests check each store against expected values one field at a time; this
one runs the same history against the embedded store and real PostgreSQL side by side
and compares the serialised documents whole (key order included), so a mapping that
drifts in one backend only (a time format, a key, a missing journal split) fails here.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.ports import StepResult
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0
from tests.store.conftest import fresh_schema
from tests.store.test_contract import a_decision, alerts, firing, resolved


async def scenario(store: Any, clock: VirtualClock) -> dict[str, Any]:
    """Decisions, steps (one interrupted), journal and notifications, a parked alert, retention;
    then every document the read API serves."""
    fired = alerts(firing("a"), firing("b"), firing("c", "2026-11-22T10:00:00.123456Z"))
    await store.record_alerts(fired)
    await store.record_alerts(alerts(resolved("b")))
    running = a_decision(fired[0].alert, at=T0 + timedelta(seconds=1))
    done = a_decision(fired[1].alert, at=T0)  # b: its episode resolved, so retention may end its audit
    refused = a_decision(fired[2].alert, "other", kind=DecisionKind.COOLDOWN, at=T0 + timedelta(seconds=3))
    for d in (done, running, refused):
        await store.record_decision(d)
    t = [T0 + timedelta(seconds=s, microseconds=250_000 * (s % 3)) for s in range(10)]
    await store.begin_step(done.execution_id, done.steps[0], {}, started=t[1])
    await store.record_step(done.execution_id, done.steps[0], StepResult("ok", "restarted", details={"wrote": True}),
                            started=t[1], finished=t[2])
    await store.begin_step(done.execution_id, done.steps[1], {"replicas": 3}, started=t[2])
    await store.record_step(done.execution_id, done.steps[1],
                            StepResult("failed", "conflict", {"replicas": 2}, {"replicas": 2}, {"code": 409}),
                            started=t[2], finished=t[3])
    await store.record_step(done.execution_id, done.on_failure[0], StepResult("ok", "rolled back"),
                            started=t[3], finished=t[4])
    await store.record_event(done.execution_id, "paused", t[2], reason="kill switch")
    await store.record_notification(done.execution_id, {"channel": "ops", "event": "failed", "result": "sent"})
    await store.record_event(done.execution_id, "resumed", t[3])
    await store.finish_execution(done.execution_id, "failed", t[5])
    await store.begin_step(running.execution_id, running.steps[0], {"generation": 7}, started=t[6])
    poison = None
    for item in await store.claim_alerts("w", 10, 30):
        if item.received.alert.labels["app"] == "c":
            poison = item.id
        else:
            await store.mark_processed(item.id)
    await clock.advance(1.5)
    await store.park_alert(poison, "RuntimeError: nul \x00 " + "x" * 3000)
    listing = await store.list_executions()
    documents = {d["id"]: await store.get_execution(d["id"]) for d in listing}
    parked = await store.parked_alerts()
    page = await store.list_executions(limit=1, before=listing[0]["id"])
    failed = await store.list_executions(status="failed")
    # retention takes b's finished audit (its episode resolved) and keeps the rest
    await clock.advance(40 * 86400)
    await store.delete_older_than(30)
    return {
        "listing": listing,
        "page": page,
        "failed": failed,
        "documents": documents,
        "after_retention": [await store.get_execution(d["id"]) for d in listing],
        "parked": parked,
        "decisions": await store.list_decisions(),
    }


async def test_both_stores_serve_the_same_json_for_the_same_history(tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    sqlite = await SQLiteStore.open(tmp_path / "store.db", clock)
    try:
        embedded = await scenario(sqlite, clock)
    finally:
        await sqlite.close()
    clock = VirtualClock(T0)
    async with fresh_schema() as schema:
        postgres = await PostgresStore.open(schema.dsn, clock)
        try:
            production = await scenario(postgres, clock)
        finally:
            await postgres.close()
    for name in embedded:
        assert json.dumps(production[name], indent=1) == json.dumps(embedded[name], indent=1), name
    # and the scenario reached what it means to compare
    document = embedded["documents"][embedded["failed"][0]["id"]]
    assert [e["journal"] for e in document["events"]] == ["paused", "resumed"]
    assert [(r["phase"], r["status"]) for r in document["results"]] == [
        ("main", "ok"), ("main", "failed"), ("on_failure", "ok")]
    assert document["results"][1]["finished_at"] == "2026-11-22T10:00:03Z"
    assert document["results"][0]["finished_at"] == "2026-11-22T10:00:02.500000Z"
    assert len(embedded["parked"]) == 1 and embedded["parked"][0]["parked_at"] == "2026-11-22T10:00:01.500000Z"
    assert embedded["parked"][0]["error"].startswith("RuntimeError: nul \\u0000 ")
    assert len(embedded["parked"][0]["error"]) == 2000 + len("\\u0000") - 1
    assert [d["status"] for d in embedded["listing"]] == ["running", "failed"]
    assert embedded["documents"][embedded["listing"][0]["id"]]["results"][0]["details"] == {
        "intent": {"generation": 7}}
    assert embedded["parked"][0]["received_at"] == "2026-11-22T10:00:00Z"
    # an unfinished execution is kept whatever its age; the ended episode's audit is gone
    assert [d and d["status"] for d in embedded["after_retention"]] == ["running", None]
