"""The embedded guardrail state lives in the store's SQLite database (issue 17 item 2).

A decision and the guardrail change it made are committed in one transaction: a crash
before the decision batch commits keeps neither, one after it keeps both.  Before, the state
was a file written (and fsynced) on its own, so a crash between the two writes left an
admission with no decision.  The crash is a real one: the deciding process ends with
``os._exit`` (no cleanup, no commit) and the parent opens what it left on disk.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.core.guardrails import Policy, Request
from remediator.guardstate.memory import MemoryGuardrails
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0

ROOT = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from datetime import datetime
    from pathlib import Path
    from remediator.clock import VirtualClock
    from remediator.core.guardrails import Policy, Request
    from remediator.guardstate.memory import MemoryGuardrails
    from remediator.store.sqlite import SQLiteStore
    from tests.store.test_contract import a_decision, alerts, firing

    async def main(data: Path, crash_inside: bool) -> None:
        clock = VirtualClock(datetime.fromisoformat("2026-11-22T10:00:00+00:00"))
        store = await SQLiteStore.open(data / "remediator.db", clock)
        guard = await MemoryGuardrails.open_in(store, Policy(), clock, data / "guardrails.json")
        [received] = alerts(firing("web"))
        decision = a_decision(received.alert)
        async with store.decision_batch():
            async with store.decision_unit():
                req = Request(decision.execution_id or "", "pb", "Deployment/shop/web", "pb|web", "shop",
                              clock.now().timestamp(), cooldown=600.0)
                assert (await guard.admit(req)).admitted
                assert await store.record_decision(decision)
            if crash_inside:
                os._exit(9)  # the daemon dies before the batch commits
        os._exit(0)  # after it: nothing closed, nothing flushed

    asyncio.run(main(Path(sys.argv[1]), sys.argv[2] == "inside"))
    """
)


async def left_on_disk(data: Path) -> tuple[bool, bool]:
    """(decision recorded, target locked) as a restarted daemon finds them."""
    clock = VirtualClock(T0)
    store = await SQLiteStore.open(data / "remediator.db", clock)
    guard = await MemoryGuardrails.open_in(store, Policy(), clock, data / "guardrails.json")
    try:
        from tests.store.test_contract import a_decision, alerts, firing

        [received] = alerts(firing("web"))
        did = a_decision(received.alert).execution_id or execution_id(received.alert.dedup_key, "pb")
        return await store.decision(did) is not None, "Deployment/shop/web" in guard.state.locks
    finally:
        await guard.close()
        await store.close()


@pytest.mark.parametrize(("crash", "kept"), [("inside", (False, False)), ("after", (True, True))])
async def test_a_decision_and_its_admission_are_durable_together_or_not_at_all(
    tmp_path: Path, crash: str, kept: tuple[bool, bool]
) -> None:
    code, stderr = decide_and_die(tmp_path, crash)
    assert code == (9 if crash == "inside" else 0), stderr
    assert await left_on_disk(tmp_path) == kept


def decide_and_die(data: Path, crash: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), crash], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    return done.returncode, done.stderr


async def test_a_state_file_from_before_is_taken_over_once(tmp_path: Path, vclock: VirtualClock) -> None:
    path = tmp_path / "guardrails.json"
    old = MemoryGuardrails(Policy(), vclock, path)
    req = Request("ex-1", "pb", "Deployment/shop/web", "pb|web", "shop", vclock.now().timestamp(), cooldown=600.0)
    assert (await old.admit(req)).admitted
    await old.close()
    store = await SQLiteStore.open(tmp_path / "remediator.db", vclock)
    try:
        guard = await MemoryGuardrails.open_in(store, Policy(), vclock, path)
        assert guard.state.locks["Deployment/shop/web"].owner == "ex-1"
        await guard.close()
        assert not path.exists() and path.with_name("guardrails.json.imported").exists()
        again = await MemoryGuardrails.open_in(store, Policy(), vclock, path)  # from the rows now
        assert again.state.locks == guard.state.locks and again.state.cooldown_until == guard.state.cooldown_until
        await again.close()
    finally:
        await store.close()


async def test_a_rolled_back_transaction_takes_the_state_back(tmp_path: Path, vclock: VirtualClock) -> None:
    """A change whose transaction is lost (the disk refused the commit) is forgotten in memory too."""
    store = await SQLiteStore.open(tmp_path / "remediator.db", vclock)
    guard = await MemoryGuardrails.open_in(store, Policy(), vclock, tmp_path / "guardrails.json")
    try:
        req = Request("ex-1", "pb", "Deployment/shop/web", "pb|web", "shop", vclock.now().timestamp())
        with pytest.raises(RuntimeError):
            async with store.decision_batch():
                assert (await guard.admit(req)).admitted
                assert "Deployment/shop/web" in guard.state.locks
                await store._shared._roll_back(RuntimeError("the disk refused the commit"))
                raise RuntimeError("the batch fails")
        rival = Request("ex-2", "pb", "Deployment/shop/web", "pb|web", "shop", vclock.now().timestamp())
        assert (await guard.admit(rival)).admitted  # ex-1's lock went with its transaction
        assert guard.state.locks["Deployment/shop/web"].owner == "ex-2"
    finally:
        await guard.close()
        await store.close()


async def test_unreadable_state_rows_start_it_paused_until_an_operator_resumes(
    tmp_path: Path, vclock: VirtualClock
) -> None:
    """A row a person (or a bad restore) left undecodable: forgetting cooldowns and locks must not be
    silent, so the daemon starts paused, as with an unreadable state file, and resuming is a choice."""
    store = await SQLiteStore.open(tmp_path / "remediator.db", vclock)
    try:
        guard = await MemoryGuardrails.open_in(store, Policy(), vclock, tmp_path / "guardrails.json")
        req = Request("ex-1", "pb", "Deployment/shop/web", "pb|web", "shop", vclock.now().timestamp(), cooldown=600.0)
        assert (await guard.admit(req)).admitted
        await guard.close()
    finally:
        await store.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "remediator.db") as db:  # another process's hand on the file
        assert db.execute("UPDATE guard_state SET value = '{\"owner\": ' WHERE map = 'locks'").rowcount == 1

    store = await SQLiteStore.open(tmp_path / "remediator.db", vclock)
    try:
        guard = await MemoryGuardrails.open_in(store, Policy(), vclock, tmp_path / "guardrails.json")
        other = Request("ex-2", "pb", "Deployment/shop/api", "pb|api", "shop", vclock.now().timestamp())
        assert await guard.paused()
        assert (await guard.admit(other)).kind.value == "paused"
        await guard.set_paused(False)  # an operator resumes on purpose
        assert (await guard.admit(other)).admitted
        await guard.close()
    finally:
        await store.close()
