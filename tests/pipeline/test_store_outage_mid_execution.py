"""A store error around a step pauses the execution; it never fails the step or runs on_failure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.errors import StoreUnavailable
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import deliver

PLAYBOOK = """
name: two-steps
match: {alertname: X}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}, {action: scale, to: 3}]
on_failure: [{action: rollback}]
"""


class Writes:
    """Records its intent before each write, as the Kubernetes executor does, then 'applies' it."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        await ctx.record_intent({"action": step.action})
        self.applied.append(step.action)
        return StepResult("ok", f"{step.action} applied", details={"wrote": True})


class IntentsDown:
    """The store, unreachable for write-ahead records while ``down``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def begin_step(self, execution_id: str, step: PlannedStep, intent: Mapping[str, Any], **kw: Any) -> None:
        if self.down and intent:
            raise StoreUnavailable("connection refused")
        await self.inner.begin_step(execution_id, step, intent, **kw)


async def test_a_store_failure_while_recording_an_intent_pauses_and_the_execution_finishes_later(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "two.yaml").write_text(PLAYBOOK)
    cluster = Writes()
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False)
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        rt.pipeline.store = store = IntentsDown(rt.store)
        store.down = True
        await deliver(rt, payload(alert_json({"alertname": "X"})))
        [paused] = await rt.store.list_executions()
        applied_while_down = list(cluster.applied)
        store.down = False
        assert await rt.pipeline.resume_unfinished() == 1
        full = await rt.store.get_execution(paused["id"])
        breakers = (await rt.guardrails.status()).breakers
    assert paused["status"] == "running"  # paused, not failed
    assert applied_while_down == []  # nothing was sent without its write-ahead record
    assert cluster.applied == ["restart", "scale"]  # each once, after the store came back
    assert full["status"] == "succeeded"
    assert [(r["phase"], r["action"], r["status"]) for r in full["results"]] == [
        ("main", "restart", "ok"), ("main", "scale", "ok")]  # no on_failure rollback
    assert "two-steps" not in breakers or breakers["two-steps"].failures == 0
