"""Replay's in-memory store, streaming: it forgets what is over, and still answers as if it had not.

The contract (test_contract.py) runs on the memory store keeping everything; these are
the promises of ``streaming=True``: a processed alert whose executions are over leaves
nothing but its key, which is enough to refuse its redelivery and to answer
``resolved_for`` and ``firing_count`` exactly; what is still open is kept whole.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert, format_time, labels_fingerprint, parse_time
from remediator.core.decisions import DecisionKind, PlannedStep
from remediator.ports import ReceivedAlert, StepResult
from remediator.store.memory import MemoryStore
from tests.payloads import T0
from tests.store.test_contract import a_decision, alerts, firing, resolved


def a_step() -> PlannedStep:
    return PlannedStep(0, "restart", {})


async def _decide(store: MemoryStore, kind: DecisionKind = DecisionKind.COOLDOWN) -> list[str]:
    """Claim everything, record one decision per alert and mark it processed; the decisions' ids."""
    ids = []
    for item in await store.claim_alerts("w", 1000, 30):
        d = a_decision(item.received.alert, kind=kind)
        await store.record_decision(d)
        ids.append(d.execution_id or "")
        await store.mark_processed(item.id)
    return ids


async def test_a_processed_alert_leaves_only_its_key(vclock: VirtualClock) -> None:
    store = MemoryStore(vclock, streaming=True)
    batch = alerts(firing("a"), firing("a", "2026-11-22T10:20:00Z"), resolved("a"))
    assert await store.record_alerts(batch) == 3
    [did, *_] = await _decide(store)
    assert await store.count_alerts() == 0
    assert await store.decision(did) is None
    assert await store.recorded_alert(batch[0].alert.dedup_key) is None
    # what can still matter is answered exactly
    assert await store.record_alerts(batch) == 0  # a redelivery is still a duplicate: never decided again
    assert await store.claim_alerts("w", 10, 30) == []
    fp = batch[0].alert.fingerprint
    assert await store.resolved_for(fp, T0)
    assert not await store.resolved_for(fp, T0 + timedelta(minutes=20))
    assert await store.firing_count(fp, T0) == 2
    assert await store.firing_count(fp, T0 + timedelta(minutes=1)) == 1
    # the same store keeping everything answers the same
    keeping = MemoryStore(vclock)
    await keeping.record_alerts(batch)
    await _decide(keeping)
    assert await keeping.count_alerts() == 3
    assert [await keeping.firing_count(fp, T0 + timedelta(minutes=m)) for m in (0, 1, 30)] == [2, 1, 0]


async def test_what_is_not_over_is_kept_whole(vclock: VirtualClock) -> None:
    store = MemoryStore(vclock, streaming=True)
    [fired, deferred] = alerts(firing("a"), firing("b"))
    await store.record_alerts([fired, deferred])
    [a, b] = await store.claim_alerts("w", 10, 30)
    d = a_decision(fired.alert)  # admitted: its execution is open
    did = d.execution_id or ""
    await store.record_decision(d)
    await store.mark_processed(a.id)
    await store.defer_alert(b.id, T0 + timedelta(minutes=5))  # not processed: still to be decided
    # the execution queue resumes an open execution from its decision and its alert
    assert await store.decision(did) == d
    assert await store.recorded_alert(fired.alert.dedup_key) == fired.alert
    assert await store.claim_unfinished("q", 30) == [did]
    await store.finish_execution(did, "dry_run", vclock.now())
    assert await store.decision(did) is None and await store.recorded_alert(fired.alert.dedup_key) is None
    await vclock.advance(300)
    assert [s.received for s in await store.claim_alerts("w", 10, 30)] == [deferred]
    await store.park_alert(b.id, "boom")  # parked alerts are for a human: kept
    assert [p["id"] for p in await store.parked_alerts()] == [b.id]


