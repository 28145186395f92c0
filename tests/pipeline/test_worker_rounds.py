"""A round that fails for an unexpected reason (a bug, not an outage) costs that round only.

The decision loop and the execution loop log it and go on with the next round; only a loop
that dies stops the daemon (tests/pipeline/test_supervision.py).  The failure is injected at
the store's boundary, once, as the Kubernetes fake injects its faults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision
from remediator.ports import NoEvents, ReceivedAlert
from remediator.runtime import open_runtime
from tests.guardrails.test_pipeline_guardrails import Passthrough
from tests.payloads import payload
from tests.pipeline.test_pipeline import Recorder, db_pool_alert, received


class FailsOnce(Passthrough):
    """The store, whose ``method`` raises once as a bug would; ``failed`` tells it did."""

    def __init__(self, inner: Any, method: str) -> None:
        super().__init__(inner)
        self.failed = asyncio.Event()
        self._method = method

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if name != self._method:
            return real

        async def once(*args: Any, **kwargs: Any) -> Any:
            if not self.failed.is_set():
                self.failed.set()
                raise RuntimeError(f"a bug in {name}, this round only")
            return await real(*args, **kwargs)

        return once


class Finished(NoEvents):
    def __init__(self) -> None:
        self.done = asyncio.Event()

    def execution_finished(self, execution_id: str, status: str) -> None:
        self.done.set()


class Processed(NoEvents):
    def __init__(self) -> None:
        self.done = asyncio.Event()

    def alert_processed(self, received: ReceivedAlert, decisions: Sequence[Decision]) -> None:
        self.done.set()


async def test_a_decision_round_that_raises_is_logged_and_the_next_round_decides(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    async with open_runtime(settings_factory(), clock=vclock, start_worker=False) as rt:
        broken = FailsOnce(rt.store, "claim_alerts")
        rt.worker.intake = broken
        after_failure: list[bool] = []  # for each alert processed: had a round failed before it?

        class Seen(Processed):
            def alert_processed(self, received: ReceivedAlert, decisions: Sequence[Decision]) -> None:
                after_failure.append(broken.failed.is_set())
                super().alert_processed(received, decisions)

        seen = rt.pipeline.events = Seen()
        with capture_logs() as logs:
            loops = asyncio.create_task(rt.worker.run())
            await rt.store.record_alerts(received(payload(db_pool_alert()), vclock))
            rt.worker.wake()
            await asyncio.wait_for(broken.failed.wait(), 10)
            rt.worker.wake()  # the next round (at the latest after worker.poll_interval)
            await asyncio.wait_for(seen.done.wait(), 10)
            rt.worker.stop()
            await asyncio.wait_for(loops, 10)
        # Decided once, by a round after the failed one (which may already have run when the test
        # looks: a wake that came during the failed round starts the next at once).
        assert after_failure == [True]
        assert any(e["event"] == "decision round failed; will retry" for e in logs)
        [ex] = await rt.store.list_executions()
        assert ex["playbook"] == "db-pool-exhaustion" and not rt.failed.is_set()


async def test_an_execution_round_that_raises_is_logged_and_the_next_round_runs_it(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    cluster = Recorder()
    async with open_runtime(settings_factory(dry_run=False), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(db_pool_alert()), vclock))
        assert await rt.worker.decide_all() == 1
        broken = FailsOnce(rt.store, "claim_unfinished")
        rt.pipeline.store = broken
        seen = rt.pipeline.events = Finished()
        with capture_logs() as logs:
            loops = asyncio.create_task(rt.worker.run())
            await asyncio.wait_for(broken.failed.wait(), 10)
            assert cluster.calls == []
            rt.worker.wake()  # the next round (at the latest after worker.poll_interval)
            await asyncio.wait_for(seen.done.wait(), 10)
            rt.worker.stop()
            await asyncio.wait_for(loops, 10)
        assert any(e["event"] == "execution round failed; will retry" for e in logs)
        assert [c[0] for c in cluster.calls] == ["resize_pool", "wait_healthy"]
        [ex] = await rt.store.list_executions()
        assert ex["status"] == "succeeded" and not rt.failed.is_set()
