"""Decision latency while executions are in flight (issue 12).

Deciding and executing are apart: the decision loop decides recorded alerts, the execution
queue runs admitted executions concurrently.  So the time from an alert being recorded to
its decision being recorded should not depend on how many executions are running.

One process, the real runtime (``open_runtime``, worker started) on the embedded store in a
temp data dir, live mode.  A test executor blocks every ``wait_healthy`` step until released.
For each N in 0, 10, 100: N "Hold" alerts (one per deployment) start N executions that stay
in flight (``rt.worker.queue.running == N``); then M "Probe" alerts, one at a time and each for
its own deployment, are recorded (``store.record_alerts`` + ``rt.wake()``, as the webhook does)
and each is timed from ``record_alerts`` returning to ``pipeline.decide`` returning its
recorded decision (``decide`` is wrapped for the timestamps).  The probes' own executions (one
quick ``restart`` step) run meanwhile, as they would in the daemon.  The N blocked executions
are released after each round.  Prints results only; no asserts on speed.

Each row gets a fresh daemon (empty data dir) and the same warm-up, so rows differ in N only:
the embedded guardrail state keeps a lock record per target for a day and writes the whole
state (off the loop, several changes per write), so history could still slow deciding (the
"guardrail locks kept" column; ``--shared-runtime`` runs all rows in one daemon to show it).

``--backend postgres`` runs the same on PostgreSQL (a throw-away schema in
``$TEST_DATABASE_URL``, default the local test database) and Redis (a throw-away key prefix
on ``$TEST_REDIS_URL``, default 127.0.0.1:6379), as replicas would.

Run: .venv/bin/python bench/decision_latency.py [--probes M] [--in-flight 0,10,50,100]
     [--warm-up K] [--shared-runtime] [--backend embedded|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.summary import emit, quick  # noqa: E402
from remediator.clock import SystemClock  # noqa: E402
from remediator.core.alerts import Alert  # noqa: E402
from remediator.core.decisions import PlannedStep  # noqa: E402
from remediator.logs import configure  # noqa: E402
from remediator.pipeline import Outcome  # noqa: E402
from remediator.ports import ReceivedAlert, StepContext, StepResult  # noqa: E402
from remediator.runtime import Runtime, open_runtime  # noqa: E402
from remediator.settings import load_settings  # noqa: E402

NS = "bench"
PLAYBOOKS = {
    # (a) stays in flight: its wait_healthy step blocks in the executor until released
    "hold": f"""
name: hold
match: {{alertname: Hold, matchers: ['deployment=~".+"']}}
target: {{kind: Deployment, namespace: {NS}, name: "{{{{ labels.deployment }}}}"}}
steps: [{{action: wait_healthy, timeout: 5m}}]
""",
    # (b) the probes: decided, then one quick step
    "probe": f"""
name: probe
match: {{alertname: Probe, matchers: ['deployment=~".+"']}}
target: {{kind: Deployment, namespace: {NS}, name: "{{{{ labels.deployment }}}}"}}
steps: [{{action: restart}}]
""",
}


class BlockingExecutor:
    """``wait_healthy`` waits until ``release`` is set; every other step succeeds at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.blocked = 0  # executions waiting in wait_healthy now

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if step.action == "wait_healthy":
            self.blocked += 1
            try:
                await self.release.wait()
            finally:
                self.blocked -= 1
            return StepResult("ok", "released")
        return StepResult("ok", f"{step.action} applied")


def alert(alertname: str, deployment: str) -> ReceivedAlert:
    raw = {"status": "firing", "startsAt": "2026-11-29T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
           "labels": {"alertname": alertname, "namespace": NS, "deployment": deployment}}
    return ReceivedAlert(Alert.from_json(raw), SystemClock().now(), "remediator", "bench")


async def until(predicate: Any, what: str) -> None:
    try:
        async with asyncio.timeout(30):
            while not predicate():  # noqa: ASYNC110 - polling the daemon's own loops from outside
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise SystemExit(f"gave up after 30 s waiting for {what}") from None


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


class Bench:
    """One daemon (``open_runtime`` with the worker started) in its own data dir."""

    def __init__(self, rt: Runtime, executor: BlockingExecutor) -> None:
        self.rt = rt
        self.executor = executor
        self.decided: dict[str, tuple[float, str]] = {}  # alert dedup key -> (perf_counter, decision kind)
        self._waiters: dict[str, asyncio.Future[None]] = {}
        decide = rt.pipeline.decide

        async def timed_decide(received: ReceivedAlert, **kwargs: Any) -> Outcome:  # retried=, facts=, ...
            outcome = await decide(received, **kwargs)
            key = received.alert.dedup_key
            if outcome.decisions:
                self.decided[key] = (time.perf_counter(), outcome.decisions[0].kind.value)
                if (fut := self._waiters.get(key)) and not fut.done():
                    fut.set_result(None)
            return outcome

        rt.pipeline.decide = timed_decide  # type: ignore[method-assign]

    async def probe(self, name: str) -> tuple[float, str]:
        """Record one probe alert, wake the worker, wait for its decision: (seconds, decision kind)."""
        a = alert("Probe", name)
        key = a.alert.dedup_key
        self._waiters[key] = asyncio.get_running_loop().create_future()
        await self.rt.store.record_alerts([a])
        t0 = time.perf_counter()
        self.rt.wake()
        try:
            await asyncio.wait_for(self._waiters[key], 30)
        finally:
            del self._waiters[key]
        at, kind = self.decided[key]
        return at - t0, kind

    async def round(self, tag: str, n: int, probes: int) -> tuple[Any, ...]:
        ex = self.executor
        ex.release = asyncio.Event()
        if n:
            await self.rt.store.record_alerts([alert("Hold", f"hold-{tag}-{i}") for i in range(n)])
            self.rt.wake()
            await until(lambda: self.rt.worker.queue.running == n and ex.blocked == n, f"{n} executions in flight")
        kinds: Counter[str] = Counter()
        latencies = []
        held = n
        start = time.perf_counter()
        for i in range(probes):
            latency, kind = await self.probe(f"probe-{tag}-{i}")
            latencies.append(latency)
            kinds[kind] += 1
            held = min(held, ex.blocked)
        elapsed = time.perf_counter() - start
        state = getattr(self.rt.guardrails, "state", None)  # the embedded adapter's; Redis keeps its own
        locks = str(len(state.locks)) if state is not None else "-"
        ex.release.set()
        await until(lambda: ex.blocked == 0 and self.rt.worker.queue.running == 0, "the round to drain")
        return (n, held, probes, pct(latencies, 50), pct(latencies, 99), max(latencies), elapsed, locks, dict(kinds))


