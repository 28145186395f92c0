"""The HTTP API beyond the webhook: readiness, metrics, executions, kill switch."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.errors import StoreUnavailable
from remediator.runtime import RUNTIME
from tests.payloads import db_pool_alert, payload

AUTH = {"Authorization": "Bearer t1"}  # the webhook's
READ = {"Authorization": "Bearer r1"}
ADMIN = {"Authorization": "Bearer a1"}


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings_factory(api={"read_tokens": ["r1"], "admin_tokens": ["a1"]}), clock=vclock,
                     start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def post_and_process(client: TestClient[Any, Any], body: dict[str, Any]) -> None:
    r = await client.post("/webhooks/alertmanager", json=body, headers=AUTH)
    assert r.status == 200
    await client.app[RUNTIME].worker.drain()


async def test_health_and_readiness(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    r = await client.get("/readyz")
    assert r.status == 200
    assert await r.json() == {"ready": True, "checks": {"playbooks": "ok", "store": "ok", "guardrails": "ok"}}


async def test_readiness_fails_when_the_store_is_gone(client: TestClient[Any, Any]) -> None:
    await client.app[RUNTIME].store.close()
    r = await client.get("/readyz")
    assert r.status == 503 and (await r.json())["checks"]["store"].startswith("unavailable")
    r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert()), headers=AUTH)
    assert r.status == 503 and (await r.json())["retry"] is True


async def test_metrics_count_what_happened(client: TestClient[Any, Any]) -> None:
    body = payload(db_pool_alert())
    await post_and_process(client, body)
    await post_and_process(client, body)
    await client.post("/webhooks/alertmanager", data=b"{", headers=AUTH)
    text = await (await client.get("/metrics")).text()
    assert 'remediator_alerts_received_total{status="firing"} 2.0' in text
    assert "remediator_alerts_duplicate_total 1.0" in text
    assert 'remediator_webhook_rejected_total{reason="malformed"} 1.0' in text
    assert 'remediator_decisions_total{decision="executed",playbook="db-pool-exhaustion"} 1.0' in text
    assert 'remediator_executions_total{playbook="db-pool-exhaustion",result="dry_run"} 1.0' in text
    assert "remediator_webhook_duration_seconds_count 3.0" in text


async def test_executions_api_filters_and_detail(client: TestClient[Any, Any]) -> None:
    await post_and_process(client, payload(db_pool_alert(), db_pool_alert(deployment="billing-api")))
    listed = (await (await client.get("/api/v1/executions", headers=READ)).json())["executions"]
    assert len(listed) == 2
    assert len((await (await client.get("/api/v1/executions?limit=1", headers=READ)).json())["executions"]) == 1
    assert (await (await client.get("/api/v1/executions?status=failed", headers=READ)).json())["executions"] == []
    by_playbook = await client.get("/api/v1/executions?playbook=db-pool-exhaustion", headers=READ)
    assert len((await by_playbook.json())["executions"]) == 2
    assert (await client.get("/api/v1/executions?limit=zero", headers=READ)).status == 400
    detail = await (await client.get(f"/api/v1/executions/{listed[0]['id']}", headers=READ)).json()
    assert detail["playbook_version"] and detail["decision"] == "executed" and len(detail["results"]) == 2
    assert detail["alert_payload"]["labels"]["alertname"] == "HighDatabaseConnectionUsage"
    missing = await client.get("/api/v1/executions/ex-nope", headers=READ)
    assert missing.status == 404 and (await missing.json()) == {"error": "no such execution"}


async def test_kill_switch_needs_credentials_and_takes_effect(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/api/v1/pause")).status == 401
    assert (await client.post("/api/v1/pause", headers=AUTH)).status == 403  # Alertmanager's token cannot
    assert (await client.post("/api/v1/pause", headers=ADMIN)).status == 200
    await post_and_process(client, payload(db_pool_alert()))
    assert (await (await client.get("/api/v1/executions", headers=READ)).json())["executions"] == []
    assert (await client.post("/api/v1/resume", headers=ADMIN)).status == 200
    await post_and_process(client, payload(db_pool_alert(deployment="other")))
    assert len((await (await client.get("/api/v1/executions", headers=READ)).json())["executions"]) == 1


async def test_unknown_route_is_a_json_404(client: TestClient[Any, Any]) -> None:
    r = await client.get("/nope")
    assert r.status == 404 and "error" in await r.json()


async def test_concurrent_deliveries_are_all_recorded(client: TestClient[Any, Any]) -> None:
    import asyncio

    bodies = [payload(db_pool_alert(deployment=f"svc-{i}")) for i in range(30)]
    answers = await asyncio.gather(*(client.post("/webhooks/alertmanager", json=b, headers=AUTH) for b in bodies))
    assert [r.status for r in answers] == [200] * 30
    assert await client.app[RUNTIME].store.count_alerts() == 30


async def test_a_pause_is_recorded_durably_with_who_set_it(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/api/v1/pause", headers=ADMIN)).status == 200
    record = await client.app[RUNTIME].kill_switch.record()
    assert record is not None and record.paused and record.by.startswith("admin token sha256:")
    assert "a1" not in record.by  # a fingerprint of the token, never the token
    assert (await client.post("/api/v1/resume", headers=ADMIN)).status == 200
    record = await client.app[RUNTIME].kill_switch.record()
    assert record is not None and not record.paused


async def test_a_guardrail_state_that_lost_the_pause_is_re_armed_at_start(
    settings_factory: Callable[..., Any], vclock: VirtualClock, tmp_path: Path
) -> None:
    """The embedded state lost (as Redis restarted without persistence loses it): the pause
    the store recorded is back in force before anything is decided."""
    settings = settings_factory(api={"read_tokens": ["r1"], "admin_tokens": ["a1"]})
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        assert (await c.post("/api/v1/pause", headers=ADMIN)).status == 200
    with contextlib.closing(sqlite3.connect(Path(settings.data_dir) / "remediator.db")) as db, db:
        db.execute("DELETE FROM guard_state")  # the embedded guardrail state: rows of the store's database
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        assert await c.app[RUNTIME].guardrails.paused()
        assert (await (await c.get("/api/v1/guardrails", headers=READ)).json())["paused"] is True
        await post_and_process(c, payload(db_pool_alert()))
        assert (await (await c.get("/api/v1/executions", headers=READ)).json())["executions"] == []


async def test_the_paused_setting_starts_paused_and_says_so(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    settings = settings_factory(guardrails={"paused": True})
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        record = await c.app[RUNTIME].kill_switch.record()
        assert record is not None and record.paused and record.by == "settings (guardrails.paused)"
        assert await c.app[RUNTIME].guardrails.paused()


async def test_a_pause_the_store_cannot_record_is_in_force_and_answered_503(client: TestClient[Any, Any]) -> None:
    rt = client.app[RUNTIME]

    async def unreachable(*args: Any) -> None:
        raise StoreUnavailable("connection refused")

    rt.store.set_kill_switch = unreachable
    r = await client.post("/api/v1/pause", headers=ADMIN)
    assert r.status == 503 and await r.json() == {
        "error": "paused, but not recorded durably: store unreachable (connection refused); retry", "paused": True}
    assert await rt.guardrails.paused()  # stopping is always allowed
    r = await client.post("/api/v1/resume", headers=ADMIN)
    assert r.status == 503 and (await r.json())["paused"] is True
    assert await rt.guardrails.paused()  # a resume that cannot be recorded changes nothing


async def test_a_pause_neither_home_of_the_switch_can_take_is_answered_as_not_paused(
        client: TestClient[Any, Any]) -> None:
    """The embedded default keeps the store and the guardrail state in one database: when it is gone,
    nothing is paused, and the answer must not say the pause is recorded."""
    rt = client.app[RUNTIME]
    await rt.store.close()
    r = await client.post("/api/v1/pause", headers=ADMIN)
    body = await r.json()
    assert r.status == 503 and body["paused"] is None
    assert body["error"].startswith("not paused: store and guardrail state unreachable")


async def test_a_pause_cut_short_by_the_store_timeout_does_not_claim_what_holds(
        settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    settings = settings_factory(api={"admin_tokens": ["a1"]}, http={"store_timeout": "100ms"})
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        rt = c.app[RUNTIME]

        async def frozen(*args: Any) -> None:
            await asyncio.Event().wait()

        rt.store.set_kill_switch = frozen
        r = await c.post("/api/v1/pause", headers=ADMIN)
        body = await r.json()
        assert r.status == 503 and body["paused"] is None and "may not be in force" in body["error"]
