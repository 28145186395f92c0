"""The 20k-alert storm, end to end through the real daemon (issue 17, item 7).

What it measures: how long a storm of alerts takes from the first webhook to the last
recorded decision and the last finished execution, and how much CPU the daemon spends
on it.  By default 20,000 alerts, 54 % of them (10,800; the issue's storm had 10,794)
matching a playbook with no throttle (no rate limit, cooldown or budget), dry-run, so
every matching alert is decided ``executed`` and its execution finishes ``dry_run``.

How, so that the numbers are the daemon's and nobody else's:

- the daemon is ``remediator serve`` in its own process (a fresh data dir, the embedded
  default; ``--backend postgres`` adds a run on PostgreSQL + Redis, a throw-away schema
  and key prefix), with ``kubernetes.mode: none`` and logging at ``warning``;
- the load generator is another process (this script, ``load`` subcommand): 20 alerts
  per POST, 16 POSTs in flight, as an Alertmanager with many groups would send them;
- progress is polled from ``/metrics`` (cheap) every 50 ms; once the storm is decided
  and executed, the read API (``/api/v1/decisions``, ``/api/v1/executions``, with a read
  token) gives the server's own timestamps of the last decision and the last execution,
  and confirms that nothing is left pending;
- server CPU-seconds are ``utime + stime`` of the daemon's process (all its threads:
  the SQLite store's disk thread, the asyncio default executor's) from ``/proc/<pid>/stat``, from just
  before the first POST to the end.

A run that is not done by ``--deadline`` (default 150 s, per backend) is reported as such (how much
was decided by then) rather than waited for: the bench always exits 0 within a few
minutes and asserts nothing about speed.  Results are appended to bench/RESULTS.md
(``--no-record`` to skip).

``--profile DIR`` attaches ``py-spy record`` (its path in ``$PY_SPY``, else ``py-spy`` on PATH) to the
daemon for the storm and writes collapsed stacks per backend to ``DIR/storm-<backend>.txt``.

Run: .venv/bin/python bench/storm_bench.py [--alerts 20000] [--per-post 20]
     [--backend embedded|postgres|both] [--deadline 120] [--no-record] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decision_latency import shared_state  # noqa: E402
from bench.summary import emit  # noqa: E402

WEBHOOK_TOKEN = "storm-webhook"  # a throw-away daemon's tokens
READ_TOKEN = "storm-read"
IN_FLIGHT = 16  # concurrent POSTs from the load generator
POLL = 0.05  # seconds between progress polls of /metrics
PLAYBOOK = """\
name: storm
match: {alertname: StormMatch, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
guardrails: {namespaces: [shop]}
steps: [{action: restart}]
"""


def matching(i: int) -> bool:
    """27 alerts in 50 match (54 %), spread evenly through the storm."""
    return (i * 27) % 50 < 27


def bodies(alerts: int, per_post: int) -> list[bytes]:
    """The storm's webhook bodies: every alert distinct (its own fingerprint and deployment)."""
    out = []
    for start in range(0, alerts, per_post):
        batch = [
            {
                "status": "firing",
                "startsAt": "2026-11-29T10:00:00Z",
                "fingerprint": f"{i:016x}",
                "labels": {"alertname": "StormMatch" if matching(i) else "StormOther",
                           "namespace": "shop", "deployment": f"web-{i}", "severity": "critical"},
                "annotations": {"summary": f"storm alert {i}"},
            }
            for i in range(start, min(start + per_post, alerts))
        ]
        out.append(json.dumps({"version": "4", "status": "firing", "receiver": "remediator",
                               "groupKey": f"{{}}:{{storm={start}}}", "alerts": batch}).encode())
    return out


# --- the load generator (its own process) ----------------------------------------------------


async def load(url: str, alerts: int, per_post: int) -> dict[str, Any]:
    payloads = bodies(alerts, per_post)
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}",
                                              "Content-Type": "application/json"}) as session:

        async def sender() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t = time.perf_counter()
                async with session.post(url, data=body) as r:
                    if r.status != 200:
                        raise SystemExit(f"webhook answered {r.status}: {await r.text()}")
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {"posts": len(payloads), "seconds": elapsed, "p50": q[49], "p99": q[98]}


# --- the daemon --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, all threads (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counter_total(text: str, name: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) if family.name == name
               for s in family.samples if s.name == f"{name}_total")


