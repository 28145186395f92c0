"""Decisions under saturated ingest, sustained (issue 17, acceptance point 3).

The point: with 20 alerts per POST arriving at 1,000 alerts/s for as long as it lasts,
decisions keep pace: decision p99 < 1 s, and the backlog never grows without bound.  The
storm bench (bench/storm_bench.py) sends as fast as the daemon answers and times the whole;
this one paces the load, as a fleet of Alertmanager groups would, and watches whether the
decision loop keeps up with it.

How:

- the daemon is ``remediator serve --dry-run`` in its own process, started exactly as the
  storm bench starts it (:func:`bench.storm_bench.served`: the storm playbook, no throttle,
  ``kubernetes.mode: none``; ``--backend postgres`` on PostgreSQL + Redis, ``both`` by default),
  and measured once ``/readyz`` answers (:func:`bench.ingest_bench.remediator`);
- the load generator is this script's ``load`` subcommand, in its own process: open loop,
  POST k due at ``start + k / (rate / per_post)`` and sent then whether or not earlier
  answers are back; every alert distinct (its own fingerprint), 54 % matching the playbook
  (:func:`bench.storm_bench.matching`).  aiohttp's client is fine here: at 50 POSTs/s its
  ~0.25 ms per POST is about 1 % of a core.  A 503 (the daemon's intake bound,
  ``worker.max_backlog``, or a store slower than ``http.store_timeout``) is counted and the POST
  sent again after its ``Retry-After`` (1 s without one), as Alertmanager would;
- decision latency of a matching alert is the decision's own ``at`` (the server's clock, same
  machine; taken when it is decided, a few ms before its batch commits) minus the wall-clock
  time the POST carrying it was first sent (a 503 and its retry count against the daemon).
  Every decision is read from the read API after the run (``/api/v1/decisions`` pages) and
  joined by fingerprint.  A matching alert still undecided when the run ends counts as at
  least "read time minus sent": a quantile that such a bound reaches is shown as ``> x``;
- the backlog is sampled every 0.5 s: matching alerts recorded by then (the generator's 200
  answers, by their time) minus ``remediator_decisions_total`` from ``/metrics``.  Only
  matching alerts are counted on both sides: a ``no_match`` is not a counted decision, so
  ``remediator_alerts_received_total`` minus decisions would grow by the 46 % that match
  nothing whatever the loop does.  The undecided queue in the store holds those too, in
  arrival order, about 1 / 0.54 times this figure.  Reported: the mean over the first 5 s of
  load, over the last 5 s, and the max; "grows without bound" shows as a last 5 s far above
  the first (and a growth rate near the arrival rate minus the decision rate).  Printed under
  the table (and kept in RESULTS.md): the largest sample in each second, to see when it builds;
- after the load, polling goes on until every matching alert is decided or ``--drain``
  seconds have passed (the bench exits within a few minutes whatever the daemon does);
- server CPU-seconds: ``utime + stime`` of the daemon (:func:`bench.storm_bench.cpu_seconds`)
  over the load, and to the end of the run (the drain included: the work the load asked for);
  and how long its threads waited for a CPU over the load (run-queue time, the second field of
  ``/proc/<pid>/task/*/schedstat``): on a machine shared with other work, a run that falls
  behind because it was not given the CPU shows there, not as more CPU spent.

Nothing is asserted about speed.  A table row per backend; a dated section is appended to
bench/RESULTS.md unless ``--no-record``.  ``--profile DIR`` attaches py-spy to the daemon for
the run (as the storm bench does: ``$PY_SPY``), collapsed stacks in ``DIR/sustained-<backend>.txt``.

Run: .venv/bin/python bench/sustained_bench.py [--rate 1000] [--per-post 20] [--seconds 30]
     [--backend embedded|postgres|both] [--drain 60] [--no-record] [--profile DIR]   (QUICK=1: 10 s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest_bench import remediator  # noqa: E402
from bench.recorded import add_record_option, append_section  # noqa: E402
from bench.storm_bench import (  # noqa: E402
    READ_TOKEN,
    WEBHOOK_TOKEN,
    bodies,
    counter_total,
    cpu_seconds,
    matching,
    profiled,
)
from bench.summary import emit, quick  # noqa: E402

SAMPLE = 0.5  # seconds between backlog samples (/metrics)
WINDOW = 5.0  # the first and last seconds of load whose backlog is compared
RETRY_AFTER_DEFAULT = 1.0  # a 503 without Retry-After (store unavailable): Alertmanager backs off a little


# --- the load generator (its own process) ----------------------------------------------------


async def load(url: str, alerts: int, per_post: int, rate: float, give_up: float) -> dict[str, Any]:
    """POST k due at start + k * per_post / rate, each sent when due (open loop).  For each POST:
    when it was first sent, when the attempt that was accepted was sent and answered (wall clock),
    and how many attempts it took.  A POST still refused ``give_up`` seconds after the start is
    left (its answer times None): the run ends even if the daemon refuses for good."""
    payloads = bodies(alerts, per_post)
    interval = per_post / rate
    posts: list[list[float | None]] = [[] for _ in payloads]
    late: list[float] = []
    refused: list[str] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    first_start = time.time() + 0.05  # when the first POST is due (wall clock)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def send(k: int, body: bytes) -> None:
            first = time.time()
            attempts = 0
            while True:
                attempts += 1
                sent = time.time()
                async with session.post(url, data=body) as r:
                    answer = await r.read()
                    retry_after = r.headers.get("Retry-After")
                answered = time.time()
                if r.status == 200:
                    posts[k] = [first, sent, answered, attempts]
                    return
                if r.status != 503:
                    errors.append(f"{r.status}: {answer[:200]!r}")
                    return
                refused.append(answer[:200].decode(errors="replace"))
                if time.time() > first_start + give_up:
                    posts[k] = [first, None, None, attempts]
                    return
                await asyncio.sleep(float(retry_after) if retry_after else RETRY_AFTER_DEFAULT)

        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        cpu_before = time.process_time()
        tasks = []
        for k, body in enumerate(payloads):
            due = start + k * interval
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            late.append(loop.time() - due)
            tasks.append(asyncio.create_task(send(k, body)))
        await asyncio.gather(*tasks)
    late.sort()
    return {"posts": posts, "refused": len(refused), "first_refusal": refused[0] if refused else None,
            "errors": errors, "late_p99": late[math.ceil(0.99 * len(late)) - 1],
            "cpu_s": time.process_time() - cpu_before}


# --- the measurement ----------------------------------------------------------------------------


class Usage(NamedTuple):
    cpu: float  # seconds on a CPU, all threads
    waited: float  # seconds runnable but waiting for a CPU, the threads alive now


def usage(pid: int) -> Usage:
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            waited += int((task / "schedstat").read_text().split()[1])
    return Usage(cpu_seconds(pid), waited / 1e9)


@dataclass
class Sample:
    at: float  # wall clock
    decided: int  # remediator_decisions_total


def quantile(values: list[tuple[float, bool]], p: float) -> str:
    """Nearest-rank quantile of (seconds, is a lower bound) pairs, in ms; "> x" when the
    undecided alerts' bounds could still move it (one of them ranks at or below it)."""
    ranked = sorted(values)
    i = min(len(ranked) - 1, max(0, math.ceil(p * len(ranked)) - 1))
    exact = all(not bound for _, bound in ranked[: i + 1])
    return f"{'' if exact else '> '}{ranked[i][0] * 1000:,.0f}"


