"""A dispatcher on a real HTTP session and a sample decision, for tests below the pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from prometheus_client import CollectorRegistry

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision, DecisionKind, PlannedStep, ResolvedTarget
from remediator.notify.channels import Channel
from remediator.notify.dispatcher import Dispatcher
from tests.payloads import T0


def sample_decision(*, dry_run: bool = False) -> Decision:
    return Decision(
        alert_key="fp1|2026-11-22T10:00:00Z|firing",
        fingerprint="fp1",
        playbook="restart-web",
        playbook_version="v1",
        kind=DecisionKind.EXECUTED,
        reason="all guardrails passed",
        at=T0,
        target=ResolvedTarget("Deployment", "shop", "web"),
        steps=(PlannedStep(0, "restart", {}),),
        dry_run=dry_run,
        execution_id="ex-1",
    )


@asynccontextmanager
async def running_dispatcher(
    clock: VirtualClock, *channels: Channel, start: bool = True, queue_size: int = 100
) -> AsyncIterator[Dispatcher]:
    async with aiohttp.ClientSession() as session:
        d = Dispatcher(
            {c.name: c for c in channels},
            session=session,
            clock=clock,
            registry=CollectorRegistry(),
            queue_size=queue_size,
        )
        if start:
            d.start()
        try:
            yield d
        finally:
            await d.close(drain_timeout=0)


def counted(d: Dispatcher, channel: str, result: str) -> float:
    """``remediator_notifications_total{channel, result}`` as /metrics would show it."""
    labels = {"channel": channel, "result": result}
    return d.metrics.registry.get_sample_value("remediator_notifications_total", labels) or 0.0
