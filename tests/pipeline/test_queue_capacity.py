"""``worker.max_executions``: a replica runs at most that many executions at once.

What is over the bound stays durably pending and unclaimed (another replica may take it),
and starts here as soon as a running one ends.  On the embedded store, with steps that
block until the test lets them finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.ports import StepContext, StepResult
from remediator.runtime import Runtime, open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder, received

BOOK = """
name: held
match: {alertname: Held, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
steps: [{action: restart}]
"""
APPS = ("a", "b", "c", "d", "e")


class Held:
    """An executor whose steps run until the test releases their target."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.running: set[str] = set()
        self.most = 0
        self.started = asyncio.Queue[str]()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        name = ctx.target.name
        self.running.add(name)
        self.most = max(self.most, len(self.running))
        self.started.put_nowait(name)
        try:
            await self.gates.setdefault(name, asyncio.Event()).wait()
        finally:
            self.running.discard(name)
        return StepResult("ok", "restarted")

    def release(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()


@pytest.fixture
async def bounded(settings_factory: Callable[..., Any], tmp_path: Path,
                  vclock: VirtualClock) -> AsyncIterator[tuple[Runtime, Held]]:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "held.yaml").write_text(BOOK)
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, worker={"max_executions": 2})
    held = Held()
    async with open_runtime(settings, clock=vclock, executors=(held, held), start_worker=False) as rt:
        for app in APPS:
            await rt.store.record_alerts(received(payload(alert_json({"alertname": "Held", "app": app})), vclock))
        assert await rt.worker.decide_all() == len(APPS)
        yield rt, held
        for app in APPS:
            held.release(app)
        await rt.worker.queue.drain()


async def started(held: Held, n: int) -> list[str]:
    return sorted([await asyncio.wait_for(held.started.get(), 10) for _ in range(n)])


async def test_no_more_than_max_executions_run_at_once_and_the_rest_stay_unclaimed(
    bounded: tuple[Runtime, Held],
) -> None:
    rt, held = bounded
    queue = rt.worker.queue
    assert await queue.fill() == 2
    first = await started(held, 2)
    assert queue.running == 2 and held.running == set(first)
    assert await queue.fill() == 0  # full: nothing more is claimed
    # the three waiting are pending in the store, and free for any replica to claim
    others = await rt.store.claim_unfinished("another-replica", 30, limit=10)
    assert len(others) == 3
    for did in others:
        await rt.store.release_execution(did, "another-replica")

    held.release(first[0])
    third = await started_after_fill(rt, held)
    assert third not in first and held.running == {first[1], third}
    assert held.most == 2


async def started_after_fill(rt: Runtime, held: Held) -> str:
    """Once a running execution has ended, the next round starts exactly one more."""
    running = set(rt.worker.queue._running.values())  # the execution tasks: wait for one to end
    await asyncio.wait_for(asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED), 10)
    assert rt.worker.queue.running == 1
    assert await rt.worker.queue.fill() == 1
    [name] = await started(held, 1)
    return name


async def test_every_execution_runs_in_the_end_never_more_than_two_at_once(bounded: tuple[Runtime, Held]) -> None:
    rt, held = bounded
    draining = asyncio.create_task(rt.worker.queue.drain())
    done = 0
    while done < len(APPS):  # two at a time, released together: the next two start only then
        batch = await started(held, min(2, len(APPS) - done))
        assert held.running == set(batch)
        for name in batch:
            held.release(name)
        done += len(batch)
    assert await asyncio.wait_for(draining, 10) == len(APPS)
    assert held.most == 2
    executions = await rt.store.list_executions(limit=10)
    assert sorted(e["status"] for e in executions) == ["succeeded"] * len(APPS)


FLAKY = """
name: flaky
match: {alertname: Flaky, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
steps: [{action: restart}]
"""
GOOD = """
name: good
match: {alertname: Good}
target: {kind: Deployment, namespace: other, name: api}
steps: [{action: restart}]
"""


async def test_executions_waiting_out_a_pause_do_not_crowd_a_newer_one_out(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    """The store hands the oldest unfinished executions out first, as many as there is room for: while
    as many of them as that were paused (their playbook's breaker open) and backing off, each round
    claimed only them, gave them back, and a healthy playbook's newer execution never started."""
    from remediator.core.guardrails import Request

    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "flaky.yaml").write_text(FLAKY)
    (tmp_path / "pb" / "good.yaml").write_text(GOOD)
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, worker={"max_executions": 2},
                                guardrails={"breaker_threshold": 1, "breaker_cooloff": "10m"})
    cluster = Recorder()
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        for app in ("a", "b"):
            alert = alert_json({"alertname": "Flaky", "app": app}, fingerprint=app * 16)
            await rt.store.record_alerts(received(payload(alert), vclock))
        assert await rt.worker.decide_all() == 2
        other = Request("other", "flaky", "Deployment/shop/zzz", "k", "shop", vclock.now().timestamp())
        assert (await rt.guardrails.admit(other)).admitted
        await rt.guardrails.release(other, succeeded=False)  # flaky's breaker opens
        assert await rt.worker.queue.drain() == 2  # both start, stop before their step, and back off
        assert cluster.calls == []
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "Good"}, fingerprint="g" * 16)),
                                              vclock))
        assert await rt.worker.decide_all() == 1
        await rt.worker.queue.drain()
    assert [target for _, target, _ in cluster.calls] == ["Deployment/other/api"]


async def test_a_stop_that_comes_while_claiming_starts_none_of_what_the_claim_returns(
    bounded: tuple[Runtime, Held], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM halts the queue; a claim already on its way back to this replica still started the
    # executions it returned, which the shutdown then had to cut short mid-step.
    rt, held = bounded
    queue = rt.worker.queue
    claim = rt.store.claim_unfinished

    async def claimed_then_stopped(*args: Any, **kwargs: Any) -> list[str]:
        got = await claim(*args, **kwargs)
        queue.halt()  # the signal arrives while the claim's answer is on its way
        return got

    monkeypatch.setattr(rt.store, "claim_unfinished", claimed_then_stopped)
    assert await queue.fill() == 0
    assert queue.running == 0 and held.running == set()
    # given back at once, not held until the lease runs out: another replica takes every one now
    assert len(await claim("another-replica", 30, limit=10)) == len(APPS)