def mean(xs: list[int]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


@dataclass
class Result:
    backend: str
    rate: float
    seconds: float
    alerts: int
    matching: int
    sent_for_s: float  # first send of the first POST to that of the last
    refused: int  # 503 answers (each POST retried after Retry-After)
    given_up: int  # POSTs still refused when the generator stopped retrying
    first_refusal: str | None  # the first 503's reason: the backlog bound, or the store not answering in time
    decided: int  # matching alerts with a decision read back
    latency: list[tuple[float, bool]]
    backlog: list[tuple[float, int]]  # (seconds since the first POST was sent, matching alerts undecided)
    decisions_per_s: float  # during the load
    drained_after: float | None  # seconds after the last POST was due, None: not by the deadline
    drain_deadline: float
    cpu_s: tuple[float, float]  # over the load; to the end of the run (drained or not)
    waited_s: float  # for a CPU, over the load
    generator_late_p99_ms: float

    @property
    def backlog_first(self) -> float:
        return mean([b for t, b in self.backlog if t <= WINDOW])

    @property
    def backlog_last(self) -> float:
        return mean([b for t, b in self.backlog if self.sent_for_s - WINDOW <= t <= self.sent_for_s])

    @property
    def backlog_max(self) -> int:
        return max(b for _, b in self.backlog)

    def trace(self) -> str:
        """The backlog's largest sample in each second from the first POST, the load's end marked
        with "|": where it builds up and when it goes down."""
        by_second: dict[int, int] = {}
        for t, b in self.backlog:
            by_second[int(t)] = max(b, by_second.get(int(t), b))
        return " ".join(f"{'| ' if second == math.ceil(self.sent_for_s) else ''}{b}"
                        for second, b in sorted(by_second.items()))

    def trace_line(self) -> str:
        refused = f"; the first 503: {self.first_refusal}" if self.first_refusal else ""
        return f"{self.backend}: backlog, the most in each second (load ends at |): {self.trace()}{refused}"

    @property
    def growth_per_s(self) -> float:
        return (self.backlog_last - self.backlog_first) / max(self.seconds - WINDOW, 1e-9)

    def row(self) -> str:
        done = self.drained_after is not None
        refused = f"{self.refused}" + (f" ({self.given_up} POSTs given up)" if self.given_up else "")
        drained = (f"{self.drained_after:.1f}" if self.drained_after is not None
                   else f"not by {self.drain_deadline:.0f} s ({self.matching - self.decided} left)")
        return (f"| {self.backend} | {self.rate:,.0f} | {self.seconds:.0f} | {self.alerts:,} | {self.matching:,} |"
                f" {self.alerts / self.sent_for_s:,.0f} | {refused} |"
                f" {self.decided:,} |"
                f" {quantile(self.latency, 0.5)} | {quantile(self.latency, 0.99)} | {quantile(self.latency, 1.0)} |"
                f" {self.backlog_first:,.0f} | {self.backlog_last:,.0f} | {self.backlog_max:,} |"
                f" {self.growth_per_s:+,.0f} | {self.decisions_per_s:,.0f} | {drained} | {self.cpu_s[0]:.1f} |"
                f" {self.cpu_s[1]:.1f} | {self.cpu_s[1] * 1000 / self.alerts:.2f}{'' if done else ' (not drained)'} |"
                f" {self.waited_s:.1f} |"
                f" {self.generator_late_p99_ms:.1f} |")


HEADER = ("| backend | paced alerts/s | s | alerts | matching | sent alerts/s | 503s | decided |"
          " decision p50 ms | p99 ms | max ms | backlog first 5 s | last 5 s | max | backlog growth /s |"
          " decisions/s during load | drained s after load | server CPU s, load | to the end |"
          " CPU ms per alert | waited for a CPU s, load | generator late p99 ms |"
          "\n|---|" + "---:|" * 21)


async def decisions_at(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Every recorded decision's time by fingerprint, newest first through the pages (the first,
    should an alert have several: none does here, one playbook and distinct alerts)."""
    out: dict[str, float] = {}
    params = {"limit": "1000"}
    while True:
        async with session.get(f"{base}/api/v1/decisions", params=params) as r:
            if r.status != 200:
                raise SystemExit(f"/api/v1/decisions answered {r.status}: {await r.text()}")
            page = await r.json()
        for d in page["decisions"]:
            out.setdefault(d["fingerprint"], datetime.fromisoformat(d["at"].replace("Z", "+00:00")).timestamp())
        if not page["next"]:
            return out
        params = {"limit": "1000", "before": page["next"]}


async def watch(
    session: aiohttp.ClientSession, base: str, server: subprocess.Popen[bytes], load_done: asyncio.Future[Any],
    expected: int, drain: float,
) -> tuple[list[Sample], tuple[Usage, Usage]]:
    """Decisions counted every :data:`SAMPLE` s, on a fixed schedule, until the load is done and then
    every matching alert decided or ``drain`` s more have passed; the daemon's :func:`usage` (running
    totals) when the load was done and at the end."""
    samples: list[Sample] = []
    at_load_end: Usage | None = None
    stop_at = math.inf
    next_at = time.monotonic()
    while True:
        async with session.get(f"{base}/metrics") as r:
            text = await r.text()
        samples.append(Sample(time.time(), int(counter_total(text, "remediator_decisions"))))
        if server.poll() is not None:
            raise SystemExit(f"the daemon exited ({server.returncode}) under load")
        if at_load_end is None and load_done.done():
            at_load_end = usage(server.pid)
            stop_at = time.monotonic() + drain
        if at_load_end is not None and (samples[-1].decided >= expected or time.monotonic() >= stop_at):
            return samples, (at_load_end, usage(server.pid))
        next_at += SAMPLE
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def sustained(backend: str, rate: float, per_post: int, seconds: float, drain: float,
                    profile: str | None) -> Result:
    alerts = max(per_post, round(rate * seconds / per_post) * per_post)
    expected = sum(1 for i in range(alerts) if matching(i))
    async with remediator(backend) as (base, server), \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {READ_TOKEN}"}) as session:
        out_path = str(Path(profile) / f"sustained-{backend}.txt") if profile else None
        with profiled(server.pid, out_path):
            before = usage(server.pid)
            generator = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "load", f"{base}/webhooks/alertmanager", str(alerts), str(per_post),
                str(rate), str(seconds + drain), stdout=asyncio.subprocess.PIPE)
            reading = asyncio.create_task(generator.communicate())
            samples, (load_end, end) = await watch(session, base, server, reading, expected, drain)
        out, _ = await reading
        if generator.returncode != 0:
            raise SystemExit(f"the load generator failed ({generator.returncode})")
        gen = json.loads(out)
        if gen["errors"]:
            raise SystemExit(f"{len(gen['errors'])} POSTs failed, the first: {gen['errors'][0]}")
        decided_at = await decisions_at(session, base)
        read_at = time.time()
    return _result(backend, rate, seconds, per_post, alerts, expected, gen, samples, decided_at, read_at,
                   drain, (load_end.cpu - before.cpu, end.cpu - before.cpu), load_end.waited - before.waited)


def _result(backend: str, rate: float, seconds: float, per_post: int, alerts: int, expected: int,
            gen: dict[str, Any], samples: list[Sample], decided_at: dict[str, float], read_at: float,
            drain: float, cpu: tuple[float, float], waited: float) -> Result:
    posts = gen["posts"]  # [first sent, accepted attempt sent, answered, attempts] per POST
    latency: list[tuple[float, bool]] = []
    accepted: list[tuple[float, int]] = []  # (answered, matching alerts in it)
    for k, (first, _sent, answered, _attempts) in enumerate(posts):
        if answered is None:
            continue  # refused until the generator gave up: never recorded, so neither decided nor late
        indexes = [i for i in range(k * per_post, min((k + 1) * per_post, alerts)) if matching(i)]
        accepted.append((answered, len(indexes)))
        for i in indexes:
            at = decided_at.get(f"{i:016x}")
            latency.append((at - first, False) if at is not None else (read_at - first, True))
    accepted.sort()
    load_end = posts[-1][0]  # the last POST's first send
    backlog: list[tuple[float, int]] = []
    recorded = j = 0
    for s in samples:
        while j < len(accepted) and accepted[j][0] <= s.at:
            recorded += accepted[j][1]
            j += 1
        backlog.append((s.at - posts[0][0], recorded - s.decided))
    during = [s for s in samples if s.at <= load_end]
    decisions_per_s = ((during[-1].decided - during[0].decided) / (during[-1].at - during[0].at)
                       if len(during) > 1 else float("nan"))
    done = next((s.at for s in samples if s.decided >= expected), None)
    return Result(
        backend, rate, seconds, alerts, expected, max(load_end - posts[0][0], 1e-9), gen["refused"],
        sum(1 for p in posts if p[2] is None), gen["first_refusal"], sum(1 for _, bound in latency if not bound),
        latency, backlog, decisions_per_s, None if done is None else max(0.0, done - load_end), drain, cpu, waited,
        gen["late_p99"] * 1000,
    )


def revision() -> str:
    """The commit measured: the daemon runs from this working tree, which others may be changing."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "remediator"], cwd=ROOT, capture_output=True, text=True)
    return head.strip() + (" with uncommitted changes in remediator/" if dirty.stdout.strip() else "")


