"""One contract for both guardrail adapters: same scenarios, same verdicts, same reasons.

Every test runs against the embedded adapter (persisting to its JSON file) and
against real Redis, on a virtual clock, and the randomized test holds both to the
pure rules of :mod:`remediator.core.guardrails` operation by operation.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from remediator.clock import VirtualClock
from remediator.core import guardrails as rules
from remediator.core.decisions import DecisionKind
from remediator.core.errors import GuardrailUnavailable
from remediator.core.guardrails import (
    LOCK_RECORD_KEPT,
    OUTCOME_RECORD_KEPT,
    BreakerState,
    BreakerView,
    Budget,
    Check,
    Finding,
    GuardState,
    Policy,
    Request,
    Verdict,
)
from remediator.guardstate import lua
from remediator.guardstate.memory import MemoryGuardrails
from remediator.guardstate.redis import RedisGuardrails, _finding
from remediator.ports import GuardrailStore
from tests.guardrails.conftest import REDIS_URL, GuardFactory, free_port, prefixed
from tests.payloads import T0

K = DecisionKind


class Scene:
    """A guardrail state on a virtual clock, with requests named by their owner."""

    def __init__(self, guard: GuardrailStore, clock: VirtualClock) -> None:
        self.guard = guard
        self.clock = clock
        self.reqs: dict[str, Request] = {}

    def at(self, seconds: float) -> None:
        self.clock.set(T0 + timedelta(seconds=seconds))

    def req(self, owner: str, target: str = "t1", **kw: Any) -> Request:
        fields: dict[str, Any] = {"limit_key": target, "namespace": "shop", "playbook": "pb", "lock_ttl": 60.0}
        fields.update(kw)
        return Request(owner=owner, target_key=target, now=self.clock.now().timestamp(), **fields)

    async def admit(self, owner: str, target: str = "t1", **kw: Any) -> Verdict:
        req = self.req(owner, target, **kw)
        verdict = await self.guard.admit(req)
        if verdict.admitted:
            self.reqs[owner] = req
        return verdict

    async def evaluate(self, owner: str, target: str = "t1", **kw: Any) -> Verdict:
        return await self.guard.evaluate(self.req(owner, target, **kw))

    async def release(self, owner: str, *, succeeded: bool | None = True) -> None:
        await self.guard.release(self.reqs.pop(owner), succeeded=succeeded)

    async def renew(self, owner: str) -> bool:
        return await self.guard.renew(self.reqs[owner])


async def scene(make_guard: GuardFactory, clock: VirtualClock, **policy: Any) -> Scene:
    return Scene(await make_guard(Policy(**policy)), clock)


def kinds(*verdicts: Verdict) -> list[DecisionKind]:
    return [v.kind for v in verdicts]


async def test_pause_refuses_before_anything_else(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("a")).admitted
    await s.guard.set_paused(True)
    assert await s.guard.paused() is True
    assert (await s.guard.status()).paused is True
    for owner, target in (("b", "t2"), ("c", "t1")):  # a free target and a locked one: both paused
        assert await s.admit(owner, target) == Verdict(K.PAUSED, "remediation is paused (kill switch)")
    await s.guard.set_paused(False)
    assert await s.guard.paused() is False
    assert (await s.admit("b", "t2")).admitted


async def test_a_lock_refuses_everyone_until_its_owner_releases(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("a")).admitted
    assert await s.admit("b") == Verdict(K.LOCKED, "t1 is locked by execution a", "a")
    # its own owner too: another replica's copy of the same alert has the same execution id
    assert await s.admit("a") == Verdict(K.LOCKED, "t1 is locked by execution a", "a")
    assert (await s.admit("b", "t2")).admitted  # other targets are free
    await s.guard.release(s.req("intruder"), succeeded=True)  # only the owner frees a lock
    assert (await s.admit("c")).kind is K.LOCKED
    await s.release("a")
    assert (await s.admit("c")).admitted


async def test_an_abandoned_admission_frees_lock_and_slot_but_keeps_the_counts(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    s = await scene(make_guard, clock, max_running=1)
    limits = {"rate_max": 1, "rate_per": 600.0}
    assert (await s.admit("lost", cooldown=0.0, **limits)).admitted
    assert (await s.admit("other", "t2")).kind is K.BUDGET_EXHAUSTED  # its slot is taken
    await s.guard.abandon(s.req("intruder"))  # only the owner gives a lock back
    assert (await s.admit("b", "t3")).kind is K.BUDGET_EXHAUSTED
    await s.guard.abandon(s.reqs.pop("lost"))
    assert (await s.admit("other", "t2")).admitted  # the slot is free at once, not at the TTL
    await s.release("other")
    # the lock is gone, but the admission still counts against the rate limit (the safe side)
    assert (await s.admit("b", **limits)).kind is K.RATE_LIMITED
    assert (await s.admit("c")).admitted
    assert (await s.guard.status()).breakers == {}  # and the breaker was not fed


async def test_an_abandoned_admission_keeps_the_record_that_supersedes_a_stopped_execution(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    """``abandon`` once deleted the lock's record, and with it the fact that another execution had
    held the target since one stopped at a step's gate: approved, that one took its lock back and
    ran its stale step over the other's change.  The record is kept (the abandoned owner, lapsed),
    as a release keeps it: a stopped execution is refused, the abandoned one's retry is not."""
    s = await scene(make_guard, clock)
    gated = s.req("gated", lock_ttl=300.0)
    assert (await s.guard.admit(gated)).admitted
    await s.guard.release(gated, succeeded=None)  # stops at a step's gate: lock given up, record kept
    s.at(1)
    assert (await s.admit("c", lock_ttl=300.0, limit_key="l2")).admitted  # another acts on the target...
    await s.release("c")  # ... and finishes
    assert await s.guard.take_back(s.req("gated", lock_ttl=300.0)) == Finding(Check.LOCKED, holder="c")
    s.at(2)
    assert (await s.admit("b", lock_ttl=300.0, limit_key="l3")).admitted
    await s.guard.abandon(s.reqs.pop("b"))  # its decision was not recorded
    s.at(3)
    # what "c" did stays known: the gated execution is still refused, by take_back and by reacquire
    assert await s.guard.take_back(s.req("gated", lock_ttl=300.0)) == Finding(Check.LOCKED, holder="b")
    assert await s.guard.reacquire(s.req("gated", lock_ttl=300.0)) is False
    assert (await s.guard.usage()).locks == {}  # yet the abandoned lock binds nobody: it has lapsed
    assert await s.guard.renew(s.req("b", lock_ttl=300.0)) is False  # not even its owner's renewal
    s.at(2 + LOCK_RECORD_KEPT - 60)  # and it is kept as long as a released lock's record
    assert await s.guard.reacquire(s.req("gated", lock_ttl=300.0)) is False
    # the retry of the abandoned execution itself is admitted, not refused by its own lock
    assert (await s.admit("b", lock_ttl=300.0, limit_key="l3")).admitted
    assert await s.admit("d", limit_key="l4") == Verdict(K.LOCKED, "t1 is locked by execution b", "b")


