"""``/api/v1/decisions`` and ``/api/v1/alerts/<fingerprint>`` over HTTP, on decisions the pipeline made.

Who may read them (the read API's roles), what a bad parameter gets (a 400 with a JSON
reason, never a 500), and what an operator sees: refusals with their reasons, the cursor,
and one alert's deliveries, decisions and executions together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from tests.payloads import alert_json, db_pool_alert, payload
from tests.tokens import ADMIN, READ, WEBHOOK

Client = TestClient[Any, Any]


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Client]:
    app = create_app(settings_factory(), clock=vclock, start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def deliver(client: Client, *alerts: dict[str, Any]) -> None:
    r = await client.post("/webhooks/alertmanager", json=payload(*alerts), headers=WEBHOOK)
    assert r.status == 200
    await client.app[RUNTIME].worker.drain()


@pytest.fixture
async def decided(client: Client) -> Client:
    """Two decisions by db-pool-exhaustion: a dry run on shop/orders-api, and a refusal for a
    namespace off the playbook's allowlist."""
    await deliver(client, db_pool_alert())
    await deliver(client, db_pool_alert(namespace="kube-public", deployment="dns"))
    return client


async def get(client: Client, path: str, headers: dict[str, str] = READ) -> tuple[int, Any]:
    r = await client.get(path, headers=headers)
    assert r.content_type == "application/json"
    return r.status, await r.json()


@pytest.mark.parametrize("path", ["/api/v1/decisions", "/api/v1/alerts/0123456789abcdef"])
async def test_read_and_admin_tokens_may_read_others_may_not(decided: Client, path: str) -> None:
    assert (await get(decided, path, {}))[0] == 401
    assert (await get(decided, path, {"Authorization": "Bearer nobody"}))[0] == 401
    status, body = await get(decided, path, WEBHOOK)
    assert (status, body["role"]) == (403, "read")
    assert (await get(decided, path, READ))[0] in (200, 404)  # the alert path names no recorded alert
    assert (await get(decided, path, ADMIN))[0] in (200, 404)


async def test_refusals_are_listed_with_their_reasons(decided: Client) -> None:
    status, body = await get(decided, "/api/v1/decisions")
    assert status == 200 and body["next"] is None
    assert [(d["decision"], d["target"]["namespace"]) for d in body["decisions"]] == [
        ("not_allowed", "kube-public"), ("executed", "shop")]
    refusal, executed = body["decisions"]
    assert "not in the playbook's allowlist" in refusal["reason"]
    assert (refusal["alertname"], refusal["playbook"], refusal["execution_id"], refusal["status"]) == (
        "HighDatabaseConnectionUsage", "db-pool-exhaustion", None, None)
    assert executed["execution_id"] == executed["id"] and executed["status"] == "dry_run"
    assert executed["dry_run"] is True and executed["playbook_version"]
    assert [s["action"] for s in executed["steps"]] == ["resize_pool", "wait_healthy"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("decision=not_allowed", ["kube-public"]),
        ("decision=executed,not_allowed", ["kube-public", "shop"]),
        ("namespace=shop", ["shop"]),
        ("target=orders-api", ["shop"]),
        ("target=kube-public/dns", ["kube-public"]),
        ("target=Deployment/shop/orders-api", ["shop"]),
        ("target=StatefulSet/shop/orders-api", []),
        ("playbook=db-pool-exhaustion&namespace=kube-public", ["kube-public"]),
        ("playbook=service-down", []),
        ("since=2026-11-22T10:00:00Z&until=2026-11-22T10:00:01Z", ["kube-public", "shop"]),
        ("until=2026-11-22T10:00:00Z", []),
        ("since=2026-11-22T11:00:00%2B01:00", ["kube-public", "shop"]),  # 10:00Z, with an encoded offset
    ],
)
async def test_filters(decided: Client, query: str, expected: list[str]) -> None:
    status, body = await get(decided, f"/api/v1/decisions?{query}")
    assert status == 200, body
    assert [d["target"]["namespace"] for d in body["decisions"]] == expected


