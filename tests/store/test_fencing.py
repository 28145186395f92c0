"""A crash never runs a step twice: the writes a step makes are fenced by the execution's lease.

A replica frozen past its lease (SIGSTOP, a paused VM) wakes up in the middle of a step that another
replica has taken over, and maybe finished, meanwhile.  Its lease renewal notices only after a round
trip, and the step's continuation may come first: its write-ahead intent (written before every
mutating API call), its result and the execution's end land only while the execution is still claimed
by this replica, checked by the store in the statement that writes them; else LeaseLost, nothing is
written and the step stops before its API call.  Run on every store (embedded, PostgreSQL, replay's).
"""

from __future__ import annotations

import asyncio
import collections
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.guardrails import Policy
from remediator.guardstate.memory import MemoryGuardrails
from remediator.notify.log import LogNotifier
from remediator.pipeline import Pipeline, PipelineSettings
from remediator.playbook_files import PlaybookRepository
from remediator.ports import LeaseLost, StepContext, StepResult
from remediator.store.postgres import PostgresStore
from tests.payloads import T0, alert_json
from tests.pipeline.test_kill_switch_mid_execution import PLAYBOOK as TWO_STEPS
from tests.pipeline.test_pipeline import playbook_dir
from tests.store.conftest import Schema
from tests.store.test_contract import a_decision, alerts, firing

LEASE = 30.0


async def claimed_by_a(store: Any) -> str:
    [r] = alerts(firing("a"))
    d = a_decision(r.alert)
    await store.record_decision(d)
    assert d.execution_id is not None
    assert await store.claim_execution(d.execution_id, "A", LEASE)
    return d.execution_id


STEP0, STEP1 = PlannedStep(0, "restart", {}), PlannedStep(1, "scale", {"to": 3})


async def test_a_replica_whose_execution_was_taken_over_writes_nothing_more(store: Any, vclock: VirtualClock) -> None:
    did = await claimed_by_a(store)
    await store.begin_step(did, STEP0, {}, started=vclock.now(), owner="A")
    await vclock.advance(LEASE + 1)  # A froze; its lease lapsed and B took the execution over
    assert await store.claim_unfinished("B", LEASE) == [did]
    await store.begin_step(did, STEP0, {"restartedAt": "b"}, started=vclock.now(), owner="B")
    with pytest.raises(LeaseLost):  # A wakes up: its intent, before its API call, is refused
        await store.begin_step(did, STEP0, {"restartedAt": "a"}, started=vclock.now(), owner="A")
    with pytest.raises(LeaseLost):
        await store.record_step(did, STEP0, StepResult("ok", "by A"), started=T0, finished=vclock.now(), owner="A")
    with pytest.raises(LeaseLost):
        await store.begin_step(did, STEP1, {}, started=vclock.now(), owner="A")
    with pytest.raises(LeaseLost):
        await store.finish_execution(did, "failed", vclock.now(), owner="A")
    [started] = (await store.step_results(did)).values()
    assert started.status == "started" and started.details["intent"] == {"restartedAt": "b"}  # B's, not A's
    assert await store.unfinished(did)
    await store.record_step(did, STEP0, StepResult("ok", "by B"), started=T0, finished=vclock.now(), owner="B")
    await store.finish_execution(did, "succeeded", vclock.now(), owner="B")
    with pytest.raises(LeaseLost):  # finished: nobody's any more, B's lease ended with it
        await store.record_step(did, STEP1, StepResult("ok", "late"), started=T0, finished=vclock.now(), owner="B")
    with pytest.raises(LeaseLost):
        await store.finish_execution(did, "failed", vclock.now(), owner="A")
    doc = await store.get_execution(did)
    assert doc["status"] == "succeeded" and [r["message"] for r in doc["results"]] == ["by B"]


async def test_a_lapsed_lease_fences_its_writes_until_it_is_taken_again(store: Any, vclock: VirtualClock) -> None:
    """Nobody took it over, but the lease ran out on the store's clock: any replica may claim it at any
    moment, so the frozen one writes nothing (and sends nothing) until it holds the lease again."""
    did = await claimed_by_a(store)
    await vclock.advance(LEASE)
    with pytest.raises(LeaseLost):
        await store.begin_step(did, STEP0, {"replicas": 3}, started=vclock.now(), owner="A")
    with pytest.raises(LeaseLost):
        await store.finish_execution(did, "succeeded", vclock.now(), owner="A")
    assert await store.step_results(did) == {}
    assert await store.claim_execution(did, "A", LEASE)  # renewed: its writes land again
    await store.begin_step(did, STEP0, {"replicas": 3}, started=vclock.now(), owner="A")
    await store.finish_execution(did, "succeeded", vclock.now(), owner="A")
    assert not await store.unfinished(did)


