"""Intake: ``remediator serve`` against a bare ceiling server, same payloads, same load generator.

Each server runs in its own process (the daemon as ``remediator serve``, on the embedded
default and on PostgreSQL + Redis; the ceiling as ``bench/ceiling_server.py``, aiohttp +
asyncpg), and so does the load generator (``bench/storm_bench.py load``: 16 POSTs in flight,
every alert distinct).  For 1 and 20 alerts per POST it reports alerts/s, POST latency, the
server's CPU-seconds per 1,000 alerts (utime + stime from ``/proc/<pid>/stat``, all threads,
over the load) and the ratio to the ceiling measured in the same run.  The daemon decides
what it takes in meanwhile (one playbook, 54 % of the alerts match, dry-run), as it would:
its CPU includes that work, the ceiling has none.

Run: .venv/bin/python bench/ingest_bench.py [--alerts N] [--backend embedded|postgres|both]
     (QUICK=1: 2,000 alerts)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decision_latency import shared_state  # noqa: E402
from bench.storm_bench import cpu_seconds, daemon, free_port, served  # noqa: E402
from bench.summary import emit, quick  # noqa: E402

PER_POST = (1, 20)


@dataclass
class Row:
    server: str
    per_post: int
    alerts: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.alerts / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s * 1000 / self.alerts


async def _ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        ready_by = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{url}: the server exited ({proc.returncode}) before it was ready")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > ready_by:
                raise SystemExit(f"{url}: not ready within 60 s")
            await asyncio.sleep(0.05)


async def _load(server: str, base: str, proc: subprocess.Popen[bytes], alerts: int, per_post: int) -> Row:
    """The load generator in its own process, against one ready server; the server's CPU over it."""
    before = cpu_seconds(proc.pid)
    generator = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "storm_bench.py"), "load", f"{base}/webhooks/alertmanager",
        str(alerts), str(per_post), stdout=asyncio.subprocess.PIPE)
    out, _ = await generator.communicate()
    cpu = cpu_seconds(proc.pid) - before
    if generator.returncode != 0:
        raise SystemExit(f"the load generator failed against {server} ({generator.returncode})")
    r = json.loads(out)
    return Row(server, per_post, alerts, r["seconds"], r["p50"] * 1000, r["p99"] * 1000, cpu)


@contextlib.asynccontextmanager
async def remediator(backend: str) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    async with served(backend, "ingest-") as (base, proc):
        await _ready(f"{base}/healthz", proc)
        yield base, proc


@contextlib.asynccontextmanager
async def ceiling() -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    import asyncpg

    async with shared_state("postgres") as state:  # its own throw-away schema
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
            cmd = [sys.executable, str(ROOT / "bench" / "ceiling_server.py"), "--port", str(port),
                   "--dsn", state["database_url"]]
            with daemon(cmd, dict(os.environ), tmp) as proc:
                base = f"http://127.0.0.1:{port}"
                await _ready(f"{base}/healthz", proc)
                yield base, proc
        conn = await asyncpg.connect(state["database_url"])  # the ceiling really wrote every alert
        try:
            stored = await conn.fetchval("SELECT count(*) FROM ceiling_alerts")
        finally:
            await conn.close()
        print(f"  (ceiling: {stored:,} rows stored)")


async def measure(server: str, alerts: int) -> list[Row]:
    """Both batch sizes against one fresh server each: a run never sees another's rows."""
    rows = []
    for per_post in PER_POST:
        opened = ceiling() if server == "ceiling" else remediator(server.removeprefix("remediator/"))
        async with opened as (base, proc):
            rows.append(await _load(server, base, proc, alerts, per_post))
    return rows


HEADER = ("| server | alerts per POST | alerts | alerts/s | POST p50 ms | POST p99 ms | server CPU s per 1,000 alerts"
          " | alerts/s vs ceiling |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def report(rows: list[Row]) -> str:
    ceilings = {r.per_post: r.rate for r in rows if r.server == "ceiling"}
    lines = [HEADER]
    for r in rows:
        ratio = r.rate / ceilings[r.per_post] if r.per_post in ceilings else None
        lines.append(f"| {r.server} | {r.per_post} | {r.alerts:,} | {r.rate:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |"
                     f" {r.cpu_per_1000:.2f} | {f'{ratio:.0%}' if ratio is not None else '—'} |")
        emit("ingest", f"{r.server}, {r.per_post}/POST", round(r.rate), "alerts/s")
        emit("ingest", f"{r.server}, {r.per_post}/POST: CPU", round(r.cpu_per_1000, 3), "s per 1,000 alerts")
        if ratio is not None and r.server != "ceiling":
            emit("ingest", f"{r.server}, {r.per_post}/POST vs ceiling", f"{ratio:.0%}", "",
                 "≥ 50 % at 20/POST" if r.per_post == 20 else "")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    backends = ["embedded", "postgres"] if args.backend == "both" else [args.backend]
    rows = await measure("ceiling", args.alerts)
    for backend in backends:
        rows += await measure(f"remediator/{backend}", args.alerts)
    print(report(rows))
    print(f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=2_000 if quick() else 20_000)
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="both")
    asyncio.run(main(parser.parse_args()))
