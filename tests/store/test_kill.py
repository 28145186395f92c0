"""kill -9 of a replica mid-execution, under load (acceptance 1 and 2 of issue 12).

Real replicas (``tests/store/harness.py``) on one PostgreSQL schema, sharing their
guardrail state through Redis as production replicas do.  What happened in the
"cluster" is read back from the recording executor's files (every call and every
application of a step, with the pid of the process that made it), what was decided
and finished from the store.  Waits are bounded polls (``Cluster.wait_for``); nothing
here asserts how fast anything is, only in which order things happened.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from tests.guardrails.conftest import REDIS_URL, delete_prefix, prefixed
from tests.payloads import alert_json, payload
from tests.store.conftest import Schema
from tests.store.test_replicas import AUTH, HARNESS, THREE_STEPS, Cluster, Replica, applications, deliver, delivery

BATCH = 10  # the harness's worker.batch: how many alerts one replica claims at a time
PLAYBOOK = """
name: multi-step
match: {alertname: HarnessAlert, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
steps: %s
notify: %s
"""


@dataclass
class Replicas:
    """Starts harness replicas by index; the same index again is a restart (same data dir, same log)."""

    schema: Schema
    tmp_path: Path
    redis_url: str
    lease: float = 2.0
    extra: list[str] = field(default_factory=list)
    started: list[Replica] = field(default_factory=list)

    def configure(self, *, lease: float, steps: str, notify: str = "[]", extra: list[str] | None = None) -> None:
        (self.tmp_path / "pb").mkdir(exist_ok=True)
        (self.tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK % (steps, notify))
        self.record_dir.mkdir(exist_ok=True)
        self.lease = lease
        self.extra = list(extra or [])

    @property
    def record_dir(self) -> Path:
        return self.tmp_path / "records"

    def log(self, i: int) -> Path:
        return self.tmp_path / f"replica{i}.log"

    async def start(self, i: int) -> Replica:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HARNESS), "--database-url", self.schema.dsn, "--record-dir", str(self.record_dir),
            "--playbooks", str(self.tmp_path / "pb"), "--data-dir", str(self.tmp_path / f"data{i}"),
            "--lease", str(self.lease), "--batch", str(BATCH), "--redis-url", self.redis_url,
            "--log", str(self.log(i)), *self.extra, stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line, self.log(i).read_text()
        hello = json.loads(line)
        replica = Replica(proc, hello["port"], hello["pid"])
        self.started.append(replica)
        return replica

    async def cluster(self, n: int) -> Cluster:
        return Cluster([await self.start(i) for i in range(n)], self.record_dir, self.schema)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    prefix = f"test-kill-{secrets.token_hex(6)}:"
    yield prefixed(REDIS_URL, prefix)
    await delete_prefix(prefix)


@pytest.fixture
async def replicas(pg_schema: Schema, tmp_path: Path, redis_url: str) -> AsyncIterator[Replicas]:
    rs = Replicas(pg_schema, tmp_path, redis_url)
    yield rs
    for r in rs.started:
        if r.proc.returncode is None:
            r.proc.send_signal(signal.SIGTERM)
    for r in rs.started:
        try:
            await asyncio.wait_for(r.proc.wait(), timeout=40)
        except TimeoutError:
            r.proc.kill()
            await r.proc.wait()


async def kill(replica: Replica) -> None:
    os.kill(replica.pid, signal.SIGKILL)
    assert await asyncio.wait_for(replica.proc.wait(), timeout=10) == -signal.SIGKILL


async def stuck(cluster: Cluster, redis_url: str) -> str:
    """What is left undone, for a failure message: undecided alerts, unfinished executions,
    the guardrail lock on their targets, and what the executor saw of them."""
    db = cluster.schema.conn
    alerts = [dict(r) for r in await db.fetch(
        "SELECT a.id, a.fingerprint, a.claimed_by, a.claimed_until, a.attempts, a.received_at,"
        " (SELECT count(*) FROM decisions d WHERE d.alert_key = a.dedup_key) AS decisions"
        " FROM alerts a WHERE NOT processed ORDER BY id LIMIT 20")]
    executions = [dict(r) for r in await db.fetch(
        "SELECT id, fingerprint, exec_status, at, claimed_by, claimed_until FROM decisions"
        " WHERE exec_status IN ('pending', 'running') ORDER BY at LIMIT 20")]
    apps = {f"app-{int(r['fingerprint'], 16)}" for r in alerts + executions} | {"hang-after-admit"}
    url, _, prefix = redis_url.partition("?prefix=")
    client = Redis.from_url(url, decode_responses=True)
    try:
        locks = {k: await client.hgetall(k) async for k in client.scan_iter(match=f"{prefix}lock:*", count=1000)
                 if any(k.endswith(f"/{app}") for app in apps)}
        now = await client.time()
    finally:
        await client.aclose()
    ids = {r["id"] for r in executions} | {lock.get("owner") for lock in locks.values()}
    events = [e for e in cluster.events() if e.get("execution") in ids]
    return (f"undecided alerts: {alerts}\nunfinished executions: {executions}\nlocks on their targets "
            f"(redis time {now[0]}): {locks}\nexecutor events for them: {events}")


async def wait_all_done(cluster: Cluster, redis_url: str, executions: int, seconds: float, killed: str) -> None:
    for _ in range(int(seconds / 0.1)):
        if await cluster.all_done(executions):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"not every alert was decided and executed within {seconds:.0f} s ({killed}):\n"
                f"{await stuck(cluster, redis_url)}")


def killed_at(replica: Replica) -> str:
    return f"pid {replica.pid} killed at {time.time():.3f}"


def hanging(cluster: Cluster) -> Callable[[], Awaitable[bool]]:
    async def seen() -> bool:
        return any(e["event"] == "hanging" for e in cluster.events())

    return seen


async def test_an_interrupted_execution_resumes_within_a_lease_not_after_a_5000_alert_backlog(
    replicas: Replicas,
) -> None:
    """Acceptance 1: kill -9 under a backlog of 5,000 alerts.

    A replica is killed in the middle of an execution (its ``scale`` step applied, not yet
    recorded) right after 5,000 more alerts were acknowledged.  A survivor must resume the
    execution once its lease (2 s) lapses, while the backlog is still being decided.

    What would fail on the old design (one loop: resume the dead replica's executions,
    then decide until nothing is left to claim): there, a replica resumes only after its
    own drain finds nothing claimable, so when the interrupted execution finished at most
    the batches other replicas had in hand (``BATCH`` each) could still be undecided.
    Here the test requires more than that still undecided at the moment it finished.
    (It does not wait for the backlog to drain: on this 2-core machine two survivors decide
    and execute 5,000 alerts in about 100 s; the interrupted execution finishes some 2-3 s
    after the kill, with about 4,700 of them still undecided.)
    """
    lease, backlog = 2.0, 5000
    replicas.configure(lease=lease, steps=THREE_STEPS)
    cluster = await replicas.cluster(3)
    db = cluster.schema
    async with aiohttp.ClientSession(headers=AUTH) as session:
        await deliver(session, cluster.replicas, [payload(alert_json(
            {"alertname": "HarnessAlert", "app": "app-0", "hang": "scale"}, fingerprint=f"{0:016x}"))])
        await cluster.wait_for("the execution to reach its hanging step", hanging(cluster))
        [hang] = [e for e in cluster.events() if e["event"] == "hanging"]
        victim = next(r for r in cluster.replicas if r.pid == hang["pid"])
        survivors = [r for r in cluster.replicas if r is not victim]
        # The backlog, acknowledged before the kill: Alertmanager groups, 100 alerts a delivery.
        groups = [payload(*(alert_json({"alertname": "HarnessAlert", "app": f"app-{i}"}, fingerprint=f"{i:016x}")
                            for i in range(start, start + 100))) for start in range(1, backlog + 1, 100)]
        assert await deliver(session, survivors, groups, concurrency=8) == 2 * len(groups)
    assert await db.count("SELECT count(*) FROM alerts") == backlog + 1
    await kill(victim)
    killed = time.time()
    undecided_at_kill = await db.count("SELECT count(*) FROM alerts WHERE NOT processed")

    did = hang["execution"]

    async def finished() -> bool:
        return bool(await db.conn.fetchval("SELECT exec_status FROM decisions WHERE id = $1", did) == "succeeded")

    await cluster.wait_for("the interrupted execution to be finished by a survivor", finished, seconds=60)
    # Undecided alerts only ever decrease (nothing is being delivered): this many, at least,
    # were still undecided when the interrupted execution finished.
    undecided = await db.count("SELECT count(*) FROM alerts WHERE NOT processed")
    finished_at = await db.conn.fetchval("SELECT finished_at FROM decisions WHERE id = $1", did)
    resumed_after = finished_at.timestamp() - killed

    print(f"\nbacklog {backlog}: undecided at the kill {undecided_at_kill}, and still {undecided} when the "
          f"interrupted execution was seen finished ({resumed_after:.1f} s after the kill)")
    assert undecided > len(cluster.replicas) * BATCH, (undecided_at_kill, undecided)

    events = cluster.events()
    trail = [(e["action"], e["previous"], e["pid"] == victim.pid) for e in events
             if e["event"] == "call" and e["execution"] == did]
    assert sorted(trail, key=lambda t: not t[2]) == [
        ("restart", None, True),
        ("scale", None, True),  # applied, then the process was killed before recording it
        ("scale", "started", False),  # a survivor re-checked it: found applied, not applied again
        ("wait_healthy", None, False),
    ]
    assert set(applications(events).values()) == {1}  # nothing, in the backlog either, applied twice so far


@dataclass
class Hook:
    """The notification receiver: every ``succeeded`` notice the replicas send."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="ok")

    def succeeded(self) -> collections.Counter[str]:
        return collections.Counter(b["execution"]["id"] for b in self.bodies if b["event"] == "succeeded")


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    receiver = Hook()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield receiver, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    await runner.cleanup()


@pytest.mark.timeout(180)  # a bound for a loaded machine; it takes about 20 s here
async def test_kill_during_a_500_alert_storm_then_restart_decides_and_applies_everything_exactly_once(
    replicas: Replicas, hook: tuple[Hook, str], redis_url: str,
) -> None:
    """Acceptance 2: kill -9 of a replica during a 500-alert storm with executions in flight,
    then restart it.

    Every alert goes to all three replicas (an HA Alertmanager pair, times three); every
    applied step is held 20 ms, so each replica has executions mid-step at any moment, and
    one alert's ``scale`` step hangs on whichever replica runs it: that replica is killed
    while the storm is still being delivered, and restarted (same data dir) at once.
    Then: every acknowledged alert is recorded and decided once; every execution finished
    once (in the store, in the executor's calls, and in the ``succeeded`` notifications);
    and every step was applied exactly once.
    """
    receiver, url = hook
    storm_size = 500
    replicas.configure(lease=2.0, steps=THREE_STEPS, notify="[hook]",
                       extra=["--step-delay", "0.02", "--notify-url", url])
    cluster = await replicas.cluster(3)
    db = cluster.schema
    bodies = [delivery(i, **({"hang": "scale"} if i == 5 else {})) for i in range(storm_size)]
    acked: collections.Counter[int] = collections.Counter()
    refused: list[tuple[int, int, str]] = []  # (alert, port, error): deliveries to the killed replica
    sent = 0

    async def storm(session: aiohttp.ClientSession) -> None:
        sem = asyncio.Semaphore(24)

        async def one(i: int, r: Replica) -> None:
            nonlocal sent
            async with sem:
                try:
                    async with session.post(r.url, json=bodies[i]) as resp:
                        assert resp.status == 200, await resp.text()
                        acked[i] += 1
                except aiohttp.ClientError as exc:
                    refused.append((i, r.port, repr(exc)))
                sent += 1

        await asyncio.gather(*(one(i, r) for i in range(storm_size) for r in cluster.replicas))

    async with aiohttp.ClientSession(headers=AUTH) as session:
        delivering = asyncio.create_task(storm(session))
        await cluster.wait_for("the execution to reach its hanging step", hanging(cluster))
        [hang] = [e for e in cluster.events() if e["event"] == "hanging"]
        victim = next(r for r in cluster.replicas if r.pid == hang["pid"])
        await kill(victim)
        killed = killed_at(victim)
        sent_at_kill = sent
        in_flight = {e["execution"] for e in cluster.events() if e["pid"] == victim.pid and e["event"] == "call"}
        restarted = await replicas.start(cluster.replicas.index(victim))
        await delivering
    assert sent_at_kill < 3 * storm_size, "the storm was over before the kill: no test of a kill during it"
    assert {port for _i, port, _e in refused} <= {victim.port}, refused[:5]
    assert set(acked) == set(range(storm_size))  # the survivors acknowledged every alert

    await wait_all_done(cluster, redis_url, storm_size, seconds=60, killed=killed)
    assert restarted.proc.returncode is None, replicas.log(cluster.replicas.index(victim)).read_text()[-3000:]

    # Every acknowledged alert recorded and decided once.
    fingerprints = {r["fingerprint"] for r in await db.conn.fetch("SELECT fingerprint FROM alerts WHERE processed")}
    assert fingerprints == {f"{i:016x}" for i in acked}
    assert await db.count("SELECT count(*) FROM alerts") == storm_size
    per_alert = await db.conn.fetch("SELECT alert_key, count(*) AS n, min(kind) AS kind FROM decisions"
                                    " GROUP BY alert_key")
    assert len(per_alert) == storm_size and {(r["n"], r["kind"]) for r in per_alert} == {(1, "executed")}
    assert await db.count("SELECT count(*) FROM decisions WHERE exec_status = 'succeeded'"
                          " AND finished_at IS NOT NULL AND claimed_by IS NULL") == storm_size

    # Every mutating step applied exactly once, across all four processes.
    events = cluster.events()
    applied = applications(events)
    duplicates = {k: n for k, n in applied.items() if n != 1}
    assert len(applied) == storm_size * 3 and not duplicates, duplicates

    # Every execution run to its end once: each step is first attempted once; it is called
    # again only to resume the write-ahead record an interrupted attempt left behind (the
    # caller re-checks it; it does not re-apply it), and that on another process.
    calls: dict[tuple[str, str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        if e["event"] == "call":
            calls[(e["execution"], e["phase"], e["index"])].append(e)

    def others(cs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c for c in cs if c["pid"] != victim.pid]

    def once(cs: list[dict[str, Any]]) -> bool:
        # No fresh attempt at all is fine too: the killed replica may have written the step's
        # "started" record and died before calling the executor; the resumed call re-checks it.
        first = [c for c in cs if c["previous"] is None]
        again = [c for c in cs if c["previous"] is not None]
        return (len(first) <= 1 and len(cs) >= 1 and all(c["previous"] == "started" for c in again)
                and len({c["pid"] for c in cs}) == len(cs))

    assert len(calls) == storm_size * 3
    repeated = {k: [(c["pid"], c["previous"]) for c in cs] for k, cs in calls.items() if not once(cs)}
    assert not repeated, repeated
    resumed_steps = {k for k, cs in calls.items() if len(cs) > 1}
    assert (hang["execution"], "main", 1) in resumed_steps
    pids: dict[str, set[int]] = collections.defaultdict(set)
    for k, cs in calls.items():
        pids[k[0]] |= {c["pid"] for c in cs}
    taken_over = {did for did, ps in pids.items() if victim.pid in ps and len(ps) > 1}

    # ... and reported finished once: the finishing process is the one that made the last
    # step's last call; a live one sends exactly one ``succeeded`` notice (the killed one
    # may have died with its notice still queued).
    finisher = {k[0]: (others(cs) or cs)[0]["pid"] for k, cs in calls.items() if k[2] == 2}
    live_finished = {did for did, pid in finisher.items() if pid != victim.pid}

    async def notified() -> bool:
        return live_finished <= set(receiver.succeeded())

    await cluster.wait_for("a succeeded notice for every execution a live replica finished", notified)
    twice = {did: n for did, n in receiver.succeeded().items() if n > 1}
    assert not twice, twice
    print(f"\nstorm {storm_size}: {sent_at_kill} of {3 * storm_size} deliveries sent at the kill, {len(refused)} "
          f"refused by the killed replica; it had called steps of {len(in_flight)} executions, "
          f"{len(taken_over)} of them were finished by another process ({len(resumed_steps)} steps mid-flight); "
          f"{len(receiver.succeeded())} succeeded notices; the restarted replica called "
          f"{sum(e['event'] == 'call' and e['pid'] == restarted.pid for e in events)} steps")


async def test_an_alert_whose_decider_was_killed_after_its_admission_is_decided_within_a_lease(
    replicas: Replicas, redis_url: str,
) -> None:
    """The window acceptance 2's storm falls into: kill -9 after the guardrails admitted an
    alert (its target is locked by its execution id, in Redis) and before its decision was
    recorded.  The alert was acknowledged, so another replica must decide it once the
    decider's claim lapses (a lease, 2 s), and run it, not wait for the lock's TTL (600 s).

    Made deterministic by the harness's ``--hang-after-admit``: the first admission of the
    target ``hang-after-admit`` hangs right after it was admitted.
    """
    replicas.configure(lease=2.0, steps=THREE_STEPS, extra=["--hang-after-admit"])
    cluster = await replicas.cluster(3)
    db = cluster.schema
    body = payload(alert_json({"alertname": "HarnessAlert", "app": "hang-after-admit"}, fingerprint=f"{1:016x}"))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        assert await deliver(session, cluster.replicas, [body]) == 3
        await cluster.wait_for("the admission to hang before its decision is recorded", hanging(cluster))
        [hang] = [e for e in cluster.events() if e["event"] == "hanging"]
        victim = next(r for r in cluster.replicas if r.pid == hang["pid"])
        assert await db.count("SELECT count(*) FROM decisions") == 0
        await kill(victim)
        killed = killed_at(victim)
        # and the survivors go on deciding other alerts meanwhile
        assert await deliver(session, [r for r in cluster.replicas if r is not victim],
                             [delivery(i) for i in range(2, 12)]) == 2 * 10
    # 15 leases: far more than a lease, far less than the lock's TTL
    await wait_all_done(cluster, redis_url, 11, seconds=30, killed=killed)
    row = await db.conn.fetchrow("SELECT kind, exec_status FROM decisions WHERE id = $1", hang["execution"])
    assert (row["kind"], row["exec_status"]) == ("executed", "succeeded")
    assert set(applications(cluster.events()).values()) == {1}


async def test_a_replica_stopped_past_its_lease_in_a_step_that_another_then_finished_applies_nothing_when_continued(
    replicas: Replicas,
) -> None:
    """SIGSTOP (a paused VM, a long GC) where kill -9 was: the frozen replica comes back.  It was reading
    the object for its first step when it stopped; another replica took the execution over once the lease
    lapsed and finished it.  Continued, the first one must not apply that step (nor any other) again: its
    intent write, before its API write, is refused by the store (or its lease renewal stops the step)."""
    replicas.configure(lease=2.0, steps="[{action: restart}, {action: scale, to: 3}]", extra=["--read-delay", "2"])
    a = await replicas.start(0)
    cluster = Cluster([a], replicas.record_dir, replicas.schema)
    async with aiohttp.ClientSession(headers=AUTH) as session:
        assert await deliver(session, [a], [delivery(1)]) == 1

    async def reading() -> bool:
        return any(e["event"] == "call" and e["pid"] == a.pid for e in cluster.events())

    await cluster.wait_for("replica A to begin the first step", reading)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        assert not applications(cluster.events())  # stopped inside its read, before its write
        replicas.extra = []
        b = await replicas.start(1)
        await cluster.wait_for("replica B to finish the execution", lambda: cluster.all_done(1))
    finally:
        os.kill(a.pid, signal.SIGCONT)

    async def gave_up() -> bool:
        return "lost the execution lease" in replicas.log(0).read_text()

    await cluster.wait_for("replica A to find its lease lost", gave_up, seconds=30)
    events = cluster.events()
    assert set(applications(events).values()) == {1} and len(applications(events)) == 2
    assert {e["pid"] for e in events if e["event"] == "apply"} == {b.pid}
    assert await cluster.schema.count("SELECT count(*) FROM decisions WHERE exec_status = 'succeeded'") == 1
