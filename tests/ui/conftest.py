"""The web UI's fixtures: a daemon (live mode, an executor that reports before/after snapshots)
with the suite's tokens, and helpers to deliver alerts and sign in through the login form."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.ports import StepContext, StepResult
from remediator.runtime import RUNTIME
from tests.payloads import payload
from tests.tokens import WEBHOOK

Client = TestClient[Any, Any]


class Snapshots:
    """An executor that changes nothing but reports what a scale from 2 to 4 replicas would show:
    enough for the execution page's diff, without a cluster."""

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        return StepResult("ok", f"{step.action} done", before={"spec": {"replicas": 2, "paused": False}},
                          after={"spec": {"replicas": 4, "paused": False}})


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Client]:
    executor = Snapshots()
    app = create_app(settings_factory(dry_run=False), clock=vclock, executors=(executor, executor),
                     start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def deliver(client: Client, *alerts: dict[str, Any]) -> None:
    """Post alerts as Alertmanager does and let the daemon decide and execute them."""
    r = await client.post("/webhooks/alertmanager", json=payload(*alerts), headers=WEBHOOK)
    assert r.status == 200, await r.text()
    await client.app[RUNTIME].worker.drain()


async def sign_in(client: Client, token: str) -> None:
    r = await client.post("/ui/login", data={"token": token, "next": "/ui"}, allow_redirects=False)
    assert r.status == 303, await r.text()


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]
