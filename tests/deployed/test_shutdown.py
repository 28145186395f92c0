"""``remediator serve`` stopping as a pod's container is stopped: SIGTERM, then SIGKILL after the grace period.

The daemon runs as a process on a fake apiserver (real time) and a PostgreSQL schema of its own,
as a replica among others: what it leaves is what another replica finds.  Its timeouts are small
(one second where the Deployment has thirty), so each test takes a few seconds; the Deployment's
own numbers are held to its grace period in tests/test_deploy.py.  A test acts on what the daemon
logs or answers, never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from remediator.clock import SystemClock
from remediator.core.alerts import validate_payload
from remediator.ports import ReceivedAlert
from remediator.settings import load_settings
from remediator.store.postgres import PostgresStore
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube, running_fake_kube
from tests.deployed.daemon import PATIENCE, Daemon, Event, free_port, serving, started
from tests.deployed.test_serve import bare_env
from tests.executor.harness import NS, playbook, web
from tests.payloads import alert_json, payload
from tests.store.conftest import Schema, fresh_schema

#: A restart, then a wait for health that outlasts every test (the fake's pods never get ready):
#: an execution is mid-step whenever a test stops the daemon.
STEPS = "- action: restart\n- action: wait_healthy\n  timeout: 10m\n"
SETTINGS = """\
worker:
  shutdown_timeout: 1s       # the Deployment's: 30s
  poll_interval: 200ms
http:
  read_timeout: 5s           # a body cut short by the shutdown must not wait this out
  store_timeout: 1s
log:
  format: json
"""
TOKEN = "t1"


def body_of(deployment: str) -> bytes:
    return json.dumps(payload(alert_json({"alertname": "Broken", "deployment": deployment}))).encode()


class Replica:
    """The daemon's files and environment in ``root``: playbook, settings, kubeconfig, database."""

    def __init__(self, root: Path, kube: FakeKube, schema: Schema, settings: str = SETTINGS) -> None:
        (root / "pb").mkdir(parents=True)
        (root / "pb" / "fix.yaml").write_text(playbook(STEPS))
        self.config = root / "remediator.yaml"
        self.config.write_text(settings)
        self.schema = schema
        self.port = free_port()
        self.env = bare_env(root, KUBECONFIG=str(kube.write_kubeconfig(root / "kubeconfig", NS)),
                            REMEDIATOR_WEBHOOK_TOKENS=TOKEN)
        self.env.pop("PYTHONUNBUFFERED", None)  # as the shipped image
        self.args = ["serve", "--config", str(self.config), "--playbooks", str(root / "pb"), "--data-dir",
                     str(root / "var"), "--listen", f"127.0.0.1:{self.port}", "--database-url", schema.dsn]

    def settings(self) -> Any:
        return load_settings(str(self.config), env={})


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    async with running_fake_kube(FakeCluster(clock=time.time, ready_delay=3600.0)) as kube:
        kube.cluster.apply(web("web"))
        kube.cluster.apply(web("api"))
        yield kube


@pytest.fixture
async def schema() -> AsyncIterator[Schema]:
    async with fresh_schema() as schema:
        yield schema


async def post(daemon: Daemon, deployment: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(daemon.url.rpartition(":")[2]))
    body = body_of(deployment)
    writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                 % (TOKEN.encode(), len(body), body))
    status = int((await asyncio.wait_for(reader.readline(), PATIENCE)).split()[1])
    writer.close()
    return status


