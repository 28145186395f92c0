"""Deciding's share of the loop while webhooks arrive (worker.Pacer), and the decision loop resting by it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.runtime import open_runtime
from remediator.worker import MAX_REST, Pacer
from tests.payloads import alert_json, payload
from tests.pipeline.test_batch_logging import PLAYBOOK
from tests.pipeline.test_pipeline import received


class Ticks:
    """A busy-time source the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_during_which_deliveries_arrived_is_followed_by_its_share_of_rest() -> None:
    ticks = Ticks()
    pacer = Pacer(0.25, ticks)
    pacer.started()
    ticks.now += 0.1
    pacer.arrived()
    assert pacer.rest() == pytest.approx(0.3)  # 0.1 busy is a quarter of 0.4
    assert pacer.rest() == 0.0  # asked once per batch


def test_no_rest_when_nothing_arrived_or_no_limit() -> None:
    ticks = Ticks()
    pacer = Pacer(0.34, ticks)
    pacer.arrived()  # before the batch: not during it
    pacer.started()
    ticks.now += 0.2
    assert pacer.rest() == 0.0
    unlimited = Pacer(1.0, ticks)
    unlimited.started()
    ticks.now += 0.2
    unlimited.arrived()
    assert unlimited.rest() == 0.0


def test_rest_is_bounded() -> None:
    ticks = Ticks()
    pacer = Pacer(0.1, ticks)
    pacer.started()
    ticks.now += 10.0
    pacer.arrived()
    assert pacer.rest() == MAX_REST


async def test_the_decision_loop_rests_between_batches_while_webhooks_arrive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
) -> None:
    """Worker.decide_all(pace=True), the daemon's loop, rests what its pacer says after each batch during
    which deliveries arrived; decide_all() as tests and tools call it never rests."""
    rests: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(seconds: float) -> None:
        rests.append(seconds)
        await real_sleep(0)

    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "restart.yaml").write_text(PLAYBOOK)
    settings = settings_factory(playbooks=str(tmp_path / "pb"), worker={"batch": 2})
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        worker = rt.worker
        ticks = Ticks()
        worker.pacer = Pacer(0.5, ticks)
        claim = worker.intake.claim_alerts

        async def busy_claim(*args: Any, **kwargs: Any) -> Any:
            ticks.now += 0.01  # each batch keeps the loop 10 ms, and a delivery arrives meanwhile
            worker.wake()
            return await claim(*args, **kwargs)

        async def record(n: int, start: int) -> None:
            alerts = [alert_json({"alertname": "Down"}, fingerprint=f"a{i}") for i in range(start, start + n)]
            await rt.store.record_alerts(received(payload(*alerts), vclock))

        monkeypatch.setattr(worker.intake, "claim_alerts", busy_claim)
        monkeypatch.setattr("remediator.worker.asyncio.sleep", recording_sleep)
        await record(5, 0)
        assert await worker.decide_all(pace=True) == 5
        assert rests == [pytest.approx(0.01)] * 3  # batches of 2, 2 and 1: each rests as long as it ran
        rests.clear()
        await record(3, 5)
        assert await worker.decide_all() == 3
        assert rests == []
