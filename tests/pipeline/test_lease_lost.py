"""A replica that cannot count on its lease any more stops the step under way.

Cut off from the store during a long step, a replica's lease lapses and another replica resumes the
execution.  The cut-off one used to run its step on (it found out only at its next step), so the same
step ran on two replicas at once; the guardrail lock, keyed by the execution, does not tell them apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.errors import StoreUnavailable
from remediator.pipeline import Pipeline
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_approval import Notices
from tests.pipeline.test_pipeline import playbook_dir, received

LONG = """
name: long
match: {alertname: Long}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
"""


class Long:
    """A step that runs until told to finish; counts how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()  # a run was cancelled
        self.go = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.stopped.set()
            raise
        finally:
            self.running -= 1
        return StepResult("ok", "done")


async def test_a_replica_cut_off_for_most_of_its_lease_stops_its_step_before_another_resumes_it(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_factory(playbooks=playbook_dir(tmp_path, LONG), dry_run=False, worker={"lease": 30})
    cluster = Long()
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "Long"})), vclock))
        assert await rt.worker.decide_all() == 1
        running = asyncio.create_task(rt.worker.queue.drain())
        await asyncio.wait_for(cluster.started.wait(), 10)
        [did] = await rt.store.unfinished_executions()

        real = rt.store.claim_execution

        async def cut_off(*args: Any, **kwargs: Any) -> bool:
            raise StoreUnavailable("partitioned")

        monkeypatch.setattr(rt.store, "claim_execution", cut_off)
        await vclock.advance(20)  # two renewals failed: two thirds of the lease
        await asyncio.wait_for(cluster.stopped.wait(), 10)  # the step is stopped before the lease lapses
        assert cluster.running == 0
        await asyncio.wait_for(running, 10)
        monkeypatch.setattr(rt.store, "claim_execution", real)
        [begun] = (await rt.store.get_execution(did))["results"]
        assert begun["status"] == "started"  # its write-ahead record only: no outcome of the stopped run

        await vclock.advance(11)  # the lease has lapsed in the store: another replica resumes it
        other = Pipeline(playbooks=rt.playbooks, store=rt.store, guardrails=rt.guardrails, live=cluster,
                         dry=cluster, notifier=Notices(), clock=vclock, settings=rt.pipeline.settings,
                         owner="replica-2")
        assert did in await rt.store.claim_unfinished("replica-2", 30)
        cluster.go.set()
        assert await other.run_claimed(did) == "succeeded"
    assert cluster.most == 1  # never two at once
