"""Dated sections appended to bench/RESULTS.md, one shape for every bench that keeps its results.

Why one helper: each bench that records wrote the same block by hand (a dated heading, what was
measured, then the command line and its table in a code block); RESULTS.md reads as one history
only if they all keep to it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def append_section(title: str, prose: str, table: str, script: str | None = None) -> None:
    """``## <now> UTC: title``, then ``prose``, then ``$ .venv/bin/python <script> <this run's arguments>``
    and ``table`` in a code block (``script``: the running bench's path under the checkout by default)."""
    script = script or f"bench/{Path(sys.argv[0]).name}"
    text = (f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {title}\n\n{prose}\n\n"
            f"```\n$ {' '.join(['.venv/bin/python', script, *sys.argv[1:]])}\n{table}\n```\n")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(text)


def add_record_option(parser: argparse.ArgumentParser) -> None:
    """``--no-record``: the run's table is printed only, not appended (``make bench`` passes it)."""
    parser.add_argument("--no-record", action="store_true", help="do not append the results to bench/RESULTS.md")
