"""One daemon replica for the multi-process guardrail tests.

Each run builds the real :class:`~remediator.pipeline.Pipeline` on its own embedded
SQLite store and on Redis guardrails shared with the other replicas, with a recording
executor standing in for the cluster: it holds every step a few milliseconds and
appends ``{"pid", "target", "execution", "start", "end"}`` to ``--intervals`` with one
unbuffered ``write`` per line (lines from several processes never interleave).

Modes:

``replica --alerts FILE``
    prints ``{"ready": pid}``, waits for a line on stdin, then decides every alert of
    FILE (one webhook payload per line) with ``--concurrency`` workers, appends the
    decisions to ``--decisions`` and prints ``{"done": n}``.
``replica`` without ``--alerts``
    prints ``{"ready": pid}``, then for each payload line on stdin prints the decision
    kinds as one JSON line, until stdin closes.
``hold-lock``
    admits one request at ``--now`` on a virtual clock, optionally renews it
    ``--renew-after`` seconds later, prints the verdict and then blocks forever (the
    test kills it with SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from remediator.clock import SystemClock, VirtualClock  # noqa: E402
from remediator.core.alerts import validate_payload  # noqa: E402
from remediator.core.decisions import Decision, PlannedStep  # noqa: E402
from remediator.core.guardrails import Policy, Request  # noqa: E402
from remediator.guardstate.redis import RedisGuardrails  # noqa: E402
from remediator.logs import configure  # noqa: E402
from remediator.notify.log import LogNotifier  # noqa: E402
from remediator.pipeline import Pipeline, PipelineSettings  # noqa: E402
from remediator.playbook_files import PlaybookRepository  # noqa: E402
from remediator.ports import ReceivedAlert, StepContext, StepResult  # noqa: E402
from remediator.store.sqlite import SQLiteStore  # noqa: E402


class RecordingExecutor:
    def __init__(self, path: Path, hold: float) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._hold = hold

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        start = datetime.now(UTC).timestamp()
        await asyncio.sleep(self._hold)
        end = datetime.now(UTC).timestamp()
        line = {"pid": os.getpid(), "target": ctx.target.key, "execution": ctx.execution_id, "start": start,
                "end": end}
        os.write(self._fd, (json.dumps(line) + "\n").encode())
        return StepResult("ok", f"{step.action} applied")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def received(line: str, clock: SystemClock) -> list[ReceivedAlert]:
    return [ReceivedAlert(a, clock.now()) for a in validate_payload(json.loads(line)).alerts]


def summary(d: Decision) -> dict[str, Any]:
    return {"pid": os.getpid(), "kind": d.kind.value, "reason": d.reason, "at": d.at.timestamp(),
            "target": d.target.key if d.target else None, "fingerprint": d.fingerprint, "execution": d.execution_id}


async def replica(args: argparse.Namespace) -> None:
    clock = SystemClock()
    repo = PlaybookRepository([args.playbooks])
    if not repo.reload():
        raise SystemExit(f"playbooks rejected: {repo.last_problems}")
    store = await SQLiteStore.open(Path(args.data_dir) / "remediator.db", clock)
    guard = await RedisGuardrails.open(args.redis_url, Policy(), clock)
    executor = RecordingExecutor(Path(args.intervals), args.hold_ms / 1000)
    pipeline = Pipeline(
        playbooks=repo, store=store, guardrails=guard, live=executor, dry=executor, notifier=LogNotifier(),
        clock=clock, settings=PipelineSettings(dry_run=False),
    )
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    emit(ready=os.getpid())
    try:
        if args.alerts:
            await stdin.readline()  # the start signal: every replica begins together
            await decide_all(pipeline, args)
        else:
            while line := (await stdin.readline()).decode():
                outcomes = [await pipeline.process(r) for r in received(line, clock)]
                emit(decisions=[summary(d) for o in outcomes for d in o.decisions])
    finally:
        await guard.close()
        await store.close()


async def decide_all(pipeline: Pipeline, args: argparse.Namespace) -> None:
    queue: asyncio.Queue[ReceivedAlert] = asyncio.Queue()
    for line in args.alerts_text:
        for r in received(line, SystemClock()):
            queue.put_nowait(r)
    rows: list[dict[str, Any]] = []

    async def work() -> None:
        while not queue.empty():
            alert = queue.get_nowait()
            outcome = await pipeline.process(alert)
            rows.extend(summary(d) for d in outcome.decisions)
            if not outcome.decisions and outcome.defer_until is not None:  # to be decided again later
                rows.append({"pid": os.getpid(), "kind": "deferred", "fingerprint": alert.alert.fingerprint,
                             "target": None, "at": pipeline.clock.now().timestamp(), "reason": ""})

    await asyncio.gather(*(work() for _ in range(args.concurrency)))
    append(args.decisions, rows)
    emit(done=len(rows))


def append(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "a") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)


async def hold_lock(args: argparse.Namespace) -> None:
    clock = VirtualClock(datetime.fromtimestamp(args.now, UTC))
    guard = await RedisGuardrails.open(args.redis_url, Policy(max_running=args.max_running), clock)
    req = Request(args.owner, "pb", args.target, args.target, "shop", args.now, lock_ttl=args.ttl)
    verdict = await guard.admit(req)
    renewed = None
    if args.renew_after:
        clock.advance_sync(args.renew_after)
        renewed = await guard.renew(req)
    emit(kind=verdict.kind.value, renewed=renewed, pid=os.getpid())
    await asyncio.Event().wait()  # hold it until killed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["replica", "hold-lock"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--playbooks")
    parser.add_argument("--data-dir")
    parser.add_argument("--intervals")
    parser.add_argument("--decisions")
    parser.add_argument("--alerts")
    parser.add_argument("--hold-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--owner", default="holder")
    parser.add_argument("--target", default="Deployment/shop/web")
    parser.add_argument("--now", type=float, default=0.0)
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument("--renew-after", type=float, default=0.0)
    parser.add_argument("--max-running", type=int, default=0)
    parser.add_argument("--log", help="where the replica's own log (stderr) goes")
    args = parser.parse_args()
    if args.log:
        sys.stderr = open(args.log, "a", buffering=1)  # noqa: SIM115 - for the life of the process
    args.alerts_text = Path(args.alerts).read_text().splitlines() if args.alerts else []
    configure("json", "warning")
    asyncio.run(replica(args) if args.mode == "replica" else hold_lock(args))


if __name__ == "__main__":
    main()