async def test_fenced_writes_need_a_claim_and_unfenced_ones_do_not(store: Any, vclock: VirtualClock) -> None:
    did = await claimed_by_a(store)
    await store.release_execution(did, "A")  # handed back (paused): not A's to write any more
    with pytest.raises(LeaseLost):
        await store.begin_step(did, STEP0, {}, started=vclock.now(), owner="A")
    with pytest.raises(LeaseLost):
        await store.begin_step("ex-missing", STEP0, {}, started=vclock.now(), owner="A")
    assert await store.step_results(did) == {}
    # Without an owner (an approval's record, written under an approval claim): written as before.
    await store.record_step(did, STEP0, StepResult("ok", "approved"), started=T0, finished=T0)
    await store.finish_execution(did, "denied", vclock.now())
    assert (await store.get_execution(did))["status"] == "denied"



async def test_on_postgresql_a_takeover_in_flight_and_a_fenced_write_are_ordered(
    pg_schema: Schema, vclock: VirtualClock
) -> None:
    """Replicas on PostgreSQL: the fenced write is an UPDATE of the execution's row.  One that meets
    B's claim in flight (not committed yet) waits for it, then finds the execution B's and writes
    nothing (read from a snapshot instead, it would find it A's, and write a step B never sees)."""
    store = await PostgresStore.open(pg_schema.dsn, vclock)
    try:
        did = await claimed_by_a(store)
        await vclock.advance(LEASE - 1)
        taking = pg_schema.conn.transaction()
        await taking.start()
        await pg_schema.conn.execute("UPDATE decisions SET claimed_by = 'B' WHERE id = $1", did)
        write = asyncio.create_task(store.begin_step(did, STEP0, {"a": 1}, started=vclock.now(), owner="A"))
        await asyncio.sleep(0.3)
        assert not write.done()  # waits for the claim's transaction
        await taking.commit()
        with pytest.raises(LeaseLost):
            await asyncio.wait_for(write, 10)
        assert await store.step_results(did) == {}
    finally:
        await store.close()


# -- the pipeline: a replica frozen in the middle of a step -------------------------------------------

class Cluster:
    """Stands in for the API server: counts each step's applications, by every replica.  Like the
    Kubernetes executor, a step reads the object, records its intent, then writes (applies)."""

    def __init__(self) -> None:
        self.applied: collections.Counter[tuple[str, int]] = collections.Counter()
        self.reading = asyncio.Event()  # the frozen replica is in its read
        self.thaw = asyncio.Event()


class Replica:
    def __init__(self, cluster: Cluster, *, freeze: bool) -> None:
        self.cluster = cluster
        self.freeze = freeze

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if self.freeze:  # the GET of the object: the moment the process is stopped
            self.freeze = False
            self.cluster.reading.set()
            await self.cluster.thaw.wait()
        await ctx.record_intent({"action": step.action})
        self.cluster.applied[(step.phase, step.index)] += 1
        return StepResult("ok", f"{step.action} applied")


def replica(store: Any, guardrails: Any, repo: PlaybookRepository, executor: Replica, clock: VirtualClock,
            owner: str) -> Pipeline:
    return Pipeline(playbooks=repo, store=store, guardrails=guardrails, live=executor, dry=executor,
                    notifier=LogNotifier(), clock=clock, owner=owner,
                    settings=PipelineSettings(dry_run=False, execution_lease=LEASE))


async def test_a_replica_frozen_in_a_step_taken_over_and_finished_meanwhile_applies_nothing_when_it_wakes(
    store: Any, vclock: VirtualClock, tmp_path: Path
) -> None:
    repo = PlaybookRepository([playbook_dir(tmp_path, TWO_STEPS)])
    assert repo.reload()
    guardrails = MemoryGuardrails(Policy(), vclock)
    cluster = Cluster()
    # A's own clock: frozen with it.  Its lease renewal sleeps on it and so never runs while A is
    # stopped: what stops A when it wakes is the store, not the renewal racing its step.
    a_clock = VirtualClock(T0)
    a = replica(store, guardrails, repo, Replica(cluster, freeze=True), a_clock, "replica-A")
    b = replica(store, guardrails, repo, Replica(cluster, freeze=False), vclock, "replica-B")
    [r] = alerts(alert_json({"alertname": "X"}))
    await store.record_alerts([r])
    running = asyncio.create_task(a.process(r))
    await asyncio.wait_for(cluster.reading.wait(), 10)  # A is inside step 0, before its write
    [did] = await store.unfinished_executions()

    await vclock.advance(LEASE + 1)  # A stays stopped past its lease
    assert await store.claim_unfinished("replica-B", LEASE) == [did]
    assert await b.run_claimed(did) == "succeeded"
    assert cluster.applied == {("main", 0): 1, ("main", 1): 1}

    frozen_at: datetime = a_clock.now()
    cluster.thaw.set()  # SIGCONT
    await asyncio.wait_for(running, 10)
    assert a_clock.now() == frozen_at  # nothing of A's renewal ran: the store fenced the step's intent
    assert cluster.applied == {("main", 0): 1, ("main", 1): 1}  # every step applied once
    doc = await store.get_execution(did)
    assert doc["status"] == "succeeded"
    assert [(s["index"], s["status"], s["message"]) for s in doc["results"]] == [
        (0, "ok", "restart applied"), (1, "ok", "scale applied")]
