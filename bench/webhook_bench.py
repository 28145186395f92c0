"""Webhook intake throughput and latency on the embedded store.

Reports deliveries/s and latency percentiles for N webhook posts (each one
committed durably before the answer), over a real loopback socket.
Run: .venv/bin/python bench/webhook_bench.py [N]
"""

from __future__ import annotations

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
from remediator.app import create_app  # noqa: E402
from remediator.logs import configure  # noqa: E402
from remediator.settings import load_settings  # noqa: E402


def body(i: int) -> bytes:
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "remediator", "groupKey": "g",
        "alerts": [{"status": "firing", "startsAt": "2026-11-22T10:00:00Z", "fingerprint": f"{i:016x}",
                    "labels": {"alertname": "Bench", "namespace": "shop", "instance": f"i-{i}"}}],
    }).encode()


async def main(n: int) -> None:
    configure("json", "warning")
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, env={}, overrides={"data_dir": tmp, "playbooks": str(ROOT / "playbooks"),
                                                          "dry_run": True, "webhook": {"tokens": ["b"]},
                                                          "log": {"level": "warning"}})
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/webhooks/alertmanager"
        latencies: list[float] = []
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer b"}) as session:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with sem:
                    t = time.perf_counter()
                    async with session.post(url, data=body(i)) as r:
                        assert r.status == 200, await r.text()
                    latencies.append(time.perf_counter() - t)

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            elapsed = time.perf_counter() - start
        await runner.cleanup()
    q = statistics.quantiles(latencies, n=100)
    print(f"webhook: {n} deliveries in {elapsed:.2f}s = {n / elapsed:.0f}/s; "
          f"latency p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms (16 concurrent, durable commits)")
    emit("webhook in-process", "1 alert per POST, embedded", round(n / elapsed), "alerts/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500 if quick() else 2000))
