"""Budgets and the circuit breaker stop an alert storm (acceptance 3 of issue 4).

10,000 matching alerts go through the real pipeline on a virtual clock, for both
adapters; executions stay within the budget or the breaker, and every other alert
gets a recorded decision that says why nothing was done.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import generate_latest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert, format_time
from remediator.core.decisions import Decision, PlannedStep
from remediator.ports import ReceivedAlert, StepContext, StepResult
from remediator.runtime import Runtime, open_runtime
from tests.guardrails.conftest import ADAPTERS, REDIS_URL, prefixed
from tests.payloads import alert_json

STORM = 10_000
SPACING = 0.3  # seconds between alerts: the storm lasts 50 minutes of virtual time
PLAYBOOKS = """
name: storm
match: {alertname: Storm, matchers: ['namespace=~".+"', 'app=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.app }}"}
steps: [{action: restart}]
---
name: fragile
match: {alertname: Fragile, matchers: ['namespace=~".+"', 'app=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.app }}"}
steps: [{action: restart}]
"""


class Cluster:
    """Counts what reached the "cluster"; fails every step of the fragile playbook."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.runs[ctx.alert.alertname] += 1
        if ctx.alert.alertname == "Fragile":
            return StepResult("failed", "the restart made things worse")
        return StepResult("ok", "restarted")


@asynccontextmanager
async def daemon(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], clock: VirtualClock, prefix: str,
    cluster: Cluster, **guardrails: Any,
) -> AsyncIterator[Runtime]:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "storm.yaml").write_text(PLAYBOOKS)
    settings = settings_factory(
        playbooks=str(tmp_path / "pb"), dry_run=False, guardrails=guardrails,
        redis_url=prefixed(REDIS_URL, prefix) if kind == "redis" else "",
    )
    async with open_runtime(settings, clock=clock, executors=(cluster, cluster), start_worker=False) as rt:
        yield rt


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Twenty thousand info lines would cost more than the pipeline itself."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.configure(**saved)


async def storm(rt: Runtime, clock: VirtualClock, alertname: str, n: int = STORM, first: int = 0) -> list[Decision]:
    decisions: list[Decision] = []
    for i in range(first, first + n):
        labels = {"alertname": alertname, "namespace": ("shop", "pay")[i % 2], "app": f"app-{i}"}
        alert = Alert.from_json(alert_json(labels))
        decisions += (await rt.pipeline.process(ReceivedAlert(alert, clock.now()))).decisions
        clock.advance_sync(SPACING)
    return decisions


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_budgets_stop_a_storm(
    kind: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    cluster = Cluster()
    budgets = [{"scope": "*", "max": 25, "per": "1h"}, {"scope": "shop", "max": 10, "per": "1h"}]
    async with daemon(kind, tmp_path, settings_factory, vclock, redis_prefix, cluster, budgets=budgets) as rt:
        decisions = await storm(rt, vclock, "Storm")
        store: Any = rt.store  # the embedded store's audit listing
        recorded = await store.list_decisions(limit=2 * STORM)
        vclock.advance_sync(3600)  # a new window: the budget is there again
        assert [d.kind.value for d in await storm(rt, vclock, "Storm", 1, STORM)] == ["executed"]

    assert len(decisions) == len(recorded) == STORM  # every alert decided and recorded
    kinds = Counter(d.kind.value for d in decisions)
    assert kinds == {"executed": 25, "budget_exhausted": STORM - 25}
    assert cluster.runs["Storm"] == 26
    executed = [d for d in decisions if d.kind.value == "executed"]
    assert sum(1 for d in executed if d.target and d.target.namespace == "shop") == 10
    reasons = Counter(d.reason for d in decisions if d.kind.value == "budget_exhausted")
    # nothing leaves either window during the storm, so both name the hour after the first execution (in shop)
    assert executed[0].target is not None and executed[0].target.namespace == "shop"
    next_at = format_time(executed[0].at + timedelta(hours=1))
    assert set(reasons) == {
        f"namespace shop budget of 10 per 1h exhausted (10 used); next at {next_at}",
        f"global budget of 25 per 1h exhausted (25 used); next at {next_at}",
    }


async def test_the_circuit_breaker_stops_a_storm_of_failures(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, redis_prefix: str
) -> None:
    cluster = Cluster()
    # Redis only: the contract suite holds the embedded adapter's breaker to the same rules.
    async with daemon("redis", tmp_path, settings_factory, vclock, redis_prefix, cluster,
                      breaker_threshold=3, breaker_cooloff="10m") as rt:
        decisions = await storm(rt, vclock, "Fragile")
        status = await rt.pipeline.guardrail_status()
        metrics = generate_latest(rt.metrics.registry).decode()

    kinds = Counter(d.kind.value for d in decisions)
    # Three failures (by 0.6s) open the breaker for 10 minutes; the first alert after each cool-off is the
    # half-open trial, fails, and re-opens it: trials at 600.9s, 1201.2s, 1801.5s, 2401.8s (the storm ends
    # at 2999.7s, before the next).
    trials = 4
    assert kinds == {"executed": 3 + trials, "circuit_open": STORM - 3 - trials}
    assert cluster.runs["Fragile"] == 3 + trials
    reasons = {d.reason.split(",")[0] for d in decisions if d.kind.value == "circuit_open"}
    assert reasons == {f"circuit open after {n} consecutive failures" for n in range(3, 3 + trials + 1)}
    view = status.breakers["fragile"]
    assert view.state.value == "open" and view.failures == 3 + trials
    assert 'remediator_circuit_breaker_state{playbook="fragile",state="open"} 1.0' in metrics
    assert 'remediator_circuit_breaker_state{playbook="storm",state="closed"} 1.0' in metrics
    assert f'remediator_circuit_breaker_consecutive_failures{{playbook="fragile"}} {3.0 + trials}' in metrics
    assert vclock.now() - decisions[0].at == timedelta(seconds=STORM * SPACING)
