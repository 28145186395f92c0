"""The approval ledger's contract, on both stores (``ApprovalLedger``): an execution awaiting
approval is never claimed to run, one claimant at a time may answer it, its deadline expires it
once, and retention keeps it while it waits."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.ports import ApprovalState
from tests.payloads import T0
from tests.store.test_contract import a_decision, alerts, firing

DEADLINE = T0 + timedelta(minutes=15)


async def awaiting(store: Any, app: str, deadline: Any = DEADLINE) -> str:
    [r] = alerts(firing(app))
    await store.record_alerts([r])
    d = replace(a_decision(r.alert), kind=DecisionKind.AWAITING_APPROVAL)
    assert await store.record_decision(d, approval_deadline=deadline)
    assert not await store.record_decision(d, approval_deadline=deadline)  # once, as every decision
    return str(d.execution_id)


async def test_an_awaiting_execution_is_recorded_with_its_deadline_and_never_claimed_to_run(store: Any) -> None:
    did = await awaiting(store, "a")
    assert await store.approval(did) == ApprovalState("awaiting_approval", DEADLINE, False)
    assert await store.claim_unfinished("w", 30) == [] and await store.unfinished_executions() == []
    assert not await store.claim_execution(did, "w", 30) and not await store.unfinished(did)
    doc = await store.get_execution(did)
    assert (doc["status"], doc["decision"], doc["approval_deadline"]) == (
        "awaiting_approval", "awaiting_approval", "2026-11-22T10:15:00Z")
    # the listing carries the deadline too (the guardrails panel reads no execution one by one)
    assert [(e["id"], e["approval_deadline"]) for e in await store.list_executions(status="awaiting_approval")] == [
        (did, "2026-11-22T10:15:00Z")]
    [r] = alerts(firing("b"))
    assert await store.record_decision(a_decision(r.alert, kind=DecisionKind.COOLDOWN))
    assert await store.approval(a_decision(r.alert).execution_id) is None  # a refusal has no execution
    assert await store.approval("ex-unknown") is None
    [c] = alerts(firing("c"))
    assert await store.record_decision(a_decision(c.alert))  # admitted, never asked anyone
    listed = {e["id"]: e for e in await store.list_executions()}
    assert "approval_deadline" not in listed[str(a_decision(c.alert).execution_id)]
    assert listed[did]["approval_deadline"] == "2026-11-22T10:15:00Z"


async def test_one_claimant_answers_and_approving_makes_it_runnable(store: Any, vclock: VirtualClock) -> None:
    did = await awaiting(store, "a")
    assert await store.claim_approval(did, "r1", 60)
    assert (await store.approval(did)).deciding
    assert not await store.claim_approval(did, "r2", 60)
    assert not await store.claim_approval(did, "r1", 60)  # not even twice by one replica (two requests)
    assert not await store.settle_approval(did, "r2", "pending", vclock.now())  # not r2's claim
    assert await store.settle_approval(did, "r1", "pending", vclock.now())
    assert await store.approval(did) == ApprovalState("pending", DEADLINE, False)
    assert await store.claim_unfinished("w", 30) == [did]  # the execution queue runs it now
    assert not await store.claim_approval(did, "r2", 60) and not await store.settle_approval(
        did, "r1", "denied", vclock.now())


async def test_a_lapsed_claim_can_be_taken_and_a_final_answer_finishes_it(store: Any, vclock: VirtualClock) -> None:
    did = await awaiting(store, "a")
    assert await store.claim_approval(did, "dead", 60)
    await vclock.advance(61)
    assert not (await store.approval(did)).deciding
    assert await store.claim_approval(did, "r2", 60)
    assert not await store.settle_approval(did, "dead", "denied", vclock.now())
    assert await store.settle_approval(did, "r2", "denied", vclock.now())
    doc = await store.get_execution(did)
    assert (doc["status"], doc["finished_at"]) == ("denied", "2026-11-22T10:01:01Z")


async def test_the_deadline_expires_each_once_and_not_while_it_is_being_answered(
    store: Any, vclock: VirtualClock
) -> None:
    first, held = await awaiting(store, "a"), await awaiting(store, "b")
    later = await awaiting(store, "c", DEADLINE + timedelta(minutes=5))
    assert await store.expire_approvals(vclock.now()) == []
    await vclock.advance(14 * 60)
    assert await store.claim_approval(held, "r1", 120)  # answered across the deadline
    await vclock.advance(60)
    assert not await store.claim_approval(first, "r1", 60)  # past its deadline: no answer any more
    assert await store.expire_approvals(vclock.now()) == [first]
    assert await store.expire_approvals(vclock.now()) == []
    doc = await store.get_execution(first)
    assert (doc["status"], doc["finished_at"], doc["approval_deadline"]) == (
        "expired", "2026-11-22T10:15:00Z", "2026-11-22T10:15:00Z")
    await vclock.advance(60)  # the claim on `held` lapsed without an answer
    assert await store.expire_approvals(vclock.now()) == [held]
    await vclock.advance(5 * 60)
    assert await store.expire_approvals(vclock.now()) == [later]


async def test_retention_keeps_an_execution_while_it_awaits_approval(store: Any, vclock: VirtualClock) -> None:
    waiting, answered = await awaiting(store, "a"), await awaiting(store, "b")
    assert await store.claim_approval(answered, "r1", 60)
    assert await store.settle_approval(answered, "r1", "denied", vclock.now())
    for r in alerts(firing("a"), firing("b")):  # their firing episodes ended
        await store.record_alerts(alerts({**firing(r.alert.labels["app"]), "status": "resolved",
                                          "endsAt": "2026-11-22T10:05:00Z"}))
    for item in await store.claim_alerts("w", 20, 30):
        await store.mark_processed(item.id)
    await vclock.advance(31 * 86400)
    counts = await store.delete_older_than(30)
    assert counts["decisions"] == 1
    assert await store.approval(waiting) is not None and await store.approval(answered) is None


async def test_a_running_execution_stops_to_await_a_steps_approval_under_its_own_lease_only(
    store: Any, vclock: VirtualClock
) -> None:
    """``await_approval``: before a step with ``approval:``, the replica running the execution stops it
    there; its lease ends with it, and from then on it is an execution awaiting approval like any."""
    [r] = alerts(firing("a"))
    await store.record_alerts([r])
    assert await store.record_decision(a_decision(r.alert))  # admitted: it runs
    did = str(a_decision(r.alert).execution_id)
    assert await store.claim_unfinished("w1", 60) == [did]
    assert not await store.await_approval(did, "w2", DEADLINE)  # not w2's to stop
    assert await store.await_approval(did, "w1", DEADLINE)
    assert not await store.await_approval(did, "w1", DEADLINE)  # not running any more
    assert await store.approval(did) == ApprovalState("awaiting_approval", DEADLINE, False)
    assert await store.claim_unfinished("w2", 60) == [] and not await store.claim_execution(did, "w1", 60)
    doc = await store.get_execution(did)
    assert (doc["decision"], doc["status"], doc["approval_deadline"]) == (
        "executed", "awaiting_approval", "2026-11-22T10:15:00Z")
    assert await store.claim_approval(did, "w2", 60)
    assert await store.settle_approval(did, "w2", "pending", vclock.now())
    assert await store.claim_unfinished("w2", 60) == [did]  # approved: runnable again
    # with no deadline (replay's --approve none asks nobody) it waits, and never expires
    assert await store.await_approval(did, "w2", None)
    assert await store.approval(did) == ApprovalState("awaiting_approval", None, False)
    assert not await store.claim_approval(did, "w3", 60)
    await vclock.advance(365 * 86400)
    assert await store.expire_approvals(vclock.now()) == []


async def test_an_execution_awaiting_approval_with_no_deadline_never_expires(store: Any, vclock: VirtualClock) -> None:
    """No deadline: nobody was asked (replay's --approve none).  The in-memory store expired these at
    its first sweep, where the SQL stores (NULL is never <= a time) kept them."""
    did = await awaiting(store, "a", deadline=None)
    await vclock.advance(365 * 86400)
    assert await store.expire_approvals(vclock.now()) == []
    assert await store.approval(did) == ApprovalState("awaiting_approval", None, False)
