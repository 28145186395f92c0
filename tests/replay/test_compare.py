"""`remediator replay --compare`: exactly the differences a playbook change makes to a history."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from remediator.core.alerts import parse_time
from tests.payloads import T0
from tests.replay.history import PLAYBOOKS, write_history, write_playbooks


def minute(text: str) -> int:
    return int((parse_time(text) - T0).total_seconds() // 60)


def compare(tmp_path: Path, capsys: pytest.CaptureFixture[str], changed: str, *extra: str) -> tuple[int, str]:
    before = write_playbooks(tmp_path / "before")
    after = write_playbooks(tmp_path / "after", changed)
    diff = [d for d in difflib.ndiff(PLAYBOOKS.splitlines(), changed.splitlines()) if d[0] in "+-"]
    assert len(diff) == 2  # one line changed
    history = write_history(tmp_path / "history.jsonl")
    code = main(["replay", str(history), "--playbooks", str(before), "--compare", str(after), *extra])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def changes(out: str) -> list[tuple[Any, ...]]:
    return [
        (c["change"], minute((c["after"] or c["before"])["at"]), c["playbook"],
         (c["after"] or c["before"])["target"]["name"],
         c["before"]["decision"] if c["before"] else None, c["after"]["decision"] if c["after"] else None)
        for c in json.loads(out)["changes"]
    ]


def test_a_longer_cooldown_suppresses_exactly_one_execution(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(tmp_path, capsys, PLAYBOOKS.replace("cooldown: 5m", "cooldown: 15m"), "--format", "json")
    assert code == 0
    assert changes(out) == [
        ("suppressed_execution", 6, "pool", "orders", "executed", "cooldown"),
        # 10:12 was rate limited (two executions in the hour); now it is still in the longer cooldown
        ("changed_decision", 12, "pool", "orders", "rate_limited", "cooldown"),
    ]
    summary = json.loads(out)["summary"]
    assert summary["changes"] == {"changed_decision": 1, "suppressed_execution": 1}
    assert summary["before"]["decisions"]["executed"] == 6 and summary["after"]["decisions"]["executed"] == 5


def test_a_changed_step_parameter_shows_on_every_execution_it_touches(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(tmp_path, capsys, PLAYBOOKS.replace("by: 10", "by: 20"), "--format", "json")
    assert code == 0
    assert changes(out) == [
        ("changed_steps", 0, "pool", "orders", "executed", "executed"),
        ("changed_steps", 6, "pool", "orders", "executed", "executed"),
        ("changed_steps", 6, "pool", "cart", "executed", "executed"),
        ("changed_steps", 61, "pool", "orders", "executed", "executed"),
    ]
    first = json.loads(out)["changes"][0]
    assert first["before"]["steps"][0]["params"]["by"] == 10 and first["after"]["steps"][0]["params"]["by"] == 20


def test_a_new_match_and_a_longer_stabilisation_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(tmp_path, capsys, PLAYBOOKS.replace("for: 5m", "for: 1m"), "--format", "json")
    assert code == 0
    # 10:20 web resolved at 10:22: with `for: 1m` it executes at 10:21 instead of being cancelled;
    # 10:30 api now runs at 10:31, just before the pause; worker and late only move earlier
    assert changes(out) == [
        ("new_execution", 21, "restart-when-down", "web", "resolved_cancelled", "executed"),
        ("new_execution", 31, "restart-when-down", "api", "paused", "executed"),
        ("retimed", 41, "restart-when-down", "worker", "executed", "executed"),
        ("retimed", 63, "restart-when-down", "late", "executed", "executed"),
    ]


def test_compare_table_lists_each_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = compare(tmp_path, capsys, PLAYBOOKS.replace("cooldown: 5m", "cooldown: 15m"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CHANGE", "AT", "PLAYBOOK"]
    assert lines[1].split()[:4] == ["suppressed_execution", "2026-11-22T10:06:00Z", "pool", "Deployment/shop/orders"]
    assert lines[1].endswith("executed at 2026-11-22T10:06:00Z: resize_pool(container=app,env=POOL_SIZE,by=10,max=50)"
                             "  ->  cooldown")
    assert lines[2].split()[0] == "changed_decision" and lines[2].endswith("rate_limited  ->  cooldown")
    assert "2 change(s): 1 changed_decision, 1 suppressed_execution" in out


def test_identical_playbooks_report_no_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb, history = write_playbooks(tmp_path / "pb"), write_history(tmp_path / "history.jsonl")
    assert main(["replay", str(history), "--playbooks", str(pb), "--compare", str(pb), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["changes"] == [] and doc["summary"]["changes"] == {}
    assert doc["summary"]["before"] == doc["summary"]["after"]