async def test_an_abandoned_admission_after_nobody_else_acted_still_refuses_a_stopped_execution(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    """What the record said before the abandoned admission is not kept, so it cannot be restored:
    the stopped execution is refused as superseded (it ends unrun) rather than risk a stale step.
    (The abandoned execution's retry will act on the target anyway.)  An execution that gives back
    what it took back (its approval was answered elsewhere) stays the last holder, free to go on."""
    s = await scene(make_guard, clock)
    gated = s.req("gated", lock_ttl=300.0)
    assert (await s.guard.admit(gated)).admitted
    await s.guard.release(gated, succeeded=None)
    s.at(1)
    assert (await s.admit("b", lock_ttl=300.0, limit_key="l2")).admitted
    await s.guard.abandon(s.reqs.pop("b"))
    s.at(2)
    assert await s.guard.take_back(s.req("gated", lock_ttl=300.0)) == Finding(Check.LOCKED, holder="b")
    assert await s.guard.take_back(s.req("b", lock_ttl=300.0)) == Finding(Check.PASSED)
    await s.guard.abandon(s.req("b", lock_ttl=300.0))  # taken back, then given back at once
    s.at(3)
    assert (await s.guard.usage()).locks == {}
    assert await s.guard.take_back(s.req("gated", lock_ttl=300.0)) == Finding(Check.LOCKED, holder="b")
    assert await s.guard.reacquire(s.req("b", lock_ttl=300.0)) is True


async def test_a_resuming_execution_takes_its_lock_back_only_if_nobody_else_has_held_it(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("a", lock_ttl=30.0, cooldown=500.0, rate_max=1, rate_per=600.0)).admitted
    assert await s.guard.reacquire(s.reqs["a"]) is True  # its own live lock: kept (no limit re-checked)
    s.at(40)  # lapsed, nobody took it
    assert await s.guard.reacquire(s.req("a", lock_ttl=30.0)) is True
    s.at(60)
    assert await s.admit("b") == Verdict(K.LOCKED, "t1 is locked by execution a", "a")
    s.at(80)  # lapsed again, and this time another execution takes the target
    assert (await s.admit("b", lock_ttl=30.0, limit_key="other")).admitted
    assert await s.guard.reacquire(s.req("a", lock_ttl=30.0)) is False
    assert await s.guard.renew(s.req("a", lock_ttl=30.0)) is False
    await s.release("b")
    # b has acted on the target since a's plan: taking the lock back would let a revert b's change
    assert await s.guard.reacquire(s.req("a", lock_ttl=30.0)) is False
    s.at(80 + LOCK_RECORD_KEPT - 60)  # most of a day later, the record of b's hold is still there
    assert await s.guard.reacquire(s.req("a", lock_ttl=30.0)) is False
    assert (await s.admit("c", lock_ttl=30.0, limit_key="third")).admitted  # the free lock admits anew


async def test_going_on_after_a_steps_approval_takes_the_lock_back_and_a_slot_within_the_limits(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    """``take_back``: the lock on reacquire's terms, and the slot it gave up at the gate only while
    the executions running now leave room under ``max_running`` (and per namespace)."""
    s = await scene(make_guard, clock, max_running=2, max_running_per_namespace=1)
    gated = s.req("gated", "t1", lock_ttl=30.0)
    assert (await s.guard.admit(gated)).admitted
    await s.guard.release(gated, succeeded=None)  # the gate: lock and slot given up
    assert (await s.admit("busy", "t2", namespace="shop")).admitted
    assert await s.guard.take_back(gated) == Finding(Check.RUNNING_NS, count=1)  # shop's one slot is taken
    assert (await s.admit("other", "t3", namespace="ops")).admitted
    assert await s.guard.take_back(gated) == Finding(Check.RUNNING, count=2)
    third = await s.admit("third", "t1", namespace="web", limit_key="l3")
    assert third.kind is K.BUDGET_EXHAUSTED  # running, not locked: the refused take_back took nothing
    await s.release("busy")
    await s.release("other")
    s.at(10)
    assert await s.guard.take_back(gated) == Finding(Check.PASSED)
    assert await s.admit("b", "t1", limit_key="l2") == Verdict(K.LOCKED, "t1 is locked by execution gated", "gated")
    assert (await s.admit("c", "t4", namespace="shop")).kind is K.BUDGET_EXHAUSTED  # its slot counts again
    await s.guard.release(gated, succeeded=True)
    assert (await s.admit("d", "t1", limit_key="l4")).admitted
    await s.release("d")
    assert await s.guard.take_back(gated) == Finding(Check.LOCKED, holder="d")  # d acted on t1 since


async def test_a_released_lock_admits_at_once_but_keeps_its_last_holder_on_record(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("a", lock_ttl=600.0)).admitted
    s.at(10)
    await s.release("a")
    assert (await s.admit("b", lock_ttl=600.0, limit_key="other")).admitted  # released: free at once
    s.at(20)
    await s.release("b")
    assert await s.guard.reacquire(s.req("a", lock_ttl=600.0)) is False  # b held it after a
    assert await s.guard.reacquire(s.req("b", lock_ttl=600.0)) is True  # b was its last holder


async def test_a_lock_lapses_at_its_ttl_not_before(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("crashed", lock_ttl=30.0)).admitted  # and never released
    s.at(29.999)
    assert await s.admit("b") == Verdict(K.LOCKED, "t1 is locked by execution crashed", "crashed")
    s.at(30)
    assert (await s.admit("b")).admitted


async def test_renewal_extends_only_a_live_lock_of_its_owner(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("a", lock_ttl=60.0)).admitted
    s.at(50)
    assert await s.renew("a") is True  # now until 110
    assert await s.guard.renew(s.req("b")) is False  # not the owner
    s.at(109.9)
    assert (await s.admit("b")).kind is K.LOCKED
    s.at(110)
    assert (await s.admit("b")).admitted
    assert await s.renew("a") is False  # lapsed and taken
    assert (await s.admit("x", "t9", lock_ttl=10.0)).admitted
    s.at(120)
    assert await s.renew("x") is False  # lapsed, even if nobody took it


async def test_cooldown_starts_at_admission_and_restarts_at_release(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    s = await scene(make_guard, clock)
    assert (await s.admit("a", "t1", limit_key="K", cooldown=100.0)).admitted
    s.at(10)
    assert await s.admit("b", "t2", limit_key="K", cooldown=100.0) == Verdict(
        K.COOLDOWN, "in cooldown until 2026-11-22T10:01:40Z (another 1m30s)"
    )
    assert (await s.admit("b", "t2", limit_key="other", cooldown=100.0)).admitted
    s.at(30)
    await s.release("a")  # cooldown now runs to 130
    s.at(129)
    assert await s.admit("c", "t1", limit_key="K") == Verdict(
        K.COOLDOWN, "in cooldown until 2026-11-22T10:02:10Z (another 1s)"
    )
    s.at(130)
    assert (await s.admit("c", "t1", limit_key="K")).admitted


async def test_the_rate_limit_is_a_sliding_window(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock)
    rate = {"limit_key": "K", "rate_max": 2, "rate_per": 60.0}
    got, refused = [], {}
    for n, at in enumerate((0, 10, 20, 59.999, 60, 65, 70)):
        s.at(at)
        verdict = await s.admit(f"e{n}", f"t{n}", **rate)
        got.append(verdict.kind)
        if verdict.admitted:
            await s.release(f"e{n}")
        else:
            refused[at] = verdict.reason
    # executions at 0 and 10; 60 sees only 10 inside (60-60, 60]; 70 sees only 60 once 10 has left
    assert got == [K.EXECUTED, K.EXECUTED, K.RATE_LIMITED, K.RATE_LIMITED, K.EXECUTED, K.RATE_LIMITED, K.EXECUTED]
    # each refusal names the moment the oldest execution in its window leaves it: 0 + 60, then 10 + 60
    assert refused == {
        20: "rate limited: 2 of 2 executions in the last 1m; next allowed at 2026-11-22T10:01:00Z",
        59.999: "rate limited: 2 of 2 executions in the last 1m; next allowed at 2026-11-22T10:01:00Z",
        65: "rate limited: 2 of 2 executions in the last 1m; next allowed at 2026-11-22T10:01:10Z",
    }


async def test_rate_limits_count_late_requests(make_guard: GuardFactory, clock: VirtualClock) -> None:
    """A replica may call with a ``now`` taken just before another replica's admission."""
    s = await scene(make_guard, clock)
    rate = {"limit_key": "K", "rate_max": 1, "rate_per": 60.0}
    late = s.req("late", "t0", **rate)  # taken at 0, arrives last
    s.at(50)
    assert (await s.admit("a", "t1", **rate)).admitted
    await s.release("a")
    s.at(115)
    assert (await s.admit("b", "t2", **rate)).admitted  # prunes what is older than its window...
    await s.release("b")
    verdict = await s.guard.admit(late)  # ...but the late request still sees the execution at 50
    # two inside its window, one allowed: room for one more once both have left, 115 + 60
    assert verdict == Verdict(
        K.RATE_LIMITED, "rate limited: 2 of 1 executions in the last 1m; next allowed at 2026-11-22T10:02:55Z"
    )


async def test_budgets_bind_globally_and_per_namespace(make_guard: GuardFactory, clock: VirtualClock) -> None:
    budgets = (Budget("*", 3, 100.0), Budget("shop", 1, 100.0), Budget("*", 5, 1000.0))
    s = await scene(make_guard, clock, budgets=budgets)

    async def run(at: float, owner: str, ns: str) -> Verdict:
        s.at(at)
        verdict = await s.admit(owner, owner, namespace=ns)
        if verdict.admitted:
            await s.release(owner)
        return verdict

    assert (await run(0, "a", "shop")).admitted
    assert await run(1, "b", "shop") == Verdict(
        K.BUDGET_EXHAUSTED, "namespace shop budget of 1 per 1m40s exhausted (1 used); next at 2026-11-22T10:01:40Z"
    )
    assert (await run(2, "c", "pay")).admitted
    assert (await run(3, "d", "pay")).admitted
    assert await run(4, "e", "pay") == Verdict(
        K.BUDGET_EXHAUSTED, "global budget of 3 per 1m40s exhausted (3 used); next at 2026-11-22T10:01:40Z"
    )
    assert (await run(100, "f", "pay")).admitted  # 0 left the 100s window
    assert await run(101, "g", "pay") == Verdict(  # 2, 3, 100: room again when 2 leaves
        K.BUDGET_EXHAUSTED, "global budget of 3 per 1m40s exhausted (3 used); next at 2026-11-22T10:01:42Z"
    )
    assert (await run(103, "g", "pay")).admitted  # the 1000s budget counts each execution once: 4 of 5
    assert await run(104, "h", "pay") == Verdict(
        K.BUDGET_EXHAUSTED, "global budget of 5 per 16m40s exhausted (5 used); next at 2026-11-22T10:16:40Z"
    )


async def test_concurrency_limits_and_a_crashed_holder_frees_its_slot(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    s = await scene(make_guard, clock, max_running=2, max_running_per_namespace=1)
    assert (await s.admit("a", "t1", namespace="shop", lock_ttl=30.0)).admitted  # will "crash"
    assert await s.admit("b", "t2", namespace="shop") == Verdict(
        K.BUDGET_EXHAUSTED, "1 executions already running in namespace shop"
    )
    assert (await s.admit("c", "t3", namespace="pay")).admitted
    assert await s.admit("d", "t4", namespace="ops") == Verdict(
        K.BUDGET_EXHAUSTED, "2 executions already running (max 2)"
    )
    await s.release("c")
    assert (await s.admit("d", "t4", namespace="ops")).admitted
    s.at(29.9)
    assert (await s.admit("b", "t2", namespace="shop")).kind is K.BUDGET_EXHAUSTED
    s.at(30)  # a never released: its slot lapses with its lock
    assert (await s.admit("b", "t2", namespace="shop")).admitted


async def test_renewal_keeps_the_slot_too(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock, max_running=1)
    assert (await s.admit("a", "t1", lock_ttl=30.0)).admitted
    assert (await s.guard.admit(s.req("a", "t0"))).admitted  # an owner's own slot never counts against it
    s.at(20)
    assert await s.renew("a")
    s.at(45)
    assert (await s.admit("b", "t2")).kind is K.BUDGET_EXHAUSTED


async def test_the_breaker_opens_half_opens_and_closes(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock, breaker_threshold=2, breaker_cooloff=100.0)
    assert (await s.admit("a", "t1")).admitted
    s.at(1)
    await s.release("a", succeeded=False)
    status = await s.guard.status()
    assert status.breakers["pb"].state is BreakerState.CLOSED and status.breakers["pb"].failures == 1
    s.at(2)
    assert (await s.admit("b", "t2")).admitted
    s.at(3)
    await s.release("b", succeeded=False)  # open until 103
    s.at(4)
    assert await s.admit("c", "t3") == Verdict(
        K.CIRCUIT_OPEN, "circuit open after 2 consecutive failures, until 2026-11-22T10:01:43Z"
    )
    assert (await s.admit("c", "t3", playbook="other")).admitted  # per playbook
    assert (await s.guard.status()).breakers["pb"].state is BreakerState.OPEN
    s.at(103)
    assert (await s.guard.status()).breakers["pb"].state is BreakerState.HALF_OPEN
    assert (await s.admit("trial", "t4")).admitted
    half_open = Verdict(K.CIRCUIT_OPEN, "circuit half-open: a trial execution is already running")
    assert await s.admit("e", "t5") == half_open
    s.at(104)
    await s.release("trial", succeeded=False)  # re-opens for another cool-off
    assert await s.admit("e", "t5") == Verdict(
        K.CIRCUIT_OPEN, "circuit open after 3 consecutive failures, until 2026-11-22T10:03:24Z"
    )
    s.at(204)
    assert (await s.admit("trial2", "t6")).admitted
    await s.release("trial2", succeeded=True)
    status = await s.guard.status()
    assert "pb" not in status.breakers or status.breakers["pb"].state is BreakerState.CLOSED
    assert (await s.admit("f", "t7")).admitted


async def test_executions_a_breaker_stopped_go_on_one_at_a_time_as_its_trial(
        make_guard: GuardFactory, clock: VirtualClock) -> None:
    """Admitted before the breaker opened and stopped by it half way: closed, they go on; open, none
    does; half-open, one, as the breaker's trial, and the others wait for its outcome."""
    s = await scene(make_guard, clock, breaker_threshold=1, breaker_cooloff=100.0)
    for owner, target in (("a", "t1"), ("b", "t2"), ("c", "t3")):
        assert (await s.admit(owner, target)).admitted
    assert await s.guard.go_on_as_trial(s.reqs["b"])  # closed: nothing is taken
    assert (await s.guard.breaker("pb")).trial_owner == ""
    await s.release("a", succeeded=False)  # open until 100
    s.at(50)
    assert not await s.guard.go_on_as_trial(s.reqs["b"]) and not await s.guard.go_on_as_trial(s.reqs["c"])
    s.at(100)  # half-open; both resume, and take their lapsed locks and slots back first, as a resumed execution does
    assert await s.guard.reacquire(s.reqs["b"]) and await s.guard.reacquire(s.reqs["c"])
    assert await s.guard.go_on_as_trial(s.reqs["b"])
    assert (await s.guard.breaker("pb")).trial_owner == "b"
    assert await s.guard.go_on_as_trial(s.reqs["b"])  # its next step: still the trial
    assert not await s.guard.go_on_as_trial(s.reqs["c"])  # b's trial is live (its slot holds)
    half_open = Verdict(K.CIRCUIT_OPEN, "circuit half-open: a trial execution is already running")
    assert await s.admit("d", "t4") == half_open
    await s.release("b", succeeded=True)  # the trial worked: closed
    assert await s.guard.go_on_as_trial(s.reqs["c"])
    assert (await s.guard.breaker("pb")).state is BreakerState.CLOSED


async def test_a_trial_whose_slot_lapsed_is_taken_over_by_a_stopped_execution(
        make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock, breaker_threshold=1, breaker_cooloff=100.0)
    for owner, target in (("a", "t1"), ("b", "t2")):
        assert (await s.admit(owner, target)).admitted
    await s.release("a", succeeded=False)
    s.at(100)
    assert (await s.admit("trial", "t3")).admitted  # a new admission became the trial
    assert await s.guard.reacquire(s.reqs["b"])
    assert not await s.guard.go_on_as_trial(s.reqs["b"])
    s.at(161)  # its holder died: its slot (lock_ttl 60 s) lapsed unrenewed
    assert await s.guard.go_on_as_trial(s.reqs["b"])
    assert (await s.guard.breaker("pb")).trial_owner == "b"


async def test_one_breaker_reads_as_the_status_shows_it(make_guard: GuardFactory, clock: VirtualClock) -> None:
    """``breaker(name)``, read before every step, is ``status()``'s view of that one playbook:
    closed with no record, then through open, half-open and closed again."""
    s = await scene(make_guard, clock, breaker_threshold=1, breaker_cooloff=100.0)
    closed = BreakerView(BreakerState.CLOSED, 0, 0.0, "")
    assert await s.guard.breaker("pb") == closed and await s.guard.breaker("never-failed") == closed
    assert (await s.admit("a", "t1")).admitted
    await s.release("a", succeeded=False)  # open until 100
    for at, state in ((50, BreakerState.OPEN), (100, BreakerState.HALF_OPEN)):
        s.at(at)
        view = await s.guard.breaker("pb")
        assert view.state is state and view == (await s.guard.status()).breakers["pb"]
    assert (await s.admit("trial", "t2")).admitted
    assert (await s.guard.breaker("pb")).trial_owner == "trial"
    await s.release("trial", succeeded=True)
    assert (await s.guard.breaker("pb")).state is BreakerState.CLOSED
    assert await s.guard.breaker("other") == closed


async def test_a_release_with_no_outcome_leaves_the_breaker_as_it_was(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    """An execution that tried nothing (refused input, a target changed under it) neither
    counts as a failure nor closes the breaker; its lock, slot and cooldown go as usual."""
    s = await scene(make_guard, clock, breaker_threshold=2, breaker_cooloff=100.0)
    assert (await s.admit("a", "t1")).admitted
    await s.release("a", succeeded=False)
    for i in range(3):
        assert (await s.admit(f"refused{i}", f"r{i}")).admitted
        await s.release(f"refused{i}", succeeded=None)
    view = (await s.guard.status()).breakers["pb"]
    assert view.failures == 1 and view.state is BreakerState.CLOSED
    assert (await s.admit("b", "t1")).admitted  # the lock of t1 was freed
    await s.release("b", succeeded=False)
    assert (await s.guard.status()).breakers["pb"].state is BreakerState.OPEN


async def test_a_release_applied_twice_counts_once(
    make_guard: GuardFactory, clock: VirtualClock, raw_redis: Redis
) -> None:
    """A release can reach the state twice: redis-py sends a script again when the connection died
    before its reply, which Redis may have run already.  A failure was counted each time it came,
    and one failed execution opened a breaker of threshold 2.  The second one now changes nothing at
    all.  A stop at a step's gate tells no outcome: the release at the execution's end still counts."""
    s = await scene(make_guard, clock, breaker_threshold=2, breaker_cooloff=100.0)
    a = s.req("a", "t1", cooldown=50.0)
    assert (await s.guard.admit(a)).admitted
    s.at(10)
    await s.guard.release(a, succeeded=False)
    footprint = Footprint(s.guard, raw_redis)
    before = await footprint.take()
    await s.guard.release(a, succeeded=False)  # the same release again: same owner, same now
    await footprint.assert_kept(before)
    view = await s.guard.breaker("pb")
    assert (view.state, view.failures) == (BreakerState.CLOSED, 1)
    assert (await s.admit("b", "t2")).admitted  # one failure: the breaker is still closed
    await s.guard.release(s.reqs["b"], succeeded=None)  # b stops at a step's gate: slot given up
    await s.guard.release(s.reqs["b"], succeeded=None)
    assert await s.guard.take_back(s.reqs["b"]) == Finding(Check.PASSED)  # approved: held again
    s.at(20)
    await s.guard.release(s.reqs["b"], succeeded=False)
    await s.guard.release(s.reqs["b"], succeeded=False)
    assert await s.admit("c", "t3") == Verdict(
        K.CIRCUIT_OPEN, "circuit open after 2 consecutive failures, until 2026-11-22T10:02:00Z"
    )
    s.at(59)  # a's cooldown runs from its release: 10 + 50
    assert (await s.admit("c", "t1", playbook="other")).kind is K.COOLDOWN
    s.at(60)
    assert (await s.admit("c", "t1", playbook="other")).admitted


async def test_a_success_sent_again_leaves_a_failure_counted_meanwhile(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    """Another replica's release may land between a release and its resend: a success applied twice
    used to close the breaker again over the failure counted in between."""
    s = await scene(make_guard, clock, breaker_threshold=2, breaker_cooloff=100.0)
    assert (await s.admit("a", "t1")).admitted and (await s.admit("b", "t2")).admitted
    a = s.reqs["a"]
    await s.guard.release(a, succeeded=True)
    await s.release("b", succeeded=False)
    await s.guard.release(a, succeeded=True)  # a's release again, after b's
    assert (await s.guard.breaker("pb")).failures == 1


async def test_a_release_retried_after_an_outage_counts_its_outcome_once(
    make_guard: GuardFactory, clock: VirtualClock
) -> None:
    """A replica retries a release it never heard land until the state answers, long after the
    execution's lock and slot have lapsed (and been swept).  One that never landed counts then;
    one that had landed, its answer lost, counts no more."""
    s = await scene(make_guard, clock, breaker_threshold=3, breaker_cooloff=100.0)
    a, b = s.req("a", "t1", lock_ttl=30.0), s.req("b", "t2", lock_ttl=30.0)
    assert (await s.guard.admit(a)).admitted and (await s.guard.admit(b)).admitted
    s.at(10)
    await s.guard.release(a, succeeded=False)  # landed; its replica never heard so
    s.at(3600)  # an hour's outage later
    assert (await s.admit("c", "t3")).admitted  # an admission sweeps the lapsed slots
    await s.guard.release(a, succeeded=False)
    await s.guard.release(b, succeeded=False)  # never landed before
    view = await s.guard.breaker("pb")
    assert (view.state, view.failures) == (BreakerState.CLOSED, 2)


async def test_a_crashed_trial_lapses_with_its_lock(make_guard: GuardFactory, clock: VirtualClock) -> None:
    s = await scene(make_guard, clock, breaker_threshold=1, breaker_cooloff=10.0)
    assert (await s.admit("a", "t1")).admitted
    await s.release("a", succeeded=False)
    s.at(10)
    assert (await s.admit("trial", "t2", lock_ttl=30.0)).admitted  # and then its process dies
    s.at(39.9)
    assert (await s.admit("b", "t3")).kind is K.CIRCUIT_OPEN
    s.at(40)
    assert (await s.admit("b", "t3")).admitted  # the next trial
    view = (await s.guard.status()).breakers["pb"]
    assert view.state is BreakerState.HALF_OPEN and view.trial_owner == "b"
    assert view.to_json()["trial_execution"] == "b"


# --- evaluate: admit's verdict, consuming nothing (plan-only executions) -------------------------


@pytest.fixture
async def raw_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)  # bytes: DUMP payloads are binary
    yield client
    await client.aclose()


class Footprint:
    """Everything an adapter keeps, to prove a call changed none of it: the embedded state and
    its file, or every key under the Redis prefix with its serialized value and its expiry."""

    def __init__(self, guard: GuardrailStore, client: Redis) -> None:
        self.guard = guard
        self.client = client

    async def take(self) -> Any:
        if isinstance(self.guard, MemoryGuardrails):
            path = self.guard._path
            return copy.deepcopy(self.guard.state), path.read_bytes() if path and path.exists() else None
        assert isinstance(self.guard, RedisGuardrails)
        keys = sorted([k async for k in self.client.scan_iter(match=f"{self.guard.prefix}*", count=1000)])
        return {k: (await self.client.dump(k), await self.client.pttl(k)) for k in keys}

    async def assert_kept(self, before: Any) -> None:
        after = await self.take()
        if not isinstance(before, dict):
            assert after == before
            return
        assert sorted(after) == sorted(before), "a key was created or deleted"
        for key, (value, ttl) in before.items():
            assert after[key][0] == value, f"{key!r} was written"
            # an expiry only counts down (real time passes); one that grew was extended
            assert after[key][1] == ttl == -1 or 0 < after[key][1] <= ttl, f"the expiry of {key!r} was touched"


NO_WRITES = "#!lua flags=no-writes\n"  # Redis 7+: the server itself refuses any write the script tries


async def read_only_finding(guard: RedisGuardrails, client: Redis, req: Request) -> Finding:
    """EVALUATE run under Redis' ``no-writes`` flag: on the path it takes, a write would be an error."""
    keys, args = guard._admission(req)
    reply = await client.eval(NO_WRITES + lua.EVALUATE, len(keys), *keys, *args)
    return _finding([x.decode() for x in reply])


async def read_only_verdict(guard: RedisGuardrails, client: Redis, req: Request) -> Verdict:
    return rules.explain(await read_only_finding(guard, client, req), req, guard._policy)


async def finding_of(guard: GuardrailStore, client: Redis, req: Request) -> Finding:
    """The adapter's finding with its figures unrounded (a reason shows them to the second)."""
    if isinstance(guard, MemoryGuardrails):
        return rules.check(req, guard.state, guard._policy)
    assert isinstance(guard, RedisGuardrails)
    return await read_only_finding(guard, client, req)


async def evaluated_as_admitted(s: Scene, client: Redis, req: Request, times: int = 3) -> Verdict:
    """Evaluate ``req`` ``times`` times, prove that changed nothing, then admit it: every
    answer must be the same verdict, which is returned."""
    footprint = Footprint(s.guard, client)
    before = await footprint.take()
    verdicts = [await s.guard.evaluate(req) for _ in range(times)]
    await footprint.assert_kept(before)
    if isinstance(s.guard, RedisGuardrails):
        verdicts.append(await read_only_verdict(s.guard, client, req))
    admitted = await s.guard.admit(req)
    assert verdicts == [admitted] * len(verdicts)
    if admitted.admitted:
        s.reqs[req.owner] = req
    return admitted


async def _open_breaker(s: Scene) -> None:  # threshold 1, cool-off 100: open from 1 to 101
    assert (await s.admit("failed", "t0")).admitted
    s.at(1)
    await s.release("failed", succeeded=False)


async def _setup_paused(s: Scene) -> None:
    await s.guard.set_paused(True)


async def _setup_open(s: Scene) -> None:
    await _open_breaker(s)
    s.at(5)


async def _setup_half_open_with_a_trial(s: Scene) -> None:
    await _open_breaker(s)
    s.at(101)
    assert (await s.admit("trial", "t9")).admitted


async def _setup_half_open_idle(s: Scene) -> None:
    await _open_breaker(s)
    s.at(101)


async def _setup_locked(s: Scene) -> None:
    assert (await s.admit("holder", "t1")).admitted


async def _setup_cooldown(s: Scene) -> None:
    assert (await s.admit("a", "t0", limit_key="K", cooldown=100.0)).admitted
    s.at(10)


async def _setup_one_run(s: Scene) -> None:
    assert (await s.admit("a", "t0", limit_key="K", rate_max=1, rate_per=60.0)).admitted


async def _setup_one_run_elsewhere(s: Scene) -> None:
    assert (await s.admit("a", "t0", namespace="pay")).admitted


async def _setup_nothing(s: Scene) -> None:
    return None


@dataclass(frozen=True)
class Case:
    setup: Callable[[Scene], Awaitable[None]]
    expected: Verdict
    policy: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)  # the evaluated request: "b" on t1 unless told


BREAKER = {"breaker_threshold": 1, "breaker_cooloff": 100.0}
CASES = {
    "pass": Case(_setup_nothing, Verdict(K.EXECUTED, "all guardrails passed"),
                 {"budgets": (Budget("*", 1, 100.0),), "max_running": 1, **BREAKER},
                 {"rate_max": 1, "rate_per": 60.0, "cooldown": 30.0}),
    "paused": Case(_setup_paused, Verdict(K.PAUSED, "remediation is paused (kill switch)")),
    "open": Case(_setup_open,
                 Verdict(K.CIRCUIT_OPEN, "circuit open after 1 consecutive failures, until 2026-11-22T10:01:41Z"),
                 BREAKER),
    "half_open": Case(_setup_half_open_with_a_trial,
                      Verdict(K.CIRCUIT_OPEN, "circuit half-open: a trial execution is already running"), BREAKER),
    "half_open_idle": Case(_setup_half_open_idle, Verdict(K.EXECUTED, "all guardrails passed"), BREAKER),
    "locked": Case(_setup_locked, Verdict(K.LOCKED, "t1 is locked by execution holder", "holder")),
    "locked_own": Case(_setup_locked, Verdict(K.LOCKED, "t1 is locked by execution holder", "holder"),
                       probe={"owner": "holder"}),
    "cooldown": Case(_setup_cooldown,
                     Verdict(K.COOLDOWN, "in cooldown until 2026-11-22T10:01:40Z (another 1m30s)"),
                     probe={"limit_key": "K"}),
    "rate": Case(_setup_one_run,
                 Verdict(K.RATE_LIMITED,
                         "rate limited: 1 of 1 executions in the last 1m; next allowed at 2026-11-22T10:01:00Z"),
                 probe={"limit_key": "K", "rate_max": 1, "rate_per": 60.0}),
    "budget": Case(_setup_one_run,
                   Verdict(K.BUDGET_EXHAUSTED,
                           "namespace shop budget of 1 per 1m40s exhausted (1 used); next at 2026-11-22T10:01:40Z"),
                   {"budgets": (Budget("*", 5, 100.0), Budget("shop", 1, 100.0))}),
    "budget_global": Case(_setup_one_run_elsewhere,
                          Verdict(K.BUDGET_EXHAUSTED,
                                  "global budget of 1 per 1m40s exhausted (1 used); next at 2026-11-22T10:01:40Z"),
                          {"budgets": (Budget("*", 1, 100.0),)}),
    "running": Case(_setup_one_run_elsewhere, Verdict(K.BUDGET_EXHAUSTED, "1 executions already running (max 1)"),
                    {"max_running": 1}),
    "running_ns": Case(_setup_one_run, Verdict(K.BUDGET_EXHAUSTED, "1 executions already running in namespace shop"),
                       {"max_running_per_namespace": 1}),
}


@pytest.mark.parametrize("name", CASES)
async def test_evaluate_gives_admits_verdict_and_changes_nothing(
    name: str, make_guard: GuardFactory, clock: VirtualClock, raw_redis: Redis
) -> None:
    case = CASES[name]
    s = await scene(make_guard, clock, **case.policy)
    await case.setup(s)
    probe = {"owner": "b", "target": "t1", **case.probe}
    req = s.req(probe.pop("owner"), probe.pop("target"), **probe)
    assert await evaluated_as_admitted(s, raw_redis, req) == case.expected


async def test_evaluations_consume_no_limit(make_guard: GuardFactory, clock: VirtualClock, raw_redis: Redis) -> None:
    """Three dry runs of a trial playbook used to exhaust the global budget and refuse a live fix."""
    s = await scene(make_guard, clock, budgets=(Budget("*", 1, 3600.0),), max_running=1,
                    max_running_per_namespace=1)
    limits = {"limit_key": "K", "rate_max": 1, "rate_per": 600.0, "cooldown": 300.0, "lock_ttl": 60.0}
    for n in range(5):  # plan-only runs on the same target and on others
        assert (await s.evaluate(f"dry{n}", "t1", **limits)).admitted
        assert (await s.evaluate(f"dry{n}", f"t{n + 2}", **limits)).admitted
    assert (await evaluated_as_admitted(s, raw_redis, s.req("live", "t1", **limits))).admitted
    # now the live execution holds every limit, and evaluate says so exactly as admit does
    assert await evaluated_as_admitted(s, raw_redis, s.req("dry", "t1", **limits)) == Verdict(
        K.LOCKED, "t1 is locked by execution live", "live"
    )
    assert (await evaluated_as_admitted(s, raw_redis, s.req("dry", "t2", **limits))).kind is K.COOLDOWN
    await s.release("live")
    s.at(300)
    assert (await evaluated_as_admitted(s, raw_redis, s.req("dry", "t2", **limits))).kind is K.RATE_LIMITED
    assert (await evaluated_as_admitted(s, raw_redis, s.req("dry", "t2"))).kind is K.BUDGET_EXHAUSTED


async def test_evaluate_never_claims_a_half_open_breakers_trial(
    make_guard: GuardFactory, clock: VirtualClock, raw_redis: Redis
) -> None:
    """Half-open with no trial running: evaluate answers what admit would (executed) without
    becoming the trial, so a dry run never keeps the live execution that would test the fix out."""
    s = await scene(make_guard, clock, **BREAKER)
    await _setup_half_open_idle(s)
    for n in range(3):
        assert (await s.evaluate(f"dry{n}", f"t{n + 2}")).admitted
    view = (await s.guard.status()).breakers["pb"]
    assert view.state is BreakerState.HALF_OPEN and view.trial_owner == ""
    assert (await evaluated_as_admitted(s, raw_redis, s.req("live", "t1"))).admitted  # the trial
    assert (await s.guard.status()).breakers["pb"].trial_owner == "live"
    half_open = Verdict(K.CIRCUIT_OPEN, "circuit half-open: a trial execution is already running")
    assert await s.evaluate("dry", "t2") == half_open
    assert await s.evaluate("live", "t2") == Verdict(K.EXECUTED, "all guardrails passed")  # as admit: its own trial
    assert (await s.guard.status()).breakers["pb"].trial_owner == "live"


async def test_evaluate_leaves_no_key_in_redis(redis_prefix: str, clock: VirtualClock, raw_redis: Redis) -> None:
    policy = Policy(budgets=(Budget("*", 5, 3600.0), Budget("shop", 2, 60.0)), max_running=2,
                    max_running_per_namespace=1, breaker_threshold=1)
    guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), policy, clock)
    try:
        s = Scene(guard, clock)
        limits = {"limit_key": "k1", "cooldown": 60.0, "rate_max": 3, "rate_per": 600.0}
        for n in range(5):
            assert (await s.evaluate(f"dry{n}", "t1", **limits)).admitted
        # the state's marker, set when the state was opened, is the only key
        assert [k async for k in raw_redis.scan_iter(f"{redis_prefix}*")] == [f"{redis_prefix}state".encode()]
        assert (await s.admit("a", "t1", **limits)).admitted
        await guard.set_paused(True)
        assert await evaluated_as_admitted(s, raw_redis, s.req("b", "t2")) == Verdict(
            K.PAUSED, "remediation is paused (kill switch)"
        )
    finally:
        await guard.close()


async def test_a_failing_evaluation_fails_closed(redis_prefix: str, clock: VirtualClock, raw_redis: Redis) -> None:
    """A script error (here: a key of the wrong type) is GuardrailUnavailable, never a verdict."""
    guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), Policy(), clock)
    try:
        await raw_redis.set(f"{redis_prefix}lock:t1", "not a hash")
        with pytest.raises(GuardrailUnavailable, match="redis evaluate failed"):
            await guard.evaluate(Scene(guard, clock).req("a", "t1"))
    finally:
        await guard.close()


