"""The pipeline's side of the guardrails: lock renewal while executing, breaker state in the API."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import DecisionKind, PlannedStep
from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.core.guardrails import Request
from remediator.notify.log import LogNotifier
from remediator.pipeline import Pipeline
from remediator.ports import GuardrailStore, ReceivedAlert, StepContext, StepResult
from remediator.runtime import RUNTIME, open_runtime
from tests.guardrails.conftest import ADAPTERS, REDIS_URL, prefixed
from tests.payloads import alert_json, payload
from tests.tokens import READ

AUTH = {"Authorization": "Bearer t1"}
PLAYBOOK = """
name: long
match: {alertname: Long}
target: {kind: Deployment, namespace: shop, name: web}
guardrails: {lock_ttl: 30s}
steps: [{action: restart}]
"""


def long_settings(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], redis_prefix: str, playbook: str = PLAYBOOK,
    **more: Any,
) -> Any:
    """Live mode with one ``long`` playbook, on the embedded guardrails or on Redis."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "long.yaml").write_text(playbook)
    return settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False,
                            redis_url=prefixed(REDIS_URL, redis_prefix) if kind == "redis" else "", **more)


class Passthrough:
    """Wraps a real adapter: everything not overridden goes to it unchanged."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Watched(Passthrough):
    """Guardrails that report each renewal, so the test knows it landed before moving time on."""

    def __init__(self, inner: GuardrailStore) -> None:
        super().__init__(inner)
        self.renewed: asyncio.Queue[bool] = asyncio.Queue()

    async def renew(self, req: Request) -> bool:
        ok = await self.inner.renew(req)
        self.renewed.put_nowait(ok)
        return ok


class Slow:
    """A step that takes 100 (virtual) seconds, far longer than the 30s lock TTL."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.started.set()
        await ctx.clock.sleep(100)
        return StepResult("ok", "done")


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_the_lock_is_renewed_while_an_execution_runs_and_freed_after(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix)
    slow = Slow()
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        def rival() -> Request:
            now = vclock.now().timestamp()
            return Request("rival", "long", "Deployment/shop/web", "rival", "shop", now, lock_ttl=30.0)

        watched, running = await start_wrapped(rt, slow, Watched)
        for _ in range(9):  # every 10s (a third of the TTL), up to 90s: well past the 30s TTL
            await vclock.advance(10)
            assert await asyncio.wait_for(watched.renewed.get(), 10) is True
            assert (await rt.guardrails.admit(rival())).kind is DecisionKind.LOCKED
        await vclock.advance(10)
        [decision] = (await asyncio.wait_for(running, 10)).decisions
        assert decision.kind is DecisionKind.EXECUTED
        for _ in range(3):
            await asyncio.sleep(0)  # the cancelled renewal task unwinds
        renewals = watched.renewed.qsize()
        await vclock.advance(60)
        assert watched.renewed.qsize() == renewals  # renewal stopped with the execution
        assert (await rt.guardrails.admit(rival())).admitted  # released