@dataclass
class Result:
    backend: str
    alerts: int
    matching: int
    intake_s: float
    post_p99_ms: float
    decided: int
    executed: int
    to_last_decision_s: float | None
    to_last_execution_s: float | None
    cpu_s: float
    pending_left: int
    decided_in_intake: int = 0  # matching alerts decided while the load generator was still sending

    @property
    def done(self) -> bool:
        return self.decided >= self.matching and self.executed >= self.matching and not self.pending_left

    def row(self) -> str:
        """One table row.  An unfinished run shows how far it got by the deadline, and its CPU per
        alert over the alerts it got through (estimated from the matching ones decided: matching
        alerts are spread evenly through the storm, and the others are only counted, not recorded)."""

        def s(v: float | None) -> str:
            return f"{v:.1f}" if v is not None else "—"

        if self.done:
            status, through = "done", self.alerts
            last_decision, last_execution = s(self.to_last_decision_s), s(self.to_last_execution_s)
        else:
            status = f"not done by the deadline: {self.decided} decided, {self.executed} executed"
            through = max(1, round(self.alerts * self.decided / self.matching))
            last_decision = last_execution = f"> {s(self.to_last_execution_s)}"
        cpu_ms = f"{self.cpu_s * 1000 / through:.2f}" + ("" if self.done else " (est.)")
        return (f"| {self.backend} | {self.alerts} | {self.matching} | {self.intake_s:.1f} | {self.post_p99_ms:.0f} |"
                f" {self.decided_in_intake} | {last_decision} | {last_execution} | {self.cpu_s:.1f} | {cpu_ms}"
                f" | {status} |")


