"""Replay's whole output, byte for byte, on a busy generated history.

The crafted history (tests/replay/history.py) pins known answers one by one; this pins
everything else: the JSON document, the table and ``--compare`` on a history with grouped
notifications, redeliveries of whole groups, resolves, stabilisation windows, repeated
firings counted by ``min_occurrences``, rate limits, cooldowns, the kill switch and input
slightly out of order.  The golden files were written by replay on the embedded (SQLite)
store; replay now runs on the in-memory store, and must say exactly the same.

When a change of behaviour is intended, rewrite them and review the diff:
``.venv/bin/python -m tests.replay.test_golden``.
"""

from __future__ import annotations

import gzip
import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from remediator.core.alerts import format_time
from remediator.replay_input import _FastLines, parse_event
from tests.payloads import T0, alert_json, payload

GOLDEN = Path(__file__).parent / "golden"
HISTORY_LINES = 1500

PLAYBOOKS = """\
name: pool
match: {alertname: PoolHigh, matchers: ['namespace=~".+"', 'deployment=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop, payments]
  rate_limit: {max: 2, per: 1h}
  cooldown: 5m
steps:
  - action: resize_pool
    container: app
    env: POOL_SIZE
    by: 10
    max: 50
---
name: restart-when-down
match: {alertname: ServiceDown, matchers: ['namespace=~".+"', 'deployment=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop, payments]
  for: 3m
  cooldown: 10m
steps:
  - action: restart
  - action: wait_healthy
    timeout: 2m
---
name: flapping
match: {alertname: Flapping, matchers: ['namespace=~".+"', 'deployment=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop, payments]
  for: 2m
  min_occurrences: 3
steps:
  - action: scale
    by: 1
    max: 5
"""

#: The other side of ``--compare``: a longer cooldown, another step parameter, a shorter window.
CHANGED = (PLAYBOOKS.replace("cooldown: 5m", "cooldown: 15m").replace("by: 10", "by: 20")
           .replace("for: 3m", "for: 1m"))

NAMES = ("PoolHigh", "ServiceDown", "Flapping", "Unmatched")
NAMESPACES = ("shop", "payments", "kube-system")


def history(lines: int = HISTORY_LINES, seed: int = 17) -> list[dict[str, Any]]:
    """Grouped notifications every few seconds, as Alertmanager sends them; deterministic."""
    rng = random.Random(seed)
    firing: dict[tuple[str, str, str], str] = {}  # open episodes: labels -> startsAt
    out: list[dict[str, Any]] = []
    paused = False
    now = T0
    while len(out) < lines:
        now += timedelta(seconds=rng.choice((1, 5, 20, 45)))
        roll = rng.random()
        if roll < 0.003:
            paused = not paused
            out.append({"at": format_time(now), "control": "pause" if paused else "resume"})
            continue
        alerts = []
        fresh = True  # every alert's own time is now: the payload may go bare (its time taken from them)
        for _ in range(rng.choice((1, 1, 2, 3))):
            key = (rng.choice(NAMES), rng.choice(NAMESPACES), f"svc-{rng.randrange(4)}")
            labels = {"alertname": key[0], "namespace": key[1], "deployment": key[2]}
            if key in firing and rng.random() < 0.6:
                starts = firing.pop(key)
                alerts.append(alert_json(labels, status="resolved", starts_at=starts, ends_at=format_time(now)))
            elif key in firing:  # a group re-send: the same firing alert again
                alerts.append(alert_json(labels, starts_at=firing[key]))
                fresh = False
            else:
                late = rng.choice((0, 0, 30, 400))
                firing[key] = format_time(now - timedelta(seconds=late))
                alerts.append(alert_json(labels, starts_at=firing[key]))
                fresh = fresh and not late
        body = payload(*alerts)
        if not fresh or rng.random() < 0.5:  # wrapped as the export writes it; sometimes received a little late
            late = timedelta(seconds=rng.choice((0, 0, 0, 90)))
            out.append({"received_at": format_time(now + late), "payload": body})
        else:
            out.append(body)
        if rng.random() < 0.05:  # the whole notification redelivered
            out.append(out[-1])
    return out


CASES: dict[str, tuple[str, ...]] = {
    "json": ("--format", "json"),
    "table": (),
    "compare": ("--format", "json", "--compare", "{changed}"),
}


def _run(tmp: Path, case: str, capsys: pytest.CaptureFixture[str] | None = None,
         extra: tuple[str, ...] = ()) -> str:
    import contextlib
    import io

    (tmp / "pb").mkdir(exist_ok=True)
    (tmp / "pb" / "playbooks.yaml").write_text(PLAYBOOKS)
    (tmp / "changed").mkdir(exist_ok=True)
    (tmp / "changed" / "playbooks.yaml").write_text(CHANGED)
    path = tmp / "history.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps(line) + "\n" for line in history()))
    args = [a.format(changed=tmp / "changed") for a in CASES[case] + extra]
    argv = ["replay", str(path), "--playbooks", str(tmp / "pb"), *args]
    if capsys is not None:
        code = main(argv)
        out, err = capsys.readouterr()
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(argv)
        out, err = buf.getvalue(), ""
    assert code == 0, err
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_replay_output_is_byte_identical_to_the_golden(case: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    expected = gzip.decompress((GOLDEN / f"{case}.out.gz").read_bytes()).decode()
    out = _run(tmp_path, case, capsys)
    assert out == expected


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_summary_only_counts_exactly_what_the_full_output_counts(fmt: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--summary`` is given the decisions themselves (no entry built per decision): the same counts,
    the same first and last times, as the golden output's summary."""
    full = gzip.decompress((GOLDEN / f"{fmt}.out.gz").read_bytes()).decode()
    out = _run(tmp_path, fmt, capsys, extra=("--summary",))
    if fmt == "json":
        assert json.loads(out) == {"summary": json.loads(full)["summary"]}
    else:
        assert out.strip() and full.endswith(out)  # the table's summary lines, and nothing else


def test_lines_decoded_on_the_compiled_path_are_the_events_json_and_the_schema_give() -> None:
    fast = _FastLines()
    lines = [json.dumps(line).encode() for line in history()]
    lines += [b'{"control": "pause", "payload": {}}', b'{"payload": null}', b'[1]', b'{"version": "4"}',
              b'{"received_at": 5, "payload": {}}', b'{"labels": {"a": "\\ud800"}}']
    decided = 0
    for number, raw in enumerate(lines, 1):
        event = fast.decode(raw, number)
        if event is not False:
            decided += 1
            assert event == parse_event(json.loads(raw), number)
    assert decided == HISTORY_LINES - sum(1 for line in history() if "control" in line)  # every payload line


def test_the_golden_history_exercises_what_it_claims() -> None:
    """Not a history of one kind of decision: each guardrail and gate shows up."""
    doc = json.loads(gzip.decompress((GOLDEN / "json.out.gz").read_bytes()))
    kinds = doc["summary"]["decisions"]
    assert {"executed", "cooldown", "rate_limited", "not_allowed", "no_match", "resolved_cancelled", "paused",
            "stabilising"} <= kinds.keys(), kinds
    changes = json.loads(gzip.decompress((GOLDEN / "compare.out.gz").read_bytes()))["summary"]["changes"]
    assert {"new_execution", "suppressed_execution", "changed_steps"} <= changes.keys(), changes


if __name__ == "__main__":  # rewrite the golden files (review the diff before committing them)
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in CASES:
            text = _run(Path(scratch), name)
            (GOLDEN / f"{name}.out.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
            print(f"{name}: {len(text):,} characters")
