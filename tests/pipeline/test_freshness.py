"""Fresh decisions only: an alert that has resolved, or is older than max_age, is not acted on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder, received

PLAYBOOK = """
name: restart
match: {alertname: Down}
target: {kind: Deployment, namespace: shop, name: web}
guardrails: {max_age: 10m}
steps: [{action: restart}]
"""
FIRING = alert_json({"alertname": "Down"}, starts_at="2026-11-22T10:00:00Z")
RESOLVED = alert_json({"alertname": "Down"}, status="resolved", starts_at="2026-11-22T10:00:00Z",
                      ends_at="2026-11-22T10:01:00Z")


def live(tmp_path: Path, settings_factory: Callable[..., Any]) -> Any:
    (tmp_path / "pb").mkdir(exist_ok=True)
    (tmp_path / "pb" / "restart.yaml").write_text(PLAYBOOK)
    return settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False)


async def test_an_alert_resolved_before_it_is_decided_is_not_acted_on(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    cluster = Recorder()
    async with open_runtime(live(tmp_path, settings_factory), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(FIRING), vclock))  # a backlog: its resolve came in too
        await rt.store.record_alerts(received(payload(RESOLVED), vclock))
        await rt.worker.drain()
        [d] = await rt.store.list_decisions()
    assert (d["decision"], d["reason"]) == ("resolved_cancelled", "the alert had resolved before it was decided")
    assert cluster.calls == []


async def test_an_alert_resolved_before_its_execution_starts_is_not_acted_on(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    cluster = Recorder()
    async with open_runtime(live(tmp_path, settings_factory), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(FIRING), vclock))
        await rt.worker.decide_all()  # decided and admitted; the execution waits in the queue...
        await rt.store.record_alerts(received(payload(RESOLVED), vclock))  # ...while the alert resolves
        await rt.worker.queue.drain()
        [ex] = await rt.store.list_executions()
        full = await rt.store.get_execution(ex["id"])
        admitted_again = (await rt.guardrails.status()).breakers
    assert ex["decision"] == "executed" and ex["status"] == "resolved_cancelled"
    assert cluster.calls == [] and full["results"] == []
    assert "restart" not in admitted_again  # not counted as a failure


async def test_an_alert_older_than_max_age_is_not_acted_on(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    cluster = Recorder()
    async with open_runtime(live(tmp_path, settings_factory), clock=vclock, executors=(cluster, cluster),
                            start_worker=False) as rt:
        await vclock.advance(11 * 60)  # the alert started 11 minutes before it reached the daemon
        await rt.store.record_alerts(received(payload(FIRING), vclock))
        await rt.worker.drain()
        [d] = await rt.store.list_decisions()
    assert d["decision"] == "not_allowed" and "longer than max_age (600s)" in d["reason"]
    assert cluster.calls == []