async def test_an_execution_awaiting_an_answer_nobody_gives_ends_with_its_alert_and_is_forgotten(
    vclock: VirtualClock,
) -> None:
    """Replay's ``--approve none`` records no deadline: the resolve (its only claimant) must be able
    to end it, or it stays open, kept and read at every event, to the end of the replay."""
    store = MemoryStore(vclock, streaming=True)
    [fired] = alerts(firing("a"))
    await store.record_alerts([fired])
    [a] = await store.claim_alerts("w", 10, 30)
    d = replace(a_decision(fired.alert), kind=DecisionKind.AWAITING_APPROVAL)
    did = d.execution_id or ""
    assert await store.record_decision(d, approval_deadline=None)
    await store.mark_processed(a.id)
    assert await store.claim_unfinished("q", 30) == [] and await store.expire_approvals(vclock.now()) == []
    assert await store.decision(did) == d  # awaiting: kept
    assert await store.claim_approval(did, "resolve", 30)
    assert await store.settle_approval(did, "resolve", "resolved_cancelled", vclock.now())
    assert await store.decision(did) is None and await store.count_alerts() == 0
    await store.record_event(did, "resolved_cancelled", vclock.now())  # the audit written after: not kept alone
    await store.record_step(did, a_step(), StepResult("ok", ""), started=vclock.now(), finished=vclock.now())
    assert await store.get_execution(did) is None and await store.step_results(did) == {}


async def test_the_approval_sweep_expires_in_deadline_order_and_skips_one_being_answered(
    vclock: VirtualClock,
) -> None:
    store = MemoryStore(vclock, streaming=True)
    ids = []
    for app, minutes in (("a", 20), ("b", 10), ("c", 15), ("d", 30)):
        [r] = alerts(firing(app))
        await store.record_alerts([r])
        d = replace(a_decision(r.alert), kind=DecisionKind.AWAITING_APPROVAL)
        assert await store.record_decision(d, approval_deadline=T0 + timedelta(minutes=minutes))
        ids.append(d.execution_id or "")
    a, b, c, d_ = ids
    assert await store.claim_approval(c, "answering", 3600)
    await vclock.advance(25 * 60)
    assert await store.expire_approvals(vclock.now(), limit=1) == [b]
    assert await store.expire_approvals(vclock.now()) == [a]  # c is being answered: not expired under it
    assert await store.settle_approval(c, "answering", "pending", vclock.now())
    assert await store.claim_unfinished("q", 30) == [c]
    await vclock.advance(3600)
    assert await store.expire_approvals(vclock.now()) == [d_]
    assert await store.expire_approvals(vclock.now()) == []


async def test_memory_stays_flat_as_the_history_grows(vclock: VirtualClock) -> None:
    """Each alert processed costs its 8-byte key and nothing else (the SQL stores kept a row)."""
    store = MemoryStore(vclock, streaming=True)
    labels = [{"alertname": "X", "app": f"app-{i}"} for i in range(50)]
    fingerprints = [labels_fingerprint(one) for one in labels]

    async def feed(rounds: int) -> None:
        for _ in range(rounds):
            now = vclock.now()
            await store.record_alerts([ReceivedAlert(Alert(fp, "firing", one, starts_at=now), now)
                                       for fp, one in zip(fingerprints, labels, strict=True)])
            await _decide(store, DecisionKind.EXECUTED)
            for did in await store.claim_unfinished("q", 30, limit=100):
                await store.finish_execution(did, "dry_run", vclock.now())
            await vclock.advance(1)

    tracemalloc.start()
    try:
        await feed(60)  # every fingerprint seen; claims older than their lease (30 s) let go
        # The bounded caches of recurring times (core.alerts) full first: from then on each new
        # time takes the place of an old one, and what is measured is what grows with history.
        past = datetime(2000, 1, 1, tzinfo=UTC)
        for i in range(max(format_time.cache_info().maxsize or 0, parse_time.cache_info().maxsize or 0)):
            parse_time(format_time(past + timedelta(seconds=i)))
        before = tracemalloc.get_traced_memory()[0]  # the working set: claims, heaps, tables
        await feed(120)  # 6,000 alerts, decisions and executions more
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert await store.count_alerts() == 0
    # its key, 8 bytes, and the spare room of the array it is in (a row was a kilobyte)
    assert grown / 6_000 < 16, f"{grown / 6_000:.1f} bytes kept per alert"
