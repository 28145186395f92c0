"""Retention runs on its own, every ``worker.retention_interval``, when ``worker.retention`` is set."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from remediator.clock import VirtualClock
from remediator.runtime import _retention, open_runtime
from tests.payloads import alert_json
from tests.store.test_contract import alerts


async def test_the_daemon_schedules_retention_only_when_configured(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    for retention, scheduled in (("0s", False), ("30d", True)):
        async with open_runtime(settings_factory(worker={"retention": retention}), clock=vclock) as rt:
            names = {t.get_name() for t in rt.tasks}
        assert ("remediator-retention" in names) is scheduled


async def test_retention_deletes_ended_episodes_once_they_are_old_enough(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    settings = settings_factory(worker={"retention": "30d", "retention_interval": "1d"})
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        ended = alert_json({"alertname": "Gone", "app": "a"})
        await rt.store.record_alerts(alerts(ended, alert_json({"alertname": "Gone", "app": "a"}, status="resolved",
                                                              ends_at="2026-11-22T10:05:00Z")))
        await rt.store.record_alerts(alerts(alert_json({"alertname": "Stuck", "app": "b"})))  # fires for ever
        await rt.worker.drain()
        loop = asyncio.create_task(_retention(rt))
        try:
            for day in range(1, 32):
                await vclock.sleeping(lambda left: left == 86400)  # the loop is asleep: its last run is done
                await vclock.advance(86400)
                await vclock.sleeping(lambda left: left == 86400)
                count = await rt.store.count_alerts()
                assert count == (3 if day <= 30 else 1), f"day {day}: {count} records"
        finally:
            loop.cancel()
        deleted = rt.metrics.retention_deleted.labels("alerts")._value.get()
    assert deleted == 2  # the ended episode's firing and resolved records; "Stuck" is kept
