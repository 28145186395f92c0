"""Reloading 1,000 playbooks while the loop serves: how long the loop is ever held (issue 17: < 50 ms).

The daemon reloads on a worker thread and swaps the set on the loop
(:meth:`remediator.playbook_files.PlaybookRepository.reload_async`); what it can still cost
the loop is GIL contention and the swap itself.  A probe task asks to run every 5 ms and
records how late each wake-up comes: the worst lateness bounds how long any webhook answer
waited on the loop during the reload.  Also prints the reload's own time (the cold start
reads the same files on the calling thread).  Prints figures; no asserts on speed.

Run: .venv/bin/python bench/reload_bench.py  (QUICK=1: 300 playbooks)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.summary import emit  # noqa: E402
from remediator.playbook_files import PlaybookRepository  # noqa: E402
from tests.core.test_playbook_reload import PLAYBOOK  # noqa: E402

TICK = 0.005


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = time.monotonic()
        await asyncio.sleep(TICK)
        lags.append(time.monotonic() - asked - TICK)


async def reload_once(repo: PlaybookRepository) -> tuple[float, list[float]]:
    lags: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(probe(lags, stop))
    await asyncio.sleep(0.05)  # the probe is ticking before the reload starts
    lags.clear()
    started = time.monotonic()
    assert await repo.reload_async()
    took = time.monotonic() - started
    stop.set()
    await task
    return took, lags


async def main() -> None:
    n = 300 if os.environ.get("QUICK") else 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(n):
            (root / f"pb-{i:04d}.yaml").write_text(PLAYBOOK.format(i=i, team=i % 7))
        repo = PlaybookRepository([str(root)])
        started = time.monotonic()
        assert repo.reload()
        cold = time.monotonic() - started
        runs = [await reload_once(repo) for _ in range(3)]
    worst = max(max(lags) for _, lags in runs) * 1000
    p99 = statistics.quantiles([x for _, lags in runs for x in lags], n=100)[98] * 1000
    took = statistics.median(t for t, _ in runs)
    print("| playbooks | cold load s | reload s (median of 3) | loop lag p99 ms | loop held at most ms |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {n} | {cold:.2f} | {took:.2f} | {p99:.1f} | {worst:.1f} |")
    emit("reload", f"{n:,} playbooks: loop held at most", round(worst, 1), "ms", "< 50 ms")
    emit("reload", f"{n:,} playbooks: reload", round(took, 2), "s")


if __name__ == "__main__":
    asyncio.run(main())
