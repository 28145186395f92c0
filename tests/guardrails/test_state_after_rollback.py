"""The embedded guardrail state after a transaction holding its changes was rolled back.

With the embedded store the state is rows of the store's database, changed in memory first and
written in the decision batch's transaction (remediator.guardstate.memory).  When that transaction
is rolled back, its changes never existed: no answer may rest on them, neither a refusal (an
approval finished as refused, citing a lock that was never on disk) nor a read-only verdict.

The rollback is a real one (a webhook delivery filling the database, see
tests/store/test_rollback_while_waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.core.guardrails import Policy, Request
from remediator.guardstate.memory import MemoryGuardrails
from remediator.store.sqlite import SQLiteStore
from tests.store.test_rollback_while_waiting import FillingDelivery, in_an_open_batch

TARGET = "Deployment/shop/web"


@pytest.fixture
async def store(tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "store.db", vclock)
    yield s
    await s.close()


@pytest.fixture
async def guard(store: SQLiteStore, tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[MemoryGuardrails]:
    g = await MemoryGuardrails.open_in(store, Policy(), vclock, tmp_path / "guardrails.json")
    yield g
    await g.close()


def request(vclock: VirtualClock, execution: str, playbook: str = "pb") -> Request:
    return Request(execution, playbook, TARGET, f"{playbook}|web", "shop", vclock.now().timestamp())


async def test_no_refusal_rests_on_an_admission_whose_transaction_is_rolled_back_meanwhile(
    store: SQLiteStore, guard: MemoryGuardrails, vclock: VirtualClock
) -> None:
    """ex-a is admitted in the decision loop's open batch; ex-b (an approval re-checking the
    guardrails, outside the batch) is refused, the target locked by ex-a, and waits for that lock to
    be committed before answering.  The transaction is rolled back while it waits: ex-b must hear
    that the state is unavailable, not that ex-a holds the target.  Before, the wait returned as if
    committed, and ex-b was refused on a lock that never existed on disk."""

    async def admit_a() -> None:
        assert (await guard.admit(request(vclock, "ex-a"))).admitted

    batch_lost = await in_an_open_batch(store, admit_a)  # ex-a's lock not yet committed
    delivery = await FillingDelivery.prepare(store)
    await delivery.holding_the_lock()
    delivery.let_go()
    with pytest.raises(GuardrailUnavailable):
        await guard.admit(request(vclock, "ex-b"))  # refused in memory; waits for the lock's commit
    await delivery.rolled_back()
    await batch_lost()
    assert (await guard.admit(request(vclock, "ex-b"))).admitted  # ex-a's lock went with its transaction
    assert [(m, k) for m, k, _ in await store.guard_rows() if m == "locks"] == [("locks", TARGET)]



async def an_admission_rolled_back(store: SQLiteStore, guard: MemoryGuardrails, vclock: VirtualClock) -> None:
    """ex-a admitted in a decision batch whose transaction is then rolled back: the state in memory
    holds ex-a's lock, the database does not."""
    with pytest.raises(StoreUnavailable):
        async with store.decision_batch():
            async with store.decision_unit():
                assert (await guard.admit(request(vclock, "ex-a"))).admitted
            delivery = await FillingDelivery.prepare(store)
            await delivery.holding_the_lock()
            delivery.let_go()
            await delivery.rolled_back()  # and ex-a's admission with it
    assert await store.guard_rows() == []


async def test_reads_answer_from_the_state_on_disk_after_a_rollback(
    store: SQLiteStore, guard: MemoryGuardrails, vclock: VirtualClock
) -> None:
    """A read-only verdict (an alert of a playbook that asks for approval, a plan-only one) and the
    guardrails panel after a rolled-back batch: from what the database holds, not from the lost
    admission.  Before, only the next change reloaded the state, so until then ex-b was found
    locked out by ex-a, and the panel listed ex-a's lock."""
    await an_admission_rolled_back(store, guard, vclock)
    verdict = await guard.evaluate(request(vclock, "ex-b", playbook="pb2"))
    assert verdict.admitted, verdict
    assert (await guard.usage()).locks == {}


async def test_changes_that_find_the_state_stale_together_reload_it_once(
    store: SQLiteStore, guard: MemoryGuardrails, vclock: VirtualClock
) -> None:
    """Two admissions (two targets) after a rollback, both finding the state stale while the
    connection is busy.  Before, each reloaded it: the second read of the rows came after the first
    admission was made in memory but before it was written, and put the state back from under it;
    its lock was then on disk but not in memory, and a rival was admitted to the same target."""
    await an_admission_rolled_back(store, guard, vclock)
    api, db = (Request(f"ex-{app}", "pb", f"Deployment/shop/{app}", f"pb|{app}", "shop", vclock.now().timestamp())
               for app in ("api", "db"))
    async with store._tx:  # the connection busy (a statement on the disk's thread): both wait for it
        first = asyncio.create_task(guard.admit(api))
        second = asyncio.create_task(guard.admit(db))
        await asyncio.sleep(0)  # one turn of the loop (no time passes): each runs until it waits
    assert (await first).admitted and (await second).admitted
    rival = Request("ex-rival", "pb2", "Deployment/shop/api", "pb2|api", "shop", vclock.now().timestamp())
    verdict = await guard.admit(rival)
    assert verdict.kind is DecisionKind.LOCKED and verdict.holder == "ex-api", verdict
