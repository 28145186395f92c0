"""Where test code runs: the event loop's thread, or a worker thread (off-loop work)."""

from __future__ import annotations

import asyncio


def where() -> str:
    """"loop" inside a running event loop, "thread" on a thread without one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "thread"
    return "loop"
