"""``remediator test``: playbook test cases, for the CI of a playbook repository.

A test file (``*.test.yaml``, kept in a ``tests`` directory inside the playbooks
directory, which playbook loading skips) lists cases; each case is a short alert
history run through replay (the daemon's pipeline, on a virtual clock, fresh
guardrail state) and the decisions it must produce, in order::

    playbooks: ..                    # optional, relative to this file; default: the parent of `tests/`
    start: 2026-01-01T00:00:00Z      # optional; `at` values may be offsets (30s, 5m) from it
    cases:
      - name: the pool grows once, then the cooldown holds
        alerts:
          - at: 0s
            labels: {alertname: HighDatabaseConnectionUsage, severity: warning, namespace: shop, deployment: api}
          - at: 3m
            status: resolved         # resolves the latest firing episode with the same labels
            labels: {alertname: HighDatabaseConnectionUsage, severity: warning, namespace: shop, deployment: api}
          - {at: 4m, control: pause} # kill switch; `resume` turns it off
        expect:
          - playbook: db-pool-exhaustion
            decision: executed
            at: 0s                   # optional, like every key but `decision`
            target: Deployment/shop/api
            steps: [{action: resize_pool, by: 10}, wait_healthy]   # names, or actions with some params
            reason: substring of the reason

Only the keys given are checked.  ``no_match`` decisions of resolved alerts are left
out of the comparison (a resolve no playbook acts on is not worth spelling out); a
firing alert that matches nothing is listed as ``decision: no_match``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import jsonschema

from remediator.core.alerts import format_time, parse_time
from remediator.core.decisions import DecisionKind
from remediator.core.durations import format_duration, parse_duration
from remediator.core.errors import DurationError, PayloadError
from remediator.core.playbooks import PlaybookSet
from remediator.core.yamllines import Document, Problem, load_documents
from remediator.playbook_files import load_paths
from remediator.replay import Entry, Event, parse_event, replay
from remediator.settings import Settings

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
SUFFIXES = (".test.yaml", ".test.yml")

_TIME: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}]}
_LABELS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_EVENT: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["at", "control"],
            "additionalProperties": False,
            "properties": {"at": _TIME, "control": {"enum": ["pause", "resume"]}},
        },
        {
            "type": "object",
            "required": ["at", "labels"],
            "additionalProperties": False,
            "properties": {
                "at": _TIME,
                "labels": _LABELS,
                "annotations": _LABELS,
                "status": {"enum": ["firing", "resolved"]},
                "starts_at": _TIME,
                "ends_at": _TIME,
                "fingerprint": {"type": "string"},
            },
        },
    ]
}
_EXPECT: dict[str, Any] = {
    "type": "object",
    "required": ["decision"],
    "additionalProperties": False,
    "properties": {
        "decision": {"enum": [k.value for k in DecisionKind]},
        "playbook": {"type": ["string", "null"]},
        "at": _TIME,
        "target": {"type": ["string", "null"]},
        "alertname": {"type": "string"},
        "reason": {"type": "string"},
        "steps": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "object", "required": ["action"], "properties": {"action": {"type": "string"}}},
                ]
            },
        },
    },
}
TEST_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "remediator playbook test file",
    "type": "object",
    "required": ["cases"],
    "additionalProperties": False,
    "properties": {
        "playbooks": {"type": "string"},
        "start": _TIME,
        "cases": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "alerts", "expect"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "start": _TIME,
                    "alerts": {"type": "array", "minItems": 1, "items": _EVENT},
                    "expect": {"type": "array", "items": _EXPECT},
                },
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(TEST_FILE_SCHEMA)


class TestFileError(Exception):
    """A test file that cannot be run, as ``path:line: message``."""

    __test__ = False  # not a pytest test class despite the name


@dataclass
class Case:
    name: str
    line: int
    start: datetime
    events: list[Event]
    expect: list[dict[str, Any]]


@dataclass
class TestFile:
    __test__ = False

    path: Path
    playbooks: Path
    cases: list[Case] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """YAML timestamps as RFC 3339 strings, so the schema and the parser see one form."""
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _time(value: str | float, start: datetime) -> datetime:
    """An offset from the case's start (``5m``, or seconds) or an RFC 3339 time."""
    try:
        return start + timedelta(seconds=parse_duration(value))
    except DurationError:
        if isinstance(value, str):
            return parse_time(value)
        raise


