"""An execution's end whose reply the store lost: it is not forgotten.

PostgreSQL committed ``finish_execution`` and the reply never came.  The pipeline used to take that
for an unreachable store and pause the execution, "to resume once the store is back"; but the row
was finished, so nothing ever resumed it: no final notification, the breaker not fed, and the
target's lock held by a finished execution until its TTL (the next alert on the target: ``locked``).
Now the end is retried under the execution's hold until the store answers, and then followed, once,
by the release and the notice; unless another replica took the execution over meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.core.errors import StoreUnavailable
from remediator.core.guardrails import Request
from remediator.runtime import open_runtime
from tests.guardrails.conftest import REDIS_URL, delete_prefix, prefixed
from tests.payloads import alert_json, payload
from tests.pipeline.test_approval import Notices
from tests.pipeline.test_pipeline import Recorder, playbook_dir, received
from tests.store.conftest import BASE_DSN, fresh_schema, schema_dsn
from tests.tcp_faults import FaultyProxy


def playbook(guardrails: str) -> str:
    """restart-x: restarts the Deployment its alert's ``app`` names, under these ``guardrails``."""
    return f"""
name: restart-x
match: {{alertname: X, matchers: ['app=~".+"']}}
target: {{kind: Deployment, namespace: shop, name: "{{{{ labels.app }}}}"}}
guardrails: {guardrails}
steps: [{{action: restart}}]
"""


PLAYBOOK = playbook("{lock_ttl: 30m}")

#: The statement that records an execution's end (PostgreSQL store).
FINISH_SQL = b"UPDATE decisions SET exec_status = $2, finished_at = $3"


def firing(app: str, starts_at: str = "2026-11-22T10:00:00Z") -> dict[str, Any]:
    return payload(alert_json({"alertname": "X", "app": app}, starts_at=starts_at))


def rival(clock: VirtualClock, app: str = "web") -> Request:
    """Another execution asking for the target: admitted only once the lock is free."""
    return Request("rival", "restart-x", f"Deployment/shop/{app}", f"restart-x|Deployment/shop/{app}", "shop",
                   clock.now().timestamp())


async def retrying(clock: VirtualClock, task: asyncio.Task[Any]) -> None:
    """Until ``task`` waits to try again (asleep for a second at most on the clock), or has ended.
    Real time only for the network's answers, bounded."""
    asleep = asyncio.ensure_future(clock.sleeping(lambda left: left <= 1.0))
    await asyncio.wait({asleep, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    asleep.cancel()


async def run_out(clock: VirtualClock, task: asyncio.Task[Any], step: float = 1.0) -> Any:
    """Move the clock on a step at a time until ``task`` ends (its retries sleep on it); bounded in
    real time, which only the network's answers take."""
    for _ in range(200):
        if task.done():
            return task.result()
        await clock.advance(step)
        await asyncio.wait({task}, timeout=0.05)
    pytest.fail("the execution did not end")


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    prefix = f"test-end-{secrets.token_hex(6)}:"
    yield prefixed(REDIS_URL, prefix)
    await delete_prefix(prefix)


async def test_an_end_committed_without_its_reply_still_releases_the_target_and_tells_once(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_url: str
) -> None:
    proxy = await FaultyProxy("127.0.0.1", 5432).start()
    cluster, notes = Recorder(fail={"restart"}), Notices()
    try:
        async with fresh_schema() as schema:
            dsn = schema_dsn(schema.name, BASE_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
            settings = settings_factory(playbooks=playbook_dir(tmp_path, PLAYBOOK), dry_run=False, database_url=dsn,
                                        redis_url=redis_url, guardrails={"breaker_threshold": 2})
            async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), notifier=notes,
                                    start_worker=False) as rt:
                landed = proxy.lose_reply(FINISH_SQL, after=1)  # the chunk after its Parse executes it
                await rt.store.record_alerts(received(firing("web"), vclock))
                draining = asyncio.create_task(rt.worker.drain())
                await retrying(vclock, draining)
                assert landed.is_set()  # committed, and the daemon never heard so
                await run_out(vclock, draining)
                [ex] = await rt.store.list_executions()
                breaker = await rt.guardrails.breaker("restart-x")
                free = await rt.guardrails.evaluate(rival(vclock))
                # the alert fires again (a new episode) on the same target
                await rt.store.record_alerts(received(firing("web", "2026-11-22T10:05:00Z"), vclock))
                await rt.worker.drain()
                decisions = await rt.store.list_decisions()
    finally:
        await proxy.stop()
    assert ex["status"] == "failed"
    assert notes.events(ex["id"]) == ["started", "failed"]  # told, once
    assert breaker.failures == 1  # the failure fed the breaker
    assert free.kind is DecisionKind.EXECUTED, free.reason  # the finished execution's lock was freed
    assert sorted(d["decision"] for d in decisions) == ["executed", "executed"]  # not "locked" by a finished one
    assert len(cluster.calls) == 2


class EndLost:
    """The store, where the reply to the execution's end is lost (``lose_end``: ``"landed"``, the end
    was written; ``"unsent"``, it was not) and the store is then unreachable until ``down`` is cleared."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.lose_end: str | None = None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("connection refused")
            return await attr(*args, **kwargs)

        return call

    async def finish_execution(self, execution_id: str, status: str, finished: datetime, **kw: Any) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")
        if self.lose_end is not None:
            landed, self.lose_end, self.down = self.lose_end == "landed", None, True
            if landed:
                await self.inner.finish_execution(execution_id, status, finished, **kw)
            raise StoreUnavailable("connection reset before the reply")
        await self.inner.finish_execution(execution_id, status, finished, **kw)


LEASE = 30.0


@dataclass
class Daemon:
    rt: Any
    cluster: Recorder
    notes: Notices


@pytest.fixture
async def daemon(tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Daemon]:
    """The daemon on its embedded store, its lease ``LEASE``, the playbook's restart failing, its notices kept."""
    cluster, notes = Recorder(fail={"restart"}), Notices()
    settings = settings_factory(playbooks=playbook_dir(tmp_path, PLAYBOOK), dry_run=False, worker={"lease": LEASE},
                                guardrails={"breaker_threshold": 2})
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), notifier=notes,
                            start_worker=False) as rt:
        yield Daemon(rt, cluster, notes)