async def test_pages_follow_the_cursor(decided: Client) -> None:
    status, first = await get(decided, "/api/v1/decisions?limit=1")
    assert status == 200 and [d["decision"] for d in first["decisions"]] == ["not_allowed"]
    assert first["next"] == first["decisions"][0]["id"]
    status, second = await get(decided, f"/api/v1/decisions?limit=1&before={first['next']}")
    assert [d["decision"] for d in second["decisions"]] == ["executed"]
    status, third = await get(decided, f"/api/v1/decisions?limit=1&before={second['next']}")
    assert (status, third) == (200, {"decisions": [], "next": None})


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=1001", "limit must be between 1 and 1000"),
        ("limit=ten", "limit must be an integer"),
        ("decision=bogus", "decision: unknown kind 'bogus'"),
        ("decision=no_match", "decision: unknown kind 'no_match'"),
        ("since=yesterday", "since: invalid RFC 3339 timestamp"),
        ("until=2026-11-22", "until: invalid RFC 3339 timestamp"),
        ("since=2026-11-22T10:00:00Z&until=2026-11-22T09:00:00Z", "since must be earlier than until"),
        ("target=a/b/c/d", "target must be a name"),
        ("target=/dns", "target must be a name"),
        ("target=shop/orders-api&namespace=payments", "contradicts namespace='payments'"),
        ("before=ex-nothing", "before: no decision 'ex-nothing' is recorded"),
    ],
)
async def test_bad_parameters_are_a_400_with_the_reason(decided: Client, query: str, reason: str) -> None:
    status, body = await get(decided, f"/api/v1/decisions?{query}")
    assert status == 400
    assert reason in body["error"]


async def test_an_alerts_episode(client: Client, vclock: VirtualClock) -> None:
    firing = db_pool_alert()
    await deliver(client, firing)
    await vclock.advance(300)
    await deliver(client, {**firing, "status": "resolved", "endsAt": "2026-11-22T10:05:00Z"})
    await deliver(client, alert_json({"alertname": "Unrelated", "namespace": "shop"}))
    status, listing = await get(client, "/api/v1/decisions?namespace=shop&decision=executed")
    [executed] = listing["decisions"]
    status, episode = await get(client, f"/api/v1/alerts/{executed['fingerprint']}")
    assert status == 200
    assert episode["fingerprint"] == executed["fingerprint"]
    assert episode["alertname"] == "HighDatabaseConnectionUsage" and episode["labels"]["deployment"] == "orders-api"
    assert [(d["status"], d["startsAt"], d["endsAt"]) for d in episode["deliveries"]] == [
        ("resolved", "2026-11-22T10:00:00Z", "2026-11-22T10:05:00Z"),
        ("firing", "2026-11-22T10:00:00Z", "0001-01-01T00:00:00Z"),
    ]
    assert episode["deliveries"][0]["received_at"] > episode["deliveries"][1]["received_at"]
    assert executed["id"] in [d["id"] for d in episode["decisions"]]
    assert [(e["id"], e["status"], e["playbook"]) for e in episode["executions"]] == [
        (executed["id"], "dry_run", "db-pool-exhaustion")]


async def test_an_alert_nothing_is_recorded_for_is_a_404(decided: Client) -> None:
    status, body = await get(decided, "/api/v1/alerts/0123456789abcdef")
    assert status == 404 and "nothing is recorded" in body["error"]
    status, body = await get(decided, "/api/v1/alerts/0123456789abcdef?limit=0")
    assert status == 400 and "limit" in body["error"]


async def test_an_unreachable_store_is_a_503(decided: Client) -> None:
    await decided.app[RUNTIME].store.close()
    for path in ("/api/v1/decisions", "/api/v1/alerts/0123456789abcdef"):
        status, body = await get(decided, path)
        assert (status, body) == (503, {"error": "store unavailable"})