HEADER = ("| backend | alerts | matching | intake s | POST p99 ms | decided during intake | to last decision s |"
          " to last execution s | server CPU s | CPU ms per alert | |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def seconds_since(start: float, stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - start


async def last_recorded(session: aiohttp.ClientSession, base: str) -> tuple[str | None, str | None, int]:
    """The newest decision's time, the latest end among the newest executions, and how many are unfinished."""
    async with session.get(f"{base}/api/v1/decisions", params={"limit": "1"}) as r:
        decisions = (await r.json())["decisions"]
    async with session.get(f"{base}/api/v1/executions", params={"limit": "1000"}) as r:
        executions = (await r.json())["executions"]
    pending = 0
    for status in ("pending", "running"):
        async with session.get(f"{base}/api/v1/executions", params={"status": status, "limit": "1000"}) as r:
            pending += len((await r.json())["executions"])
    ends = [e["finished_at"] for e in executions if e.get("finished_at")]
    return (decisions[0]["at"] if decisions else None), (max(ends) if ends else None), pending


@contextlib.contextmanager
def daemon(cmd: list[str], env: dict[str, str], workdir: str) -> Iterator[subprocess.Popen[bytes]]:
    """``remediator serve`` in its own process, its output in a file (shown if the run fails), stopped at the end."""
    log_path = Path(workdir) / "daemon.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            yield server
        except BaseException:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.asynccontextmanager
async def served(backend: str, prefix: str) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``remediator serve --dry-run`` on the storm playbook and ``backend``'s state, as its own process
    (shared by the ingest bench): its base URL and process, stopped on exit."""
    async with shared_state(backend) as state:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            (Path(tmp) / "playbooks").mkdir()
            (Path(tmp) / "playbooks" / "storm.yaml").write_text(PLAYBOOK)
            port = free_port()
            cmd = [sys.executable, "-m", "remediator", "serve", "--listen", f"127.0.0.1:{port}", "--dry-run",
                   "--data-dir", f"{tmp}/data", "--playbooks", f"{tmp}/playbooks"]
            if state:
                cmd += ["--database-url", state["database_url"], "--redis-url", state["redis_url"]]
            env = {**os.environ, "REMEDIATOR_WEBHOOK_TOKENS": WEBHOOK_TOKEN, "REMEDIATOR_API_READ_TOKENS": READ_TOKEN,
                   "REMEDIATOR_KUBERNETES_MODE": "none", "REMEDIATOR_LOG_LEVEL": "warning"}
            with daemon(cmd, env, tmp) as server:
                yield f"http://127.0.0.1:{port}", server


async def storm(backend: str, alerts: int, per_post: int, deadline: float, profile: str | None = None) -> Result:
    expected = sum(1 for i in range(alerts) if matching(i))
    async with served(backend, "storm-") as (base, server):
        return await _measure(server, base, backend, alerts, per_post, expected, deadline, profile)


@contextlib.contextmanager
def profiled(pid: int, out: str | None) -> Iterator[None]:
    """``py-spy record`` of the daemon while the block runs (nothing when ``out`` is None)."""
    if out is None:
        yield
        return
    extra = os.environ.get("PY_SPY_ARGS", "").split()  # --native, --idle, ...
    spy = subprocess.Popen([os.environ.get("PY_SPY", "py-spy"), "record", "--pid", str(pid), "--format", "raw",
                            "--rate", "200", "--threads", *extra, "--output", out, "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        spy.wait(timeout=60)


async def _measure(server: subprocess.Popen[bytes], base: str, backend: str, alerts: int, per_post: int,
                   expected: int, deadline: float, profile: str | None = None) -> Result:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {READ_TOKEN}"}) as session:
        ready_by = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the daemon exited ({server.returncode}) before it was ready")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        break
            if time.monotonic() > ready_by:
                raise SystemExit("the daemon was not ready within 60 s")
            await asyncio.sleep(POLL)
        out_path = str(Path(profile) / f"storm-{backend}.txt") if profile else None
        with profiled(server.pid, out_path):
            return await _storm(session, server, base, backend, alerts, per_post, expected, deadline)


async def _storm(session: aiohttp.ClientSession, server: subprocess.Popen[bytes], base: str, backend: str,
                 alerts: int, per_post: int, expected: int, deadline: float) -> Result:
    cpu_before = cpu_seconds(server.pid)
    start = time.time()
    generator = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "load", f"{base}/webhooks/alertmanager", str(alerts), str(per_post),
        stdout=asyncio.subprocess.PIPE,
    )
    decided = executed = during = 0
    stop_at = time.monotonic() + deadline
    while time.monotonic() < stop_at:
        async with session.get(f"{base}/metrics") as r:
            text = await r.text()
        decided = int(counter_total(text, "remediator_decisions"))
        executed = int(counter_total(text, "remediator_executions"))
        if generator.returncode is None:
            during = decided  # the last count seen while alerts were still being sent
        if decided >= expected and executed >= expected and generator.returncode is not None:
            break
        if server.poll() is not None:
            raise SystemExit(f"the daemon exited ({server.returncode}) during the storm")
        await asyncio.sleep(POLL)
    cpu = cpu_seconds(server.pid) - cpu_before
    out, _ = await generator.communicate()
    if generator.returncode != 0:
        raise SystemExit(f"the load generator failed ({generator.returncode})")
    intake = json.loads(out)
    last_decision, last_execution, pending = await last_recorded(session, base)
    return Result(backend, alerts, expected, intake["seconds"], intake["p99"] * 1000, decided, executed,
                  seconds_since(start, last_decision), seconds_since(start, last_execution), cpu, pending, during)


def record(results: list[Result], args: argparse.Namespace) -> None:
    load_avg = os.getloadavg()[0]
    text = (
        f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: the storm, end to end (bench/storm_bench.py)\n\n"
        f"{args.alerts} alerts, {args.per_post} per POST, {IN_FLIGHT} POSTs in flight from a load generator in"
        f" its own process; one playbook with no throttle, dry-run; `remediator serve` in its own process."
        f" Times are from the first POST to the server's own timestamp of the last recorded decision and"
        f" the last finished execution; CPU is the daemon process's utime + stime over the run."
        f" Load average at the end: {load_avg:.1f} (2 cores shared with other work).\n\n"
        f"```\n$ .venv/bin/python bench/storm_bench.py {' '.join(sys.argv[1:])}\n{HEADER}\n"
        + "\n".join(r.row() for r in results) + "\n```\n"
    )
    with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write(text)


async def main(args: argparse.Namespace) -> None:
    backends = ["embedded", "postgres"] if args.backend == "both" else [args.backend]
    results = [await storm(b, args.alerts, args.per_post, args.deadline, args.profile) for b in backends]
    print(HEADER)
    for r in results:
        print(r.row())
        target = {"embedded": "< 5 s", "postgres": "< 8 s"}.get(r.backend, "") if r.alerts == 20_000 else ""
        if r.done and r.to_last_execution_s is not None:
            emit("storm", f"{r.backend}, {r.alerts:,} alerts: to the last execution", round(r.to_last_execution_s, 1),
                 "s", target)
            emit("storm", f"{r.backend}: CPU per alert", round(r.cpu_s * 1000 / r.alerts, 2), "ms", "≤ 0.3 ms")
        else:
            emit("storm", f"{r.backend}, {r.alerts:,} alerts", "not done by the deadline", "", target)
    if not args.no_record:
        record(results, args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        _, _, url, n, per = sys.argv
        print(json.dumps(asyncio.run(load(url, int(n), int(per)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--per-post", type=int, default=20)
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="embedded")
    parser.add_argument("--deadline", type=float, default=150.0,
                        help="seconds to wait for the storm to be decided and executed before reporting it unfinished")
    parser.add_argument("--no-record", action="store_true", help="do not append the results to bench/RESULTS.md")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy the daemon: collapsed stacks in DIR/storm-<backend>.txt")
    asyncio.run(main(parser.parse_args()))