async def test_random_operations_agree_with_the_pure_rules(
    make_guard: GuardFactory, clock: VirtualClock, raw_redis: Redis
) -> None:
    policy = Policy(
        budgets=(Budget("*", 8, 120.0), Budget("shop", 4, 60.0)),
        max_running=3,
        max_running_per_namespace=2,
        breaker_threshold=2,
        breaker_cooloff=50.0,
    )
    guard = await make_guard(policy)
    footprint = Footprint(guard, raw_redis)
    oracle = GuardState()
    rng = random.Random(20261122)
    probe = random.Random(7)  # its own generator: evaluations leave the walk of the other operations as it was
    evaluated: set[DecisionKind] = set()
    figures: dict[Check, set[float]] = {}  # the times refusals named, per check
    admitted: dict[str, Request] = {}
    history: list[Request] = []
    seen: list[tuple[str, object]] = []
    for n in range(400):
        op = rng.random()
        now = clock.now().timestamp()
        if op < 0.55:
            target = rng.choice(["t1", "t2", "t3", "t4"])
            req = Request(
                owner=rng.choice([f"e{n}", *list(admitted)[:1]]),
                playbook=rng.choice(["pa", "pb"]),
                target_key=target,
                limit_key=rng.choice([target, "shared"]),
                namespace=rng.choice(["shop", "pay"]),
                now=now,
                rate_max=rng.choice([0, 2, 3]),
                rate_per=rng.choice([30.0, 90.0]),
                cooldown=rng.choice([0.0, 0.0, 15.0]),
                lock_ttl=rng.choice([20.0, 45.0]),
            )
            plan: Verdict | None = None
            if probe.random() < 0.5:  # plan-only runs first: they agree with the rules and change nothing
                before, expected_state = await footprint.take(), copy.deepcopy(oracle)
                for _ in range(probe.randint(1, 3)):
                    plan, rule = await guard.evaluate(req), rules.evaluate(req, oracle, policy)
                    assert plan == rule, f"operation {n}: adapter evaluated {plan}, the rules say {rule}"
                    evaluated.add(plan.kind)
                assert oracle == expected_state
                await footprint.assert_kept(before)
            # the figures behind the verdict agree to the bit, not only once rounded into a reason
            finding = rules.check(req, oracle, policy)
            assert await finding_of(guard, raw_redis, req) == finding, f"operation {n}"
            figures.setdefault(finding.check, set()).add(finding.at)
            got = await guard.admit(req)
            want = rules.admit(req, oracle, policy)
            assert plan is None or plan == got, f"operation {n}: evaluated {plan}, then admit said {got}"
            if got.admitted:
                admitted[req.owner] = req
                history.append(req)
        elif op < 0.65 and history:  # running ones, and released or lapsed ones that must not renew
            req = rng.choice(history)
            resume = rng.random()
            if resume < 0.15:  # or resume, taking a free or lapsed lock back
                got, want = await guard.reacquire(req), rules.reacquire(req, oracle, now)  # type: ignore[assignment]
            elif resume < 0.3:  # or go on after a step's approval: lock and, within the limits, a slot
                got, want = (await guard.take_back(req),  # type: ignore[assignment]
                             rules.take_back(req, oracle, policy, now))
            else:
                got, want = await guard.renew(req), rules.renew(req, oracle, now)  # type: ignore[assignment]
        elif op < 0.85 and admitted:
            req = admitted.pop(rng.choice(sorted(admitted)))
            ok = rng.random() < 0.5
            if rng.random() < 0.15:  # lost the decision race: give the admission back
                await guard.abandon(req)
                rules.abandon(req, oracle)
            else:
                outcome = None if rng.random() < 0.2 else ok  # None: nothing tried, breaker left alone
                await guard.release(req, succeeded=outcome)
                rules.release(req, oracle, policy, succeeded=outcome, now=now)
            got = want = None  # type: ignore[assignment]
        elif op < 0.87:
            paused = rng.random() < 0.5
            await guard.set_paused(paused)
            oracle.paused = paused
            got = want = None  # type: ignore[assignment]
        else:
            clock.advance_sync(rng.choice([0.5, 3.0, 10.0, 25.0]))
            continue
        assert got == want, f"operation {n}: adapter said {got}, the rules say {want}"
        seen.append((type(got).__name__, getattr(got, "kind", got)))
    assert await guard.status() == rules.status(oracle.paused, oracle.breakers, policy, clock.now().timestamp())
    outcomes = {kind for _, kind in seen}
    # the walk must have exercised every rule, or agreement proves little
    assert outcomes >= {K.EXECUTED, K.LOCKED, K.COOLDOWN, K.RATE_LIMITED, K.BUDGET_EXHAUSTED, K.CIRCUIT_OPEN,
                        K.PAUSED, True, False}
    assert evaluated == {k for k in outcomes if isinstance(k, DecisionKind)}
    for check in (Check.OPEN, Check.COOLDOWN, Check.RATE, Check.BUDGET):  # refusals that say when, with several whens
        assert len(figures[check]) > 1 and 0.0 not in figures[check], check


