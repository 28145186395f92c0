"""A replica whose clock is off Redis's fails closed, on the real Redis.

Every guardrail script takes ``now`` from the calling replica, so a replica whose clock is
behind writes a lock expiry that ends early for the others: renewing every third of the TTL, its
lock lapses for them between two renewals once the clock is two thirds of the TTL behind, and
another execution is admitted on the target.  With ``guardrails.max_clock_skew`` the adapter
measures its clock against Redis ``TIME`` and, while it is off by more, raises
GuardrailUnavailable for whatever writes a time (the pipeline then holds the work, as when Redis
is unreachable), and the skew is a metric.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import SystemClock, VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.errors import GuardrailUnavailable
from remediator.core.guardrails import Policy, Request
from remediator.guardstate import redis as redis_state
from remediator.guardstate.redis import RedisGuardrails
from remediator.metrics import Metrics
from remediator.runtime import RUNTIME
from tests.guardrails.conftest import REDIS_URL, prefixed
from tests.guardrails.test_outage import PLAYBOOK, Cluster
from tests.payloads import alert_json, payload

TTL = 60.0


class OffsetClock(SystemClock):
    """The wall clock ``offset`` seconds off, as on a node whose NTP is broken; the monotonic one
    ``mono_shift`` seconds on (the time spent, to the adapter, since it last measured)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.mono_shift = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.mono_shift


def request(owner: str, clock: OffsetClock) -> Request:
    return Request(owner=owner, playbook="restart-checkout", target_key="Deployment/shop/checkout",
                   limit_key="restart-checkout|Deployment/shop/checkout", namespace="shop",
                   now=clock.now().timestamp(), lock_ttl=TTL)


Opener = Callable[..., Any]


@pytest.fixture
async def open_guard(redis_prefix: str) -> AsyncIterator[Opener]:
    """``open_guard(clock, max_clock_skew=..., metrics=...)``: the adapter as the daemon opens it."""
    opened: list[RedisGuardrails] = []

    async def make(clock: OffsetClock, max_clock_skew: float = 10.0, metrics: Metrics | None = None) -> RedisGuardrails:
        guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), Policy(), clock,
                                           max_clock_skew=max_clock_skew,
                                           on_skew=metrics.clock_skew.set if metrics else None)
        opened.append(guard)
        return guard

    yield make
    for guard in opened:
        await guard.close()


