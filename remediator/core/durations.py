"""Prometheus-style durations (``30s``, ``10m``, ``1h30m``, ``1d``) as seconds.

Playbooks are written by the same people who write Prometheus rules, so they get
the same duration grammar rather than ISO 8601.
"""

from __future__ import annotations

import re

from remediator.core.errors import DurationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w|y))+")


_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str | int | float) -> float:
    """Return the duration in seconds; bare numbers are seconds."""
    if isinstance(text, bool):
        raise DurationError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise DurationError(f"invalid duration {text!r}: must not be negative")
        return float(text)
    s = text.strip()
    if _SECONDS.fullmatch(s):  # "5" from an env var or a quoted YAML value: seconds, as a bare number is
        return float(s)
    if not _WHOLE.fullmatch(s):
        raise DurationError(f"invalid duration {text!r}: expected e.g. 30s, 10m, 1h30m")
    total = 0.0
    last_rank = -1
    order = ["y", "w", "d", "h", "m", "s", "ms"]
    for number, unit in _PART.findall(s):
        rank = order.index(unit)
        if rank <= last_rank:
            raise DurationError(f"invalid duration {text!r}: units must go from largest to smallest")
        last_rank = rank
        total += int(number) * _UNITS[unit]
    return total


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for whole seconds, used in messages."""
    s = int(seconds)
    if s == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, s = divmod(s, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
