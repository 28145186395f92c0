"""The pipeline end to end, in process: webhook-shaped alerts in, decisions and audit out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.core.decisions import PlannedStep
from remediator.core.guardrails import Request
from remediator.ports import ReceivedAlert, StepContext, StepResult
from remediator.runtime import open_runtime
from tests.payloads import alert_json, db_pool_alert, payload


def received(raw: dict[str, Any], clock: VirtualClock) -> list[ReceivedAlert]:
    p = validate_payload(raw)
    return [ReceivedAlert(a, clock.now(), p.receiver, p.group_key) for a in p.alerts]


def playbook_dir(tmp_path: Path, text: str) -> str:
    """A folder holding one playbook file with ``text``: for a test that runs its own playbook."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(text)
    return str(tmp_path / "pb")


@pytest.fixture
def runtime_with(tmp_path: Path, settings_factory: Callable[..., Any],
                 vclock: VirtualClock) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """The daemon (worker not started) running one playbook ``text`` of the test's own."""
    def make(text: str, executors: Any = None, **settings: Any) -> AbstractAsyncContextManager[Any]:
        return open_runtime(settings_factory(playbooks=playbook_dir(tmp_path, text), **settings), clock=vclock,
                            executors=executors, start_worker=False)
    return make


async def deliver(rt: Any, raw: dict[str, Any]) -> int:
    new: int = await rt.store.record_alerts(received(raw, rt.clock))
    await rt.worker.drain()
    return new