class _Builder:
    """Turns a case's alert list into replay events (the same parser as replay input)."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.episodes: dict[str, str] = {}  # labels -> startsAt of the latest firing delivery

    def event(self, raw: dict[str, Any], number: int) -> Event | None:
        at = _time(raw["at"], self.start)
        if "control" in raw:
            return parse_event({"at": format_time(at), "control": raw["control"]}, number)
        status = raw.get("status", "firing")
        labels_key = json.dumps(raw["labels"], sort_keys=True)
        if "starts_at" in raw:
            starts = format_time(_time(raw["starts_at"], self.start))
        elif status == "resolved":
            starts = self.episodes.get(labels_key, format_time(at))
        else:
            starts = format_time(at)
        if status == "firing":
            self.episodes[labels_key] = starts
        ends = raw.get("ends_at")
        alert: dict[str, Any] = {
            "status": status,
            "labels": raw["labels"],
            "annotations": raw.get("annotations", {}),
            "startsAt": starts,
            "endsAt": format_time(_time(ends, self.start) if ends is not None else at)
            if status == "resolved"
            else "0001-01-01T00:00:00Z",
        }
        if "fingerprint" in raw:
            alert["fingerprint"] = raw["fingerprint"]
        body = {"version": "4", "status": status, "receiver": "test", "alerts": [alert]}
        return parse_event({"received_at": format_time(at), "payload": body}, number)


def _default_playbooks(path: Path) -> Path:
    for parent in path.resolve().parents:
        if parent.name == "tests":
            return parent.parent
    return path.parent


def load_test_file(path: Path) -> TestFile:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TestFileError(f"{source}:1: cannot read: {exc}") from None
    docs, problems = load_documents(text, source)
    if problems:
        raise TestFileError("\n".join(map(str, problems)))
    if not docs:
        raise TestFileError(f"{source}:1: empty test file")
    doc: Document = docs[0]
    data = _plain(doc.data)
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or "file"
        raise TestFileError(str(Problem(source, doc.line(tuple(error.absolute_path)), f"{key}: {error.message}")))
    playbooks = path.parent / data["playbooks"] if "playbooks" in data else _default_playbooks(path)
    out = TestFile(path, playbooks)
    where: tuple[str | int, ...] = ()
    for i, raw in enumerate(data["cases"]):
        where = ("cases", i)
        try:
            start = _time(raw.get("start", data.get("start", format_time(DEFAULT_START))), DEFAULT_START)
            builder = _Builder(start)
            events = []
            for j, item in enumerate(raw["alerts"]):
                where = ("cases", i, "alerts", j)
                ev = builder.event(item, doc.line(where))
                if ev is not None:
                    events.append(ev)
            where = ("cases", i, "expect")
            expect = [{**e, "at": _time(e["at"], start)} if "at" in e else e for e in raw["expect"]]
        except (PayloadError, DurationError) as exc:
            raise TestFileError(str(Problem(source, doc.line(where), str(exc)))) from None
        events.sort(key=lambda e: (e.at, e.line))
        out.cases.append(Case(raw["name"], doc.line(("cases", i)), start, events, expect))
    return out


# -- comparing ----------------------------------------------------------------------


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def _step(template: Any, action: str, params: Mapping[str, Any]) -> str:
    if isinstance(template, dict):
        keys = [k for k in template if k != "action"]
        return f"{action}({', '.join(f'{k}={_value(params.get(k))}' for k in keys)})" if keys else action
    return action


def _offset(at: datetime, start: datetime) -> str:
    seconds = (at - start).total_seconds()
    return ("+" if seconds >= 0 else "-") + format_duration(abs(seconds))


def _target(entry: Entry) -> str | None:
    t = entry["target"]
    return f"{t['kind']}/{t['namespace']}/{t['name']}" if t else None


DEFAULT_FIELDS: dict[str, Any] = {"playbook": None, "decision": "", "at": None, "target": None, "steps": []}
ORDER = ("playbook", "decision", "at", "target", "alertname", "reason", "steps")


def render_expected(item: Mapping[str, Any], start: datetime) -> str:
    parts = []
    for key in ORDER:
        if key not in item:
            continue
        v = item[key]
        if key == "at":
            parts.append(f"at={_offset(v, start)}")
        elif key == "steps":
            steps = [_step(s, s["action"] if isinstance(s, dict) else s, s if isinstance(s, dict) else {}) for s in v]
            parts.append(f"steps=[{', '.join(steps)}]")
        elif key == "reason":
            parts.append(f"reason~{_value(v)}")
        else:
            parts.append(f"{key}={v if v is not None else '-'}")
    return " ".join(parts)


def render_actual(entry: Entry, template: Mapping[str, Any], start: datetime) -> str:
    """The actual decision in the expectation's terms: equal strings mean it matches."""
    parts = []
    for key in ORDER:
        if key not in template:
            continue
        if key == "at":
            parts.append(f"at={_offset(parse_time(entry['at']), start)}")
        elif key == "steps":
            wanted = template["steps"] or []
            steps = [
                _step(wanted[i] if i < len(wanted) else None, s["action"], s["params"])
                for i, s in enumerate(entry["steps"])
            ]
            parts.append(f"steps=[{', '.join(steps)}]")
        elif key == "reason":
            reason = template["reason"] if template["reason"] and template["reason"] in entry["reason"] else entry[
                "reason"]
            parts.append(f"reason~{_value(reason)}")
        else:
            v = _target(entry) if key == "target" else entry[key]
            parts.append(f"{key}={v if v is not None else '-'}")
    return " ".join(parts)


