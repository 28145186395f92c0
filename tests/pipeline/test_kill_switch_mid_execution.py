"""The kill switch and the circuit breaker are checked before every step, not only at admission."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.guardrails import Request
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import received

PLAYBOOK = """
name: two-steps
match: {alertname: X}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}, {action: scale, to: 3}]
"""


class FirstStepWaits:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.started = asyncio.Event()
        self.go = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.sent.append(step.action)
        if step.action == "restart":
            self.started.set()
            await self.go.wait()
        return StepResult("ok", f"{step.action} done")


async def start(rt: Any, cluster: FirstStepWaits, vclock: VirtualClock) -> asyncio.Task[Any]:
    await rt.store.record_alerts(received(payload(alert_json({"alertname": "X"})), vclock))
    running = asyncio.create_task(rt.worker.drain())
    await asyncio.wait_for(cluster.started.wait(), 10)
    return running


@pytest.fixture
def settings(tmp_path: Path, settings_factory: Callable[..., Any]) -> Any:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "two.yaml").write_text(PLAYBOOK)
    return settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False,
                            guardrails={"breaker_threshold": 1, "breaker_cooloff": "10m"})


async def test_pausing_between_two_steps_stops_the_next_one_and_resume_runs_it(
    settings: Any, vclock: VirtualClock
) -> None:
    cluster = FirstStepWaits()
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        running = await start(rt, cluster, vclock)
        await rt.guardrails.set_paused(True)  # POST /api/v1/pause while the restart runs
        cluster.go.set()
        await asyncio.wait_for(running, 10)
        [paused] = await rt.store.list_executions()
        sent_while_paused = list(cluster.sent)
        await rt.guardrails.set_paused(False)  # POST /api/v1/resume
        assert await rt.pipeline.resume_unfinished() == 1
        full = await rt.store.get_execution(paused["id"])
    assert sent_while_paused == ["restart"] and paused["status"] == "running"
    assert cluster.sent == ["restart", "scale"] and full["status"] == "succeeded"
    assert [(e["journal"], e.get("reason")) for e in full["events"]] == [
        ("paused", "remediation is paused (kill switch)"), ("resumed", "claimed again after an interruption")]
    assert full["events"][0]["before"] == "main step 1 (scale)"
    assert full["notifications"] == []


async def test_a_breaker_that_opens_meanwhile_stops_the_execution_before_its_next_step(
    settings: Any, vclock: VirtualClock
) -> None:
    cluster = FirstStepWaits()
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        running = await start(rt, cluster, vclock)
        other = Request("other", "two-steps", "Deployment/shop/api", "k", "shop", vclock.now().timestamp())
        assert (await rt.guardrails.admit(other)).admitted
        await rt.guardrails.release(other, succeeded=False)  # another execution of the playbook failed
        cluster.go.set()
        await asyncio.wait_for(running, 10)
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
    assert cluster.sent == ["restart"] and ex["status"] == "running"
    assert full["events"][0]["reason"] == "the playbook's circuit breaker is open (1 consecutive failures)"


async def test_an_execution_paused_before_its_first_step_is_announced_once_when_it_starts(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    """Admitted before the kill switch was set: the queue tries it again and again while paused, and the
    channels are told "started" only once it does start, not at every try."""
    from tests.pipeline.test_approval import CHANNELS, Notices
    from tests.pipeline.test_pipeline import Recorder

    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK + "notify: [ops]\n")
    live, notices = Recorder(), Notices()
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, channels=CHANNELS)
    async with open_runtime(settings, clock=vclock, executors=(live, live), notifier=notices,
                            start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "X"})), vclock))
        await rt.worker.decide_all()  # admitted, pending
        await rt.kill_switch.pause(by="sre")
        for _ in range(4):  # the queue's tries while paused (its backoff is at most a minute)
            await rt.worker.queue.drain()
            await vclock.advance(61)
        assert live.calls == [] and [e for e, _, _ in notices.sent] == []
        await rt.kill_switch.resume(by="sre")
        await rt.worker.queue.drain()
    assert [c[0] for c in live.calls] == ["restart", "scale"]
    assert [e for e, _, _ in notices.sent].count("started") == 1


class RestartsWaitScaleFails:
    """Each restart waits for ``go`` (all three in flight: ``all_started``); every scale fails."""

    def __init__(self, executions: int) -> None:
        self.sent: list[tuple[str, str]] = []
        self.executions = executions
        self.all_started = asyncio.Event()
        self.go = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.sent.append((step.action, ctx.target.name))
        if step.action == "restart":
            if sum(1 for a, _ in self.sent if a == "restart") == self.executions:
                self.all_started.set()
            await self.go.wait()
            return StepResult("ok", "restarted")
        return StepResult("failed", f"{step.action} failed")


async def test_executions_an_open_breaker_stopped_go_on_one_at_a_time_when_it_half_opens(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    """Half-open lets one trial execution through: of the executions the open breaker stopped half way,
    one goes on as that trial; when its next step fails too the breaker opens again, and the others
    never took theirs."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK.replace(
        "match: {alertname: X}", "match: {alertname: X, matchers: ['app=~\".+\"']}").replace(
        "name: web}", 'name: "{{ labels.app }}"}'))
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False,
                                guardrails={"breaker_threshold": 1, "breaker_cooloff": "10m"})
    cluster = RestartsWaitScaleFails(3)
    async with open_runtime(settings, clock=vclock, executors=(cluster, cluster), start_worker=False) as rt:
        for app in ("a", "b", "c"):
            alert = alert_json({"alertname": "X", "app": app}, fingerprint=app * 16)
            await rt.store.record_alerts(received(payload(alert), vclock))
        running = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(cluster.all_started.wait(), 10)
        other = Request("other", "two-steps", "Deployment/shop/zzz", "k", "shop", vclock.now().timestamp())
        assert (await rt.guardrails.admit(other)).admitted
        await rt.guardrails.release(other, succeeded=False)  # the breaker opens
        cluster.go.set()
        await asyncio.wait_for(running, 10)
        assert [a for a, _ in cluster.sent] == ["restart"] * 3  # all stopped before their scale
        await vclock.advance(601)  # half-open
        await rt.worker.queue.drain()
        assert [a for a, _ in cluster.sent].count("scale") == 1  # the trial's, which failed: open again
        assert (await rt.guardrails.breaker("two-steps")).state.value == "open"
