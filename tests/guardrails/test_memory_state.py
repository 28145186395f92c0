"""The embedded guardrail state survives restarts and never fails open.

It is the single-node default, so its JSON file is the only memory of cooldowns,
rate windows, locks and breakers across a restart.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.errors import ConfigError, GuardrailUnavailable
from remediator.core.guardrails import LOCK_RECORD_KEPT, Policy, Request
from remediator.guardstate.memory import MemoryGuardrails
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0

POLICY = Policy(breaker_threshold=1, breaker_cooloff=600.0)


def req(clock: VirtualClock, owner: str, target: str, **kw: float) -> Request:
    return Request(owner, "pb", target, target, "shop", clock.now().timestamp(), **kw)  # type: ignore[arg-type]


def set_aside(directory: Path) -> list[str]:
    return [p.read_text() for p in directory.glob("guardrails.json.unreadable-*")]


async def test_limits_survive_a_restart(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(POLICY, clock, path)
    held = req(clock, "held", "t1", lock_ttl=60.0)
    assert (await guard.admit(held)).admitted
    cooled = req(clock, "cooled", "t2", cooldown=300.0, rate_max=1, rate_per=3600.0)
    assert (await guard.admit(cooled)).admitted
    await guard.release(cooled, succeeded=True)
    failing = Request("failing", "other", "t3", "t3", "shop", clock.now().timestamp())
    assert (await guard.admit(failing)).admitted
    await guard.release(failing, succeeded=False)
    clock.advance_sync(30)
    assert await guard.renew(held)  # lock now until 90
    await guard.close()

    clock.advance_sync(50)  # at 80
    guard = MemoryGuardrails(POLICY, clock, path)
    try:
        assert (await guard.admit(req(clock, "x", "t1"))).kind is DecisionKind.LOCKED  # renewal was persisted
        assert (await guard.admit(req(clock, "x", "t2", rate_max=1, rate_per=3600.0))).kind is DecisionKind.COOLDOWN
        clock.advance_sync(300)
        assert (await guard.admit(req(clock, "x", "t2", rate_max=1, rate_per=3600.0))).kind is (
            DecisionKind.RATE_LIMITED
        )
        other = Request("y", "other", "t4", "t4", "shop", clock.now().timestamp())
        assert (await guard.admit(other)).kind is DecisionKind.CIRCUIT_OPEN
        await guard.set_paused(True)
    finally:
        await guard.close()
    guard = MemoryGuardrails(POLICY, clock, path)
    assert await guard.paused()
    await guard.close()


@pytest.mark.parametrize("kept_in", ["file", "store"])
async def test_a_counted_outcome_is_remembered_across_a_restart(tmp_path: Path, clock: VirtualClock,
                                                                kept_in: str) -> None:
    """A replica retries a release it never heard land; if the daemon restarted meanwhile, the state
    it reads back must still know that the outcome was counted, or the retry counts it again."""
    policy = Policy(breaker_threshold=2, breaker_cooloff=600.0)
    failing = req(clock, "failing", "t1")

    async def opened() -> tuple[MemoryGuardrails, SQLiteStore | None]:
        if kept_in == "file":
            return MemoryGuardrails(policy, clock, tmp_path / "guardrails.json"), None
        store = await SQLiteStore.open(tmp_path / "remediator.db", clock)
        return await MemoryGuardrails.open_in(store, policy, clock, tmp_path / "guardrails.json"), store

    for retry in (False, True):  # the release, then its retry after a restart
        guard, store = await opened()
        try:
            if not retry:
                assert (await guard.admit(failing)).admitted
            await guard.release(failing, succeeded=False)
            assert (await guard.breaker("pb")).failures == 1
        finally:
            await guard.close()
            if store is not None:
                await store.close()
        clock.advance_sync(60)


async def test_an_unreadable_file_is_kept_aside_and_the_daemon_starts_paused(
    tmp_path: Path, clock: VirtualClock
) -> None:
    path = tmp_path / "guardrails.json"
    path.write_text('{"locks": {"t1": {"owner": "a"')  # torn by hand or by a disk
    guard = MemoryGuardrails(POLICY, clock, path)
    try:
        assert await guard.paused()  # forgetting cooldowns must not be silent
        assert (await guard.admit(req(clock, "a", "t1"))).kind is DecisionKind.PAUSED
        [aside] = set_aside(tmp_path)
        assert aside.startswith('{"locks"')
        await guard.set_paused(False)  # an operator resumes on purpose
        assert (await guard.admit(req(clock, "a", "t1"))).admitted
    finally:
        await guard.close()


async def test_a_failed_write_fails_closed_and_recovers(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(POLICY, clock, path)
    blocker = tmp_path / "guardrails.json.tmp"
    blocker.mkdir()  # the atomic write's temporary file cannot be created (as on a full or read-only disk)
    try:
        with pytest.raises(GuardrailUnavailable):
            await guard.admit(req(clock, "a", "t1"))
        with pytest.raises(GuardrailUnavailable, match="cannot write"):
            await guard.ping()
        assert guard.state.locks == {}  # not admitted in memory either
        blocker.rmdir()
        assert (await guard.admit(req(clock, "a", "t1"))).admitted
        await guard.ping()
        assert "t1" in json.loads(path.read_text())["locks"]
    finally:
        await guard.close()


async def test_a_ping_finds_out_by_itself_that_the_disk_is_back(tmp_path: Path, clock: VirtualClock) -> None:
    """Readiness and resumes only ping: no other write may come to clear the failure for them."""
    guard = MemoryGuardrails(POLICY, clock, tmp_path / "guardrails.json")
    blocker = tmp_path / "guardrails.json.tmp"
    blocker.mkdir()
    try:
        with pytest.raises(GuardrailUnavailable):
            await guard.admit(req(clock, "a", "t1"))
        with pytest.raises(GuardrailUnavailable, match="cannot write"):
            await guard.ping()  # still broken: the ping's own write fails too
        blocker.rmdir()
        await guard.ping()
        await guard.ping()
    finally:
        await guard.close()


async def test_lapsed_entries_do_not_accumulate(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(Policy(), clock, path, grace=60.0)
    for n in range(200):
        r = req(clock, f"e{n}", f"target-{n}", cooldown=30.0, rate_max=5, rate_per=60.0, lock_ttl=30.0)
        assert (await guard.admit(r)).admitted
        if n % 2:
            await guard.release(r, succeeded=True)  # the others "crash" and keep their lock
    clock.set(T0 + timedelta(hours=1))
    last = req(clock, "last", "t-last")
    assert (await guard.admit(last)).admitted
    saved = json.loads(path.read_text())
    # an hour on, the locks are free but their records (last holder, for reacquire) are kept, and
    # so are the outcomes counted (against the same release applied again)...
    assert len(saved["locks"]) == 201 and list(saved["running"]) == ["last"] and len(saved["outcomes"]) == 100
    assert saved["cooldown_until"] == {} and saved["history"] == {}
    clock.set(T0 + timedelta(seconds=LOCK_RECORD_KEPT + 3600))
    last = req(clock, "last", "t-last")
    assert (await guard.renew(last)) is False  # ...until LOCK_RECORD_KEPT has passed (OUTCOME_RECORD_KEPT too)
    assert (await guard.admit(last)).admitted
    await guard.close()
    saved = json.loads(path.read_text())
    assert list(saved["locks"]) == ["t-last"] and list(saved["running"]) == ["last"] and saved["outcomes"] == {}
    assert saved["cooldown_until"] == {} and saved["history"] == {}


def test_a_second_process_cannot_share_the_file(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(POLICY, clock, path)
    probe = (
        "import sys; from pathlib import Path; from remediator.clock import VirtualClock;"
        "from remediator.core.guardrails import Policy; from remediator.guardstate.memory import MemoryGuardrails;"
        "MemoryGuardrails(Policy(), VirtualClock(), Path(sys.argv[1]))"
    )
    other = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    assert other.returncode != 0 and "redis_url" in other.stderr
    with pytest.raises(ConfigError, match="single-node"):  # nor a second instance in this one
        MemoryGuardrails(POLICY, clock, path)
    asyncio.run(guard.close())
    asyncio.run(MemoryGuardrails(POLICY, clock, path).close())  # free once closed


async def test_concurrent_changes_share_writes_and_are_all_on_disk_when_answered(
    tmp_path: Path, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: changes made while a write is under way ride on the next one, so 100
    admissions cost a handful of fsyncs, and each answer still comes after its own write."""
    from remediator.guardstate import memory

    writes: list[int] = []
    real_write = memory._write_atomically

    def counting_write(path: Path, data: bytes) -> None:
        writes.append(len(json.loads(data)["locks"]))
        real_write(path, data)

    monkeypatch.setattr(memory, "_write_atomically", counting_write)
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(Policy(), clock, path)

    async def admit_and_read_back(n: int) -> bool:
        assert (await guard.admit(req(clock, f"e{n}", f"t{n}"))).admitted
        return f"t{n}" in json.loads(path.read_text())["locks"]  # on disk by the time it is answered

    try:
        on_disk = await asyncio.gather(*(admit_and_read_back(n) for n in range(100)))
    finally:
        await guard.close()
    assert all(on_disk)
    assert len(writes) < 10, writes
    assert writes[-1] == 100


