"""Several daemon processes on one PostgreSQL database (acceptance 1 and 2 of the store issue).

Each replica is a real process (``tests/store/harness.py``: the HTTP app, the worker,
PostgresStore, and a recording executor standing in for the cluster).  What the
replicas applied is read back from their recording files, so "exactly once" is
counted where the effect happens, across processes, not inferred from the store.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.payloads import alert_json, payload
from tests.store.conftest import Schema

HARNESS = Path(__file__).with_name("harness.py")
PLAYBOOK = """
name: multi-step
match: {alertname: HarnessAlert, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
steps: %s
"""
TWO_STEPS = "[{action: restart}, {action: scale, to: 3}]"
THREE_STEPS = "[{action: restart}, {action: scale, to: 3}, {action: wait_healthy}]"
AUTH = {"Authorization": "Bearer harness"}


@dataclass
class Replica:
    proc: asyncio.subprocess.Process
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/alertmanager"


@dataclass
class Cluster:
    replicas: list[Replica]
    record_dir: Path
    schema: Schema

    def events(self) -> list[dict[str, Any]]:
        files = sorted(self.record_dir.glob("*.jsonl"))
        return [json.loads(line) for p in files for line in p.read_text().splitlines()]

    async def wait_for(self, what: str, done: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> None:
        """Bounded polling: these are real processes working on their own time."""
        for _ in range(int(seconds / 0.1)):
            if await done():
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}")

    async def all_done(self, executions: int) -> bool:
        row = await self.schema.conn.fetchrow(
            "SELECT (SELECT count(*) FROM alerts WHERE NOT processed) AS pending,"
            " (SELECT count(*) FROM decisions WHERE exec_status = 'succeeded') AS succeeded"
        )
        return bool(row["pending"] == 0 and row["succeeded"] == executions)


@pytest.fixture
async def start_cluster(pg_schema: Schema, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    started: list[Replica] = []

    async def start(n: int, *, lease: float, steps: str) -> Cluster:
        (tmp_path / "pb").mkdir(exist_ok=True)
        (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK % steps)
        record_dir = tmp_path / "records"
        record_dir.mkdir(exist_ok=True)
        for i in range(n):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HARNESS), "--database-url", pg_schema.dsn, "--record-dir", str(record_dir),
                "--playbooks", str(tmp_path / "pb"), "--data-dir", str(tmp_path / f"data{i}"), "--lease", str(lease),
                "--log", str(tmp_path / f"replica{i}.log"), stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line, (tmp_path / f"replica{i}.log").read_text()
            hello = json.loads(line)
            started.append(Replica(proc, hello["port"], hello["pid"]))
        return Cluster(list(started), record_dir, pg_schema)

    yield start
    for r in started:
        if r.proc.returncode is None:
            r.proc.send_signal(signal.SIGTERM)
    for r in started:
        try:
            await asyncio.wait_for(r.proc.wait(), timeout=15)
        except TimeoutError:
            r.proc.kill()
            await r.proc.wait()


def delivery(i: int, **labels: str) -> dict[str, Any]:
    return payload(alert_json({"alertname": "HarnessAlert", "app": f"app-{i}", **labels}, fingerprint=f"{i:016x}"))


async def deliver(session: aiohttp.ClientSession, replicas: list[Replica], bodies: list[dict[str, Any]],
                  *, concurrency: int = 24) -> int:
    """Send every body to every replica at once (an HA pair, times three); return how many were acknowledged."""
    sem = asyncio.Semaphore(concurrency)
    acked = 0

    async def one(url: str, body: dict[str, Any]) -> None:
        nonlocal acked
        async with sem, session.post(url, json=body) as r:
            assert r.status == 200, await r.text()
            acked += 1

    await asyncio.gather(*(one(r.url, b) for b in bodies for r in replicas))
    return acked


def applications(events: list[dict[str, Any]]) -> collections.Counter[tuple[str, str, int]]:
    return collections.Counter((e["execution"], e["phase"], e["index"]) for e in events if e["event"] == "apply")


@pytest.mark.timeout(300)  # 6,300 deliveries through three real processes: a bound for a loaded machine
async def test_three_replicas_execute_every_remediation_exactly_once(
    start_cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    cluster = await start_cluster(3, lease=10.0, steps=TWO_STEPS)  # no crash here: leases must never run out
    bodies = [delivery(i) for i in range(2000)]
    rng = random.Random(7)
    retries = rng.sample(bodies, 300)  # Alertmanager retrying deliveries it thinks failed
    async with aiohttp.ClientSession(headers=AUTH) as session:
        acked = await deliver(session, cluster.replicas, bodies)
        acked += await deliver(session, [rng.choice(cluster.replicas)], retries)
    assert acked == 3 * 2000 + 300
    await cluster.wait_for("2,000 executions", lambda: cluster.all_done(2000), seconds=240)

    events = cluster.events()
    applied = applications(events)
    assert len({key[0] for key in applied}) == 2000
    assert set(applied.values()) == {1}, [k for k, n in applied.items() if n > 1][:5]
    assert len(applied) == 2000 * 2
    calls = collections.Counter((e["execution"], e["index"]) for e in events if e["event"] == "call")
    assert set(calls.values()) == {1}  # nothing crashed, so nothing was even re-checked
    assert {e["pid"] for e in events} == {r.pid for r in cluster.replicas}  # all three really did work
    db = cluster.schema
    assert await db.count("SELECT count(*) FROM alerts") == 2000
    assert await db.count("SELECT count(*) FROM decisions WHERE kind = 'executed'") == 2000
    assert await db.count("SELECT count(*) FROM decisions") == 2000


async def test_a_killed_replica_s_execution_is_finished_by_another_without_repeating_a_step(
    start_cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    cluster = await start_cluster(3, lease=1.5, steps=THREE_STEPS)
    first = [delivery(i, **({"hang": "scale"} if i == 7 else {})) for i in range(30)]
    async with aiohttp.ClientSession(headers=AUTH) as session:
        acked = await deliver(session, cluster.replicas, first)

        async def hanging() -> bool:
            return any(e["event"] == "hanging" for e in cluster.events())

        await cluster.wait_for("the execution to reach its hanging step", hanging)
        [hang] = [e for e in cluster.events() if e["event"] == "hanging"]
        victim = next(r for r in cluster.replicas if r.pid == hang["pid"])
        os.kill(victim.pid, signal.SIGKILL)
        assert await asyncio.wait_for(victim.proc.wait(), timeout=10) == -signal.SIGKILL
        survivors = [r for r in cluster.replicas if r is not victim]
        acked += await deliver(session, survivors, [delivery(i) for i in range(30, 60)])
    assert acked == 3 * 30 + 2 * 30
    await cluster.wait_for("every execution, the interrupted one included", lambda: cluster.all_done(60))

    events = cluster.events()
    applied = applications(events)
    assert len(applied) == 60 * 3 and set(applied.values()) == {1}  # no step ran twice, none is missing
    did = hang["execution"]
    trail = [(e["action"], e["previous"], e["pid"] == victim.pid) for e in events
             if e["event"] == "call" and e["execution"] == did]
    assert sorted(trail, key=lambda t: not t[2]) == [
        ("restart", None, True),
        ("scale", None, True),  # applied, then the process was killed before recording it
        ("scale", "started", False),  # another replica re-checked it: found applied, not applied again
        ("wait_healthy", None, False),
    ]
    record = json.loads(await cluster.schema.conn.fetchval("SELECT result FROM steps WHERE execution_id = $1"
                                                           " AND idx = 1", did))
    assert record == {"status": "ok", "message": "found already applied when re-checked", "before": None,
                      "after": None, "details": {}}
    # nothing acknowledged is missing: every alert any replica accepted was recorded and acted on
    assert await cluster.schema.count("SELECT count(*) FROM alerts WHERE processed") == 60
