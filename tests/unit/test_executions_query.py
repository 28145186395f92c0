"""``/api/v1/executions`` refuses what it cannot answer, as ``/api/v1/decisions`` does.

An unknown ``?before=`` cursor (a mistyped id, or an execution retention removed) and an unknown
``?status=`` were answered 200 with an empty page, which reads as "no more executions".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from tests.payloads import db_pool_alert, payload

AUTH = {"Authorization": "Bearer t1"}  # the webhook's
READ = {"Authorization": "Bearer r1"}
#: Every status an execution is recorded with (docs/playbooks.md: not over, then how it ended).
EXECUTION_STATUSES = ("pending", "running", "awaiting_approval", "succeeded", "failed", "superseded", "dry_run",
                      "resolved_cancelled", "denied", "expired", "refused")


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings_factory(api={"read_tokens": ["r1"]}), clock=vclock, start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def get(client: TestClient[Any, Any], query: str) -> tuple[int, dict[str, Any]]:
    r = await client.get(f"/api/v1/executions?{query}", headers=READ)
    return r.status, await r.json()


async def test_an_unknown_cursor_or_status_is_a_400_with_its_reason(client: TestClient[Any, Any]) -> None:
    assert await get(client, "before=nonexistent") == (400, {"error": "before: no execution 'nonexistent' is recorded"})
    status, body = await get(client, "status=bogus")
    assert status == 400 and body["error"].startswith("status: unknown status 'bogus' (one of pending, running,")
    # every status an execution is recorded with is a filter, answered even when nothing has it
    for known in EXECUTION_STATUSES:
        assert await get(client, f"status={known}") == (200, {"executions": [], "next": None})


async def test_a_known_cursor_past_the_last_page_is_an_empty_page(client: TestClient[Any, Any]) -> None:
    r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert()), headers=AUTH)
    assert r.status == 200
    await client.app[RUNTIME].worker.drain()
    status, body = await get(client, "limit=1")
    [execution] = body["executions"]
    assert status == 200 and body["next"] == execution["id"] and execution["status"] in EXECUTION_STATUSES
    assert await get(client, f"before={execution['id']}") == (200, {"executions": [], "next": None})
    # a filter that leaves the page empty, with a known cursor, is no error either
    assert await get(client, f"before={execution['id']}&status=failed") == (200, {"executions": [], "next": None})