async def start(rt: Any, vclock: VirtualClock, lose_end: str) -> tuple[EndLost, str, asyncio.Task[str | None]]:
    """Decide the alert, and run its execution until its end is lost and the store goes away."""
    rt.pipeline.store = store = EndLost(rt.store)
    await rt.store.record_alerts(received(firing("web"), vclock))
    assert await rt.worker.decide_all() == 1
    [did] = await rt.store.unfinished_executions()
    store.lose_end = lose_end
    running = asyncio.create_task(rt.pipeline.run_claimed(did))
    await retrying(vclock, running)
    return store, did, running


async def test_an_end_landed_during_an_outage_longer_than_the_lease_is_still_followed_once(
    daemon: Daemon, vclock: VirtualClock
) -> None:
    rt, notes = daemon.rt, daemon.notes
    store, did, running = await start(rt, vclock, "landed")
    await rt.guardrails.set_paused(True)  # the kill switch stops steps, not the recording of an end
    await vclock.advance(2 * LEASE)  # the lease may have lapsed: whose end it is must be read
    assert not running.done()
    store.down = False
    assert await run_out(vclock, running) == "failed"
    breaker = await rt.guardrails.breaker("restart-x")
    await rt.guardrails.set_paused(False)
    free = await rt.guardrails.evaluate(rival(vclock))
    assert notes.events(did) == ["started", "failed"]
    assert breaker.failures == 1
    assert free.kind is DecisionKind.EXECUTED, free.reason


@pytest.mark.parametrize("other", ["holds", "ended"])
async def test_a_replica_whose_lease_lapsed_while_retrying_its_end_leaves_it_to_the_one_that_took_over(
    other: str, daemon: Daemon, vclock: VirtualClock
) -> None:
    rt, notes = daemon.rt, daemon.notes
    store, did, running = await start(rt, vclock, "unsent")
    await vclock.advance(LEASE + 5)  # cut off past its lease: another replica resumes the execution
    assert did in await rt.store.claim_unfinished("replica-2", LEASE)
    if other == "ended":  # and ends it (releasing the lock and telling the channels itself)
        await rt.store.finish_execution(did, "failed", vclock.now())
    store.down = False
    assert await run_out(vclock, running) == "lease_lost"
    [ex] = await rt.store.list_executions()
    breaker = await rt.guardrails.breaker("restart-x")
    held = await rt.guardrails.evaluate(rival(vclock))
    assert ex["status"] == ("running" if other == "holds" else "failed")
    assert notes.events(did) == ["started"]  # the final notice is the other replica's to send
    assert breaker.failures == 0  # nor did this one feed the breaker, or free the lock it holds
    assert held.kind is DecisionKind.LOCKED


async def test_a_shutdown_while_retrying_an_unsent_end_leaves_it_to_be_resumed_and_ended_once(
    daemon: Daemon, vclock: VirtualClock
) -> None:
    rt, cluster, notes = daemon.rt, daemon.cluster, daemon.notes
    store, did, running = await start(rt, vclock, "unsent")
    running.cancel()  # the shutdown's grace ran out
    await asyncio.gather(running, return_exceptions=True)
    store.down = False
    await rt.store.release_execution(did, rt.pipeline.owner)  # handed back, as the queue does
    assert await rt.pipeline.resume_unfinished() == 1
    [ex] = await rt.store.list_executions()
    breaker = await rt.guardrails.breaker("restart-x")
    assert ex["status"] == "failed"
    assert len(cluster.calls) == 1  # the failed step is not run again
    assert notes.events(did) == ["started", "failed"]
    assert breaker.failures == 1
