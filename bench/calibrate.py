"""How fast this machine runs Python right now: the figure to read every other result against.

Machines of one class differ, and one machine differs from hour to hour (its neighbours):
in this project's results the same code has replayed a million alerts in 95 s on one day
and at 2.7 times the CPU per alert on another, with nothing else running.  A timed pure-Python
loop (ten million squares summed, best of five) is printed first by ``make bench`` and kept
with each dated section of ``bench/RESULTS.md``, so a figure can be compared across days
as "seconds at this reference speed", and a target missed on a slow machine is seen as such.

    python bench/calibrate.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.summary import emit

LOOP = 10_000_000


def reference_seconds(repeat: int = 5) -> float:
    """The best of ``repeat`` timings of ``sum(i * i for i in range(LOOP))``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        sum(i * i for i in range(LOOP))
        best = min(best, time.perf_counter() - started)
    return best


def disk_flushes(seconds: float = 10.0) -> list[float]:
    """Seconds each of a stream of 4 KiB appends took to reach the disk (``fdatasync``), one every 2 ms,
    in the temporary directory (where the benches' stores live, and here PostgreSQL's disk too).

    Why: every durable write of an intake waits for one, the ceiling's as much as the daemon's.
    A stall of 200 ms at 1,000 alerts/s holds some 200 answers, 1 % of a 20 s paced round: its
    p99 can be no lower than the disk's worst stall in it, whoever the server is.
    """
    flushes: list[float] = []
    with tempfile.NamedTemporaryFile(prefix="calibrate-flush-") as f:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            os.write(f.fileno(), b"x" * 4096)
            started = time.perf_counter()
            os.fdatasync(f.fileno())
            flushes.append(time.perf_counter() - started)
            time.sleep(0.002)
    return sorted(flushes)


def main() -> int:
    seconds = reference_seconds()
    print(f"reference loop (10 M squares summed, pure Python, best of 5): {seconds:.2f} s "
          f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    emit("machine", "reference loop (lower is faster)", round(seconds, 2), "s")
    flushes = disk_flushes()
    n = len(flushes)
    p50_ms, p99_ms, worst = flushes[n // 2] * 1000, flushes[int(n * 0.99)] * 1000, flushes[-1] * 1000
    stalls = sum(1 for f in flushes if f > 0.05)
    print(f"disk flushes (4 KiB + fdatasync every 2 ms for 10 s, {tempfile.gettempdir()}): {n}, p50 {p50_ms:.2f} ms, "
          f"p99 {p99_ms:.2f} ms, max {worst:.1f} ms, {stalls} over 50 ms")
    emit("machine", "disk flush, 10 s sample: worst (a paced p99 cannot be lower)", round(worst, 1), "ms")
    emit("machine", "disk flush, 10 s sample: over 50 ms", stalls, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