@contextlib.asynccontextmanager
async def shared_state(backend: str) -> AsyncIterator[dict[str, str]]:
    """Settings for the store and guardrail state: none (embedded), or a fresh PostgreSQL schema
    and Redis key prefix, dropped afterwards."""
    if backend == "embedded":
        yield {}
        return
    import asyncpg
    from redis.asyncio import Redis

    base = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield {"database_url": f"{base}{'&' if '?' in base else '?'}search_path={name}",
               "redis_url": f"{redis_url}?prefix={name}:"}
    finally:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
        await conn.close()
        client = Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=f"{name}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@contextlib.asynccontextmanager
async def daemon(max_executions: int, warm_up: int, backend: str) -> AsyncIterator[Bench]:
    async with shared_state(backend) as state, _daemon(max_executions, warm_up, state) as bench:
        yield bench


@contextlib.asynccontextmanager
async def _daemon(max_executions: int, warm_up: int, state: dict[str, str]) -> AsyncIterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="decision-latency-") as tmp:
        books = Path(tmp) / "playbooks"
        books.mkdir()
        for name, text in PLAYBOOKS.items():
            (books / f"{name}.yaml").write_text(text)
        settings = load_settings(None, env={}, overrides={
            "data_dir": str(Path(tmp) / "data"), "playbooks": str(books), "dry_run": False,
            "webhook": {"tokens": ["b"]}, "log": {"level": "warning"},
            "worker": {"max_executions": max_executions, "shutdown_timeout": "5s"},
            **state,
        })
        executor = BlockingExecutor()
        try:
            async with open_runtime(settings, clock=SystemClock(), executors=(executor, executor),
                                    start_worker=True) as rt:
                bench = Bench(rt, executor)
                for i in range(warm_up):
                    await bench.probe(f"warm-{i}")
                yield bench
        finally:
            executor.release.set()  # nothing stays blocked, whatever happened


async def main(probes: int, rounds: list[int], shared: bool, warm_up: int, backend: str) -> None:
    configure("json", "warning")
    max_executions = max(rounds) + 64  # worker.max_executions >= N + 10: the probes' executions start too
    rows = []
    if shared:
        async with daemon(max_executions, warm_up, backend) as bench:
            for r, n in enumerate(rounds):
                rows.append(await bench.round(str(r), n, probes))
    else:
        for r, n in enumerate(rounds):
            async with daemon(max_executions, warm_up, backend) as bench:
                rows.append(await bench.round(str(r), n, probes))
    where = "one daemon for all rows, in order" if shared else "a fresh daemon (empty data dir) per row"
    stores = "embedded store" if backend == "embedded" else "PostgreSQL + Redis"
    print(f"decision latency (record_alerts returned -> decision recorded), {stores}, live mode, "
          f"{where}, {warm_up} warm-up probes, then {probes} probes per row sent one at a time")
    print("| in flight N | probes | decision p50 ms | p99 ms | max ms | probes/s | guardrail locks kept | decisions |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, held, m, p50, p99, mx, elapsed, locks, kinds in rows:
        flight = f"{n}" if held == n else f"{n} (min {held})"
        emit("decision latency", f"{backend}, {n} in flight", f"p50 {p50 * 1000:.1f}, p99 {p99 * 1000:.1f}", "ms")
        print(f"| {flight} | {m} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {mx * 1000:.1f} | {m / elapsed:.0f} | "
              f"{locks} | {', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=50 if quick() else 200)
    parser.add_argument("--in-flight", default="0,10,50,100", help="comma-separated N")
    parser.add_argument("--warm-up", type=int, default=20,
                        help="probes decided (and executed) before each daemon's first row, not counted")
    parser.add_argument("--shared-runtime", action="store_true",
                        help="run every row in one daemon, in order (history accumulates across rows)")
    parser.add_argument("--backend", choices=("embedded", "postgres"), default="embedded",
                        help="embedded: SQLite + file guardrails; postgres: PostgreSQL + Redis")
    args = parser.parse_args()
    asyncio.run(main(args.probes, [int(n) for n in args.in_flight.split(",")], args.shared_runtime, args.warm_up,
                     args.backend))
