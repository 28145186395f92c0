"""Intake never buries deciding (issue 17 item 3): above ``worker.max_backlog`` undecided alerts
the webhook answers 503 with ``Retry-After`` and a JSON reason, and Alertmanager retries; once
the decision loop has caught up, the same delivery is accepted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME, open_runtime
from remediator.settings import load_settings
from remediator.worker import BACKLOG_FRESH, BACKLOG_RETRY_AFTER
from tests.core.conftest import DaemonServer
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import received

URL = "/webhooks/alertmanager"
PLAYBOOK = """
name: other
match: {alertname: Other}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
"""
AUTH = {"Authorization": "Bearer t1", "Content-Type": "application/json"}


def delivery(*apps: str) -> str:
    return json.dumps(payload(*(alert_json({"alertname": "Unmatched", "app": a}) for a in apps)))


@pytest.fixture
async def client(tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[TestClient]:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK)
    settings = load_settings(None, env={}, overrides={
        "data_dir": str(tmp_path / "data"), "playbooks": str(tmp_path / "pb"), "dry_run": True,
        "webhook": {"tokens": ["t1"]}, "worker": {"max_backlog": 3}, "kubernetes": {"mode": "none"},
    })
    server = DaemonServer(settings)
    server.app = create_app(settings, clock=vclock, start_worker=False)  # nothing decides unless told
    async with TestClient(server) as c:
        yield c


async def test_above_the_backlog_bound_the_webhook_answers_503_until_the_backlog_is_decided(
    client: TestClient, vclock: VirtualClock
) -> None:
    r = await client.post(URL, data=delivery("a", "b", "c", "d"), headers=AUTH)
    assert r.status == 200  # the backlog was 0 when it came: accepted whole, now 4 > 3
    await vclock.advance(BACKLOG_FRESH)
    r = await client.post(URL, data=delivery("e"), headers=AUTH)
    assert r.status == 503 and r.headers["Retry-After"] == str(BACKLOG_RETRY_AFTER)
    assert (await r.json())["error"] == (
        "4 alerts are waiting to be decided, more than worker.max_backlog (3); retry later")
    rt = client.app[RUNTIME]
    assert await rt.store.count_alerts() == 4  # the refused delivery was not recorded
    assert await rt.worker.decide_all() == 4
    await vclock.advance(BACKLOG_FRESH)
    r = await client.post(URL, data=delivery("e"), headers=AUTH)
    assert r.status == 200 and (await r.json())["new"] == 1


class HeldCount:
    """The store's count of undecided alerts, held until the test lets it answer; it counts the asks."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.asks = 0
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def undecided(self) -> int:
        self.asks += 1
        self.asked.set()
        await self.answer.wait()
        return int(await self.store.undecided())


async def test_webhooks_that_find_the_count_stale_together_make_one_count(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """Under saturated intake every POST in flight found the count stale at the same moment, and
    each sent the same count query; now one does, and the rest go by the count before it."""
    async with open_runtime(settings_factory(worker={"max_backlog": 3}), clock=vclock, start_worker=False) as rt:
        held = HeldCount(rt.store)
        rt.worker._counts = held  # the worker's view of the store's count, held at will

        posts = [asyncio.create_task(rt.worker.backlog_over()) for _ in range(16)]
        await held.asked.wait()
        await asyncio.sleep(0)
        assert sum(not p.done() for p in posts) == 1  # the first: it counts; the rest have no count to go by
        held.answer.set()
        assert [await p for p in posts] == [None] * 16 and held.asks == 1
        await rt.store.record_alerts(received(payload(*(alert_json({"alertname": "X", "app": str(i)})
                                                         for i in range(5))), vclock))
        await vclock.advance(BACKLOG_FRESH)
        held.asked.clear()
        held.answer.clear()
        posts = [asyncio.create_task(rt.worker.backlog_over()) for _ in range(16)]
        await held.asked.wait()
        await asyncio.sleep(0)
        waiting = [p for p in posts if not p.done()]
        assert len(waiting) == 1  # the one counting; the rest went by the last count (0: accepted)
        assert [p.result() for p in posts if p.done()] == [None] * 15
        held.answer.set()
        assert await waiting[0] == 5  # 5 undecided > 3
        assert held.asks == 2
        assert await rt.worker.backlog_over() == 5 and held.asks == 2  # fresh: no count at all