@contextlib.asynccontextmanager
async def slow_delivery(daemon: Daemon, deployment: str) -> AsyncIterator[asyncio.StreamReader]:
    """A delivery whose body is still coming in: its headers, then (once the daemon is handling it:
    its ``100 Continue``) the first bytes of the body, and nothing more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(daemon.url.rpartition(":")[2]))
    body = body_of(deployment)
    writer.write(b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                 % (TOKEN.encode(), len(body)))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)).startswith(b"HTTP/1.1 100")
    writer.write(body[:20])
    await writer.drain()
    try:
        yield reader
    finally:
        writer.close()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-cased names) and JSON body of the response on ``reader``."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)).decode()
    status_line, *lines = head.strip().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), PATIENCE)
    return int(status_line.split()[1]), headers, json.loads(body)


def after(daemon: Daemon, event: Event) -> list[str]:
    """The names of the events logged after ``event``."""
    return [e.get("event", "") for e in daemon.events[daemon.events.index(event) + 1:]]


async def test_a_delivery_cut_short_by_sigterm_gets_503_and_the_stop_fits_its_budget(
    tmp_path: Path, kube: FakeKube, schema: Schema
) -> None:
    """A delivery still arriving at SIGTERM was cut off by aiohttp (it drops what arrives once it
    shuts down) and answered 408 only when ``http.read_timeout`` ran out: Alertmanager retries no
    4xx, and the drain, then each stage after the other, ran past the pod's grace period, so the
    kubelet's SIGKILL landed mid-step with the execution's lease held.  Now the delivery gets a
    503 with Retry-After within a second, and the whole stop ends within its computed budget,
    the execution handed over."""
    replica = Replica(tmp_path, kube, schema)
    async with serving(replica.args, replica.env) as daemon:
        assert await post(daemon, "web") == 200
        await daemon.event(lambda e: e.get("event") == "step" and e.get("action") == "restart")
        async with slow_delivery(daemon, "api") as reader:
            daemon.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status, headers, body = await answer(reader)
            answered = time.monotonic() - signalled
        assert await daemon.exited() == 0, daemon.log()
        stopped = time.monotonic() - signalled
    assert status == 503, (status, body)
    assert int(headers["retry-after"]) >= 1 and headers["connection"] == "close"
    assert body["retry"] is True and "shutting down" in body["error"]
    assert answered < replica.settings().http.read_timeout
    from remediator.app import shutdown_budget

    assert stopped <= shutdown_budget(replica.settings()).total, stopped
    # the execution is handed over: unfinished, nobody's, for another replica to resume at once
    [(exec_status, owner)] = await schema.conn.fetch(
        "SELECT exec_status, claimed_by FROM decisions WHERE exec_status IS NOT NULL")
    assert (exec_status, owner) == ("running", None)
    assert not await schema.conn.fetchval("SELECT count(*) FROM alerts WHERE alert LIKE '%\"api\"%'")


async def test_after_sigterm_the_replica_decides_and_starts_nothing(
    tmp_path: Path, kube: FakeKube, schema: Schema
) -> None:
    """The worker stopped only once aiohttp had drained its connections: meanwhile the replica told
    to go claimed and decided alerts and started remediations.  Here another replica records an
    alert after the SIGTERM, while a delivery in flight holds the HTTP drain: it stays for that
    other replica, undecided and unclaimed, and its target is left alone."""
    replica = Replica(tmp_path, kube, schema)
    async with serving(replica.args, replica.env) as daemon, slow_delivery(daemon, "web"):
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = await daemon.named("shutting down: no longer accepting requests")
        store = await PostgresStore.open(schema.dsn, SystemClock())
        try:
            delivery = validate_payload(payload(alert_json({"alertname": "Broken", "deployment": "api"})))
            assert await store.record_alerts([ReceivedAlert(a, SystemClock().now()) for a in delivery.alerts]) == 1
        finally:
            await store.close()
        assert await daemon.exited() == 0, daemon.log()
    assert not {"alerts decided", "step", "execution finished"} & set(after(daemon, stopping)), daemon.log()
    row = await schema.conn.fetchrow("SELECT processed, claimed_by FROM alerts")
    assert (row["processed"], row["claimed_by"]) == (False, None)
    assert await schema.conn.fetchval("SELECT count(*) FROM decisions") == 0
    assert kube.cluster.requests.writes() == []


def pid_namespaces() -> bool:
    """Whether this process may run another as PID 1 of a new PID namespace (root, util-linux unshare)."""
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True, timeout=30)
    return done.returncode == 0


async def test_sigterm_while_starting_as_pid_1_stops_the_start(tmp_path: Path, kube: FakeKube,
                                                                schema: Schema) -> None:
    """The image runs the daemon as PID 1, and the kernel drops a signal to PID 1 that has no handler.
    The handlers came only once the worker ran and the site listened: a pod deleted while it started
    (here: waiting for another replica's schema migration) went on to claim and resume work until the
    kubelet's SIGKILL.  Now they come first: the start goes straight to cleanup, and nothing is claimed."""
    if not pid_namespaces():
        pytest.skip("needs unshare --pid (root)")
    store = await PostgresStore.open(schema.dsn, SystemClock())  # the schema as another replica left it
    try:
        delivery = validate_payload(payload(alert_json({"alertname": "Broken", "deployment": "web"})))
        await store.record_alerts([ReceivedAlert(a, SystemClock().now()) for a in delivery.alerts])
    finally:
        await store.close()
    replica = Replica(tmp_path, kube, schema)
    other = await asyncpg.connect(schema.dsn)  # another replica migrating: it holds the migration lock
    try:
        migrating = other.transaction()
        await migrating.start()
        await other.execute("SELECT pg_advisory_xact_lock(hashtext('remediator.migrate:' || current_schema()))")
        async with started(replica.args, replica.env, wrap=("unshare", "--pid", "--fork", "--kill-child")) as daemon:
            # The playbooks are loaded just before the store is opened, where the start waits for the lock.
            await daemon.named("playbooks loaded")
            os.kill(daemon.pid, signal.SIGTERM)
            await migrating.rollback()
            end = await daemon.event(lambda e: e.get("event") in ("listening", "stopped"))
            assert end["event"] == "stopped", daemon.log()
            assert await daemon.exited() == 0
    finally:
        await other.close()
    assert "stop requested during startup: not listening" in [e.get("event") for e in daemon.events]
    row = await schema.conn.fetchrow("SELECT processed, claimed_by, attempts FROM alerts")
    assert (row["processed"], row["claimed_by"], row["attempts"]) == (False, None, 0)
    assert kube.cluster.requests.writes() == []


async def test_sighup_during_the_shutdown_is_ignored(tmp_path: Path, kube: FakeKube, schema: Schema) -> None:
    """SIGHUP reloads; during the shutdown its handler had been removed, so its default action killed
    the daemon in the middle of the stop, the execution neither finished nor handed over.  Now it is
    logged and ignored, as is a second SIGTERM or SIGINT, and the stop ends as it would have."""
    replica = Replica(tmp_path, kube, schema, SETTINGS.replace("shutdown_timeout: 1s", "shutdown_timeout: 3s"))
    async with serving(replica.args, replica.env) as daemon:
        assert await post(daemon, "web") == 200
        await daemon.event(lambda e: e.get("event") == "step" and e.get("action") == "restart")
        daemon.proc.send_signal(signal.SIGTERM)
        await daemon.named("shutting down: no longer accepting requests")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.named("SIGHUP ignored: shutting down")
        daemon.proc.send_signal(signal.SIGINT)
        await daemon.named("already stopping", signal="SIGINT")
        assert await daemon.exited() == 0, daemon.log()
    assert daemon.events[-1]["event"] == "stopped"
    [(exec_status, owner)] = await schema.conn.fetch(
        "SELECT exec_status, claimed_by FROM decisions WHERE exec_status IS NOT NULL")
    assert (exec_status, owner) == ("running", None)
