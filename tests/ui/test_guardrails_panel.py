"""The guardrails panel's live figures: each budget's use and when the next execution fits, the
executions holding a concurrency slot and the targets they lock, while one is running."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.guardrails import GuardUsage, Lock
from remediator.runtime import RUNTIME
from tests.guardrails.conftest import free_port
from tests.guardrails.test_pipeline_guardrails import Gated
from tests.payloads import db_pool_alert, payload
from tests.tokens import READ, WEBHOOK
from tests.ui.conftest import Client

BUDGETS = [{"scope": "*", "max": 5, "per": 3600}, {"scope": "shop", "max": 1, "per": 1800}]


#: An executor whose steps wait until the test lets them go: an execution caught running.
Held = Gated


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock, held: Held) -> AsyncIterator[Client]:
    settings = settings_factory(dry_run=False, guardrails={"budgets": BUDGETS})
    app = create_app(settings, clock=vclock, executors=(held, held), start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def panel(client: Client) -> str:
    r = await client.get("/ui/guardrails", headers=READ)
    assert r.status == 200, await r.text()
    return await r.text()


def budget_rows(html: str) -> list[tuple[str, str, str]]:
    return [(scope, used, nxt) for scope, used, nxt in re.findall(
        r'<tr data-scope="([^"]+)"><td>[^<]+</td><td><span class="badge \w+">([^<]+)</span></td><td>[^<]+</td>'
        r"<td>([^<]+)</td></tr>", html)]


async def test_budgets_slots_and_locks_while_an_execution_runs(client: Client, held: Held) -> None:
    rt = client.app[RUNTIME]
    html = await panel(client)
    assert budget_rows(html) == [("*", "0 of 5", "now"), ("shop", "0 of 1", "now")]
    assert "No target is locked." in html and "None held" in html
    r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert()), headers=WEBHOOK)
    assert r.status == 200
    await rt.worker.decide_all()
    running = asyncio.create_task(rt.worker.queue.drain())
    await held.started.wait()
    [ex] = await rt.store.list_executions()
    html = await panel(client)
    # the shop budget is spent until its 30-minute window lets the execution out: 10:30
    assert budget_rows(html) == [("*", "1 of 5", "now"), ("shop", "1 of 1", "2026-11-22T10:30:00Z")]
    assert '<span class="badge budget_exhausted">1 of 1</span>' in html
    link = f'<a href="/ui/executions/{ex["id"]}"><code>{ex["id"]}</code></a>'
    slots = html[html.index("<h2>Concurrency slots</h2>"):html.index("<h2>Target locks</h2>")]
    locks = html[html.index("<h2>Target locks</h2>"):html.index("<h2>Executions in progress</h2>")]
    assert link in slots and "<td>shop</td>" in slots
    assert link in locks and "Deployment/shop/orders-api" in locks
    api = await (await client.get("/api/v1/guardrails", headers=READ)).json()  # the API says the same
    assert api["budgets"][1] == {"scope": "shop", "max": 1, "per_seconds": 1800.0, "used": 1,
                                 "next_at": "2026-11-22T10:30:00+00:00"}
    assert [(r["execution"], r["namespace"]) for r in api["running"]] == [(ex["id"], "shop")]
    assert [(lk["target"], lk["execution"]) for lk in api["locks"]] == [("Deployment/shop/orders-api", ex["id"])]
    held.go.set()
    await running
    html = await panel(client)
    assert "No target is locked." in html and "None held" in html  # released with the execution
    assert budget_rows(html)[1] == ("shop", "1 of 1", "2026-11-22T10:30:00Z")  # the budget stays spent


async def test_an_unreachable_redis_is_a_503_panel(settings_factory: Callable[..., Any], vclock: VirtualClock,
                                                   held: Held) -> None:
    settings = settings_factory(dry_run=False, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(settings, clock=vclock, executors=(held, held), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/ui/guardrails", headers=READ)
        html = await r.text()
    assert r.status == 503 and "guardrail state unreachable: redis" in html


async def test_the_panel_says_when_the_lock_list_was_cut(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis lists at most USAGE_LOCKS live locks (tests/guardrails/test_usage.py); the panel says so."""
    rt = client.app[RUNTIME]
    cut = GuardUsage(locks={"Deployment/shop/web": Lock("ex-1", 4e9)}, locks_cut=True)

    async def usage() -> GuardUsage:
        return cut

    assert "locks-cut" not in await panel(client)
    monkeypatch.setattr(rt.guardrails, "usage", usage)
    html = await panel(client)
    assert '<p class="muted locks-cut">The first 1 live locks found; the remaining lock records were not read.</p>' \
        in html
