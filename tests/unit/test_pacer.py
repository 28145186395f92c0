"""Deciding gives way to webhooks in progress, up to a share of the loop (worker.Pacer)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.pipeline import Outcome
from remediator.runtime import Runtime, open_runtime
from remediator.worker import MAX_REST, SLICE, Pacer
from tests.payloads import alert_json, payload
from tests.pipeline.test_batch_logging import PLAYBOOK
from tests.pipeline.test_pipeline import received


class Ticks:
    """A busy-time source the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def paced_runtime(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, *, batch: int
) -> AsyncIterator[tuple[Runtime, Ticks]]:
    """A runtime with one playbook, its worker not started, and a pacer (share 0.5) on hand-moved ticks."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "restart.yaml").write_text(PLAYBOOK)
    settings = settings_factory(playbooks=str(tmp_path / "pb"), worker={"batch": batch})
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        ticks = Ticks()
        rt.worker.pacer = Pacer(0.5, ticks)
        yield rt, ticks


def test_the_budget_is_the_batch_time_times_the_share_left_to_intake() -> None:
    ticks = Ticks()
    pacer = Pacer(0.25, ticks)
    pacer.started()
    ticks.now += 0.1
    assert pacer.budget() == pytest.approx(0.3)  # 0.1 busy is a quarter of 0.4
    assert pacer.budget() == 0.0  # once per batch
    pacer.started()
    ticks.now += 10.0
    assert pacer.budget() == MAX_REST
    unlimited = Pacer(1.0, ticks)
    unlimited.started()
    ticks.now += 0.2
    assert unlimited.budget() == 0.0


async def test_rest_waits_for_the_webhooks_in_progress_and_no_longer() -> None:
    ticks = Ticks()
    pacer = Pacer(0.1, ticks)
    pacer.started()
    ticks.now += 1.0  # a budget of 0.5 s (MAX_REST): far more than this test takes
    with pacer.receiving():
        resting = asyncio.create_task(pacer.rest())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not resting.done()  # gives way while a delivery is being taken in
    await asyncio.wait_for(resting, MAX_REST / 2)  # and goes on as soon as none is


async def test_no_rest_when_no_webhook_is_in_progress() -> None:
    ticks = Ticks()
    pacer = Pacer(0.1, ticks)
    with pacer.receiving():
        pass
    pacer.started()
    ticks.now += 1.0
    resting = asyncio.create_task(pacer.rest())
    await asyncio.sleep(0)
    assert resting.done()


async def test_the_decision_loop_rests_between_batches_while_webhooks_arrive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
) -> None:
    """Worker.decide_all(pace=True), the daemon's loop, gives way after each batch for what its pacer
    allows; decide_all() as tests and tools call it never does."""
    rests: list[float] = []
    async with paced_runtime(tmp_path, settings_factory, vclock, batch=2) as (rt, ticks):
        worker, pacer = rt.worker, rt.worker.pacer
        claim = worker.intake.claim_alerts

        async def busy_claim(*args: Any, **kwargs: Any) -> Any:
            ticks.now += 0.01  # each batch keeps the loop 10 ms
            return await claim(*args, **kwargs)

        async def recording_rest() -> None:
            rests.append(pacer.budget())

        async def record(n: int, start: int) -> None:
            alerts = [alert_json({"alertname": "Down"}, fingerprint=f"a{i}") for i in range(start, start + n)]
            await rt.store.record_alerts(received(payload(*alerts), vclock))

        monkeypatch.setattr(worker.intake, "claim_alerts", busy_claim)
        monkeypatch.setattr(pacer, "rest", recording_rest)
        await record(5, 0)
        assert await worker.decide_all(pace=True) == 5
        assert rests == [pytest.approx(0.01)] * 3  # batches of 2, 2 and 1: each may give way as long as it ran
        rests.clear()
        await record(3, 5)
        assert await worker.decide_all() == 3
        assert rests == []


def test_a_turn_comes_after_each_slice_whether_or_not_a_webhook_is_in_progress() -> None:
    """A delivery that arrives mid-batch is not in progress until the loop reads it: the turns
    that let it be read cannot wait for it."""
    ticks = Ticks()
    pacer = Pacer(0.5, ticks)
    pacer.started()
    ticks.now += SLICE / 2
    assert not pacer.turn()
    ticks.now += SLICE
    assert pacer.turn()  # nobody in progress yet
    assert not pacer.turn()  # the slice starts again at each turn
    with pacer.receiving():
        ticks.now += SLICE / 2
        assert not pacer.turn()
        ticks.now += SLICE
        assert pacer.turn()


async def test_a_batch_lets_the_loop_go_between_alerts_with_or_without_a_webhook_in_progress(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
) -> None:
    """Deciding that never waits on I/O (PostgreSQL: facts fetched up front, writes deferred; SQLite:
    statements inline) would keep the loop for a whole batch; it yields once each slice, between alerts,
    with a delivery in progress or not (one that arrives mid-batch is read at such a turn)."""
    async with paced_runtime(tmp_path, settings_factory, vclock, batch=10) as (rt, ticks):
        worker, pacer = rt.worker, rt.worker.pacer

        async def cpu_only(*args: Any, **kwargs: Any) -> Outcome:
            ticks.now += SLICE * 0.75  # each alert keeps the loop 1.5 ms, and awaits nothing
            return Outcome([])

        monkeypatch.setattr(worker.pipeline, "decide", cpu_only)
        seen: list[int] = []

        async def other_work() -> None:
            while True:
                seen.append(worker.processed)
                await asyncio.sleep(0)

        for rnd, webhook in enumerate((False, True)):
            alerts = [alert_json({"alertname": "Down"}, fingerprint=f"r{rnd}x{i}") for i in range(8)]
            await rt.store.record_alerts(received(payload(*alerts), vclock))
            start = worker.processed
            seen.clear()
            other = asyncio.create_task(other_work())
            await asyncio.sleep(0)
            with pacer.receiving() if webhook else contextlib.nullcontext():
                assert await worker.decide_all(pace=True) == 8
            other.cancel()
            between = sorted({n - start for n in seen} - {0, 8})
            # a turn after every second alert (1.5 ms each: 3 ms passes a 2 ms slice), a delivery in progress
            # or not
            assert between == [2, 4, 6], (webhook, between)