async def test_a_pause_binds_every_replica_at_once(redis_prefix: str, clock: VirtualClock) -> None:
    url = prefixed(REDIS_URL, redis_prefix)
    one = await RedisGuardrails.open(url, Policy(), clock)
    two = await RedisGuardrails.open(url, Policy(), clock)
    try:
        await one.set_paused(True)
        verdict = await two.admit(Scene(two, clock).req("a"))
        assert verdict.kind is K.PAUSED and await two.paused()
        await two.set_paused(False)
        assert (await one.admit(Scene(one, clock).req("a"))).admitted
    finally:
        await one.close()
        await two.close()


async def test_unreachable_redis_fails_closed_quickly(clock: VirtualClock) -> None:
    guard = await RedisGuardrails.open(f"redis://127.0.0.1:{free_port()}/0", Policy(), clock)
    req = Scene(guard, clock).req("a")
    started = time.monotonic()
    try:
        for call in (guard.admit(req), guard.evaluate(req), guard.renew(req), guard.release(req, succeeded=True),
                     guard.paused(), guard.set_paused(True), guard.status(), guard.ping()):
            with pytest.raises(GuardrailUnavailable):
                await call
    finally:
        await guard.close()
    assert time.monotonic() - started < 5  # refused connections fail at once, not after long retries


