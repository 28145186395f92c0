"""One table of every benchmark's headline figures, printed at the end of ``make bench``.

Each bench script reports its headline figures with :func:`emit`: one JSON line each,
appended to the file named by ``$BENCH_RESULTS`` (nothing happens when it is unset, so a
bench run by hand prints exactly what it always did).  ``make bench`` sets it, runs every
bench, then ``python bench/summary.py FILE`` prints them all as one table, in the order
they were measured.  ``QUICK=1`` (``make bench QUICK=1``) asks each bench for its smaller
sizes (:func:`quick`): a few minutes in all instead of the full run.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def quick() -> bool:
    """Whether to run the smaller sizes (``QUICK=1``)."""
    return os.environ.get("QUICK", "") not in ("", "0")


def emit(bench: str, metric: str, value: float | int | str, unit: str = "", target: str = "") -> None:
    """Record one headline figure of ``bench`` for the summary (``target``: what the issue asks of it)."""
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    line = {"bench": bench, "metric": metric, "value": value, "unit": unit, "target": target}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(lines: list[dict[str, Any]]) -> str:
    rows = [("bench", "metric", "value", "unit", "target")]
    rows += [(r["bench"], r["metric"], _value(r["value"]), r.get("unit", ""), r.get("target", "")) for r in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    out = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        lines = []
    if not lines:
        print("no benchmark reported a result")
        return 1
    print(f"\n== summary ({len(lines)} figures)\n{table(lines)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/.results.jsonl"))