def record(results: list[Result], args: argparse.Namespace, load_avg: tuple[float, float, float]) -> None:
    append_section(
        "decisions under sustained saturated ingest (issue 17 point 3, bench/sustained_bench.py)",
        f"{args.per_post} alerts per POST paced at {args.rate:,.0f} alerts/s for {args.seconds:g} s, open loop,"
        f" from a load generator in its own process; 54 % match one playbook with no throttle, dry-run;"
        f" `remediator serve` in its own process.  Decision latency: the decision's recorded `at` minus the"
        f" POST's first send (\"> x\": undecided alerts when the run ended).  Backlog: matching alerts"
        f" recorded minus decisions counted, sampled every {SAMPLE:g} s.  CPU: the daemon's utime + stime over"
        f" the load, and to the end (drain included); waited: its threads' run-queue time over the load."
        f"  Target: decision p99 < 1 s at 1,000 alerts/s, backlog bounded.  Load average {load_avg[0]:.1f} /"
        f" {load_avg[1]:.1f} / {load_avg[2]:.1f} (2 cores shared with other work).  At {revision()}.",
        "\n".join([HEADER, *(r.row() for r in results), *(r.trace_line() for r in results)]),
    )


async def main(args: argparse.Namespace) -> None:
    backends = ["embedded", "postgres"] if args.backend == "both" else [args.backend]
    results = [await sustained(b, args.rate, args.per_post, args.seconds, args.drain, args.profile)
               for b in backends]
    load_avg = os.getloadavg()
    print(HEADER)
    for r in results:
        print(r.row())
    for r in results:
        print(r.trace_line())
        what = f"{r.backend}, {r.rate:,.0f} alerts/s for {r.seconds:g} s"
        p99 = quantile(r.latency, 0.99)
        emit("sustained", f"{what}: decision p99", p99 if p99.startswith(">") else int(p99.replace(",", "")), "ms",
             "< 1,000 ms at 1,000 alerts/s")
        emit("sustained", f"{what}: backlog first 5 s → last 5 s", f"{r.backlog_first:,.0f} → {r.backlog_last:,.0f}",
             "matching alerts", "bounded")
        emit("sustained", f"{what}: backlog max", r.backlog_max, "matching alerts")
        emit("sustained", f"{what}: decided", f"{r.decided:,} of {r.matching:,}", "matching alerts")
    print(f"(load average {load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f}, {os.cpu_count()} cores)")
    if not args.no_record:
        record(results, args, load_avg)


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        _, _, url, n, per, per_second, give_up = sys.argv
        print(json.dumps(asyncio.run(load(url, int(n), int(per), float(per_second), float(give_up)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="alerts per second (POSTs/s = rate / per-post)")
    parser.add_argument("--per-post", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0 if quick() else 30.0, help="how long the load lasts")
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="both")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds to keep watching after the load for the matching alerts to be decided")
    add_record_option(parser)
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy the daemon: collapsed stacks in DIR/sustained-<backend>.txt")
    asyncio.run(main(parser.parse_args()))
