"""The approval gate with two replicas on real PostgreSQL and Redis (issue 16, item 3's acceptance).

Each replica is a whole runtime (its own PostgreSQL pool, Redis connection, pipeline, execution
queue and notifier) on one database schema and one Redis key prefix, as two pods share them; they
share a virtual clock, so deadlines pass when the test says.  Approve, deny, timeout and restart
while waiting; races answered by exactly one replica; an approval after another execution left
the target in cooldown refused with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from remediator.clock import VirtualClock
from remediator.runtime import Runtime
from tests.guardrails.test_pipeline_guardrails import Passthrough
from tests.pipeline.test_approval import Notices, answer, decide, gated_alert, gated_runtime, gated_settings
from tests.pipeline.test_pipeline import Recorder
from tests.pipeline.test_step_approval import rival, run_to_gate, stepped_alert, stepped_runtime, stepped_settings
from tests.store import test_kill
from tests.store.conftest import Schema
from tests.store.test_outage import Relay

Replica = tuple[Runtime, Recorder, Notices]
redis_url = test_kill.redis_url  # the fixture: a Redis key prefix of the test's own, deleted after


@pytest.fixture
def replica_settings(
    settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str
) -> Any:
    return gated_settings(settings_factory, tmp_path, database_url=pg_schema.dsn, redis_url=redis_url)


@contextlib.asynccontextmanager
async def two_replicas(settings: Any, clock: VirtualClock) -> AsyncIterator[tuple[Replica, Replica]]:
    async with gated_runtime(settings, clock) as a, gated_runtime(settings, clock) as b:
        assert a[0].pipeline.owner != b[0].pipeline.owner
        yield a, b


def calls(*replicas: Replica) -> list[str]:
    return [c[0] for r in replicas for c in r[1].calls]


def notices(did: str, *replicas: Replica) -> list[str]:
    return sorted(e for r in replicas for e in r[2].events(did))


async def drain(*replicas: Replica) -> None:
    await asyncio.gather(*(r[0].worker.queue.drain() for r in replicas))


async def test_two_replicas_approving_at_once_run_it_exactly_once(
    replica_settings: Any, vclock: VirtualClock
) -> None:
    async with two_replicas(replica_settings, vclock) as (a, b):
        did = await decide(a[0], gated_alert())
        await drain(a, b)
        assert calls(a, b) == []
        got = await asyncio.gather(answer(a[0], did, True), answer(b[0], did, True))
        assert sorted(g.outcome for g in got) == ["approved", "conflict"]
        await drain(a, b)
        ex = await b[0].store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded" and calls(a, b) == ["restart"]
        assert [e["journal"] for e in ex["events"]] == ["approved"]
        # approve against deny: one of them, never both
        other = await decide(b[0], gated_alert(fingerprint="b2b2b2b2b2b2b2b2", app="api"))
        got = await asyncio.gather(answer(a[0], other, True), answer(b[0], other, False))
        assert sorted(g.outcome for g in got) in (["approved", "conflict"], ["conflict", "denied"])
        winner = next(g for g in got if g.outcome != "conflict")
        await drain(a, b)
        final = await a[0].store.approval(other)
        assert final is not None
        assert final.status == ("succeeded" if winner.outcome == "approved" else "denied")
        assert calls(a, b) == ["restart"] * (2 if winner.outcome == "approved" else 1)


async def test_a_denial_on_one_replica_stops_the_other_from_running_it(
    replica_settings: Any, vclock: VirtualClock
) -> None:
    async with two_replicas(replica_settings, vclock) as (a, b):
        did = await decide(a[0], gated_alert())
        denied = await answer(b[0], did, False)
        assert (denied.outcome, denied.status) == ("denied", "denied")
        await drain(a, b)
        late = await answer(a[0], did, True)
        assert late.outcome == "conflict" and "it is denied" in late.message
        assert calls(a, b) == [] and notices(did, a, b) == ["approval_denied", "approval_requested"]
        ex = await a[0].store.get_execution(did)
        assert ex is not None and ex["status"] == "denied"


async def test_the_deadline_expires_it_once_across_replicas(replica_settings: Any, vclock: VirtualClock) -> None:
    async with two_replicas(replica_settings, vclock) as (a, b):
        did = await decide(a[0], gated_alert())
        await vclock.advance(15 * 60)
        await asyncio.gather(a[0].worker.queue.fill(), b[0].worker.queue.fill())
        await asyncio.gather(a[0].worker.queue.fill(), b[0].worker.queue.fill())
        assert notices(did, a, b) == ["approval_expired", "approval_requested"]
        ex = await b[0].store.get_execution(did)
        assert ex is not None and (ex["status"], ex["finished_at"]) == ("expired", "2026-11-22T10:15:00Z")
        assert [e["journal"] for e in ex["events"]] == ["expired"]
        assert (await answer(b[0], did, True)).outcome == "conflict" and calls(a, b) == []


async def test_a_restart_while_waiting_keeps_it_waiting_with_its_original_deadline(
    replica_settings: Any, vclock: VirtualClock
) -> None:
    async with two_replicas(replica_settings, vclock) as (a, _b):
        waiting = await decide(a[0], gated_alert())
        approved_later = await decide(a[0], gated_alert(fingerprint="c3c3c3c3c3c3c3c3", app="api"))
    await vclock.advance(10 * 60)  # both replicas are gone for ten minutes
    async with two_replicas(replica_settings, vclock) as (a, b):
        for did in (waiting, approved_later):
            state = await b[0].store.approval(did)
            assert state is not None and state.status == "awaiting_approval"
            assert state.deadline is not None and state.deadline.isoformat() == "2026-11-22T10:15:00+00:00"
        assert (await answer(b[0], approved_later, True)).outcome == "approved"
        await drain(a, b)
        assert calls(a, b) == ["restart"]
        await vclock.advance(5 * 60 - 1)
        await asyncio.gather(a[0].worker.queue.fill(), b[0].worker.queue.fill())
        assert (await a[0].store.approval(waiting)).status == "awaiting_approval"  # type: ignore[union-attr]
        await vclock.advance(1)
        await asyncio.gather(a[0].worker.queue.fill(), b[0].worker.queue.fill())
        assert (await a[0].store.approval(waiting)).status == "expired"  # type: ignore[union-attr]
        assert notices(waiting, a, b) == ["approval_expired"]


async def test_an_approval_after_a_cooldown_from_another_execution_is_refused_with_the_reason(
    replica_settings: Any, vclock: VirtualClock
) -> None:
    async with two_replicas(replica_settings, vclock) as (a, b):
        first = await decide(a[0], gated_alert(fingerprint="f1f1f1f1f1f1f1f1"))
        await vclock.advance(30)
        second = await decide(b[0], gated_alert(fingerprint="f2f2f2f2f2f2f2f2", starts_at="2026-11-22T10:00:30Z"))
        assert (await answer(b[0], second, True)).outcome == "approved"
        await drain(a, b)
        assert calls(a, b) == ["restart"]
        await vclock.advance(60)
        refused = await answer(a[0], first, True)  # the other replica: the cooldown is in Redis
        assert (refused.outcome, refused.status, refused.decision) == ("refused", "refused", "cooldown")
        assert refused.message.startswith("in cooldown until 2026-11-22T11:00:30Z (another 59m")
        await drain(a, b)
        ex = await b[0].store.get_execution(first)
        assert ex is not None and ex["status"] == "refused" and ex["events"][0]["reason"] == refused.message
        assert calls(a, b) == ["restart"] and notices(first, a, b) == ["approval_refused", "approval_requested"]


async def test_an_approval_while_one_replica_cannot_reach_redis_waits_and_the_other_can_approve_it(
    settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str, vclock: VirtualClock
) -> None:
    """Replica A reaches Redis through a link the test cuts (connections reset, new ones refused):
    its approval is ``unavailable`` (the API's 503), nothing runs, and the execution still waits,
    unclaimed, for B (which reaches Redis) or for A once the link is restored."""
    parts = urlsplit(redis_url)
    link = Relay((parts.hostname or "127.0.0.1", parts.port or 6379))  # the one used for PostgreSQL outages
    await link.start()
    cut_url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{link.port}"))
    try:
        settings_a = gated_settings(settings_factory, tmp_path, database_url=pg_schema.dsn, redis_url=cut_url)
        settings_b = gated_settings(settings_factory, tmp_path, database_url=pg_schema.dsn, redis_url=redis_url)
        async with gated_runtime(settings_a, vclock) as a, gated_runtime(settings_b, vclock) as b:
            first = await decide(a[0], gated_alert())
            second = await decide(a[0], gated_alert(fingerprint="d4d4d4d4d4d4d4d4", app="api"))
            await link.cut()
            for did in (first, second):
                got = await answer(a[0], did, True)
                assert (got.outcome, got.status) == ("unavailable", "awaiting_approval")
                assert "guardrail state unreachable" in got.message
                state = await a[0].store.approval(did)
                assert state is not None and (state.status, state.deciding) == ("awaiting_approval", False)
            await drain(a, b)
            assert calls(a, b) == []

            assert (await answer(b[0], first, True)).outcome == "approved"  # B reaches Redis
            await link.restore()
            assert (await answer(a[0], second, True)).outcome == "approved"  # A again, once it can
            await drain(a, b)
            assert sorted(calls(a, b)) == ["restart", "restart"]
            for did in (first, second):
                ex = await b[0].store.get_execution(did)
                assert ex is not None and ex["status"] == "succeeded"
                assert [e["journal"] for e in ex["events"]] == ["approved"]
    finally:
        with contextlib.suppress(AssertionError):  # already cut
            await link.cut()


# -- approval of a single step ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_stepped(settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str,
                      clock: VirtualClock, **more: Any) -> AsyncIterator[tuple[Replica, Replica]]:
    settings = stepped_settings(settings_factory, tmp_path, database_url=pg_schema.dsn, redis_url=redis_url, **more)
    async with stepped_runtime(settings, clock) as a, stepped_runtime(settings, clock) as b:
        yield a, b


async def test_a_step_stopped_on_one_replica_is_approved_on_the_other_and_its_rest_runs_once(
    settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str, vclock: VirtualClock
) -> None:
    async with two_stepped(settings_factory, tmp_path, pg_schema, redis_url, vclock) as (a, b):
        did = await run_to_gate(a[0], stepped_alert())
        await drain(a, b)
        assert calls(a, b) == ["scale"]
        assert (await b[0].store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        got = await asyncio.gather(answer(a[0], did, True), answer(b[0], did, True))
        assert sorted(g.outcome for g in got) == ["approved", "conflict"]
        await drain(a, b)
        ex = await a[0].store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded"
        assert calls(a, b) == ["scale", "restart", "wait_healthy"]
        assert [e["journal"] for e in ex["events"]] == ["approval_requested", "approved", "resumed"]


async def test_a_step_approval_after_another_execution_acted_on_the_target_is_refused_on_any_replica(
    settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str, vclock: VirtualClock
) -> None:
    async with two_stepped(settings_factory, tmp_path, pg_schema, redis_url, vclock) as (a, b):
        did = await run_to_gate(a[0], stepped_alert())
        other = rival(b[0])
        assert (await b[0].guardrails.admit(other)).admitted  # another playbook acts on the target, via B
        await b[0].guardrails.release(other, succeeded=True)
        got = await answer(b[0], did, True)
        assert (got.outcome, got.status, got.decision) == ("refused", "refused", "superseded")
        await drain(a, b)
        assert calls(a, b) == ["scale"]
        assert (await a[0].store.approval(did)).status == "refused"  # type: ignore[union-attr]


async def test_a_step_waits_across_a_restart_of_both_replicas(
    settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str, vclock: VirtualClock
) -> None:
    async with two_stepped(settings_factory, tmp_path, pg_schema, redis_url, vclock) as (a, b):
        did = await run_to_gate(a[0], stepped_alert())
    async with two_stepped(settings_factory, tmp_path, pg_schema, redis_url, vclock) as (a, b):
        await asyncio.gather(a[0].pipeline.resume_unfinished(), b[0].pipeline.resume_unfinished())
        await drain(a, b)
        assert calls(a, b) == []  # nothing resumes a step that waits for a human
        assert (await answer(b[0], did, True)).outcome == "approved"
        await drain(a, b)
        assert calls(a, b) == ["restart", "wait_healthy"]
        ex = await a[0].store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded"


class LapsesWhileApproving(Passthrough):
    """A replica's store whose approval stalls after the gate's record, until its claim on the
    execution lapses and ``meanwhile`` (another replica's answer) has run: once."""

    def __init__(self, inner: Any, meanwhile: Callable[[], Any]) -> None:
        super().__init__(inner)
        self.meanwhile: Callable[[], Any] | None = meanwhile

    async def settle_approval(self, *args: Any, **kwargs: Any) -> bool:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return bool(await self.inner.settle_approval(*args, **kwargs))


async def test_a_step_approval_whose_claim_lapsed_while_another_replica_denied_gives_the_lock_back(
    settings_factory: Callable[..., Any], tmp_path: Path, pg_schema: Schema, redis_url: str, vclock: VirtualClock
) -> None:
    """A stalls between taking the target's lock back and settling; its claim lapses and B denies.
    A must not leave the lock it took to block the target until its TTL, nor the gate reading
    ``ok``: the execution was denied and the step never runs."""
    # A claim (worker.lease) shorter than the playbook's lock_ttl (5m): A's lock outlives its claim.
    async with two_stepped(settings_factory, tmp_path, pg_schema, redis_url, vclock, worker={"lease": 60}) as (a, b):
        did = await run_to_gate(a[0], stepped_alert())
        denied: list[Any] = []

        async def b_denies() -> None:
            await vclock.advance(61)  # A's claim lapses, its lock does not
            denied.append(await answer(b[0], did, False))

        a[0].pipeline.store = LapsesWhileApproving(a[0].pipeline.store, b_denies)  # type: ignore[assignment]
        got = await answer(a[0], did, True)
        assert [d.outcome for d in denied] == ["denied"]
        assert (got.outcome, got.status) == ("conflict", "denied")
        await drain(a, b)
        assert calls(a, b) == ["scale"]
        ex = await b[0].store.get_execution(did)
        assert ex is not None and ex["status"] == "denied"
        [gate] = [r for r in ex["results"] if r["phase"] == "approval"]
        assert gate["status"] == "failed" and gate["message"].endswith("; not approved: denied (by test a1)")
        other = rival(b[0])
        assert (await b[0].guardrails.admit(other)).admitted  # the target is not locked: A gave it back
