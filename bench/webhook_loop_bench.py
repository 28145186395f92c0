"""Event-loop responsiveness while large webhook bodies arrive.

Posts N deliveries of 2,500 alerts each (the embedded store, the worker running) and,
meanwhile, probes ``/healthz`` every 5 ms; reports the probes' latency percentiles.  A
body that large takes over a second of CPU to parse: on the event loop it would hold up
every probe for as long, so the p99 tells whether parsing is kept off the loop.
``--in-loop`` parses every body on the loop, as before, for comparison.

What remains is mostly the GIL: the parsing thread holds it, and the loop gets it back
only every ``sys.getswitchinterval()`` (5 ms by default) each time it wakes; try
``--switch-interval 0.001`` to see the effect of a shorter one.

Run: .venv/bin/python bench/webhook_loop_bench.py [--deliveries N] [--in-loop] [--switch-interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.summary import emit, quick  # noqa: E402
from remediator import http  # noqa: E402
from remediator.app import create_app  # noqa: E402
from remediator.logs import configure  # noqa: E402
from remediator.settings import load_settings  # noqa: E402

ALERTS = 2500


def body(delivery: int) -> bytes:
    alerts = [
        {"status": "firing", "startsAt": "2026-11-22T10:00:00Z", "fingerprint": f"{delivery:06x}{i:010x}",
         "labels": {"alertname": "Bench", "namespace": "shop", "instance": f"i-{delivery}-{i}"},
         "annotations": {"summary": "bench"}}
        for i in range(ALERTS)
    ]
    return json.dumps({"version": "4", "status": "firing", "receiver": "remediator", "groupKey": "g",
                       "alerts": alerts}).encode()


async def main(deliveries: int, in_loop: bool) -> None:
    configure("json", "warning")
    if in_loop:
        http.PARSE_IN_LOOP_BYTES = 1 << 62
    bodies = [body(d) for d in range(deliveries)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, env={}, overrides={"data_dir": tmp, "playbooks": str(ROOT / "playbooks"),
                                                          "dry_run": True, "webhook": {"tokens": ["b"]},
                                                          "log": {"level": "warning"}})
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        probes: list[float] = []
        posting = True
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer b"}) as session:

            async def probe() -> None:
                while posting:
                    t = time.perf_counter()
                    async with session.get(f"{base}/healthz") as r:
                        assert r.status == 200
                        await r.read()
                    probes.append(time.perf_counter() - t)
                    await asyncio.sleep(0.005)

            prober = asyncio.create_task(probe())
            await asyncio.sleep(0.1)  # the probe connection is warm
            start = time.perf_counter()
            for b in bodies:
                async with session.post(f"{base}/webhooks/alertmanager", data=b) as r:
                    assert r.status == 200, await r.text()
            elapsed = time.perf_counter() - start
            posting = False
            await prober
        await runner.cleanup()
    q = statistics.quantiles(probes, n=100)
    where = "on the loop" if in_loop else f"off the loop above {http.PARSE_IN_LOOP_BYTES // 1024} KiB"
    print(f"healthz while {deliveries} deliveries of {ALERTS} alerts ({len(bodies[0]) / 1e6:.1f} MB each) "
          f"were posted in {elapsed:.1f}s, parsed {where}: {len(probes)} probes, latency p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms, max {max(probes) * 1000:.1f} ms")
    emit("event loop", f"/healthz while {ALERTS:,}-alert bodies arrive", f"p99 {q[98] * 1000:.1f}", "ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=3 if quick() else 10)
    parser.add_argument("--in-loop", action="store_true", help="parse on the event loop (the old behaviour)")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (default: Python's, 5 ms)")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    asyncio.run(main(args.deliveries, args.in_loop))
