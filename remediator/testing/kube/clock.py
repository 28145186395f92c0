"""Time for the fake cluster.

Everything time-dependent (pod readiness, progress deadlines, timestamps) reads one
injected clock, so tests move time explicitly with a :class:`ManualClock` instead of
sleeping, and a standalone instance simply passes ``time.time``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: Any zero-argument callable returning Unix seconds: ``time.time``, ``ManualClock()``,
#: or ``lambda: virtual_clock.now().timestamp()`` to share the daemon's virtual clock.
Clock = Callable[[], float]

#: 2026-01-01T00:00:00Z: a fixed start keeps timestamps in test failures reproducible.
DEFAULT_EPOCH = 1_767_225_600.0


class ManualClock:
    """A clock that moves only when told (callable, so it is a :data:`Clock`)."""

    def __init__(self, start: float = DEFAULT_EPOCH) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds

    def set(self, when: float) -> None:
        """Jump to ``when``; earlier values are ignored so time never runs backwards."""
        self._now = max(self._now, when)


def rfc3339(t: float) -> str:
    """metav1.Time: RFC 3339 in UTC with second precision, as the apiserver writes it."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object) -> float | None:
    """Tolerant parse (``Z`` or an offset, optional fraction); None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
