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


def main() -> int:
    seconds = reference_seconds()
    print(f"reference loop (10 M squares summed, pure Python, best of 5): {seconds:.2f} s "
          f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    emit("machine", "reference loop (lower is faster)", round(seconds, 2), "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
