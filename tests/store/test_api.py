"""The audit API served from PostgreSQL: filters, cursor pagination, one execution's full record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from tests.payloads import db_pool_alert, payload
from tests.store.conftest import Schema

AUTH = {"Authorization": "Bearer t1"}  # the webhook's
READ = {"Authorization": "Bearer r1"}


async def test_executions_api_pages_through_the_postgres_store(
    pg_schema: Schema, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    settings = settings_factory(database_url=pg_schema.dsn, api={"read_tokens": ["r1"]})
    app = create_app(settings, clock=vclock, start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = app[RUNTIME]
        for i in range(5):
            r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert(deployment=f"svc-{i}")),
                                  headers=AUTH)
            assert r.status == 200
            await rt.worker.drain()
            await vclock.advance(60)
        seen, url = [], "/api/v1/executions?limit=2&playbook=db-pool-exhaustion"
        while True:
            page = await (await client.get(url, headers=READ)).json()
            seen += [e["target"]["name"] for e in page["executions"]]
            if page["next"] is None:
                break
            url = f"/api/v1/executions?limit=2&playbook=db-pool-exhaustion&before={page['next']}"
        assert seen == [f"svc-{i}" for i in range(4, -1, -1)]
        assert (await (await client.get("/api/v1/executions?status=failed", headers=READ)).json())["executions"] == []
        newest = (await (await client.get("/api/v1/executions?limit=1", headers=READ)).json())["executions"][0]
        full = await (await client.get(f"/api/v1/executions/{newest['id']}", headers=READ)).json()
        assert full["playbook_version"] and full["reason"] == "all guardrails passed"
        assert full["alert_payload"]["labels"]["deployment"] == "svc-4"
        assert [(s["action"], s["status"]) for s in full["results"]] == [("resize_pool", "planned"),
                                                                       ("wait_healthy", "planned")]
        assert full["results"][0]["params"]["env"] == "DB_POOL_MAX_SIZE"
