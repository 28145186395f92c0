"""Deciding never waits on executing: one slow remediation holds back no other.

The daemon's two loops run for real here (``worker.run``: the decision loop and the
execution queue), against the fake apiserver on the shared virtual clock.  Target A's
execution sits in ``wait_healthy`` on a rollout that never becomes ready; virtual time
does not move at all while alerts for other targets arrive, so anything that had to
wait for A would never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.executors.kube import KubeExecutor
from remediator.ports import ReceivedAlert
from remediator.runtime import Runtime, open_runtime
from remediator.settings import KubernetesSettings
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, web
from tests.payloads import alert_json, payload

PLAYBOOKS = {
    "slow": """
name: slow
match: {alertname: Slow, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
steps: [{action: restart}, {action: wait_healthy, timeout: 4m}]
""",
    "fast": """
name: fast
match: {alertname: Fast, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
steps: [{action: restart}]
""",
}


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, settings_factory: Callable[..., Any], clock: VirtualClock,
                 kube: FakeKube) -> AsyncIterator[Runtime]:
    directory = tmp_path / "playbooks"
    directory.mkdir()
    for name, text in PLAYBOOKS.items():
        (directory / f"{name}.yaml").write_text(text)
    # shutdown hands A (still waiting, on a clock nobody moves) over after 1 s rather than 30
    settings = settings_factory(playbooks=str(directory), dry_run=False,
                                worker={"poll_interval": "1s", "shutdown_timeout": "1s"})
    k = KubernetesSettings(mode="kubeconfig", request_timeout=30.0)
    executors = (KubeExecutor(kube.api, clock, k), KubeExecutor(kube.api, clock, k, server_dry_run=True))
    async with open_runtime(settings, clock=clock, executors=executors, start_worker=True) as rt:
        yield rt


async def deliver(rt: Runtime, alertname: str, deployment: str) -> None:
    p = validate_payload(payload(alert_json({"alertname": alertname, "namespace": NS, "deployment": deployment})))
    await rt.store.record_alerts([ReceivedAlert(a, rt.clock.now(), p.receiver, p.group_key) for a in p.alerts])
    rt.wake()


async def statuses(rt: Runtime) -> dict[str, str]:
    return {e["target"]["name"]: e["status"] for e in await rt.store.list_executions(limit=100)}


async def until(predicate: Callable[[], Any], what: str) -> None:
    """Wait for the daemon's own loops (real tasks) to get there; bounded, never timed."""
    async with asyncio.timeout(20):
        while not await predicate():  # noqa: ASYNC110 - polling the daemon's own running loops from outside
            await asyncio.sleep(0.01)


async def test_an_alert_for_another_target_is_executed_while_one_waits_in_wait_healthy(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    kube.cluster.ready_delay = 5
    for name in ("a", "b", "c"):
        kube.cluster.apply(web(name, replicas=1))
    kube.cluster.faults.never_ready(NS, "a")
    async with daemon(tmp_path, settings_factory, vclock, kube) as rt:
        await deliver(rt, "Slow", "a")
        await until(lambda: _watching(kube), "A to be watching its never-ready rollout")
        started = vclock.now()
        await deliver(rt, "Fast", "b")
        await until(lambda: _finished(rt, "b"), "B's execution to finish")
        await deliver(rt, "Fast", "c")
        await until(lambda: _finished(rt, "c"), "C's execution to finish")
        now = vclock.now()
        running = await statuses(rt)
    assert now == started  # not one virtual second passed: B and C never waited for A
    assert running == {"a": "running", "b": "succeeded", "c": "succeeded"}


async def _watching(kube: FakeKube) -> bool:
    return any(r.watch for r in kube.cluster.requests)


async def _finished(rt: Runtime, name: str) -> bool:
    return (await statuses(rt)).get(name) == "succeeded"


async def test_a_paused_executions_backoff_is_forgotten_once_long_past(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """An execution paused here and then finished by another replica never comes back to clear
    its backoff: the queue must forget it rather than grow with every pause ever seen."""
    from remediator.queue import PAUSED_KEPT

    async with open_runtime(settings_factory(), clock=vclock, start_worker=False) as rt:
        queue = rt.worker.queue
        queue._paused["ex-elsewhere"] = (vclock.monotonic() + 2.0, 1)
        await queue.fill()
        assert "ex-elsewhere" in queue._paused  # its backoff still counts
        await vclock.advance(2.0 + PAUSED_KEPT + 1)
        await queue.fill()
        assert queue._paused == {}