async def test_breaker_state_is_visible_in_the_api_and_metrics(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    class Failing:
        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            return StepResult("failed", "no luck")

    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "long.yaml").write_text(PLAYBOOK)
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False,
                                guardrails={"breaker_threshold": 1, "breaker_cooloff": "5m"})
    app = create_app(settings, clock=vclock, executors=(Failing(), Failing()), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/api/v1/guardrails", headers=READ)).json()
        assert body["breakers"]["long"]["state"] == "closed"
        r = await client.post("/webhooks/alertmanager", json=payload(alert_json({"alertname": "Long"})),
                              headers=AUTH)
        assert r.status == 200
        await client.app[RUNTIME].worker.drain()
        body = await (await client.get("/api/v1/guardrails", headers=READ)).json()
        assert body == {"paused": False, "breakers": {"long": {
            "state": "open", "consecutive_failures": 1, "open_until": "2026-11-22T10:05:00+00:00",
            "trial_execution": None}}, "budgets": [], "running": [], "locks": [],
            "locks_cut": False}  # released: no slot, no lock
        metrics = await (await client.get("/metrics")).text()
        assert 'remediator_circuit_breaker_state{playbook="long",state="open"} 1.0' in metrics
        assert 'remediator_circuit_breaker_state{playbook="long",state="closed"} 0.0' in metrics
        await vclock.advance(300)
        metrics = await (await client.get("/metrics")).text()
        assert 'remediator_circuit_breaker_state{playbook="long",state="half_open"} 1.0' in metrics


class Racing(Passthrough):
    """A store shared with another replica that records each decision a moment before we do."""

    def __init__(self, inner: Any, kind: DecisionKind) -> None:
        super().__init__(inner)
        self.kind = kind

    async def record_decision(self, decision: Any) -> bool:
        await self.inner.record_decision(dataclasses.replace(decision, kind=self.kind, reason="the other replica's"))
        ok: bool = await self.inner.record_decision(decision)
        return ok


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize(("winner", "lock_given_back"), [(DecisionKind.LOCKED, True), (DecisionKind.EXECUTED, False)])
async def test_losing_the_decision_race_gives_the_admission_back_unless_the_winner_runs(
    kind: str, winner: DecisionKind, lock_given_back: bool, tmp_path: Path, settings_factory: Callable[..., Any],
    vclock: VirtualClock, redis_prefix: str,
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix)
    slow = Slow()
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        rt.pipeline.store = Racing(rt.store, winner)
        alert = Alert.from_json(alert_json({"alertname": "Long"}))
        [decision] = (await rt.pipeline.process(ReceivedAlert(alert, vclock.now()))).decisions
        rival = Request("rival", "long", "Deployment/shop/web", "rival", "shop", vclock.now().timestamp(),
                        lock_ttl=30.0)
        verdict = await rt.guardrails.admit(rival)
    assert decision.kind is winner and decision.reason == "the other replica's"
    assert not slow.started.is_set()  # we ran nothing
    # given back: the target is free at once; kept: the winner's unfinished execution holds it
    assert verdict.admitted is lock_given_back


TWO_STEPS = """
name: long
match: {alertname: Long}
target: {kind: Deployment, namespace: shop, name: web}
guardrails: {lock_ttl: 30s}
steps: [{action: restart}, {action: scale, to: 3}]
"""


class Recording:
    """Runs each step at once, except a restart that takes ``restart_seconds`` on the clock."""

    def __init__(self, restart_seconds: float = 0.0) -> None:
        self.calls: list[str] = []
        self.restart_seconds = restart_seconds
        self.started = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.calls.append(step.action)
        self.started.set()
        if step.action == "restart":
            await ctx.clock.sleep(self.restart_seconds)
        return StepResult("ok", f"{step.action} done")


async def die_mid_restart(settings: Any, vclock: VirtualClock) -> None:
    """The daemon records the ``Long`` alert, starts its execution and dies during the restart."""
    first = Recording(restart_seconds=10_000)
    async with open_runtime(settings, clock=vclock, executors=(first, first), start_worker=False) as rt:
        alert = Alert.from_json(alert_json({"alertname": "Long"}))
        await rt.store.record_alerts([ReceivedAlert(alert, vclock.now())])
        task = asyncio.create_task(rt.pipeline.process(ReceivedAlert(alert, vclock.now())))
        await asyncio.wait_for(first.started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def rival_request(clock: VirtualClock) -> Request:
    return Request("rival", "other", "Deployment/shop/web", "rival", "shop", clock.now().timestamp(), lock_ttl=600.0)


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_resumed_execution_whose_lapsed_lock_another_took_is_superseded_not_resumed(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    """The other execution acted on the target after this one was planned: taking the lock back,
    even once the other has finished, could revert its change with a stale plan."""
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS, worker={"lease": "60s"})
    await die_mid_restart(settings, vclock)
    vclock.advance_sync(61)  # its 30s lock and 60s lease have lapsed; another execution takes the target
    second = Recording()
    async with open_runtime(settings, clock=vclock, executors=(second, second), start_worker=False) as rt:
        rival = rival_request(vclock)
        assert (await rt.guardrails.admit(rival)).admitted
        await rt.guardrails.release(rival, succeeded=True)  # ...and is done with it before we resume
        assert await rt.pipeline.resume_unfinished() == 1
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
        assert await rt.pipeline.resume_unfinished() == 0  # finished: never resumed again
        breakers = (await rt.guardrails.status()).breakers
    assert second.calls == []  # nothing done on a target another execution has changed since
    assert ex["status"] == "superseded"
    assert [(r["action"], r["status"]) for r in full["results"]] == [("restart", "superseded")]
    assert breakers == {}  # not a failure of the playbook


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_an_execution_that_loses_its_lock_stops_before_its_next_step(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS)
    slow = Recording(restart_seconds=100)
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        cut_off, running = await start_wrapped(rt, slow, CutOff)
        cut_off.down = True  # renewals stop landing (a partition); the 30s lock lapses
        await vclock.advance(35)
        assert (await rt.guardrails.admit(rival_request(vclock))).admitted  # and another execution takes it
        cut_off.down = False
        await vclock.advance(65)
        await asyncio.wait_for(running, 10)
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
        rival_still_holds = (await rt.guardrails.admit(rival_request(vclock))).kind is DecisionKind.LOCKED
    assert slow.calls == ["restart"]  # the scale never ran, and no on_failure either
    assert ex["status"] == "superseded"
    assert [(r["action"], r["status"]) for r in full["results"]] == [("restart", "ok"), ("scale", "superseded")]
    assert full["results"][1]["message"].startswith("not run: another execution has held this target's")
    assert rival_still_holds  # our release did not free the rival's lock


async def start_wrapped(rt: Any, slow: Any, wrap: Callable[[GuardrailStore], Any]) -> tuple[Any, asyncio.Task[Any]]:
    """Start the ``long`` execution with its guardrail state seen through ``wrap``; return the wrapper and
    the running execution once its first step runs."""
    wrapper = wrap(rt.guardrails)
    rt.pipeline.guardrails = wrapper
    alert = Alert.from_json(alert_json({"alertname": "Long"}))
    running = asyncio.create_task(rt.pipeline.process(ReceivedAlert(alert, rt.clock.now())))
    await asyncio.wait_for(slow.started.wait(), 10)
    return wrapper, running


class CutOff(Passthrough):
    """Guardrail state whose renewals fail while ``down`` (the rest still works)."""

    def __init__(self, inner: GuardrailStore) -> None:
        super().__init__(inner)
        self.down = False

    async def renew(self, req: Request) -> bool:
        if self.down:
            raise GuardrailUnavailable("partitioned")
        return await self.inner.renew(req)


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_no_next_step_while_the_lock_cannot_be_confirmed_and_resumed_once_it_can(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    """Renewals fail (a partition) for longer than the lock's TTL: another execution may hold the target now.

    Not a failed remediation (no on_failure, no breaker): it pauses, unfinished, and once the state is
    reachable again it learns that another execution took the target meanwhile: superseded, not resumed.
    """
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS)
    slow = Recording(restart_seconds=40)
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        cut_off, running = await start_wrapped(rt, slow, CutOff)
        cut_off.down = True  # the 30s lock lapses unrenewed...
        await vclock.advance(35)
        rival = rival_request(vclock)
        assert (await rt.guardrails.admit(rival)).admitted  # ...and another execution takes it
        await vclock.advance(10)  # our restart finishes while the partition lasts
        await asyncio.wait_for(running, 10)
        assert slow.calls == ["restart"]
        [ex] = await rt.store.list_executions()
        assert ex["status"] == "running"  # paused, not failed
        cut_off.down = False
        await rt.guardrails.release(rival, succeeded=True)
        assert await rt.pipeline.resume_unfinished() == 1
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
        breakers = (await rt.guardrails.status()).breakers
    assert slow.calls == ["restart"] and ex["status"] == "superseded"
    assert [(r["action"], r["status"]) for r in full["results"]] == [("restart", "ok"), ("scale", "superseded")]
    assert breakers == {}  # neither the pause nor the supersession was counted as a failure


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_short_renewal_gap_with_nobody_else_on_the_target_does_not_stop_the_execution(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS)
    slow = Recording(restart_seconds=40)
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        cut_off, running = await start_wrapped(rt, slow, CutOff)
        cut_off.down = True
        await vclock.advance(35)  # the lock lapsed, but nobody took the target
        cut_off.down = False
        await vclock.advance(10)
        await asyncio.wait_for(running, 10)
        [ex] = await rt.store.list_executions()
    assert slow.calls == ["restart", "scale"] and ex["status"] == "succeeded"  # the lock was taken back first


def second_replica(rt: Any, executor: Any) -> Pipeline:
    """Another replica's pipeline on the same store and guardrail state (its own lease owner)."""
    return Pipeline(playbooks=rt.playbooks, store=rt.store, guardrails=rt.guardrails, live=executor, dry=executor,
                    notifier=LogNotifier(), clock=rt.clock, settings=rt.pipeline.settings, owner="replica-b")


class NoLease(Passthrough):
    """A replica cut off from the store's execution leases while ``cut`` (so another replica takes over)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.cut = False

    async def claim_execution(self, execution_id: str, worker: str, lease: float) -> bool:
        if self.cut:
            return False
        ok: bool = await self.inner.claim_execution(execution_id, worker, lease)
        return ok


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_replica_that_lost_its_execution_never_takes_the_finished_executions_lock_back(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS, worker={"lease": "60s"})
    slow, quick = Recording(restart_seconds=1000), Recording()
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        a = rt.pipeline
        a.store = leases = NoLease(rt.store)
        b = second_replica(rt, quick)
        alert = Alert.from_json(alert_json({"alertname": "Long"}))
        await rt.store.record_alerts([ReceivedAlert(alert, vclock.now())])
        [claimed] = await rt.store.claim_alerts("w", 1, 60)
        running = asyncio.create_task(a.process(claimed.received))
        await asyncio.wait_for(slow.started.wait(), 10)
        leases.cut = True  # replica A stops renewing its lease (and keeps renewing the lock)
        await vclock.advance(61)
        assert await b.resume_unfinished() == 1  # replica B takes the execution over and finishes it
        assert quick.calls == ["restart", "scale"]
        leases.cut = False
        await vclock.advance(20)  # A's lock renewal runs again: the lock is gone, and not A's to take back
        rival = await rt.guardrails.admit(rival_request(vclock))
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert rival.admitted


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_resumed_execution_locks_the_target_it_acts_on_even_if_the_playbook_changed(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS, worker={"lease": "60s"})
    await die_mid_restart(settings, vclock)
    # ...and is restarted with the playbook now pointing elsewhere
    (tmp_path / "pb" / "long.yaml").write_text(TWO_STEPS.replace("name: web}", "name: web-v2}"))
    vclock.advance_sync(61)
    second = Recording()
    async with open_runtime(settings, clock=vclock, executors=(second, second), start_worker=False) as rt:
        rival = rival_request(vclock)  # takes Deployment/shop/web, the target the execution acts on
        assert (await rt.guardrails.admit(rival)).admitted
        await rt.guardrails.release(rival, succeeded=True)
        assert await rt.pipeline.resume_unfinished() == 1
        [ex] = await rt.store.list_executions()
    # had it looked at web-v2's lock (never held by anyone), it would have run
    assert second.calls == [] and ex["target"]["name"] == "web" and ex["status"] == "superseded"


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_resumed_execution_nobody_else_touched_takes_its_lock_back_and_releases_it(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS, worker={"lease": "60s"})
    await die_mid_restart(settings, vclock)
    vclock.advance_sync(61)  # lock and lease lapsed; nobody touched the target meanwhile
    second = Recording()
    async with open_runtime(settings, clock=vclock, executors=(second, second), start_worker=False) as rt:
        assert await rt.pipeline.resume_unfinished() == 1
        [ex] = await rt.store.list_executions()
        free_after = (await rt.guardrails.admit(rival_request(vclock))).admitted
    assert second.calls == ["restart", "scale"] and ex["status"] == "succeeded"
    assert free_after  # the resumed execution released the lock it took back


class SlowReacquire(Passthrough):
    """A lapsed lock whose retaking is slow: ``renew`` fails and ``reacquire`` waits for ``gate``,
    which opens right after the execution's release (the worst moment for a renewal still running)."""

    def __init__(self, inner: GuardrailStore) -> None:
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.settled = asyncio.Event()  # the pending reacquire was cancelled, or has landed
        self.lapsed = False

    async def renew(self, req: Request) -> bool:
        return False if self.lapsed else await self.inner.renew(req)

    async def reacquire(self, req: Request) -> bool:
        self.waiting.set()
        try:
            await self.gate.wait()
            return await self.inner.reacquire(req)
        finally:
            self.settled.set()

    async def release(self, req: Request, *, succeeded: bool) -> None:
        await self.inner.release(req, succeeded=succeeded)
        self.gate.set()
        await self.settled.wait()


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_renewal_in_flight_when_the_execution_ends_never_takes_the_lock_back(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix)
    slow = Slow()
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        guard, running = await start_wrapped(rt, slow, SlowReacquire)
        guard.lapsed = True
        await vclock.advance(10)  # the renewal finds the lock lapsed and starts taking it back...
        await asyncio.wait_for(guard.waiting.wait(), 10)
        await vclock.advance(90)  # ...while the step ends and the execution releases the target
        [decision] = (await asyncio.wait_for(running, 10)).decisions
        verdict = await rt.guardrails.admit(Request("rival", "long", "Deployment/shop/web", "rival", "shop",
                                                    vclock.now().timestamp(), lock_ttl=30.0))
    assert decision.kind is DecisionKind.EXECUTED
    assert verdict.admitted


class Unreachable(Passthrough):
    """Guardrail state this replica cannot reach while ``down`` (another replica still can)."""

    def __init__(self, inner: GuardrailStore) -> None:
        super().__init__(inner)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise GuardrailUnavailable("partitioned from Redis")

    async def renew(self, req: Request) -> bool:
        self._check()
        return await self.inner.renew(req)

    async def reacquire(self, req: Request) -> bool:
        self._check()
        return await self.inner.reacquire(req)

    async def ping(self) -> None:
        self._check()
        await self.inner.ping()


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("cut_off", [Unreachable, CutOff], ids=["partitioned", "read-only"])
async def test_an_execution_paused_by_a_partition_is_finished_by_a_replica_that_can_reach_the_lock(
    kind: str, cut_off: type[Any], tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
    redis_prefix: str,
) -> None:
    """Replica A loses guardrail state mid-execution: cut off entirely (its ping fails), or like a Redis
    demoted to read-only (PING answers, the lock scripts fail)."""
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS)
    slow, quick = Recording(restart_seconds=40), Recording()
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        a, b = rt.pipeline, second_replica(rt, quick)
        cut, running = await start_wrapped(rt, slow, cut_off)
        cut.down = True
        await vclock.advance(45)
        await asyncio.wait_for(running, 10)  # A paused before the scale...
        assert slow.calls == ["restart"]
        for _ in range(3):  # ...and, however often it tries, does not keep the execution while it cannot lock...
            assert await a.resume_unfinished() == 0
        assert await b.resume_unfinished() == 1  # ...so B, which can, finishes it at once
        [ex] = await rt.store.list_executions()
    assert quick.calls == ["scale"] and ex["status"] == "succeeded"


class Gated:
    """An executor whose step runs until ``go`` is set."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.go = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.started.set()
        await self.go.wait()
        return StepResult("ok", "done")


class LeaseCutOff(Passthrough):
    """A replica's store whose lease calls fail while ``down`` (everything else works)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.down = False

    async def claim_execution(self, execution_id: str, worker: str, lease: float) -> bool:
        if self.down:
            raise StoreUnavailable("partitioned")
        ok: bool = await self.inner.claim_execution(execution_id, worker, lease)
        return ok


async def test_a_replica_whose_lease_lapsed_mid_step_neither_finishes_nor_unlocks_the_execution(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings("memory", tmp_path, settings_factory, redis_prefix)
    first, second = Gated(), Gated()
    async with open_runtime(settings, clock=vclock, executors=(first, first), start_worker=False) as rt:
        a, b = rt.pipeline, second_replica(rt, second)
        a.store = cut = LeaseCutOff(rt.store)
        alert = Alert.from_json(alert_json({"alertname": "Long"}))
        await rt.store.record_alerts([ReceivedAlert(alert, vclock.now())])
        running = asyncio.create_task(a.process(ReceivedAlert(alert, vclock.now())))
        await asyncio.wait_for(first.started.wait(), 10)
        cut.down = True  # A cannot renew its execution lease...
        await vclock.advance(301)
        cut.down = False
        resumed = asyncio.create_task(b.resume_unfinished())  # ...so B takes the execution over
        await asyncio.wait_for(second.started.wait(), 10)
        first.go.set()  # A's step ends while B's runs
        await asyncio.wait_for(running, 10)
        [mid] = await rt.store.list_executions()
        rival = await rt.guardrails.admit(rival_request(vclock))
        second.go.set()
        assert await asyncio.wait_for(resumed, 10) == 1
        [done] = await rt.store.list_executions()
    assert mid["status"] == "running"  # A did not finish B's execution...
    assert rival.kind is DecisionKind.LOCKED  # ...nor free the lock B works under
    assert done["status"] == "succeeded"


class DecisionsDown(Passthrough):
    """A store that cannot record the next decision (it goes down right after admission)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.failures = 1

    async def record_decision(self, decision: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection lost")
        ok: bool = await self.inner.record_decision(decision)
        return ok


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_an_admission_whose_decision_could_not_be_recorded_is_given_back_and_decided_again(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, TWO_STEPS)
    quick = Recording()
    async with open_runtime(settings, clock=vclock, executors=(quick, quick), start_worker=False) as rt:
        rt.pipeline.store = DecisionsDown(rt.store)
        alert = Alert.from_json(alert_json({"alertname": "Long"}))
        with pytest.raises(StoreUnavailable):
            await rt.pipeline.process(ReceivedAlert(alert, vclock.now()))
        assert quick.calls == []
        # the alert stays unprocessed and comes back: decided afresh, not "locked by itself"
        [decision] = (await rt.pipeline.process(ReceivedAlert(alert, vclock.now()))).decisions
    assert decision.kind is DecisionKind.EXECUTED
    assert quick.calls == ["restart", "scale"]


class Glitch(Passthrough):
    """Raises an unexpected error (a bug, not an outage), once: from the first call of ``method``
    made once ``clock`` reads ``after`` or later (the calls before it start the execution)."""

    def __init__(self, inner: Any, method: str, clock: VirtualClock, after: float) -> None:
        super().__init__(inner)
        self.method, self.raised = method, False
        self.clock, self.after = clock, after

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        async def once(*args: Any, **kwargs: Any) -> Any:
            if not self.raised and self.clock.now().timestamp() >= self.after:
                self.raised = True
                raise RuntimeError("unexpected")
            return await real(*args, **kwargs)
        return once


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_an_unexpected_error_in_a_renewal_does_not_stop_the_renewals(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    """The lock's renewal raises once (10s in) and so does the lease's (20s in): both are logged and
    renewed at the next round.  A renewal task that died of it would let the 30s lock lapse to a
    rival, and the 60s lease to another replica, while the step still runs."""
    settings = long_settings(kind, tmp_path, settings_factory, redis_prefix, worker={"lease": "60s"})
    slow = Slow()
    async with open_runtime(settings, clock=vclock, executors=(slow, slow), start_worker=False) as rt:
        soon = vclock.now().timestamp() + 1  # the renewals, not the calls that start the execution
        lock_glitch = Glitch(rt.guardrails, "renew", vclock, soon)
        rt.pipeline.store = lease_glitch = Glitch(rt.store, "claim_execution", vclock, soon)
        rt.pipeline.guardrails = lock_glitch
        alert = Alert.from_json(alert_json({"alertname": "Long"}))
        running = asyncio.create_task(rt.pipeline.process(ReceivedAlert(alert, vclock.now())))
        await asyncio.wait_for(slow.started.wait(), 10)
        for second in range(10, 100, 10):
            await vclock.advance(10)
            for _ in range(20):  # let the renewals triggered at this instant land (no time passes)
                await asyncio.sleep(0)
            now = vclock.now().timestamp()
            rival = Request("rival", "long", "Deployment/shop/web", "rival", "shop", now, lock_ttl=30.0)
            assert (await rt.guardrails.admit(rival)).kind is DecisionKind.LOCKED, f"lock lost at {second}s"
            assert await rt.store.claim_unfinished("replica-b", 60) == [], f"lease lost at {second}s"
        assert lock_glitch.raised and lease_glitch.raised
        await vclock.advance(10)
        [decision] = (await asyncio.wait_for(running, 10)).decisions
        assert decision.kind is DecisionKind.EXECUTED
        ex = await rt.store.get_execution(decision.execution_id or "")
        assert ex is not None and ex["status"] == "succeeded"