async def test_a_failed_group_write_fails_every_change_it_carried_and_refusals_read_from_them(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """The second admission for t1 is refused only because of the first; when the first never
    reaches the disk, that refusal would be false, so it is unavailable too, not LOCKED."""
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(POLICY, clock, path)
    blocker = tmp_path / "guardrails.json.tmp"
    blocker.mkdir()
    try:
        first, second, other = await asyncio.gather(
            guard.admit(req(clock, "a", "t1")),
            guard.admit(req(clock, "b", "t1")),
            guard.admit(req(clock, "c", "t2")),
            return_exceptions=True,
        )
        assert all(isinstance(r, GuardrailUnavailable) for r in (first, second, other)), (first, second, other)
        assert guard.state.locks == {} and guard.state.running == {}  # back to what is on disk
        blocker.rmdir()
        assert (await guard.admit(req(clock, "b", "t1"))).admitted
    finally:
        await guard.close()
    assert list(json.loads(path.read_text())["locks"]) == ["t1"]


async def test_a_cancelled_caller_does_not_leave_memory_and_disk_apart(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "guardrails.json"
    guard = MemoryGuardrails(POLICY, clock, path)
    task = asyncio.ensure_future(guard.admit(req(clock, "a", "t1")))
    await asyncio.sleep(0)  # the change is made; its write is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await guard.close()  # finishes carrying what was changed
    assert "t1" in guard.state.locks
    assert "t1" in json.loads(path.read_text())["locks"]


async def test_a_state_kept_only_in_memory_stays_flat_however_long_it_runs(clock: VirtualClock) -> None:
    """Replay's guardrail state lives in memory only, and nothing ever swept it: each release leaves
    a record of its execution's outcome (kept a day, for a release applied twice), so a replay of a
    million alerts held some 260,000 of them (a third more memory), and ten million ten times that.
    Lapsed entries are dropped now and then: a week of executions leaves about a day's records."""
    guard = MemoryGuardrails(POLICY, clock)
    per_hour = 60
    for i in range(7 * 24 * per_hour):  # a week, an execution a minute, on 50 targets
        r = req(clock, f"ex-{i}", f"t{i % 50}", lock_ttl=60.0)
        assert (await guard.admit(r)).admitted
        await guard.release(r, succeeded=True)
        clock.advance_sync(60.0)
    held = len(guard.state.outcomes)
    assert 24 * per_hour <= held <= 26 * per_hour, held
    assert len(guard.state.locks) == 50
