"""An execution's release that Redis did not answer is retried until it lands.

A release frees the target's lock, but it also feeds the breaker the execution's outcome and starts
the cooldown from its end.  When Redis refused connections for a moment as a step returned, the
release was logged and dropped ("the lock lapses by its TTL"): the lock did, but the failure was
never counted and the cooldown never started, so a playbook that kept failing while Redis flapped
never tripped its breaker.  Now it is retried in the background, with backoff on the clock.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.guardrails import Request
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from tests.guardrails.conftest import delete_prefix, prefixed
from tests.pipeline.test_approval import Notices
from tests.pipeline.test_end_reply_lost import firing, playbook
from tests.pipeline.test_pipeline import playbook_dir, received
from tests.store.conftest import fresh_schema
from tests.tcp_faults import FaultyProxy

PLAYBOOK = playbook("{cooldown: 10m}")


class Flapping:
    """The cluster: each restart returns ``status``; Redis refuses connections as the one on ``web`` returns."""

    def __init__(self, redis: FaultyProxy, status: str) -> None:
        self.redis = redis
        self.status = status
        self.calls: list[str] = []

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.calls.append(ctx.target.name)
        if ctx.target.name == "web" and len(self.calls) == 1:
            self.redis.refuse = True
            self.redis.cut()
        return StepResult(self.status, f"restart {self.status}", details={"wrote": True})


@pytest.fixture
async def redis() -> AsyncIterator[tuple[FaultyProxy, str]]:
    """Real Redis behind a proxy that can refuse it, under a key prefix of the test's own."""
    proxy = await FaultyProxy("127.0.0.1", 6379).start()
    prefix = f"test-release-{secrets.token_hex(6)}:"
    yield proxy, prefixed(f"redis://127.0.0.1:{proxy.port}/0", prefix)
    await proxy.stop()
    await delete_prefix(prefix)


async def until(clock: VirtualClock, what: str, check: Callable[[], Any]) -> None:
    """Move the clock on a second at a time until ``check()`` holds (retries sleep on it); real time
    only for Redis's answers, bounded."""
    for _ in range(120):
        if await check():
            return
        await clock.advance(1)
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


async def test_a_failure_whose_release_redis_refused_still_opens_the_breaker(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis: tuple[FaultyProxy, str]
) -> None:
    proxy, url = redis
    cluster, notes = Flapping(proxy, "failed"), Notices()
    async with fresh_schema() as schema:
        settings = settings_factory(playbooks=playbook_dir(tmp_path, PLAYBOOK), dry_run=False, redis_url=url,
                                    database_url=schema.dsn, guardrails={"breaker_threshold": 1})
        async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), notifier=notes,
                                start_worker=False) as rt:
            await rt.store.record_alerts(received(firing("web"), vclock))
            await rt.worker.drain()
            [ex] = await rt.store.list_executions()
            told = notes.events(ex["id"])
            proxy.refuse = False  # Redis is back

            async def opened() -> bool:
                return (await rt.guardrails.breaker("restart-x")).failures == 1

            await until(vclock, "the failure to reach the breaker", opened)
            await rt.store.record_alerts(received(firing("api"), vclock))
            await rt.worker.drain()
            decisions = {d["target"]["name"]: d["decision"] for d in await rt.store.list_decisions()}
    assert told == ["started", "failed"]  # told at once, the outage notwithstanding
    assert decisions == {"web": "executed", "api": "circuit_open"}
    assert cluster.calls == ["web"]  # the failing playbook did not run again


async def test_a_release_retried_late_counts_the_cooldown_from_the_execution_s_end(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis: tuple[FaultyProxy, str]
) -> None:
    proxy, url = redis
    cluster = Flapping(proxy, "ok")
    settings = settings_factory(playbooks=playbook_dir(tmp_path, PLAYBOOK), dry_run=False, redis_url=url)
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        await rt.store.record_alerts(received(firing("web"), vclock))
        await rt.worker.drain()  # ended at T0, its release refused
        await vclock.advance(120)  # two minutes of outage
        proxy.refuse = False

        async def cooling() -> bool:
            return (await rt.guardrails.evaluate(Request(
                "probe", "restart-x", "Deployment/shop/web", "restart-x|Deployment/shop/web", "shop",
                vclock.now().timestamp()))).kind.value == "cooldown"

        await until(vclock, "the cooldown to be recorded", cooling)
        await vclock.advance(540 - 121)  # T0 + 9 min: still cooling down
        await rt.store.record_alerts(received(firing("web", "2026-11-22T10:09:00Z"), vclock))
        await rt.worker.drain()
        await vclock.advance(61)  # T0 + 10 min + 1 s: the cooldown from the end is over
        await rt.store.record_alerts(received(firing("web", "2026-11-22T10:10:01Z"), vclock))
        await rt.worker.drain()
        decisions = [d["decision"] for d in sorted(await rt.store.list_decisions(), key=lambda d: d["at"])]
    assert decisions == ["executed", "cooldown", "executed"]
