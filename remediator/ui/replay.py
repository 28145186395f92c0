"""Replay from the web UI: an uploaded export, replayed by the replay engine against the loaded
playbooks (or uploaded ones), and, with a second set of playbooks, the CLI's ``--compare``.

It is ``remediator replay --format json``, run off the event loop: the same engine
(:func:`remediator.replay.replay`) and the same writers (:mod:`remediator.replay_report`), so the
page shows what the CLI prints for the same export and playbooks, and ``format=json`` answers
with the CLI's own document, byte for byte.  The engine brings its own scratch store, fresh
guardrail state, a virtual clock and the plan-only executor (never the cluster, never the live
store or guardrails: a ``pause`` line in the export pauses only the replay), and notifies nobody.

Bounded, since anyone with a read token may ask for one: the export and each side's playbooks
have a size limit (a 413 with the reason, checked as the body streams in, before anything is
replayed), one replay runs at a time per replica (another is a 429), and a replay that runs past
its deadline stops between two events (a 503).  The work runs on a thread with an event loop of
its own, so the daemon's loop keeps answering webhooks meanwhile; its log lines carry
``replay="web UI"``, so nobody mistakes them for live decisions.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from remediator.clock import SystemClock
from remediator.core.alerts import format_time
from remediator.core.durations import parse_duration
from remediator.core.playbooks import PlaybookSet
from remediator.playbook_files import SUFFIXES, load_paths
from remediator.ports import Clock, Store
from remediator.replay import Event, Listener, ReplayInputError, read_events, replay
from remediator.replay_report import CompareWriter, ReplayWriter, refusals
from remediator.settings import Settings
from remediator.store.tools import export_alerts

#: The form's fields: the export, and each side's playbook files (several files each).
EXPORT, BEFORE, AFTER = "export", "before", "after"
#: The form's field for replaying the daemon's own recorded alerts instead of an upload, and the
#: spans it offers (the store's retention bounds what is there).
HISTORY = "history"
SPANS = ("1h", "6h", "24h", "7d")
#: Rows of a report shown on the page; ``format=json`` has them all.
SHOWN = 500
_CHUNK = 64 * 1024
#: The form's plain fields, each at most :data:`_FIELD_BYTES` long and given once.  Anything else is
#: refused: the size checks bound the files, and without these a chunked body (no Content-Length to
#: check up front) of endless fields or empty files was read in full.
FIELDS = frozenset({"csrf", HISTORY, "format"})
_FIELD_BYTES = 1024
#: Playbook files per side (the byte limit bounds their content, not their number).
MAX_FILES = 2000


@dataclass
class ReplayLimits:
    """What one replay may take.  Per application (the UI's state), not module-level: tests and
    several apps in one process each have their own, and their own one-at-a-time gate."""

    #: Bytes of an uploaded export.
    max_export: int = 32 * 1024 * 1024
    #: Bytes of one side's playbook files, all together.
    max_playbooks: int = 2 * 1024 * 1024
    #: Seconds a replay may run (on the daemon's clock) before it is stopped between two events.
    timeout: float = 120.0
    running: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set when the daemon shuts down: a replay under way stops at its next event rather than hold
    #: the shutdown until its deadline (and none starts).
    stopping: threading.Event = field(default_factory=threading.Event)


class UploadRefused(Exception):
    """An upload that cannot be replayed: the status (400, 413) and a reason for the page."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Stopped(Exception):
    """The replay ran out of time (or the daemon is stopping): it stopped between two events."""


@dataclass
class Upload:
    """What the form brought, on disk under a scratch directory: the export (and the name it was
    uploaded under, for ``name:line`` reasons), each side's playbook files, the form's fields."""

    root: Path
    export: Path | None = None
    export_name: str = ""
    sides: dict[str, list[str]] = field(default_factory=lambda: {BEFORE: [], AFTER: []})
    fields: dict[str, str] = field(default_factory=dict)


async def read_upload(request: web.Request, root: Path, limits: ReplayLimits) -> Upload:
    """Stream the multipart form to files under ``root``, refusing at once what is over a limit."""
    length = request.content_length
    if length is not None and length > limits.max_export + 2 * limits.max_playbooks + _CHUNK:
        raise UploadRefused(413, f"the upload is {length} bytes; an export may have at most {limits.max_export}")
    try:
        reader = await request.multipart()
        upload = Upload(root)
        sizes = {BEFORE: 0, AFTER: 0}
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise UploadRefused(400, "a nested multipart part is not a file")
            await _take(part, upload, sizes, limits)
    except (ValueError, LookupError, AssertionError, HttpProcessingError) as exc:
        raise UploadRefused(400, f"the form could not be read: {exc or type(exc).__name__}") from None
    span = upload.fields.get(HISTORY, "")
    if upload.export is not None and span:
        raise UploadRefused(400, "an export or this daemon's history, not both")
    if upload.export is None and not span:
        raise UploadRefused(400, "choose an export to replay (JSON Lines, as `remediator export` writes), "
                                 "or a span of this daemon's history")
    if span and span not in SPANS:
        raise UploadRefused(400, f"history: {span!r} is not one of {', '.join(SPANS)}")
    return upload


class _Bounded(io.TextIOWrapper):
    """The export file, refusing (413) to grow past ``limit`` bytes."""

    def __init__(self, path: Path, limit: int, too_large: str) -> None:
        super().__init__(path.open("wb"), encoding="utf-8")
        self._left, self._too_large = limit, too_large

    def write(self, text: str) -> int:
        self._left -= len(text.encode())
        if self._left < 0:
            raise UploadRefused(413, self._too_large)
        return super().write(text)


async def export_history(upload: Upload, store: Store, now: datetime, limits: ReplayLimits) -> None:
    """Write the daemon's recorded alerts of the chosen span, with the kill switch's settings among
    them, as the export to replay, as ``remediator export --since <span>`` would: the SRE sees what a
    playbook change would have done to what really arrived (paused where it was paused), without
    exporting and uploading by hand."""
    span = upload.fields[HISTORY]
    since = now - timedelta(seconds=parse_duration(span))
    upload.export = upload.root / "export.jsonl"
    upload.export_name = f"history since {format_time(since)}"
    too_large = (f"this daemon's history of the last {span} is larger than {limits.max_export} bytes: replay a "
                 "shorter span here, or `remediator export --since ...` and `remediator replay` the whole")
    with _Bounded(upload.export, limits.max_export, too_large) as out:
        await export_alerts(store, since, now, out)


async def _take(part: BodyPartReader, upload: Upload, sizes: dict[str, int], limits: ReplayLimits) -> None:
    name = part.name or ""
    if part.filename is not None and not Path(part.filename).name:  # the browser's "no file chosen"
        if await part.read_chunk(_CHUNK):  # (aiohttp reads no less than a boundary's length at a time)
            raise UploadRefused(400, f"{name}: a file with no name")
        return
    if name == EXPORT and part.filename is not None:
        if upload.export is not None:
            raise UploadRefused(400, "one export at a time")
        upload.export, upload.export_name = upload.root / "export.jsonl", Path(part.filename).name
        await _save(part, upload.export, limits.max_export, 0, f"the export is larger than {limits.max_export} bytes")
    elif name in (BEFORE, AFTER) and part.filename is not None:
        filename = Path(part.filename).name
        if filename.startswith(".") or not filename.endswith(SUFFIXES):
            raise UploadRefused(400, f"{name}: {filename!r} is not a playbook file (*.yaml or *.yml)")
        if filename in upload.sides[name]:
            raise UploadRefused(400, f"{name}: {filename!r} is there twice")
        if len(upload.sides[name]) >= MAX_FILES:
            raise UploadRefused(413, f"{name}: more than {MAX_FILES} playbook files")
        directory = upload.root / name
        directory.mkdir(exist_ok=True)
        upload.sides[name].append(filename)
        sizes[name] = await _save(part, directory / filename, limits.max_playbooks, sizes[name],
                                  f"{name}: the playbooks are larger than {limits.max_playbooks} bytes")
    elif part.filename is None:
        if name not in FIELDS or name in upload.fields:
            raise UploadRefused(400, f"unexpected field {name!r}" if name not in FIELDS else f"{name!r} is there twice")
        value = b""
        while chunk := await part.read_chunk(_CHUNK):
            value += chunk
            if len(value) > _FIELD_BYTES:
                raise UploadRefused(400, f"{name}: longer than {_FIELD_BYTES} bytes")
        upload.fields[name] = value.decode("utf-8", "replace")
    else:
        raise UploadRefused(400, f"unexpected file field {name!r}")


async def _save(part: BodyPartReader, path: Path, limit: int, used: int, too_large: str) -> int:
    """Write a part to ``path``; the bytes used so far and this part's together stay under ``limit``."""
    with path.open("wb") as fh:
        while chunk := await part.read_chunk(_CHUNK):
            used += len(chunk)
            if used > limit:
                raise UploadRefused(413, too_large)
            fh.write(chunk)
    return used


def load_side(upload: Upload, side: str) -> PlaybookSet | None:
    """The side's uploaded playbooks (None when none were uploaded); UploadRefused listing every
    problem as ``side/file:line: message``."""
    if not upload.sides[side]:
        return None
    directory = upload.root / side
    pset, problems = load_paths([directory])
    found = [f"{side}/{Path(p.path).relative_to(directory)}:{p.line}: {p.message}" for p in problems]
    if not found and not pset.playbooks:
        found = [f"{side}/{upload.sides[side][0]}:1: no playbooks found here"]
    if found:
        raise UploadRefused(400, "\n".join(found))
    return pset


def _until(stop: Callable[[], bool], events: Iterator[Event]) -> Iterator[Event]:
    for event in events:
        if stop():
            raise Stopped
        yield event


def run_report(export: Path, name: str, sets: list[PlaybookSet], settings: Settings, stop: Callable[[], bool]) -> str:
    """The CLI's ``--format json`` document for this export and these sets (two: ``--compare``).

    Runs its own event loop: call it on a thread.  Raises ReplayInputError (``name:line: reason``)
    for a bad line and Stopped when ``stop()`` says so between two events.  An alert refused
    alone (its delivery's others replayed, as the webhook takes them) is in the document's
    ``warnings``."""
    out = io.StringIO()
    writer: ReplayWriter | CompareWriter
    if len(sets) == 2:
        writer = CompareWriter(out, "json")
        listeners: list[Listener] = list(writer.sides)
    else:
        writer = ReplayWriter(out, "json")
        listeners = [writer]
    structlog.contextvars.bind_contextvars(replay="web UI")  # this thread's context, copied into its loop
    warnings: list[str] = []  # the alerts refused alone, as the webhook refuses them: the page says which

    def note(event: Event) -> None:
        warnings.extend(refusals(name, event))

    with export.open("rb") as fh:
        alerts = asyncio.run(replay(_until(stop, read_events(fh, name)), sets, settings, listeners, on_event=note))
    writer.close(alerts, warnings)
    return out.getvalue()


async def run_bounded(
    upload: Upload, sets: list[PlaybookSet], settings: Settings, limits: ReplayLimits, clock: Clock | None = None
) -> str:
    """:func:`run_report` on a thread, stopped at the deadline (or when the caller is cancelled)."""
    clock = clock or SystemClock()
    deadline = clock.monotonic() + limits.timeout
    cancelled = threading.Event()
    assert upload.export is not None

    def stop() -> bool:
        return cancelled.is_set() or limits.stopping.is_set() or clock.monotonic() >= deadline

    try:
        return await asyncio.to_thread(run_report, upload.export, upload.export_name, sets, settings, stop)
    finally:
        cancelled.set()


def report_view(document: str, compare: bool) -> dict[str, Any]:
    """What the page shows of the CLI's document: its summary and its first rows."""
    doc = json.loads(document)
    rows = doc.get("changes" if compare else "decisions", [])
    return {"summary": doc["summary"], "rows": rows[:SHOWN], "total": len(rows), "compare": compare,
            "warnings": doc.get("warnings", [])}


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="remediator-ui-replay-")


__all__ = ["ReplayInputError", "ReplayLimits", "Stopped", "UploadRefused", "export_history", "read_upload",
           "run_bounded"]
