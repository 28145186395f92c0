"""Replay's history read by a second process (:mod:`remediator.replay_feed`): the same events, in
the same order, with the same errors at the same point, as reading it in process."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from remediator import replay_feed
from remediator.replay import Event, ReplayInputError, read_events
from remediator.replay_feed import ReaderFailed, open_history
from tests.replay.test_golden import GOLDEN, _run, history


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _in_process(path: Path) -> list[Event]:
    with path.open("rb") as fh:
        return list(read_events(fh, str(path)))


def _from_child(path: Path) -> list[Event]:
    with open_history(str(path), parallel=True) as feed:
        return list(feed.events)


def test_the_child_sends_exactly_the_events_read_in_process(tmp_path: Path) -> None:
    # Grouped, wrapped and bare payloads, redeliveries, control lines, input slightly out of
    # order; more events than one frame holds.
    path = _write(tmp_path / "h.jsonl", history(2 * replay_feed.FRAME_EVENTS + 100))
    expected = _in_process(path)
    got = _from_child(path)
    assert got == expected
    assert len(got) > 2 * replay_feed.FRAME_EVENTS and any(e.control for e in got)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.at.tzinfo is UTC
        for a, b in zip(mine.alerts, theirs.alerts, strict=True):
            assert a.received_at.tzinfo is UTC and a.alert.starts_at.tzinfo is UTC
            assert a.alert.__dict__ == b.alert.__dict__  # the kept startsAt text too
            assert a.alert.dedup_key == b.alert.dedup_key


def test_a_lone_surrogate_is_refused_in_a_payload_as_the_webhook_refuses_it_and_ignored_elsewhere(
        tmp_path: Path) -> None:
    lines: list[dict[str, object]] = history(3)
    first = history(1)[0]
    wrapped = {"received_at": "2026-11-01T00:00:00Z", "note": "\udc00", "payload": first.get("payload", first)}
    lines[0] = wrapped  # in a key of the wrapper that replay ignores: replayed
    path = _write(tmp_path / "ok.jsonl", lines)
    assert _from_child(path) == _in_process(path) and len(_in_process(path)) == 3
    body = json.loads(json.dumps(history(1)[0]))
    alerts = body.get("payload", body)["alerts"]
    del alerts[1:]  # alone in its delivery: refused whole (with others, it would be refused alone, as live)
    alerts[0]["labels"]["note"] = "\udc00"  # json reads it; it is not Unicode
    path = _write(tmp_path / "bad.jsonl", [body])
    reason = (f"{path}:1: body.alerts[0].labels.note: a string holds an unpaired UTF-16 surrogate, "
              "which is not valid Unicode")
    for read in (_in_process, _from_child):
        with pytest.raises(ReplayInputError) as refused:
            read(path)
        assert str(refused.value) == reason


def test_a_bare_payload_moved_later_is_sent_as_read_in_process(tmp_path: Path) -> None:
    """A repeat_interval re-send (a bare payload whose alerts started long before) is given at the
    time already replayed, its alerts received then, by the child as in process."""
    lines: list[object] = list(history(200))
    bare = next(line for line in lines if isinstance(line, dict) and "alerts" in line)
    lines.append(bare)
    path = _write(tmp_path / "h.jsonl", lines)
    expected = _in_process(path)
    [moved] = [e for e in expected if e.line == len(lines)]
    assert moved.at_least and moved.at > min(a.alert.starts_at for a in moved.alerts)
    assert all(a.received_at == moved.at for a in moved.alerts)
    assert _from_child(path) == expected


def test_the_alerts_refused_alone_are_sent_as_read_in_process(tmp_path: Path) -> None:
    lines: list[object] = list(history(100))
    at = next(i for i, x in enumerate(lines) if i >= 50 and isinstance(x, dict) and "payload" in x)
    line = lines[at]
    assert isinstance(line, dict)
    payload = json.loads(json.dumps(line["payload"]))
    payload["alerts"].append({**payload["alerts"][0], "startsAt": "yesterday"})
    lines.insert(at + 1, {**line, "payload": payload})  # the same delivery again, with a bad alert more
    path = _write(tmp_path / "h.jsonl", lines)
    expected = _in_process(path)
    [partial] = [e for e in expected if e.refused]
    bad = len(payload["alerts"]) - 1
    assert partial.line == at + 2
    assert partial.refused == (f"body.alerts[{bad}].startsAt: invalid RFC 3339 timestamp 'yesterday'",)
    assert _from_child(path) == expected


@pytest.mark.parametrize("bad", ["[1]", '{"version": "4"', "too-far-back"])
def test_every_event_before_a_bad_line_is_given_then_its_error(tmp_path: Path, bad: str) -> None:
    lines: list[object] = list(history(40))
    if bad == "too-far-back":  # a line more than the reordering window behind what was already released
        lines.append({"at": "2000-01-01T00:00:00Z", "control": "pause"})
    else:
        lines.append(bad)
    lines += history(60)[40:]
    path = _write(tmp_path / "h.jsonl", lines)
    expected: list[Event] = []
    with pytest.raises(ReplayInputError) as in_process, path.open("rb") as fh:
        for event in read_events(fh, str(path)):
            expected.append(event)
    got: list[Event] = []
    with pytest.raises(ReplayInputError) as from_child, open_history(str(path), parallel=True) as feed:
        for event in feed.events:
            got.append(event)
    assert str(from_child.value) == str(in_process.value)
    assert str(from_child.value).startswith(f"{path}:41: ")
    assert got == expected and got


def test_a_reader_that_dies_is_an_error_not_an_early_end(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.jsonl", history(3 * replay_feed.FRAME_EVENTS))
    with open_history(str(path), parallel=True) as feed:
        next(feed.events)
        assert feed.reader is not None
        os.kill(feed.reader.pid, signal.SIGKILL)
        with pytest.raises(ReaderFailed, match=rf"^{path}: the process reading it ended early \(exit status -9\)"):
            for _ in feed.events:
                pass


def test_stopping_early_stops_the_reader(tmp_path: Path) -> None:
    path = _write(tmp_path / "h.jsonl", history(3 * replay_feed.FRAME_EVENTS))
    with open_history(str(path), parallel=True) as feed:
        first = next(feed.events)
        reader = feed.reader
        assert reader is not None and feed.position() > 0 and first.line == 1
    assert reader.returncode is not None  # stopped and reaped: no process left behind


def test_only_a_long_history_on_more_than_one_core_is_read_in_parallel(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "h.jsonl", history(10))
    with open_history(str(path)) as feed:
        assert feed.reader is None and feed.size == path.stat().st_size
    monkeypatch.setattr(replay_feed, "PARALLEL_FROM", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with open_history(str(path)) as feed:
        assert feed.reader is not None and next(feed.events) == _in_process(path)[0]
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with open_history(str(path)) as feed:
        assert feed.reader is None


@pytest.mark.parametrize("case", ["json", "compare"])
def test_the_replay_output_read_in_parallel_is_the_golden(case: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(replay_feed, "PARALLEL_FROM", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    expected = gzip.decompress((GOLDEN / f"{case}.out.gz").read_bytes()).decode()
    assert _run(tmp_path, case, capsys) == expected


class _Stingy(io.RawIOBase):
    """A raw stream that takes at most ``most`` bytes per write, as a pipe written by an unbuffered
    stdout (``PYTHONUNBUFFERED``, which many images set) does when a signal interrupts a write."""

    def __init__(self, most: int) -> None:
        self.most, self.taken = most, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(memoryview(data)[: self.most])
        self.taken += chunk
        return len(chunk)


def test_the_reader_sends_every_byte_when_its_stdout_takes_part_of_a_write(tmp_path: Path) -> None:
    # Seen with a profiler attached (it stops and continues the process): the replay died on
    # "msgspec.DecodeError: Input data was truncated", the rest of a frame lost.
    path = _write(tmp_path / "h.jsonl", history(2 * replay_feed.FRAME_EVENTS + 100))
    whole = io.BytesIO()
    assert replay_feed.main([str(path), "300"], out=whole) == 0
    stingy = _Stingy(most=4000)
    assert replay_feed.main([str(path), "300"], out=stingy) == 0  # type: ignore[arg-type]
    assert len(whole.getvalue()) > 3 * 4000
    assert bytes(stingy.taken) == whole.getvalue()


def test_a_damaged_frame_is_the_readers_failure_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "h.jsonl", history(3))
    real_popen = subprocess.Popen

    def damaged(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:  # five bytes that are not msgpack
        script = "import sys; sys.stdout.buffer.write(b'\\x05\\x00\\x00\\x00\\xc1\\xc1\\xc1\\xc1\\xc1')"
        return real_popen([sys.executable, "-c", script], **kwargs)

    monkeypatch.setattr(replay_feed.subprocess, "Popen", damaged)
    with pytest.raises(ReaderFailed, match=rf"^{path}: the process reading it sent a damaged frame \(") as failed:
        _from_child(path)
    assert isinstance(failed.value, ReplayInputError)  # reported as a history problem, with its path
