"""PostgreSQL unreachable, then back (acceptance 3 of the store issue).

The machine's PostgreSQL is shared with other tests, so it is not stopped: the daemon
reaches it through a TCP relay that the test cuts (every connection reset, new ones
refused, as when the server goes down) and restores.  For the daemon that is the
same outage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.ports import StepContext, StepResult
from remediator.runtime import RUNTIME
from tests.payloads import alert_json, payload
from tests.store.conftest import Schema, schema_dsn

AUTH = {"Authorization": "Bearer t1"}


class Relay:
    """A TCP relay to PostgreSQL that can be cut and restored on the same port."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        pair = {client_w, server_w}
        self._open |= pair

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            for w in pair:
                w.transport.abort()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self._open -= pair

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._open):
            w.transport.abort()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    r = Relay()
    await r.start()
    yield r
    with contextlib.suppress(AssertionError):
        await r.cut()


class Cluster:
    """The "cluster": records every application; one step can be held until released."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, str | None]] = []
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        previous = ctx.previous.status if ctx.previous else None
        self.calls.append((ctx.target.name, step.action, previous))
        if previous == "started" and (ctx.target.name, step.action) in self.applied:
            return StepResult("ok", "found already applied when re-checked")
        self.applied.append((ctx.target.name, step.action))
        if ctx.alert.labels.get("hold") == step.action and previous is None:
            self.reached.set()
            await self.release.wait()
        return StepResult("ok", "applied")


def body(app: str, **labels: str) -> dict[str, Any]:
    return payload(alert_json({"alertname": "X", "app": app, **labels}))


async def until(what: str, check: Callable[[], Any], seconds: float = 20.0) -> None:
    """Bounded polling on the real database and the real network."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_outage_answers_503_loses_nothing_acknowledged_and_recovers_without_restart(
    pg_schema: Schema, relay: Relay, settings_factory: Callable[..., Any], vclock: VirtualClock, tmp_path: Path
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(
        "name: two-steps\nmatch: {alertname: X, matchers: ['app=~\".+\"']}\n"
        "target: {kind: Deployment, namespace: shop, name: '{{ labels.app }}'}\n"
        "steps: [{action: restart}, {action: scale, to: 3}]\n"
    )
    dsn = schema_dsn(pg_schema.name, base=f"postgresql://postgres@127.0.0.1:{relay.port}/test", connect_timeout="2")
    settings = settings_factory(database_url=dsn, dry_run=False, playbooks=str(tmp_path / "pb"),
                                worker={"poll_interval": 0.05})
    cluster = Cluster()
    db = pg_schema

    async def done(n: int) -> bool:
        pending = await db.count("SELECT count(*) FROM alerts WHERE NOT processed")
        return pending == 0 and await db.count("SELECT count(*) FROM decisions WHERE exec_status = 'succeeded'") == n

    app = create_app(settings, clock=vclock, executors=(cluster, cluster))
    async with TestClient(TestServer(app)) as client:
        rt = app[RUNTIME]
        acknowledged = []
        for name in ("a1", "a2", "a3"):
            assert (await client.post("/webhooks/alertmanager", json=body(name), headers=AUTH)).status == 200
            acknowledged.append(name)
        assert (await client.post("/webhooks/alertmanager", json=body("held", hold="scale"), headers=AUTH)).status \
            == 200
        acknowledged.append("held")
        await asyncio.wait_for(cluster.reached.wait(), timeout=20)  # "held" is applying its scale step

        await relay.cut()  # PostgreSQL goes away mid-execution
        cluster.release.set()  # the step completes on the cluster, but cannot be recorded
        refused = []
        for name in ("b1", "b2"):
            r = await client.post("/webhooks/alertmanager", json=body(name), headers=AUTH)
            assert r.status == 503 and (await r.json())["retry"] is True
            refused.append(name)
        r = await client.get("/readyz")
        assert r.status == 503 and (await r.json())["checks"]["store"].startswith("unavailable")
        await until("the worker to hit the outage", lambda: _positive(rt.metrics.store_unavailable._value.get()))

        await relay.restore()  # PostgreSQL is back: no restart of the daemon
        await until("readiness", lambda: _ready(client))
        await vclock.advance(60)  # the outage took a while: the paused execution's retry backoff is over
        for name in refused:  # Alertmanager retries what was refused
            assert (await client.post("/webhooks/alertmanager", json=body(name), headers=AUTH)).status == 200
            acknowledged.append(name)
        await until("every acknowledged alert to be remediated", lambda: done(len(acknowledged)))

    names = sorted(r["name"] for r in await db.conn.fetch(
        "SELECT body::json->'target'->>'name' AS name FROM decisions WHERE exec_status = 'succeeded'"))
    assert names == sorted(acknowledged)
    # every step applied once, the interrupted one included: it was re-checked, not repeated
    assert sorted(cluster.applied) == sorted((n, a) for n in acknowledged for a in ("restart", "scale"))
    assert ("held", "scale", "started") in cluster.calls


async def _positive(value: float) -> bool:
    return value > 0


async def _ready(client: TestClient[Any, Any]) -> bool:
    return (await client.get("/readyz")).status == 200
