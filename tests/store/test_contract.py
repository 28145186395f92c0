"""The Store contract, run against the embedded store and the PostgreSQL store alike.

Both must return the same JSON shapes (the HTTP API hands them out unchanged) and
keep the same promises: durable, deduplicated intake; leases that only the clock
expires; one decision per (alert, playbook); leased executions; batched retention.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert, validate_payload
from remediator.core.decisions import Decision, DecisionKind, PlannedStep, ResolvedTarget, execution_id
from remediator.core.errors import StoreUnavailable
from remediator.ports import KillSwitchRecord, ReceivedAlert, StepResult
from tests.payloads import T0, alert_json, payload


def alerts(*raw: dict[str, Any], at: Any = T0, receiver: str = "remediator") -> list[ReceivedAlert]:
    p = validate_payload(payload(*raw))
    return [ReceivedAlert(a, at, receiver, p.group_key, p.external_url) for a in p.alerts]


def firing(app: str, starts: str = "2026-11-22T10:00:00Z", **extra: Any) -> dict[str, Any]:
    return alert_json({"alertname": "X", "app": app}, starts_at=starts, **extra)


def a_decision(alert: Alert, playbook: str = "pb", *, kind: DecisionKind = DecisionKind.EXECUTED,
               at: Any = T0) -> Decision:
    return Decision(
        alert_key=alert.dedup_key,
        fingerprint=alert.fingerprint,
        playbook=playbook,
        playbook_version="3f2a9c",
        kind=kind,
        reason="all guardrails passed",
        at=at,
        target=ResolvedTarget("Deployment", "shop", alert.labels.get("app", "web")),
        steps=(PlannedStep(0, "restart", {}), PlannedStep(1, "scale", {"to": 3})),
        on_failure=(PlannedStep(0, "rollback", {}, "on_failure"),),
        dry_run=False,
        execution_id=execution_id(alert.dedup_key, playbook),
    )


async def test_intake_absorbs_duplicates_within_and_across_deliveries(store: Any) -> None:
    batch = alerts(firing("a"), firing("b"), firing("a"))
    assert await store.record_alerts(batch) == 2
    assert await store.record_alerts(batch) == 0
    assert await store.record_alerts(alerts(firing("b"), firing("c"))) == 1
    assert await store.record_alerts([]) == 0
    assert await store.count_alerts() == 3


async def test_concurrent_overlapping_deliveries_record_each_alert_once(store: Any) -> None:
    apps = [f"app-{i}" for i in range(40)]
    # each delivery carries an overlapping window of alerts, in varying order
    deliveries = [alerts(*(firing(a) for a in (apps[i:i + 10] if i % 2 else apps[i:i + 10][::-1])))
                  for i in range(0, 31, 3)]
    news = await asyncio.gather(*(store.record_alerts(d) for d in deliveries * 3))
    assert sum(news) == len({a for d in deliveries for a in (r.alert.dedup_key for r in d)})
    assert await store.count_alerts() == sum(news)


async def test_claims_are_leased_on_the_injected_clock(store: Any, vclock: VirtualClock) -> None:
    await store.record_alerts(alerts(firing("a"), firing("b"), firing("c")))
    first = await store.claim_alerts("w1", 2, 30)
    assert [s.received.alert.labels["app"] for s in first] == ["a", "b"]
    assert first[0].received.receiver == "remediator" and first[0].received.received_at == T0
    second = await store.claim_alerts("w2", 10, 30)
    assert [s.received.alert.labels["app"] for s in second] == ["c"]
    assert await store.claim_alerts("w3", 10, 30) == []
    # a worker whose batch was cut short (store briefly unreachable) takes its own claims back at once
    assert [s.id for s in await store.claim_alerts("w1", 10, 30)] == [s.id for s in first]
    await store.mark_processed(first[0].id)
    await vclock.advance(30)  # w1 died: its remaining claim expires, the processed one stays done
    again = await store.claim_alerts("w3", 10, 30)
    assert [s.id for s in again] == [first[1].id, second[0].id]


async def test_deferred_alerts_wait_until_their_time(store: Any, vclock: VirtualClock) -> None:
    await store.record_alerts(alerts(firing("a")))
    [item] = await store.claim_alerts("w", 10, 30)
    await store.defer_alert(item.id, T0 + timedelta(minutes=5))
    await vclock.advance(299)
    assert await store.claim_alerts("w", 10, 30) == []
    await vclock.advance(1)
    assert [s.id for s in await store.claim_alerts("w", 10, 30)] == [item.id]


async def test_episode_queries(store: Any) -> None:
    await store.record_alerts(alerts(
        firing("a", "2026-11-22T09:00:00Z"),
        firing("a", "2026-11-22T10:00:00Z"),
        firing("a", "2026-11-22T10:30:00.250000Z"),
        dict(firing("a", "2026-11-22T10:00:00Z"), status="resolved", endsAt="2026-11-22T10:05:00Z"),
    ))
    [a] = [r.alert for r in alerts(firing("a"))]
    assert await store.resolved_for(a.fingerprint, T0)
    assert not await store.resolved_for(a.fingerprint, T0 + timedelta(minutes=30))
    assert await store.firing_count(a.fingerprint, T0) == 2
    assert await store.firing_count(a.fingerprint, T0 - timedelta(hours=2)) == 3
    assert await store.firing_count("nope", T0) == 0
    # times in another offset, to the microsecond, compare as the instants they are
    await store.record_alerts(alerts(firing("b", "2026-11-22T12:00:00.250000+02:00"),
                                     firing("b", "2026-11-22T10:00:00.750001Z")))
    [b] = [r.alert for r in alerts(firing("b"))]
    assert await store.firing_count(b.fingerprint, T0 + timedelta(microseconds=750001)) == 1
    assert await store.firing_count(b.fingerprint, T0 + timedelta(microseconds=250000)) == 2
    assert await store.firing_count(b.fingerprint, T0 + timedelta(microseconds=250001)) == 1


async def test_hostile_strings_round_trip(store: Any) -> None:
    raw = firing("a")
    raw["labels"]["note"] = "nul\x00byte é 🚀"
    await store.record_alerts(alerts(raw, receiver="re\x00ceiver"))
    [item] = await store.claim_alerts("w", 10, 30)
    assert item.received.alert.labels["note"] == "nul\x00byte é 🚀"


async def test_one_decision_per_alert_and_playbook(store: Any) -> None:
    [r] = alerts(firing("a"))
    d = a_decision(r.alert)
    assert await store.record_decision(d)
    assert not await store.record_decision(d)
    assert not await store.record_decision(a_decision(r.alert, kind=DecisionKind.COOLDOWN))
    assert await store.record_decision(a_decision(r.alert, "other", kind=DecisionKind.COOLDOWN))
    assert await store.decision(d.execution_id) == d
    assert await store.decision("ex-missing") is None
    # only executions are listed; every decision is in the decision log
    assert [e["id"] for e in await store.list_executions()] == [d.execution_id]
    assert [x["decision"] for x in await store.list_decisions()] == ["executed", "cooldown"]


async def test_execution_audit_has_the_same_shape_in_every_store(store: Any, vclock: VirtualClock) -> None:
    [r] = alerts(firing("a"))
    await store.record_alerts([r])
    d = a_decision(r.alert)
    did = d.execution_id
    await store.record_decision(d)
    assert await store.unfinished_executions() == [did]
    t1, t2, t3 = (T0 + timedelta(seconds=s) for s in (1, 2.5, 4))
    await store.begin_step(did, d.steps[0], {}, started=t1)
    assert (await store.list_executions())[0]["status"] == "running"
    before, after = {"spec": {"replicas": 2}}, {"spec": {"replicas": 3}}
    await store.record_step(did, d.steps[0], StepResult("ok", "restarted"), started=t1, finished=t2)
    await store.begin_step(did, d.steps[1], {"replicas": 3}, started=t2)
    interrupted = (await store.step_results(did))[("main", 1)]
    assert interrupted.status == "started" and interrupted.details == {"intent": {"replicas": 3}}
    await store.record_step(did, d.steps[1], StepResult("failed", "nope", before, after, {"code": 409}),
                            started=t2, finished=t3)
    await store.record_step(did, d.on_failure[0], StepResult("ok", "rolled back"), started=t3, finished=t3)
    await store.finish_execution(did, "failed", t3)
    assert await store.unfinished_executions() == []
    results = await store.step_results(did)
    assert results[("main", 1)] == StepResult("failed", "nope", before, after, {"code": 409})
    assert results[("on_failure", 0)].ok
    assert await store.get_execution(did) == {
        **d.to_json(),
        "id": did,
        "status": "failed",
        "finished_at": "2026-11-22T10:00:04Z",
        "alert_payload": r.alert.to_json(),
        "results": [
            {"phase": "main", "index": 0, "action": "restart", "params": {}, "status": "ok", "message": "restarted",
             "before": None, "after": None, "details": {}, "started_at": "2026-11-22T10:00:01Z",
             "finished_at": "2026-11-22T10:00:02.500000Z"},
            {"phase": "main", "index": 1, "action": "scale", "params": {"to": 3}, "status": "failed",
             "message": "nope", "before": before, "after": after, "details": {"code": 409},
             "started_at": "2026-11-22T10:00:02.500000Z", "finished_at": "2026-11-22T10:00:04Z"},
            {"phase": "on_failure", "index": 0, "action": "rollback", "params": {}, "status": "ok",
             "message": "rolled back", "before": None, "after": None, "details": {},
             "started_at": "2026-11-22T10:00:04Z", "finished_at": "2026-11-22T10:00:04Z"},
        ],
        "events": [],
        "notifications": [],
    }
    assert await store.get_execution("ex-missing") is None


async def test_listing_filters_and_pages_newest_first(store: Any) -> None:
    ids = []
    for i in range(7):
        [r] = alerts(firing(f"a{i}"))
        d = a_decision(r.alert, "even" if i % 2 == 0 else "odd", at=T0 + timedelta(seconds=i // 2))  # ties too
        await store.record_decision(d)
        ids.append(d.execution_id)
    await store.finish_execution(ids[2], "succeeded", T0)
    newest_first = ids[::-1]
    assert [e["id"] for e in await store.list_executions()] == newest_first
    pages, before = [], None
    while True:
        page = await store.list_executions(limit=3, before=before)
        pages.append([e["id"] for e in page])
        if len(page) < 3:
            break
        before = page[-1]["id"]
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert [e["id"] for e in await store.list_executions(playbook="even", limit=2, before=ids[4])] == [ids[2], ids[0]]
    assert [e["id"] for e in await store.list_executions(status="succeeded")] == [ids[2]]
    assert await store.list_executions(before="ex-unknown") == []


async def test_only_the_lease_holder_runs_an_execution(store: Any, vclock: VirtualClock) -> None:
    [r] = alerts(firing("a"))
    d = a_decision(r.alert)
    await store.record_decision(d)
    did = d.execution_id
    assert await store.claim_execution(did, "A", 30)
    assert not await store.claim_execution(did, "B", 30)
    assert await store.claim_unfinished("B", 30) == []
    await vclock.advance(20)
    assert await store.claim_execution(did, "A", 30)  # renewal
    await vclock.advance(20)
    assert not await store.claim_execution(did, "B", 30)  # renewed lease still runs
    assert await store.claim_unfinished("A", 30) == [did]  # what A itself left behind is A's to resume
    await vclock.advance(30)  # A died: lease expires
    assert await store.claim_unfinished("B", 30) == [did]
    assert not await store.claim_execution(did, "A", 30)  # A came back: too late, B holds it
    await store.finish_execution(did, "succeeded", vclock.now())
    await vclock.advance(60)
    assert not await store.claim_execution(did, "B", 30)
    assert await store.claim_unfinished("B", 30) == []
    [r2] = alerts(firing("b"))
    assert await store.record_decision(a_decision(r2.alert, kind=DecisionKind.RATE_LIMITED))
    assert not await store.claim_execution(execution_id(r2.alert.dedup_key, "pb"), "B", 30)  # not an execution


async def test_a_released_lease_is_claimable_at_once_but_only_its_holder_releases_it(
    store: Any, vclock: VirtualClock
) -> None:
    [r] = alerts(firing("a"))
    d = a_decision(r.alert)
    await store.record_decision(d)
    did = d.execution_id
    assert await store.unfinished(did)
    assert await store.claim_execution(did, "A", 300)
    await store.release_execution(did, "B")  # not B's: nothing happens
    assert not await store.claim_execution(did, "B", 300)
    await store.release_execution(did, "A")  # A hands it back: B need not wait out the lease
    assert await store.claim_unfinished("B", 300) == [did]
    assert not await store.claim_execution(did, "A", 300)
    await store.finish_execution(did, "succeeded", vclock.now())
    assert not await store.unfinished(did)
    assert not await store.unfinished("ex-missing")
    assert not await store.claim_execution(did, "B", 300)


async def test_a_recorded_alert_is_found_by_its_key(store: Any) -> None:
    [r, other] = alerts(firing("a"), firing("b"))
    await store.record_alerts([r])
    assert await store.recorded_alert(r.alert.dedup_key) == r.alert
    assert await store.recorded_alert(other.alert.dedup_key) is None


async def test_claiming_unfinished_is_oldest_first_and_bounded(store: Any) -> None:
    ids = []
    for i in range(5):
        [r] = alerts(firing(f"a{i}"))
        d = a_decision(r.alert, at=T0 + timedelta(seconds=i))
        await store.record_decision(d)
        ids.append(d.execution_id)
    assert await store.claim_unfinished("A", 30, limit=2) == ids[:2]
    assert await store.claim_unfinished("B", 30, limit=10) == ids[2:]


async def test_export_range_is_half_open_and_paged(store: Any) -> None:
    for i in range(7):
        await store.record_alerts(alerts(firing(f"a{i}"), at=T0 + timedelta(minutes=i)))
    got = [s.received.alert.labels["app"]
           async for s in store.alerts_between(T0 + timedelta(minutes=1), T0 + timedelta(minutes=6), batch=2)]
    assert got == ["a1", "a2", "a3", "a4", "a5"]
    assert [s async for s in store.alerts_between(T0 + timedelta(hours=1), T0 + timedelta(hours=2))] == []


def resolved(app: str, starts: str = "2026-11-22T10:00:00Z") -> dict[str, Any]:
    return alert_json({"alertname": "X", "app": app}, status="resolved", starts_at=starts,
                      ends_at="2026-11-22T10:30:00Z")


async def test_retention_deletes_only_old_finished_work_of_ended_episodes_in_batches(
    store: Any, vclock: VirtualClock
) -> None:
    old = alerts(*(firing(f"old{i}") for i in range(6)))
    await store.record_alerts(old)
    # every episode but old5's has ended (old5 still fires: Alertmanager keeps re-sending it)
    await store.record_alerts(alerts(*(resolved(f"old{i}") for i in range(5))))
    for item in await store.claim_alerts("w", 20, 30):
        if item.received.alert.labels["app"] != "old4" or item.received.alert.status == "resolved":
            await store.mark_processed(item.id)  # old4's firing record stays unprocessed: never deleted
    for r in old[:4] + old[5:]:
        d = a_decision(r.alert)
        await store.record_decision(d)
        await store.record_step(d.execution_id, d.steps[0], StepResult("ok"), started=T0, finished=T0)
        await store.record_notification(d.execution_id, {"channel": "ops", "event": "started", "result": "sent"})
        if r.alert.labels["app"] != "old3":
            await store.finish_execution(d.execution_id, "succeeded", T0)  # old3 is still running
    await store.record_decision(a_decision(old[0].alert, "pb2", kind=DecisionKind.COOLDOWN))
    await vclock.advance(31 * 86400)
    new = alerts(firing("new"), at=vclock.now())
    await store.record_alerts(new)
    await store.record_decision(a_decision(new[0].alert, at=vclock.now()))
    counts = await store.delete_older_than(30, batch=2)
    # old0-old2: decisions (4 with pb2's), their steps, firing and resolved records
    assert counts == {"decisions": 4, "steps": 3, "notifications": 3, "alerts": 6, "kill_switch": 0}
    assert sorted(e["target"]["name"] for e in await store.list_executions()) == ["new", "old3", "old5"]
    # kept: old3 (running: both records), old4 (unprocessed firing + its resolved proof), old5 (still firing), new
    assert await store.count_alerts() == 6
    assert await store.delete_older_than(30) == {"decisions": 0, "steps": 0, "notifications": 0, "alerts": 0,
                                                 "kill_switch": 0}
    # a redelivery of the still-firing old5 is still a duplicate: it cannot be decided again
    assert await store.record_alerts(alerts(firing("old5"), at=vclock.now())) == 0


async def test_notification_outcomes_are_part_of_the_execution_audit(store: Any) -> None:
    [r] = alerts(firing("a"))
    await store.record_alerts([r])
    d = a_decision(r.alert)
    await store.record_decision(d)
    sent = {"at": "2026-11-22T10:00:01Z", "channel": "slack", "event": "started", "result": "sent", "attempts": 1,
            "error": ""}
    failed = {**sent, "channel": "pager", "result": "failed", "attempts": 5, "error": "HTTP 503"}
    await store.record_notification(d.execution_id, sent)
    await store.record_notification(d.execution_id, failed)
    full = await store.get_execution(d.execution_id)
    assert full["notifications"] == [sent, failed]  # in the order they ended


async def test_a_closed_store_is_unavailable_not_an_internal_error(store: Any) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.record_alerts(alerts(firing("a")))


async def test_retention_keeps_an_episodes_alerts_while_a_younger_decision_remains(
    store: Any, vclock: VirtualClock
) -> None:
    """The resolved notice came first and the decision later (a backlog): the decision ages out on its own."""
    [fired] = alerts(firing("late"))
    await store.record_alerts([fired, *alerts(resolved("late"))])
    for item in await store.claim_alerts("w", 10, 30):
        await store.mark_processed(item.id)
    await vclock.advance(20 * 86400)
    d = a_decision(fired.alert, at=vclock.now())
    await store.record_decision(d)
    await store.finish_execution(d.execution_id, "succeeded", vclock.now())
    await vclock.advance(11 * 86400)  # the alerts are 31 days old, the decision 11
    assert await store.delete_older_than(30) == {"decisions": 0, "steps": 0, "notifications": 0, "alerts": 0,
                                                 "kill_switch": 0}
    await vclock.advance(20 * 86400)  # now the decision is old too, and everything goes
    assert await store.delete_older_than(30) == {"decisions": 1, "steps": 0, "notifications": 0, "alerts": 2,
                                                 "kill_switch": 0}


async def test_the_kill_switch_is_recorded_durably_last_setting_wins(store: Any, vclock: VirtualClock) -> None:
    assert await store.kill_switch() is None  # never set
    at = vclock.now() + timedelta(microseconds=250)
    await store.set_kill_switch(True, "alice", at)
    assert await store.kill_switch() == KillSwitchRecord(True, "alice", at)
    await store.set_kill_switch(False, "b\x00b", at + timedelta(minutes=5))
    assert await store.kill_switch() == KillSwitchRecord(False, "b\\u0000b", at + timedelta(minutes=5))
