"""Matching cost per alert with 10, 100 and 1,000 playbooks (issue 17: < 20 µs at 1,000).

Playbooks as SREs write them: each selects one alertname plus a severity or a namespace
regex; a few select by other labels only, and one selects everything firing in a namespace.
Alerts: a mix of alertnames some playbook selects and ones none does.  Prints a table; no
asserts on speed.

Run: .venv/bin/python bench/matcher_bench.py
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.summary import emit  # noqa: E402
from remediator.core.alerts import Alert  # noqa: E402
from remediator.core.matchers import Matcher  # noqa: E402
from remediator.core.playbooks import Match, Playbook, PlaybookSet, Target  # noqa: E402


def playbooks(n: int) -> PlaybookSet:
    books = []
    for i in range(n):
        if i % 50 == 49:  # no alertname: filed under another equality
            matchers = (Matcher.create("team", "=", f"team-{i}"), Matcher.create("severity", "=~", "crit.*"))
        else:
            matchers = (Matcher.create("alertname", "=", f"Alert{i}"), Matcher.create("namespace", "=~", "shop|pay"))
        books.append(Playbook(f"pb-{i}", Match(matchers), Target("Deployment", "shop", "x"), ()))
    books.append(Playbook("catch-all", Match((Matcher.create("namespace", "!~", "kube-.*"),)),
                          Target("Deployment", "shop", "x"), ()))
    return PlaybookSet(tuple(books))


def alerts(n: int, count: int) -> list[Alert]:
    rng = random.Random(7)
    return [Alert(f"f{k}", "firing", {"alertname": f"Alert{rng.randrange(2 * n)}", "namespace": "shop",
                                      "severity": "critical", "team": f"team-{rng.randrange(n)}"})
            for k in range(count)]


def per_alert_us(books: PlaybookSet, batch: list[Alert], scan: bool) -> float:
    start = time.perf_counter()
    if scan:
        for a in batch:
            [p for p in books.playbooks if p.match.selects(a)]
    else:
        for a in batch:
            books.matching(a)
    return (time.perf_counter() - start) / len(batch) * 1e6


def main() -> None:
    print("| playbooks | indexed µs/alert | full scan µs/alert |")
    print("|---:|---:|---:|")
    for n in (10, 100, 1000):
        books, batch = playbooks(n), alerts(n, 20_000)
        indexed = min(per_alert_us(books, batch, scan=False) for _ in range(3))
        scanned = min(per_alert_us(books, batch[:2000], scan=True) for _ in range(3))
        print(f"| {n} | {indexed:.1f} | {scanned:.1f} |")
        emit("matcher", f"{n:,} playbooks", round(indexed, 1), "µs per alert", "< 20 µs at 1,000" if n == 1000 else "")


if __name__ == "__main__":
    main()