def skew_metric(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("remediator_clock_skew_seconds")
    assert value is not None
    return value


async def test_a_clock_behind_by_more_than_the_bound_admits_and_renews_nothing_until_it_is_back(
    open_guard: Opener,
) -> None:
    """The reviewer's case: A holds the target's lock and renews it; its node's clock steps 45 s back.
    A's renewal would write an expiry that lapses, for B, before A's next renewal: it is refused
    instead, and B stays locked out by the expiry A wrote while its clock was right."""
    metrics = Metrics()
    a_clock, b_clock = OffsetClock(), OffsetClock()
    # B's clock is right (not measured here: it moves on by itself below)
    a, b = await open_guard(a_clock, metrics=metrics), await open_guard(b_clock, max_clock_skew=0.0)
    assert (await a.admit(request("ex-A", a_clock))).admitted
    assert abs(skew_metric(metrics)) < 1.0

    a_clock.offset = -45.0  # a step: measured again at once, not at the next interval
    off = r"clock is -4\d\.\d+s off .*max_clock_skew \(10s\)"
    with structlog.testing.capture_logs() as logs, pytest.raises(GuardrailUnavailable, match=off):
        await a.renew(request("ex-A", a_clock))
    assert -46.0 < skew_metric(metrics) < -44.0
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert "max_clock_skew" in error["event"] and -46.0 < error["skew_seconds"] < -44.0
    for refused in (a.admit(request("ex-A2", a_clock)), a.evaluate(request("ex-A2", a_clock)),
                    a.release(request("ex-A", a_clock), succeeded=True)):
        with pytest.raises(GuardrailUnavailable, match="max_clock_skew"):
            await refused
    # 40 s later (B's clock, and the real one): the lock A took is still A's
    b_clock.offset = 40.0
    verdict = await b.admit(request("ex-B", b_clock))
    assert verdict.kind is DecisionKind.LOCKED and verdict.holder == "ex-A"

    a_clock.offset = 0.0  # NTP fixed it
    with structlog.testing.capture_logs() as logs:
        assert await a.renew(request("ex-A", a_clock))
    assert abs(skew_metric(metrics)) < 1.0
    assert [e["log_level"] for e in logs] == ["warning"]


async def test_within_the_bound_it_admits_and_measures_once_per_interval(open_guard: Opener) -> None:
    metrics = Metrics()
    clock = OffsetClock(5.0)  # ahead, within the default 10 s
    guard = await open_guard(clock, metrics=metrics)
    measured: list[float] = []
    guard._on_skew = measured.append
    verdicts = [await guard.admit(request(f"ex-{i}", clock)) for i in range(20)]
    assert [v.kind for v in verdicts] == [DecisionKind.EXECUTED] + [DecisionKind.LOCKED] * 19
    assert measured == [] and 4.0 < skew_metric(metrics) < 6.0  # measured once, at open
    clock.mono_shift += redis_state.SKEW_INTERVAL  # due: the calls under way at once share one measurement
    await asyncio.gather(*(guard.evaluate(request(f"ex-x{i}", clock)) for i in range(10)))
    assert len(measured) == 1 and 4.0 < measured[0] < 6.0


async def test_the_bound_is_exceeded_only_when_certainly_exceeded(open_guard: Opener) -> None:
    """Half the round trip is allowed for: read 9.5 s ahead, and Redis answered within 2 s: its clock
    was read about 1 s later, 10.5 s behind then, but perhaps only 9.5 s."""
    clock = OffsetClock(9.5)
    guard = await open_guard(clock, max_clock_skew=10.0)
    real_time = guard._client.time

    async def slow_time() -> Any:
        clock.mono_shift += 2.0  # the round trip, to the adapter's monotonic clock
        return await real_time()

    guard._client.time = slow_time  # type: ignore[method-assign]
    clock.mono_shift += redis_state.SKEW_INTERVAL
    assert (await guard.admit(request("ex-1", clock))).admitted
    assert guard.clock_skew is not None and 10.4 < guard.clock_skew < 10.7


async def test_off_when_the_bound_is_zero(open_guard: Opener) -> None:
    metrics = Metrics()
    clock = OffsetClock(-45.0)
    guard = await open_guard(clock, max_clock_skew=0.0, metrics=metrics)
    assert (await guard.admit(request("ex-1", clock))).admitted
    assert guard.clock_skew is None and skew_metric(metrics) == 0.0


def test_the_setting(settings_factory: Callable[..., Any]) -> None:
    assert settings_factory().guardrails.max_clock_skew == 10.0
    assert settings_factory(guardrails={"max_clock_skew": "30s"}).guardrails.max_clock_skew == 30.0
    assert settings_factory(guardrails={"max_clock_skew": 0}).guardrails.max_clock_skew == 0.0


class NodeClock(SystemClock):
    """The daemon's clock on a node whose wall clock is ``offset`` seconds off, the real one
    otherwise; its waits (backoffs, renewals) run on a virtual clock the test advances."""

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.waits = VirtualClock(datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return self.waits.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.waits.sleep(seconds)

    def timer(self, seconds: float) -> asyncio.Future[None]:
        return self.waits.timer(seconds)


async def test_the_daemon_holds_an_alert_while_its_clock_is_off_and_acts_on_it_once_back(
    tmp_path: Path, settings_factory: Callable[..., Any], redis_prefix: str
) -> None:
    """Through the daemon (its settings' default bound): the alert is deferred, nothing runs, the
    metric shows the skew; once NTP has fixed the clock the same alert is executed."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "outage.yaml").write_text(PLAYBOOK)
    settings = settings_factory(redis_url=prefixed(REDIS_URL, redis_prefix), playbooks=str(tmp_path / "pb"),
                                dry_run=False)
    clock, cluster = NodeClock(-45.0), Cluster()
    app = create_app(settings, clock=clock, executors=(cluster, cluster), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        r = await client.post("/webhooks/alertmanager", json=payload(alert_json({"alertname": "X", "app": "one"})),
                              headers={"Authorization": "Bearer t1"})
        assert r.status == 200
        await rt.worker.drain()
        assert cluster.restarted == [] and await rt.store.list_executions() == []
        metrics = await (await client.get("/metrics")).text()
        assert 'remediator_decisions_deferred_total{cause="guardrail_unavailable"} 1.0' in metrics
        assert -46.0 < skew_metric(rt.metrics) < -44.0

        clock.offset = 0.0
        await clock.waits.advance(30)  # the longest backoff
        await rt.worker.drain()
        assert cluster.restarted == ["one"]
        assert abs(skew_metric(rt.metrics)) < 1.0
