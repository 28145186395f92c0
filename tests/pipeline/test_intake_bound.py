"""Intake never buries deciding (issue 17 item 3): above ``worker.max_backlog`` undecided alerts
the webhook answers 503 with ``Retry-After`` and a JSON reason, and Alertmanager retries; once
the decision loop has caught up, the same delivery is accepted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from remediator.settings import load_settings
from remediator.worker import BACKLOG_FRESH, BACKLOG_RETRY_AFTER
from tests.core.conftest import DaemonServer
from tests.payloads import alert_json, payload

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
