"""Replay output: streamed as the history is replayed, so a million alerts cost no memory.

Only counters are kept: the JSON document is written incrementally (``decisions``
first, ``summary`` last, since the counts are known only at the end) and the table
prints a row per decision as it is made.  ``--summary`` prints the counts alone.

``--format json``::

    {"decisions": [{"fingerprint", "alert" (dedup key), "alertname", "status", "playbook" (null for
                    no_match), "at", "decision", "reason", "target" ({kind, namespace, name} or null),
                    "steps" and "on_failure" ([{action, params}]), "dry_run",
                    with --kube also "results" ([{phase, action, status, message}]) and "execution"}],
     "summary": {"alerts", "from", "to", "decisions": {kind: n}, "playbooks": {name: {kind: n}},
                 "targets": {"Kind/namespace/name": {kind: n}}}}

``--compare`` pairs the two sides' decisions per alert as soon as both sides have
finished with that alert, and reports per (alert, playbook) one of
``new_execution``, ``suppressed_execution``, ``changed_steps`` (target, steps or
on_failure differ), ``changed_decision`` (neither side executes, the kinds differ)
or ``retimed`` (both execute, at different times); a side where the playbook did not
match counts as ``no_match``.  JSON: ``{"changes": [{"change", "playbook", "alert",
"fingerprint", "alertname", "before", "after"}], "summary": {"changes": {change: n},
"before": summary, "after": summary}}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from remediator import heap
from remediator.core.alerts import format_time
from remediator.core.decisions import Decision
from remediator.core.playbooks import PlaybookSet
from remediator.replay import DEFAULT_REORDER_WINDOW, Approve, Entry, Event, Listener, Tally, replay
from remediator.replay_feed import open_history
from remediator.settings import Settings

EXECUTED = "executed"
TOP = 20  # table summary: the busiest playbooks and targets only


def target_key(entry: Entry | None) -> str:
    t = (entry or {}).get("target")
    return f"{t['kind']}/{t['namespace']}/{t['name']}" if t else ""


def render_steps(steps: list[dict[str, Any]]) -> str:
    def one(s: dict[str, Any]) -> str:
        params = ",".join(f"{k}={v}" for k, v in s["params"].items())
        return f"{s['action']}({params})"

    return " -> ".join(one(s) for s in steps)


def _count(groups: dict[str, Counter[str]], group: str, kind: str) -> None:
    """One more ``kind`` in ``group`` (a Counter made only for a new group: not one per decision)."""
    counts = groups.get(group)
    if counts is None:
        counts = groups[group] = Counter()
    counts[kind] += 1


class Summary:
    """Counts per decision kind, per playbook and per target (the ``summary`` object)."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.playbooks: dict[str, Counter[str]] = {}
        self.targets: dict[str, Counter[str]] = {}
        self.alerts = 0
        self.first = ""  # (add) the first and last decisions' times, as written in their entries
        self.last = ""
        self._first: datetime | None = None  # (tally) the same, as instants
        self._last: datetime | None = None

    def add(self, entry: Entry) -> None:
        kind = entry["decision"]
        self.kinds[kind] += 1
        if entry["playbook"]:
            _count(self.playbooks, entry["playbook"], kind)
        key = target_key(entry)
        if key:
            _count(self.targets, key, kind)
        self.first = self.first or entry["at"]
        self.last = entry["at"]

    def tally(self, decision: Decision) -> None:
        """:meth:`add` for the decision itself (a :class:`~remediator.replay.Tally`: ``--summary``)."""
        kind = decision.kind.value
        self.kinds[kind] += 1
        if decision.playbook:
            _count(self.playbooks, decision.playbook, kind)
        if decision.target is not None:
            _count(self.targets, decision.target.key, kind)
        self._last = decision.at  # written once, at the end: not per decision
        if self._first is None:
            self._first = decision.at

    def to_json(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "from": format_time(self._first) if self._first else self.first or None,
            "to": format_time(self._last) if self._last else self.last or None,
            "decisions": dict(sorted(self.kinds.items())),
            "playbooks": {k: dict(sorted(v.items())) for k, v in sorted(self.playbooks.items())},
            "targets": {k: dict(sorted(v.items())) for k, v in sorted(self.targets.items())},
        }

    def lines(self) -> list[str]:
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{n} {k}" for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

        out = [f"{self.alerts} alert(s), {sum(self.kinds.values())} decision(s): {counts(self.kinds) or 'none'}"]
        for title, groups in (("by playbook", self.playbooks), ("by target", self.targets)):
            busiest = sorted(groups.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
            if busiest:
                out.append(f"{title}:")
                out += [f"  {name:40} {counts(c)}" for name, c in busiest[:TOP]]
            if len(busiest) > TOP:
                out.append(f"  ... {len(busiest) - TOP} more (all of them in --format json)")
        return out


class _Document:
    """``{"<items>": [ ...streamed... ], "summary": {...}}`` written as it goes."""

    def __init__(self, out: IO[str], items: str, listed: bool) -> None:
        self.out = out
        self.listed = listed
        self.count = 0
        out.write(f'{{"{items}": [' if listed else "{")

    def item(self, obj: dict[str, Any]) -> None:
        if self.listed:
            self.out.write(("\n  " if self.count == 0 else ",\n  ") + json.dumps(obj, sort_keys=True))
            self.count += 1

    def close(self, summary: dict[str, Any], warnings: Sequence[str] = ()) -> None:
        if self.listed:
            self.out.write("\n], ")
        if warnings:  # only when there are some: a clean history's document is as it always was
            self.out.write(f'"warnings": {json.dumps(list(warnings), indent=2)}, ')
        self.out.write(f'"summary": {json.dumps(summary, indent=2, sort_keys=True)}}}\n')


class ReplayWriter:
    """The listener for a plain replay: counts everything, prints rows unless summary-only."""

    ROW = "{at:20}  {decision:18}  {playbook:30}  {target:40}  {alert:30}  {detail}"

    def __init__(self, out: IO[str], fmt: str, *, summary_only: bool = False) -> None:
        self.out = out
        self.fmt = fmt
        self.summary = Summary()
        self.listed = not summary_only
        self._doc = _Document(out, "decisions", self.listed) if fmt == "json" else None
        if self._doc is None and self.listed:
            out.write(self.ROW.format(at="AT", decision="DECISION", playbook="PLAYBOOK", target="TARGET",
                                      alert="ALERT", detail="STEPS / REASON") + "\n")

    def decision(self, entry: Entry) -> None:
        self.summary.add(entry)
        if self._doc is not None:
            self._doc.item(entry)
        elif self.listed:
            detail = render_steps(entry["steps"]) if entry["decision"] == EXECUTED else entry["reason"]
            self.out.write(self.ROW.format(
                at=entry["at"], decision=entry["decision"], playbook=entry["playbook"] or "-",
                target=target_key(entry) or "-", alert=f"{entry['alertname']}/{entry['fingerprint'][:8]}",
                detail=detail) + "\n")

    def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
        return None

    def close(self, alerts: int, warnings: Sequence[str] = ()) -> None:
        """``warnings`` (:func:`refusals`) go in the JSON document; the CLI says them on stderr as they come."""
        self.summary.alerts = alerts
        if self._doc is not None:
            self._doc.close(self.summary.to_json(), warnings)
        else:
            if self.listed:
                self.out.write("\n")
            self.out.write("\n".join(self.summary.lines()) + "\n")


def classify(before: Entry | None, after: Entry | None) -> str | None:
    """What changed for one (alert, playbook); None when nothing that matters did.

    A side without a decision for the playbook counts as ``no_match`` there.
    """
    b = before["decision"] if before else "no_match"
    a = after["decision"] if after else "no_match"
    if b != a:
        if a == EXECUTED:
            return "new_execution"
        if b == EXECUTED:
            return "suppressed_execution"
        return "changed_decision"
    if before is None or after is None or a != EXECUTED:
        return None
    if (before["target"], before["steps"], before["on_failure"]) != (after["target"], after["steps"],
                                                                     after["on_failure"]):
        return "changed_steps"
    if before["at"] != after["at"]:
        return "retimed"
    return None


class _Side:
    """One playbook set's decisions, grouped per alert until the other side has it too."""

    def __init__(self, compare: CompareWriter, index: int) -> None:
        self.compare = compare
        self.index = index
        self.summary = Summary()

    def decision(self, entry: Entry) -> None:
        self.summary.add(entry)

    def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
        self.compare.done(self.index, alert_key, entries)


class CompareWriter:
    """Pairs the two sides per alert and prints every change."""

    ROW = "{change:21}  {at:20}  {playbook:30}  {target:40}  {alert:30}  {detail}"

    def __init__(self, out: IO[str], fmt: str, *, summary_only: bool = False) -> None:
        self.out = out
        self.fmt = fmt
        self.sides = (_Side(self, 0), _Side(self, 1))
        self.changes: Counter[str] = Counter()
        self.listed = not summary_only
        self._waiting: tuple[dict[str, list[Entry]], dict[str, list[Entry]]] = ({}, {})
        self._doc = _Document(out, "changes", self.listed) if fmt == "json" else None
        if self._doc is None and self.listed:
            out.write(self.ROW.format(change="CHANGE", at="AT", playbook="PLAYBOOK", target="TARGET",
                                      alert="ALERT", detail="BEFORE -> AFTER") + "\n")

    def done(self, side: int, alert_key: str, entries: list[Entry]) -> None:
        other = self._waiting[1 - side].pop(alert_key, None)
        if other is None:
            self._waiting[side][alert_key] = entries
            return
        before, after = (entries, other) if side == 0 else (other, entries)
        self._diff(before, after)

    def _diff(self, before: list[Entry], after: list[Entry]) -> None:
        b = {e["playbook"]: e for e in before if e["playbook"]}
        a = {e["playbook"]: e for e in after if e["playbook"]}
        for name in sorted(b.keys() | a.keys()):
            change = classify(b.get(name), a.get(name))
            if change is not None:
                self._report(change, name, b.get(name), a.get(name))

    def _report(self, change: str, playbook: str, before: Entry | None, after: Entry | None) -> None:
        self.changes[change] += 1
        some = after or before
        assert some is not None
        if self._doc is not None:
            self._doc.item({
                "change": change, "playbook": playbook, "alert": some["alert"], "fingerprint": some["fingerprint"],
                "alertname": some["alertname"], "before": before, "after": after,
            })
        elif self.listed:
            def state(e: Entry | None) -> str:
                if e is None:
                    return "no_match"
                if e["decision"] == EXECUTED:
                    return f"executed at {e['at']}: {render_steps(e['steps'])}"
                return str(e["decision"])

            self.out.write(self.ROW.format(
                change=change, at=some["at"], playbook=playbook, target=target_key(after) or target_key(before),
                alert=f"{some['alertname']}/{some['fingerprint'][:8]}",
                detail=f"{state(before)}  ->  {state(after)}") + "\n")

    def close(self, alerts: int, warnings: Sequence[str] = ()) -> None:
        for side in self.sides:
            side.summary.alerts = alerts
        summary = {
            "changes": dict(sorted(self.changes.items())),
            "before": self.sides[0].summary.to_json(),
            "after": self.sides[1].summary.to_json(),
        }
        if self._doc is not None:
            self._doc.close(summary, warnings)
            return
        if self.listed:
            self.out.write("\n")
        total = sum(self.changes.values())
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.changes.items()))
        self.out.write(f"{total} change(s){': ' + counts if counts else ''}\n")
        for title, side in (("before", self.sides[0]), ("after", self.sides[1])):
            self.out.write(f"{title}: " + side.summary.lines()[0] + "\n")


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total_bytes: int, position: Any, stream: IO[str] | None = None, *, delay: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.delay = delay  # short replays finish before a bar would be worth drawing
        self.enabled = self.stream.isatty() and total_bytes > 0
        self.total = total_bytes
        self.position = position
        self.events = 0
        self._shown = 0.0
        self._started = time.monotonic()

    def __call__(self, event: Event) -> None:
        self.events += 1
        now = time.monotonic()
        if not self.enabled or now - self._shown < 0.25 or now - self._started < self.delay:
            return
        self._shown = now
        done = min(1.0, self.position() / self.total)
        bar = "#" * int(done * 30)
        self.stream.write(f"\rreplay [{bar:30}] {done:6.1%}  {self.events:,} events  at {event.at:%Y-%m-%d %H:%M}")
        self.stream.flush()

    def clear(self) -> None:
        """Take the bar off its line (for a line of text, or at the end); drawn again at the next event."""
        if self.enabled and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def close(self) -> None:
        self.clear()


