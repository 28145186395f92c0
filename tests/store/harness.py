"""One daemon replica for the multi-process tests: the real HTTP app on PostgreSQL with a recording executor.

Run: ``python tests/store/harness.py --database-url URL --record-dir DIR --playbooks DIR --data-dir DIR``.
It prints ``{"port": P, "pid": N}`` on its first stdout line once it accepts webhooks,
and stops cleanly on SIGTERM (SIGKILL is what the crash test sends).

The recording executor stands in for the cluster.  Every call and every *application*
of a step is appended to ``<record-dir>/<pid>.jsonl`` with one unbuffered ``write``
per line, so a SIGKILL loses nothing already written.  A resumed step (``ctx.previous``
is a ``started`` record) re-checks the "cluster" (all replicas' records) before applying,
as the Kubernetes executor re-checks the object, so an interrupted step is not applied twice.
An alert labelled ``hang="scale"`` makes the first attempt at its ``scale`` step apply and
then hang forever: the moment to kill the process.

Optional, for the kill tests (``test_kill.py``): ``--redis-url`` shares the guardrail
state through Redis as production replicas do (without it each replica's is embedded);
``--step-delay S`` holds every applied step S seconds before it returns, so that many
executions are mid-step at any moment; ``--read-delay S`` makes every step read for S seconds
before its intent and write (the Kubernetes executor's GET of the object: where ``test_freeze.py``
stops the process); ``--notify-url`` adds a webhook channel ``hook``
(``succeeded`` events only) for playbooks that ``notify: [hook]``; ``--hang-after-admit``
makes the first admission (cluster-wide) of a target named ``hang-after-admit`` hang once
the guardrails admitted it, before its decision is recorded (event ``hanging``, phase
``admit``): the moment to kill the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from remediator.app import create_app  # noqa: E402
from remediator.core.decisions import PlannedStep  # noqa: E402
from remediator.logs import configure  # noqa: E402
from remediator.ports import StepContext, StepResult  # noqa: E402
from remediator.settings import load_settings  # noqa: E402


class RecordingExecutor:
    def __init__(self, record_dir: Path, step_delay: float = 0.0, read_delay: float = 0.0) -> None:
        self._dir = record_dir
        self._delay = step_delay
        self._read = read_delay
        self._fd = os.open(record_dir / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, **event: Any) -> None:
        os.write(self._fd, (json.dumps({"pid": os.getpid(), **event}) + "\n").encode())

    def _applied(self, key: dict[str, Any]) -> bool:
        for path in self._dir.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                event = json.loads(line)
                if event["event"] == "apply" and all(event[k] == v for k, v in key.items()):
                    return True
        return False

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        key = {"execution": ctx.execution_id, "phase": step.phase, "index": step.index}
        previous = ctx.previous.status if ctx.previous else None
        self._write(event="call", action=step.action, previous=previous, **key)
        if previous == "started" and self._applied(key):
            return StepResult("ok", "found already applied when re-checked")
        if self._read:  # reading the object before the write: the window test_freeze.py stops the process in
            await asyncio.sleep(self._read)
        # As the Kubernetes executor does before every write: its intent first (fenced by the lease).
        await ctx.record_intent({"action": step.action})
        self._write(event="apply", action=step.action, target=ctx.target.key, **key)
        if ctx.alert.labels.get("hang") == step.action and previous is None:
            self._write(event="hanging", **key)
            await asyncio.Event().wait()
        if self._delay:
            await asyncio.sleep(self._delay)
        return StepResult("ok", f"{step.action} applied")


def hang_after_admit(executor: RecordingExecutor) -> None:
    """Patch the guardrail stores' ``admit``: see the module's docstring."""
    from remediator.guardstate.memory import MemoryGuardrails
    from remediator.guardstate.redis import RedisGuardrails

    def hung_before(owner: str) -> bool:
        return any(json.loads(line)["event"] == "hanging" and json.loads(line)["execution"] == owner
                   for path in executor._dir.glob("*.jsonl") for line in path.read_text().splitlines())

    for cls in (MemoryGuardrails, RedisGuardrails):
        def patched(real: Any) -> Any:
            async def admit(self: Any, req: Any) -> Any:
                verdict = await real(self, req)
                if verdict.admitted and req.target_key.endswith("/hang-after-admit") and not hung_before(req.owner):
                    executor._write(event="hanging", execution=req.owner, phase="admit", index=-1)
                    await asyncio.Event().wait()
                return verdict
            return admit

        cls.admit = patched(cls.admit)  # type: ignore[method-assign]


async def main(args: argparse.Namespace) -> None:
    if args.log:  # the test keeps each replica's log for when something goes wrong
        os.dup2(os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), sys.stderr.fileno())
    settings = load_settings(
        None,
        env={},
        overrides={
            "database_url": args.database_url,
            "playbooks": args.playbooks,
            "data_dir": args.data_dir,
            "dry_run": False,
            "webhook": {"tokens": ["harness"]},
            "api": {"admin_tokens": ["harness-admin"]},  # approving executions (test_approval_processes.py)
            "worker": {"lease": args.lease, "poll_interval": 0.1, "batch": args.batch},
            "log": {"format": "json", "level": "warning"},
            **({"redis_url": args.redis_url} if args.redis_url else {}),
            **({"channels": {"hook": {"type": "webhook", "url": args.notify_url, "events": ["succeeded"]}}}
               if args.notify_url else {}),
        },
    )
    configure(settings.log.format, settings.log.level)
    executor = RecordingExecutor(Path(args.record_dir), args.step_delay, args.read_delay)
    if args.hang_after_admit:
        hang_after_admit(executor)
    runner = web.AppRunner(create_app(settings, executors=(executor, executor)), handle_signals=False,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--record-dir", required=True)
    parser.add_argument("--playbooks", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--redis-url", default="", help="shared guardrail state (default: embedded per replica)")
    parser.add_argument("--step-delay", type=float, default=0.0, help="hold every applied step this long")
    parser.add_argument("--read-delay", type=float, default=0.0, help="read S seconds before a step's write")
    parser.add_argument("--notify-url", default="", help="a webhook channel 'hook' for succeeded executions")
    parser.add_argument("--hang-after-admit", action="store_true", help="see the module's docstring")
    parser.add_argument("--log", help="append stderr (the daemon's log) to this file")
    asyncio.run(main(parser.parse_args()))
