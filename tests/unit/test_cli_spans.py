"""Operator commands refuse a span or window that cannot mean anything, rather than doing nothing and exiting 0.

``remediator export --since`` later than ``--until`` exported nothing and said it went well; ``remediator
replay --reorder-window -5`` was taken.  Both are now a clear error and a non-zero exit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediator.cli import main
from tests.replay.history import write_history, write_playbooks


def export(capsys: pytest.CaptureFixture[str], tmp_path: Path, *span: str) -> tuple[int, str, str]:
    code = main(["export", "--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "out.jsonl"), *span])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("since", "until"), [
    ("2026-11-22T11:00:00Z", "2026-11-22T10:00:00Z"),  # later
    ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"),  # the same: [t, t) holds nothing
    ("1h", "2h"),  # durations mean that long ago: an hour ago is later than two hours ago
])
def test_an_export_span_that_ends_before_it_starts_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, since: str, until: str
) -> None:
    code, out, err = export(capsys, tmp_path, "--since", since, "--until", until)
    assert code == 2 and out == ""
    assert err.startswith("remediator export: --since (") and "must be earlier than --until (" in err
    assert not (tmp_path / "out.jsonl").exists()  # refused before anything was opened or written


def test_an_export_time_that_is_neither_a_time_nor_a_duration_is_still_a_configuration_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = export(capsys, tmp_path, "--since", "yesterday")
    assert code == 2 and "'yesterday' is neither an RFC 3339 time nor a duration" in err


@pytest.mark.parametrize("window", ["-5", "-0.5", "nan", "inf", "1e12", "soon"])
def test_a_reorder_window_outside_0_to_a_year_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, window: str
) -> None:
    pb, history = write_playbooks(tmp_path / "pb"), write_history(tmp_path / "history.jsonl")
    with pytest.raises(SystemExit) as exited:
        main(["replay", str(history), "--playbooks", str(pb), "--reorder-window", window])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert "argument --reorder-window:" in err and "seconds" in err


@pytest.mark.parametrize("window", ["0", "300", "31536000"])
def test_a_reorder_window_from_0_to_a_year_is_taken(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, window: str
) -> None:
    pb, history = write_playbooks(tmp_path / "pb"), write_history(tmp_path / "history.jsonl")
    assert main(["replay", str(history), "--playbooks", str(pb), "--reorder-window", window, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["decisions"]