async def test_redis_keys_live_under_the_prefix_and_expire(redis_prefix: str, clock: VirtualClock) -> None:
    policy = Policy(budgets=(Budget("*", 5, 3600.0),), breaker_threshold=1)
    guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), policy, clock)
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        s = Scene(guard, clock)
        assert (await s.admit("a", "t1", limit_key="k1", cooldown=60.0, rate_max=3, rate_per=600.0)).admitted
        assert (await s.admit("b", "t2")).admitted
        await s.release("b", succeeded=False)
        await guard.set_paused(True)
        ttl = {k.removeprefix(redis_prefix): await client.pttl(k) async for k in client.scan_iter(f"{redis_prefix}*")}
    finally:
        await client.aclose()
        await guard.close()
    forever = {"paused", "breaker:pb", "breakers", "seq", "state"}  # state: the marker (see test_state_lost)
    assert set(ttl) == forever | {"lock:t1", "lock:t2", "cooldown:k1", "rate:k1", "running", "running-ns",
                                  "budget:*", "outcome:b"}
    assert all(ttl[k] == -1 for k in forever)
    # each lapses a grace period (an hour by default) after its value stops mattering; a lock's
    # record (its last holder, for reacquire) stays LOCK_RECORD_KEPT after it lapses or is released
    assert 0 < ttl["cooldown:k1"] <= (60 + 3600) * 1000
    assert LOCK_RECORD_KEPT * 1000 < ttl["lock:t1"] <= (600 + LOCK_RECORD_KEPT) * 1000
    assert 0 < ttl["lock:t2"] <= LOCK_RECORD_KEPT * 1000
    assert 0 < ttl["rate:k1"] <= (2 * 600 + 3600) * 1000 and 0 < ttl["budget:*"] <= (2 * 3600 + 3600) * 1000
    # that b's outcome was counted is kept a day (and the grace), against the same release applied again
    assert OUTCOME_RECORD_KEPT * 1000 < ttl["outcome:b"] <= (OUTCOME_RECORD_KEPT + 3600) * 1000
    assert all(ttl[k] > 0 for k in set(ttl) - forever)
