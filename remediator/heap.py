"""The cyclic garbage collector's settings for a long run (the daemon, a replay).

Why: at CPython's defaults (a young-generation pass every 700 net allocations) a busy process
runs a collection every few alerts, and the older generations' passes they trigger walk every
object the process holds, most of which (modules, the playbook set, clients) live as long as it
does.  Measured: collections were a sixth of the daemon's CPU at 1,000 webhooks/s (887 ms of
5.3 s, 142 ms with these settings), one full pass during a reload of 1,000 playbooks held the
event loop 35-60 ms (bench/reload_bench.py), and a replay of 100,000 alerts spent 0.67 s of
13.3 s in 798 collections (0.08 s in 7 with these settings).

What a run builds before its work starts is frozen (kept out of every pass: it is garbage only
when the run ends) and the young generation collects every 10,000 allocations.  Memory held by
reference cycles is reclaimed later, not never: a young pass still runs every 10,000 net
allocations, an older one every 20 of those.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: (young, middle, old) generation thresholds for a long run (CPython's defaults: 700, 10, 10).
THRESHOLDS = (10_000, 20, 20)


@contextlib.contextmanager
def long_run() -> Iterator[None]:
    """Freeze what exists now and collect less often inside; outside, as it was before."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
