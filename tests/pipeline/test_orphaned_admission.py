"""An admission whose decider died before recording the decision is taken over, not waited out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.core.planning import Plan, make_plan
from remediator.pipeline import guard_request
from remediator.runtime import open_runtime
from tests.payloads import db_pool_alert, payload
from tests.pipeline.test_pipeline import Recorder, received


async def test_a_retried_alert_takes_over_its_own_orphaned_admission(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    cluster = Recorder()
    async with open_runtime(settings_factory(dry_run=False), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        [r] = received(payload(db_pool_alert()), vclock)
        [playbook] = rt.playbooks().matching(r.alert)
        did = execution_id(r.alert.dedup_key, playbook.name)
        plan = make_plan(playbook, r.alert, global_dry_run=False)
        assert isinstance(plan, Plan)
        # a decider admitted it (the lock is the execution's) and died before recording the decision
        assert (await rt.guardrails.admit(guard_request(plan, did, vclock.now().timestamp()))).admitted
        first = await rt.pipeline.decide(r)  # first claim: perhaps a live decider right now: defer
        second = await rt.pipeline.decide(r, retried=True)  # claimed again: its decider is gone
        await rt.worker.queue.drain()
        [ex] = await rt.store.list_executions()
    assert first.decisions == [] and first.defer_until is not None
    assert [d.kind.value for d in second.decisions] == ["executed"]
    assert ex["status"] == "succeeded" and [c[0] for c in cluster.calls] == ["resize_pool", "wait_healthy"]
