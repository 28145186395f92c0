"""The guardrail state's usage, as the guardrails panel reads it: each budget's executions in its
window (and when the next fits), the live concurrency slots and the live locks; the same from
the embedded state and from Redis, and counted as the next admission would count them."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.guardrails import Budget, BudgetUse, Lock, Policy, Slot
from remediator.guardstate import redis as redis_guardstate
from remediator.guardstate.redis import RedisGuardrails
from remediator.ports import GuardrailUsage
from tests.guardrails.conftest import REDIS_URL, GuardFactory, delete_prefix, prefixed
from tests.guardrails.test_contract import Scene
from tests.payloads import T0

POLICY = Policy(budgets=(Budget("*", 3, 3600.0), Budget("shop", 2, 600.0), Budget("shop", 5, 7200.0)))


async def test_budgets_slots_and_locks_as_the_next_admission_sees_them(make_guard: GuardFactory,
                                                                        clock: VirtualClock) -> None:
    guard = await make_guard(POLICY)
    assert isinstance(guard, GuardrailUsage)
    scene = Scene(guard, clock)
    assert (await guard.usage()).budgets == (BudgetUse("*", 3, 3600.0, 0), BudgetUse("shop", 2, 600.0, 0),
                                             BudgetUse("shop", 5, 7200.0, 0))
    assert (await scene.admit("a", "shop/web", lock_ttl=600.0)).admitted
    scene.at(60)
    assert (await scene.admit("b", "shop/api", lock_ttl=600.0)).admitted
    scene.at(120)
    assert (await scene.admit("c", "pay/db", namespace="payments", lock_ttl=600.0)).admitted
    await scene.release("b")
    scene.at(180)
    usage = await guard.usage()
    assert usage.budgets == (
        BudgetUse("*", 3, 3600.0, 3, (T0 + timedelta(hours=1)).timestamp()),  # full: a leaves the window first
        BudgetUse("shop", 2, 600.0, 2, (T0 + timedelta(minutes=10)).timestamp()),
        BudgetUse("shop", 5, 7200.0, 2, 0.0),  # room
    )
    assert usage.running == {"a": Slot("shop", T0.timestamp() + 600), "c": Slot("payments", T0.timestamp() + 720)}
    assert usage.locks == {"pay/db": Lock("c", T0.timestamp() + 720), "shop/web": Lock("a", T0.timestamp() + 600)}
    refused = await scene.evaluate("d", "shop/other")
    assert refused.kind is DecisionKind.BUDGET_EXHAUSTED and "3 used" in refused.reason  # what the panel said
    scene.at(630)  # a's lock and slot lapsed; a's shop execution left the 10-minute window, b's not yet
    usage = await guard.usage()
    assert usage.running == {"c": Slot("payments", T0.timestamp() + 720)}
    assert usage.locks == {"pay/db": Lock("c", T0.timestamp() + 720)}
    assert [b.used for b in usage.budgets] == [3, 1, 2] and usage.budgets[1].next_at == 0.0


async def test_redis_lists_only_its_own_prefixs_locks(clock: VirtualClock) -> None:
    """Daemons sharing one Redis are told apart by prefix, glob characters in it included."""
    token = secrets.token_hex(4)
    starred, plain = f"test-usage-{token}*:", f"test-usage-{token}x:"
    guards = [await RedisGuardrails.open(prefixed(REDIS_URL, p), POLICY, clock) for p in (starred, plain)]
    try:
        for guard, target in zip(guards, ("shop/mine", "shop/theirs"), strict=True):
            assert (await Scene(guard, clock).admit(target, target, lock_ttl=600.0)).admitted
        assert list((await guards[0].usage()).locks) == ["shop/mine"]
        assert list((await guards[1].usage()).locks) == ["shop/theirs"]
    finally:
        for guard in guards:
            await guard.close()
        await delete_prefix(f"test-usage-{token}")


async def test_redis_reads_lock_records_a_chunk_at_a_time_and_stops_at_its_cap(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven live locks and five lapsed ones; records read three at a time, at most four listed: four live
    locks, and fewer HMGETs than records (it stops once it has its four)."""
    token = secrets.token_hex(4)
    guard = await RedisGuardrails.open(prefixed(REDIS_URL, f"test-usage-{token}:"), Policy(), clock)
    try:
        scene = Scene(guard, clock)
        for i in range(5):
            assert (await scene.admit(f"old{i}", f"shop/old{i}", lock_ttl=60.0)).admitted
        scene.at(120)  # those locks lapsed
        for i in range(7):
            assert (await scene.admit(f"new{i}", f"shop/new{i}", lock_ttl=600.0)).admitted
        assert len((await guard.usage()).locks) == 7
        monkeypatch.setattr(redis_guardstate, "USAGE_LOCKS", 4)
        monkeypatch.setattr(redis_guardstate, "USAGE_CHUNK", 3)
        sent: list[int] = []
        pipeline = guard._client.pipeline

        def counting(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            execute = pipe.execute

            async def counted() -> Any:
                sent.append(len(pipe.command_stack))
                return await execute()

            pipe.execute = counted
            return pipe

        monkeypatch.setattr(guard._client, "pipeline", counting)
        usage = await guard.usage()
        locks, first = usage.locks, list(sent)
        monkeypatch.setattr(redis_guardstate, "USAGE_LOCKS", 8)
        whole = await guard.usage()  # room for every live lock: the cap is never reached, none cut
    finally:
        await guard.close()
        await delete_prefix(f"test-usage-{token}")
    assert len(locks) == 4 and all(name.startswith("shop/new") for name in locks) and usage.locks_cut
    assert max(first[1:]) <= 3 and sum(first[1:]) < 12  # chunks of at most 3 records, not all 12 read
    assert len(whole.locks) == 7 and not whole.locks_cut
    assert usage.to_json()["locks_cut"] is True and whole.to_json()["locks_cut"] is False
