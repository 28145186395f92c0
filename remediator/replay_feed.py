"""A replay's history read in a second process, so that decoding it runs on another core.

Decoding and checking a history line (JSON, the payload's rules, RFC 3339 times, Alertmanager's
fingerprint) is about a fifth of a long replay's CPU, and deciding never waits for it: while
this process decides one stretch of the history, a child process reads the next.

The child runs :func:`remediator.replay.read_events` itself, unchanged, so the events, their
order (the reordering window) and the ``path:line`` errors are exactly those of reading in
process, at the same point of the stream: every event before a bad line is replayed, then the
error is raised.  It sends the events in frames (a length, then msgpack) of already-checked
fields, which this process turns back into the same records without parsing anything again
(:meth:`Alert.restored`).  The pipe holds a frame or two: memory stays flat, and a child ahead
of the decider waits for it.

Only worth it for a long history on more than one core (:data:`PARALLEL_FROM`): starting the
child costs some 0.15 s of its own imports (the core's only: :mod:`remediator.replay_input`).
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import msgspec

from remediator.core.alerts import Alert, Restorable
from remediator.ports import ReceivedAlert
from remediator.replay_input import DEFAULT_REORDER_WINDOW, Event, ReplayInputError, read_events

#: Histories at least this large are read by a child process (when there is a second core).
PARALLEL_FROM = 8 << 20
FRAME_EVENTS = 512  # events per frame: a frame or two in the pipe at a time
_LENGTH = struct.Struct("<I")
# One event: (at, line, control, receiver, group_key, external_url, alerts, at_least, refused).  An
# event's alerts share at and the next three (read_events makes them of one delivery, received at
# the event's time).
_Row = tuple[datetime, int, str | None, str, str, str, list[Restorable], bool, list[str]]


class ReaderFailed(ReplayInputError):
    """The reading process ended without saying why (killed, out of memory, a bug: its stderr says)."""

    def __init__(self, path: str, reason: str) -> None:
        Exception.__init__(self, f"{path}: {reason}")
        self.path, self.line, self.reason = path, 0, reason


@dataclass
class Feed:
    """A history's events in time order, how far its reading has got (bytes) and its size; and
    the reading process, when there is one."""

    events: Iterator[Event]
    position: Callable[[], int]
    size: int
    reader: subprocess.Popen[bytes] | None = None


@contextlib.contextmanager
def open_history(path: str, *, reorder_window: float = DEFAULT_REORDER_WINDOW,
                 parallel: bool | None = None) -> Iterator[Feed]:
    """The history at ``path``, read in a child process when ``parallel`` (by default: when it is
    at least :data:`PARALLEL_FROM` bytes and there is a second core), else in this one."""
    size = os.stat(path).st_size
    if parallel is None:
        parallel = size >= PARALLEL_FROM and (os.cpu_count() or 1) > 1
    if not parallel:
        with open(path, "rb") as fh:
            yield Feed(read_events(fh, path, reorder_window=reorder_window), fh.tell, size)
        return
    child = _Child(path, reorder_window)
    try:
        yield Feed(child.events(), lambda: child.position, size, child.proc)
    finally:
        child.close()


class _Child:
    """The reading process, and the events it sends rebuilt here."""

    def __init__(self, path: str, reorder_window: float) -> None:
        self.path = path
        self.position = 0
        package_root = str(Path(__file__).resolve().parents[1])  # the child imports this very package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH")))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remediator.replay_feed", path, repr(reorder_window)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
        )

    def events(self) -> Iterator[Event]:
        assert self.proc.stdout is not None
        stream = self.proc.stdout
        decoder = msgspec.msgpack.Decoder()
        restored = Alert.restored
        while True:
            head = stream.read(_LENGTH.size)
            if len(head) < _LENGTH.size:
                raise ReaderFailed(self.path, f"the process reading it ended early (exit status {self.proc.wait()})")
            (length,) = _LENGTH.unpack(head)
            body = stream.read(length)
            if len(body) < length:
                raise ReaderFailed(self.path, f"the process reading it ended early (exit status {self.proc.wait()})")
            try:
                position, rows, error, end = decoder.decode(body)
            except (msgspec.DecodeError, ValueError, TypeError) as exc:  # bytes lost or mangled between the processes
                self.close()
                raise ReaderFailed(self.path, f"the process reading it sent a damaged frame ({exc})") from exc
            self.position = position
            for at, line, control, receiver, group_key, url, alerts, at_least, refused in rows:
                if control is not None:
                    yield Event(at, line, control=control)
                else:
                    yield Event(at, line, tuple(ReceivedAlert(restored(*a), at, receiver, group_key, url)
                                                for a in alerts), at_least=at_least, refused=tuple(refused))
            if error is not None:
                raise ReplayInputError(self.path, error[0], error[1])
            if end:
                return

    def close(self) -> None:
        """Stop the child (it may be ahead, or the replay stopped early) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the child -----------------------------------------------------------------------


def _row(event: Event) -> _Row:
    first = event.alerts[0] if event.alerts else None
    if first is None:
        return (event.at, event.line, event.control, "", "", "", [], event.at_least, list(event.refused))
    return (event.at, event.line, event.control, first.receiver, first.group_key, first.external_url,
            [r.alert.restorable() for r in event.alerts], event.at_least, list(event.refused))


def _write_all(out: IO[bytes], data: bytes) -> None:
    """All of ``data``: a raw stream (``sys.stdout.buffer`` is one under ``PYTHONUNBUFFERED``, which many
    images set) may write part of it when a signal interrupts a write to a full pipe (a stop
    and continue, a debugger or profiler attaching), and says so only by the count it returns."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        if written is None:  # a non-blocking stream that cannot take more now: stdout here never is one
            raise BlockingIOError("the replay's reading pipe is non-blocking")
        view = view[written:]


def _send(out: IO[bytes], encoder: msgspec.msgpack.Encoder, position: int, rows: list[_Row],
          error: tuple[int, str] | None = None, end: bool = False) -> None:
    body = encoder.encode((position, rows, error, end))
    _write_all(out, _LENGTH.pack(len(body)) + body)


def main(argv: list[str], out: IO[bytes] | None = None) -> int:
    """``python -m remediator.replay_feed PATH REORDER_WINDOW``: the history's events on stdout."""
    path, window = argv[0], float(argv[1])
    out, encoder = out or sys.stdout.buffer, msgspec.msgpack.Encoder()
    rows: list[_Row] = []
    try:
        with open(path, "rb") as fh:
            try:
                for event in read_events(fh, path, reorder_window=window):
                    rows.append(_row(event))
                    if len(rows) >= FRAME_EVENTS:
                        _send(out, encoder, fh.tell(), rows)
                        rows = []
            except ReplayInputError as exc:
                _send(out, encoder, fh.tell(), rows, error=(exc.line, exc.reason))
            else:
                _send(out, encoder, fh.tell(), rows, end=True)
        out.flush()
    except BrokenPipeError:  # the replay stopped early and closed its end: nothing more is wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