class _Collect:
    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def decision(self, entry: Entry) -> None:
        if not (entry["decision"] == DecisionKind.NO_MATCH.value and entry["status"] == "resolved"):
            self.entries.append(entry)

    def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
        return None


def diff(expect: list[dict[str, Any]], actual: list[Entry], start: datetime) -> list[str]:
    """Expected vs actual decisions, aligned on the longest run that matches; empty when all match.

    A decision matches an expectation when it renders identically in the expectation's
    terms.  Unmatched actual decisions are shown in the terms of the expectation they
    replace, if any, so a wrong value stands out next to the expected one.
    """
    wanted = [render_expected(e, start) for e in expect]
    n, m = len(expect), len(actual)
    match = [[render_actual(actual[i], expect[j], start) == wanted[j] for i in range(m)] for j in range(n)]
    longest = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(n - 1, -1, -1):
        for i in range(m - 1, -1, -1):
            longest[j][i] = (
                longest[j + 1][i + 1] + 1 if match[j][i] else max(longest[j + 1][i], longest[j][i + 1])
            )
    if longest[0][0] == n == m:
        return []
    lines = ["--- expected", "+++ actual"]
    gone: list[int] = []
    extra: list[int] = []

    def flush() -> None:
        lines.extend(f"-{wanted[j]}" for j in gone)
        for k, i in enumerate(extra):
            template = expect[gone[k]] if k < len(gone) else DEFAULT_FIELDS
            lines.append(f"+{render_actual(actual[i], template, start)}")
        gone.clear()
        extra.clear()

    j = i = 0
    while j < n or i < m:
        if j < n and i < m and match[j][i] and longest[j][i] == longest[j + 1][i + 1] + 1:
            flush()
            lines.append(f" {wanted[j]}")
            j, i = j + 1, i + 1
        elif i < m and (j == n or longest[j][i + 1] >= longest[j + 1][i]):
            extra.append(i)
            i += 1
        else:
            gone.append(j)
            j += 1
    flush()
    return lines


async def run_case(case: Case, playbooks: PlaybookSet, settings: Settings) -> list[str]:
    """The case's diff (expected vs actual); empty when it passes."""
    collect = _Collect()
    await replay(iter(case.events), [playbooks], settings, [collect])
    return diff(case.expect, collect.entries, case.start)


def test_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))


def run_tests(root: str, settings: Settings, out: IO[str]) -> int:
    """Run every case under ``root``; 0 when all pass, 1 otherwise."""
    path = Path(root)
    if not path.exists():
        out.write(f"{root}:1: no such file or directory\n")
        return 1
    files = test_files(path)
    if not files:
        out.write(f"{root}: no test files ({', '.join('*' + s for s in SUFFIXES)}) found\n")
        return 1
    passed = failed = 0
    for f in files:
        try:
            tf = load_test_file(f)
        except TestFileError as exc:
            out.write(f"ERROR {exc}\n")
            failed += 1
            continue
        pset, problems = load_paths([tf.playbooks])
        if problems or not tf.playbooks.exists():
            out.write(f"ERROR {f}: cannot load playbooks from {tf.playbooks}\n")
            out.write("".join(f"      {p}\n" for p in problems))
            failed += 1
            continue
        for case in tf.cases:
            diff = asyncio.run(run_case(case, pset, settings))
            if diff:
                failed += 1
                out.write(f"FAIL  {f}:{case.line}: {case.name}\n")
                out.write("".join(f"      {line}\n" for line in diff))
            else:
                passed += 1
                out.write(f"ok    {f}:{case.line}: {case.name}\n")
    out.write(f"{passed} passed, {failed} failed\n")
    return 0 if failed == 0 else 1