class Recorder:
    """An executor that records what it was asked to do (and can be told to fail)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str, StepResult | None]] = []
        self.fail = fail or set()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.calls.append((step.action, ctx.target.key, ctx.previous))
        if step.action in self.fail:
            return StepResult("failed", f"{step.action} failed on purpose")
        return StepResult("ok", f"{step.action} done")


async def test_dry_run_records_every_step_with_rendered_parameters(runtime: Any) -> None:
    assert await deliver(runtime, payload(db_pool_alert(container="api"))) == 1
    [ex] = await runtime.store.list_executions()
    assert ex["playbook"] == "db-pool-exhaustion"
    assert ex["status"] == "dry_run" and ex["decision"] == "executed" and ex["dry_run"] is True
    assert ex["target"] == {"kind": "Deployment", "namespace": "shop", "name": "orders-api"}
    full = await runtime.store.get_execution(ex["id"])
    assert [(r["action"], r["status"]) for r in full["results"]] == [("resize_pool", "planned"),
                                                                     ("wait_healthy", "planned")]
    assert full["results"][0]["params"] == {"container": "api", "env": "DB_POOL_MAX_SIZE", "by": 10, "max": 50}
    assert full["alert_payload"]["labels"]["deployment"] == "orders-api"
    assert full["playbook_version"]


async def test_live_mode_without_a_cluster_fails_clearly(settings_factory: Callable[..., Any],
                                                         vclock: VirtualClock) -> None:
    async with open_runtime(settings_factory(dry_run=False), clock=vclock, start_worker=False) as rt:
        await deliver(rt, payload(db_pool_alert()))
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
    assert ex["status"] == "failed" and ex["dry_run"] is False
    first = full["results"][0]
    assert first["status"] == "failed"
    assert "no Kubernetes executor configured" in first["message"]
    # nothing was changed, so the playbook's on_failure (a rollback) is not run
    assert [(r["phase"], r["action"]) for r in full["results"]] == [("main", "resize_pool")]


async def test_per_playbook_dry_run_overrides_live_mode(
        runtime_with: Callable[..., AbstractAsyncContextManager[Any]]) -> None:
    rec = Recorder()
    async with runtime_with(
        "name: careful\nmatch: {alertname: X, matchers: ['namespace=~\".+\"']}\n"
        "target: {kind: Deployment, namespace: '{{ labels.namespace }}', name: web}\n"
        "guardrails: {dry_run: true}\nsteps: [{action: restart}]\n",
        executors=(rec, Recorder()), dry_run=False,
    ) as rt:
        await deliver(rt, payload(alert_json({"alertname": "X", "namespace": "shop"})))
        [ex] = await rt.store.list_executions()
    assert ex["dry_run"] is True and ex["status"] == "dry_run"
    assert rec.calls == []  # the live executor was never touched


async def test_a_missing_target_annotation_and_a_forbidden_namespace_are_not_allowed(
        runtime_with: Callable[..., AbstractAsyncContextManager[Any]]) -> None:
    """A target read from a label the matchers do not guarantee does not load (tests/core/test_targets.py);
    one read from an annotation may still fail to render, and planning refuses that alert, as it refuses
    a namespace off the allowlist: ``not_allowed`` with the reason, and no execution."""
    async with runtime_with(
        "name: by-annotation\nmatch: {alertname: X, matchers: ['namespace=~\".+\"']}\n"
        "target: {kind: Deployment, namespace: '{{ labels.namespace }}', name: '{{ annotations.workload }}'}\n"
        "guardrails: {namespaces: [shop]}\nsteps: [{action: restart}]\n"
    ) as rt:
        no_workload = alert_json({"alertname": "X", "namespace": "shop"})
        forbidden = alert_json({"alertname": "X", "namespace": "kube-public"})
        forbidden["annotations"]["workload"] = "x"
        out1 = await rt.pipeline.process(received(payload(no_workload), rt.clock)[0])
        out2 = await rt.pipeline.process(received(payload(forbidden), rt.clock)[0])
        [d1], [d2] = out1.decisions, out2.decisions
        assert d1.kind.value == "not_allowed" and "has no 'workload'" in d1.reason
        assert d2.kind.value == "not_allowed" and "allowlist" in d2.reason
        assert await rt.store.list_executions() == []


async def test_no_match_gives_a_no_match_decision_and_no_execution(runtime: Any) -> None:
    out = await runtime.pipeline.process(received(payload(alert_json({"alertname": "Unknown"})), runtime.clock)[0])
    assert [d.kind.value for d in out.decisions] == ["no_match"]


async def test_duplicate_delivery_creates_no_second_execution(runtime: Any) -> None:
    raw = payload(db_pool_alert())
    assert await deliver(runtime, raw) == 1
    assert await deliver(runtime, raw) == 0
    # a duplicate that slipped past intake (e.g. re-processing after a crash) is still decided once
    await runtime.pipeline.process(received(raw, runtime.clock)[0])
    assert len(await runtime.store.list_executions()) == 1


async def test_restart_loses_no_alert_or_execution(settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    settings = settings_factory()
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        await deliver(rt, payload(db_pool_alert()))
        # recorded but not yet processed when the daemon stops
        await rt.store.record_alerts(received(payload(db_pool_alert(deployment="billing-api")), vclock))
        before = await rt.store.list_executions()
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        assert await rt.store.list_executions() == before
        assert await rt.store.count_alerts() == 2
        assert await rt.worker.drain() == 1  # the parked alert is processed after the restart
        assert await deliver(rt, payload(db_pool_alert())) == 0  # redelivery after restart: no new work
        names = sorted(e["target"]["name"] for e in await rt.store.list_executions())
    assert names == ["billing-api", "orders-api"]


async def test_interrupted_execution_resumes_without_repeating_steps(settings_factory: Callable[..., Any],
                                                                     vclock: VirtualClock, tmp_path: Path) -> None:
    pb = playbook_dir(tmp_path,
        "name: three\nmatch: {alertname: X}\ntarget: {kind: Deployment, namespace: shop, name: web}\n"
        "steps: [{action: restart}, {action: scale, to: 3}, {action: wait_healthy}]\n"
    )
    settings = settings_factory(dry_run=False, playbooks=pb)
    gate = asyncio.Event()
    reached = asyncio.Event()

    class Hangs(Recorder):
        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            if step.action == "scale":
                await ctx.record_intent({"replicas": 3})
                reached.set()
                await gate.wait()  # the process "dies" here
            return await super().run(step, ctx)

    first = Hangs()
    async with open_runtime(settings, clock=vclock, executors=(first, first), start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "X"})), vclock))
        task = asyncio.create_task(rt.worker.drain())
        await asyncio.wait_for(reached.wait(), timeout=10)
        assert [c[0] for c in first.calls] == ["restart"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    second = Recorder()
    async with open_runtime(settings, clock=vclock, executors=(second, second), start_worker=False) as rt:
        assert list(rt.guardrails.state.locks) == ["Deployment/shop/web"]  # held across the crash
        assert await rt.pipeline.resume_unfinished() == 1
        [lock] = rt.guardrails.state.locks.values()  # released by the resumed execution (its record stays)
        assert lock.expires <= vclock.now().timestamp()
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
    # restart ran once (before the crash); scale was re-checked with its recorded intent; wait ran once
    assert [c[0] for c in second.calls] == ["scale", "wait_healthy"]
    previous = second.calls[0][2]
    assert previous is not None and previous.status == "started" and previous.details["intent"] == {"replicas": 3}
    assert ex["status"] == "succeeded"
    assert [r["status"] for r in full["results"]] == ["ok", "ok", "ok"]


async def test_stabilisation_window_defers_then_executes_or_cancels(
    runtime_with: Callable[..., AbstractAsyncContextManager[Any]], vclock: VirtualClock
) -> None:
    async with runtime_with(
        "name: patient\nmatch: {alertname: X, matchers: ['app=~\".+\"']}\n"
        "target: {kind: Deployment, namespace: shop, name: '{{ labels.app }}'}\n"
        "guardrails: {for: 5m}\nsteps: [{action: restart}]\n"
    ) as rt:
        stays = alert_json({"alertname": "X", "app": "a"}, starts_at="2026-11-22T10:00:00Z")
        flaps = alert_json({"alertname": "X", "app": "b"}, starts_at="2026-11-22T10:00:00Z")
        await deliver(rt, payload(stays, flaps))
        assert await rt.store.list_executions() == []  # still stabilising
        await vclock.advance(120)
        resolved = dict(flaps, status="resolved", endsAt="2026-11-22T10:02:00Z")
        await deliver(rt, payload(resolved))
        await vclock.advance(179)
        assert await rt.worker.drain() == 0  # not due yet
        await vclock.advance(1)
        assert await rt.worker.drain() == 2
        [ex] = await rt.store.list_executions()
        cancelled = await rt.store.decision(
            __import__("remediator.core.decisions", fromlist=["execution_id"]).execution_id(
                validate_payload(payload(flaps)).alerts[0].dedup_key, "patient"))
    assert ex["target"]["name"] == "a" and ex["status"] == "dry_run"
    assert cancelled is not None and cancelled.kind.value == "resolved_cancelled"


async def test_guardrail_cooldown_suppresses_a_second_episode(settings_factory: Callable[..., Any],
                                                             vclock: VirtualClock) -> None:
    recorder = Recorder()
    async with open_runtime(settings_factory(dry_run=False), clock=vclock, executors=(recorder, recorder),
                            start_worker=False) as rt:
        await deliver(rt, payload(db_pool_alert()))
        await rt.clock.advance(60)
        later = db_pool_alert()
        later["startsAt"] = "2026-11-22T10:01:00Z"
        await deliver(rt, payload(later))
        decisions = [d["decision"] for d in await rt.store.list_decisions()]
    assert decisions == ["executed", "cooldown"]


async def test_dry_run_reads_the_guardrails_but_never_consumes_them(settings_factory: Callable[..., Any],
                                                                    vclock: VirtualClock) -> None:
    """Plan-only executions take no lock, cooldown, rate, budget or slot: three dry runs of a trial
    playbook leave the live one free to act, and each records what the guardrails would have said."""
    recorder = Recorder()
    budget = {"budgets": [{"scope": "*", "max": 1, "per": "1h"}], "max_running": 1}
    async with open_runtime(settings_factory(dry_run=True, guardrails=budget), clock=vclock,
                            executors=(recorder, recorder), start_worker=False) as dry:
        for minute in range(3):
            episode = db_pool_alert()
            episode["startsAt"] = f"2026-11-22T10:0{minute}:00Z"
            await deliver(dry, payload(episode))
            await dry.clock.advance(60)
        dry_runs = [d["decision"] for d in await dry.store.list_decisions()]
        verdict = await dry.guardrails.admit(Request("live", "db-pool-exhaustion", "Deployment/shop/orders-api",
                                                     "db-pool-exhaustion|Deployment/shop/orders-api", "shop",
                                                     vclock.now().timestamp(), cooldown=600.0))
    assert dry_runs == ["executed"] * 3  # no cooldown, budget or lock from the one before
    assert verdict.admitted  # the live remediation is not held back by the dry runs


async def test_kill_switch_records_paused(runtime: Any) -> None:
    await runtime.guardrails.set_paused(True)
    await deliver(runtime, payload(db_pool_alert()))
    [d] = await runtime.store.list_decisions()
    assert d["decision"] == "paused"
    assert await runtime.store.list_executions() == []


async def test_a_crashing_executor_is_recorded_not_fatal(settings_factory: Callable[..., Any],
                                                          vclock: VirtualClock) -> None:
    class Broken:
        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            raise RuntimeError("boom")

    async with open_runtime(settings_factory(dry_run=False), clock=vclock, executors=(Broken(), Broken()),
                            start_worker=False) as rt:
        await deliver(rt, payload(db_pool_alert()))
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
    assert ex["status"] == "failed"
    assert full["results"][0]["message"] == "RuntimeError: boom"


def test_step_timeout_is_a_setting_in_seconds(settings_factory: Callable[..., Any]) -> None:
    assert settings_factory(worker={"step_timeout": "2m"}).worker.step_timeout == 120.0
    assert timedelta(seconds=settings_factory().worker.shutdown_timeout) == timedelta(seconds=30)


class Sleepy:
    """Takes ``seconds[action]`` on the pipeline's clock for an action, then succeeds; a write is
    recorded as under way first (its intent) unless ``writes`` is False."""

    def __init__(self, seconds: dict[str, float], *, writes: bool = True) -> None:
        self.seconds = seconds
        self.writes = writes

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if self.writes:
            await ctx.record_intent({"value": 1})
        await ctx.clock.sleep(self.seconds.get(step.action, 0))
        return StepResult("ok", f"{step.action} done")


@pytest.mark.parametrize("writes", [True, False], ids=["after-its-write", "before-any-write"])
async def test_a_step_that_overruns_the_step_timeout_fails_on_the_clock(
    writes: bool, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """A step cut off once its write was under way may have changed something: on_failure runs.
    One cut off before any write changed nothing: a rollback would only undo someone else's release."""
    slow = Sleepy({"resize_pool": 10_000}, writes=writes)
    async with open_runtime(settings_factory(dry_run=False, worker={"step_timeout": "60s"}), clock=vclock,
                            executors=(slow, slow), start_worker=False) as rt:
        task = asyncio.create_task(deliver(rt, payload(db_pool_alert())))
        await vclock.sleeping(lambda left: left == 60)
        await vclock.advance(60)
        await task
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
    assert ex["status"] == "failed"
    rollback = [("rollback", "ok", "rollback done")] if writes else []
    assert [(r["action"], r["status"], r["message"]) for r in full["results"]] == [
        ("resize_pool", "failed", "step did not finish within 60s"), *rollback]


async def test_a_step_with_its_own_longer_timeout_is_not_cut_by_the_step_timeout(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    waits = Sleepy({"wait_healthy": 290})  # the playbook's wait_healthy has timeout: 5m; step_timeout is 60s
    async with open_runtime(settings_factory(dry_run=False, worker={"step_timeout": "60s"}), clock=vclock,
                            executors=(waits, waits), start_worker=False) as rt:
        task = asyncio.create_task(deliver(rt, payload(db_pool_alert())))
        await vclock.sleeping(lambda left: left == 290)
        await vclock.advance(290)
        await task
        [ex] = await rt.store.list_executions()
    assert ex["status"] == "succeeded"
