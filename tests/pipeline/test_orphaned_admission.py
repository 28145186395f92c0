"""An admission whose decider died before recording the decision is taken over, not waited out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.core.errors import GuardrailUnavailable
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


class _ReplyLost:
    """Guardrail state whose first admission is applied and then unreachable, as when Redis ran the
    script and the connection dropped before its reply (or the reply came after the timeout)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.lost = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def admit(self, req: Any) -> Any:
        verdict = await self.inner.admit(req)
        if not self.lost:
            self.lost += 1
            raise GuardrailUnavailable("connection reset by peer")
        return verdict


async def test_an_admission_whose_reply_was_lost_is_taken_over_after_its_deferral(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    # The decision was deferred (guardrail state unreachable) and its alert's attempts started over, so
    # the next decider met the lock of its own applied admission as a first try and deferred again until
    # the lock lapsed (10 minutes here; with Redis, then refused by the rate its own admission had
    # counted: an acknowledged alert never remediated).
    cluster = Recorder()
    async with open_runtime(settings_factory(dry_run=False), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        lossy = _ReplyLost(rt.pipeline.guardrails)
        rt.pipeline.guardrails = lossy  # type: ignore[assignment]
        await rt.store.record_alerts(received(payload(db_pool_alert()), vclock))
        for _ in range(12):  # a minute: its deferral is over, the lock (10 minutes) is far from lapsing
            await rt.worker.drain()
            await vclock.advance(5)
        decisions = await rt.store.list_decisions()
    assert lossy.lost == 1
    assert [d["decision"] for d in decisions] == ["executed"]
    assert [c[0] for c in cluster.calls] == ["resize_pool", "wait_healthy"]
    assert [(d["decision"], d["reason"]) for d in decisions] == [
        ("executed", "all guardrails passed (admitted before an interruption)")]