def refusals(path: str, event: Event) -> list[str]:
    """What replay warns of at an event: each alert of its delivery that the webhook refuses (and
    takes the others), as ``path:line: reason``.  The replay goes on, as the daemon did."""
    return [f"{path}:{event.line}: {reason}" for reason in event.refused]


def run_replay(
    path: str,
    playbook_sets: list[PlaybookSet],
    settings: Settings,
    out: IO[str],
    *,
    fmt: str = "table",
    summary_only: bool = False,
    kube: bool = False,
    reorder_window: float = DEFAULT_REORDER_WINDOW,
    approve: Approve = "none",
    parallel: bool | None = None,
) -> None:
    """``remediator replay``: one playbook set, or two with ``--compare``.

    ``parallel``: read the history in a second process (:mod:`remediator.replay_feed`; by
    default for a long history when there is a second core).

    Raises ReplayInputError (``path:line: reason``) on the first bad line; rows already
    printed stay printed, the exit status says the output is incomplete.  An alert the webhook
    would have refused alone (its delivery's others taken) is told on stderr as it comes
    (:func:`refusals`), and the replay goes on, as the daemon did.
    """
    writer: ReplayWriter | CompareWriter
    if len(playbook_sets) == 2:
        writer = CompareWriter(out, fmt, summary_only=summary_only)
        listeners: list[Listener | Tally] = list(writer.sides)
    else:
        writer = ReplayWriter(out, fmt, summary_only=summary_only)
        listeners = [writer.summary if summary_only else writer]  # counts alone: no entry per decision
    with open_history(path, reorder_window=reorder_window, parallel=parallel) as feed:
        progress = Progress(feed.size, feed.position)

        def on_event(event: Event) -> None:
            if event.refused:
                progress.clear()
                print("\n".join(refusals(path, event)), file=progress.stream, flush=True)
            progress(event)

        try:
            run = replay(feed.events, playbook_sets, settings, listeners, kube=kube, on_event=on_event,
                         approve=approve)
            with heap.long_run():  # what a million alerts allocate is collected often enough at 10,000
                alerts = asyncio.run(run)
        finally:
            progress.close()
    writer.close(alerts)
