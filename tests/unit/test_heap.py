"""The collector's settings for a long run (remediator/heap.py): set inside, as they were outside."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pytest

from remediator import heap
from remediator.replay import load_playbooks
from remediator.replay_report import run_replay
from remediator.settings import load_settings
from tests.replay.test_golden import PLAYBOOKS, history


def test_a_long_run_freezes_what_exists_and_collects_less_often_then_restores_both() -> None:
    before = gc.get_threshold()
    assert before != heap.THRESHOLDS
    with heap.long_run():
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_settings_are_restored_when_the_run_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), heap.long_run():
        raise RuntimeError("the replay failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


class _Watching(io.StringIO):
    """The replay's output, noting the collector's thresholds whenever a row is written."""

    def __init__(self) -> None:
        super().__init__()
        self.thresholds: set[tuple[int, int, int]] = set()

    def write(self, s: str) -> int:
        self.thresholds.add(gc.get_threshold())
        return super().write(s)


def test_a_replay_decides_with_the_long_run_settings(tmp_path: Path) -> None:
    import json

    (tmp_path / "playbooks.yaml").write_text(PLAYBOOKS)
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in history()))
    out = _Watching()
    before = gc.get_threshold()
    run_replay(str(path), [load_playbooks(str(tmp_path / "playbooks.yaml"))],
               load_settings(None, env={}), out, fmt="table", parallel=False)
    # The header is written before the run and the summary after it; every decision row inside it.
    assert heap.THRESHOLDS in out.thresholds
    assert out.getvalue().count("\n") > 5
    assert gc.get_threshold() == before
