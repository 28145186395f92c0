"""How many of something are under way, and a way to wait until none is.

The webhook's deliveries being taken in (the decider gives way to them: ``worker.Pacer``) and the
HTTP requests a shutdown drains (``http.Drain``) are both counted this way; one small class rather
than two copies of the same counter and event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Counted while the block runs."""
        self._count += 1
        self._none.clear()
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._none.set()

    @property
    def count(self) -> int:
        return self._count

    async def none_left(self) -> None:
        """Wait until nothing is under way (at once if nothing is)."""
        await self._none.wait()
