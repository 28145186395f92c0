"""Loading playbooks from disk, and keeping the last good set across reloads.

The pure parser lives in :mod:`remediator.core.playbooks`; this adapter reads files,
watches them (by polling their stat: cheap, portable, no inotify limits in containers),
and swaps in a new set only when the whole set is valid and not empty.

A ConfigMap mounted as a volume is laid out by the kubelet's AtomicWriter::

    playbooks/
      ..2026_11_29_10_00_00.123456789/   the files of this version
      ..data -> ..2026_11_29_10_00_00.123456789
      restart.yaml -> ..data/restart.yaml

and an update writes a new timestamped directory, then swaps ``..data`` in one rename.
So entries whose name starts with a dot are never walked (each playbook would otherwise be
found two or three times over), the visible names are followed through ``..data``, and a
swap shows as every file resolving to a new inode.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from remediator.core.playbooks import (
    Playbook,
    PlaybookSet,
    check_channels,
    check_prometheus,
    check_targets,
    combine,
    parse_playbooks,
)
from remediator.core.yamllines import Problem

SUFFIXES = (".yaml", ".yml")

#: What each file resolves to (path, inode, mtime, size): a change to any of them is a change to the set.
Stamp = tuple[tuple[str, int, int, int], ...]


def playbook_files(paths: Iterable[str | Path]) -> list[Path]:
    """The playbook files under ``paths``: ``*.yaml``/``*.yml``, not hidden, not under ``tests/``."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(_walk(p))
        else:
            files.append(p)
    return files


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root``, through symlinks (a ConfigMap's names are links into ``..data``),
    skipping dot-entries (the kubelet's ``..data`` and ``..<timestamp>``) and ``tests``."""
    seen: set[str] = set()
    for directory, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "tests"]
        for name in names:
            f = Path(directory, name)
            if not name.startswith(".") and f.suffix in SUFFIXES and f.is_file():
                yield f


class ParseCache:
    """Each file's parse, kept while the file's text stays the same.

    A reload usually finds most files unchanged (a SIGHUP, a ConfigMap update touching one
    playbook, the kubelet's ``..data`` swap that gives every file a new inode): parsing and
    validating a thousand of them again would cost seconds of CPU, competing with the loop
    for the GIL, and would build a thousand new objects for the collector to walk.  A file
    parses to the same playbooks and problems whenever its path and text are the same
    (:func:`parse_playbooks` is a pure function of both), so the result is reused whole:
    its problems are reported again on every load, as they would be by a fresh parse.

    The text itself is the key (compared in full, no hash to collide), and each load keeps
    only the files it read, so a deleted file is forgotten.  One per repository: the daemon
    reloads one at a time, and a race between two loads could only cost a parse again.
    """

    def __init__(self) -> None:
        self._by_path: dict[str, tuple[str, tuple[Playbook, ...], tuple[Problem, ...]]] = {}

    def parse_all(self, files: Iterable[Path]) -> list[tuple[list[Playbook], list[Problem]]]:
        """Each file's playbooks and problems, in order, reusing the last parse where the text is unchanged."""
        kept: dict[str, tuple[str, tuple[Playbook, ...], tuple[Problem, ...]]] = {}
        results: list[tuple[list[Playbook], list[Problem]]] = []
        for f in files:
            source, text = str(f), _read(f)
            if isinstance(text, Problem):
                results.append(([], [text]))
                continue
            hit = self._by_path.get(source)
            if hit is None or hit[0] != text:
                playbooks, problems = parse_playbooks(text, source)
                hit = (text, tuple(playbooks), tuple(problems))
                # Give the GIL away between two files: a reload parses on a worker thread, and the
                # event loop, which asks for the GIL whenever a webhook or timer wakes it, got it
                # back only every few files (worst waits of 20-60 ms over a thousand files; with
                # this, p99 5 ms: bench/reload_bench.py).
                time.sleep(0)
            kept[source] = hit
            results.append((list(hit[1]), list(hit[2])))
        self._by_path = kept
        return results


def _read(f: Path) -> str | Problem:
    """The file's text, or why it cannot be read (a problem at its line 1)."""
    try:
        return f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(str(f), 1, f"cannot read: {exc}")


def _parse(f: Path) -> tuple[list[Playbook], list[Problem]]:
    text = _read(f)
    return ([], [text]) if isinstance(text, Problem) else parse_playbooks(text, str(f))


def load_paths(
    paths: Iterable[str | Path], channels: Iterable[str] | None = None, *, prometheus: bool | None = None,
    cache: ParseCache | None = None,
) -> tuple[PlaybookSet, list[Problem]]:
    """Every playbook under ``paths`` and what is wrong with them; ``channels`` and ``prometheus``
    (whether ``prometheus.url`` is set), when given, are checked against what the daemon has.
    With a ``cache``, unchanged files are not parsed again (:class:`ParseCache`).

    Each target must render for every alert its playbook selects (:func:`check_targets`): a
    playbook reading a label its matchers do not guarantee would otherwise load, match an
    aggregated alert and refuse it at every firing.  Checked here, the one loader, so that
    ``validate``, the start, every reload, ``test`` and replay refuse it alike."""
    files = playbook_files(paths)
    pset, problems = combine(cache.parse_all(files) if cache is not None else [_parse(f) for f in files])
    problems += check_targets(pset)
    if channels is not None:
        problems += check_channels(pset, channels)
    if prometheus is False:
        problems += check_prometheus(pset)
    return pset, problems


#: How many playbook names a "playbooks loaded" line lists before it only counts the rest.
NAMES_LOGGED = 20
#: How many playbooks :func:`_let_go` frees at a time: a fraction of a millisecond, between which
#: the loop can take the GIL back.
FREED_AT_ONCE = 50


def _let_go(retired: list[PlaybookSet]) -> None:
    """Free the set in ``retired`` (its only reference, unless it is still in use) a few playbooks
    at a time.  Freeing is one C call that never yields the GIL: a thousand playbooks at once held
    the loop for as long, and a webhook answer with it."""
    books = list(retired.pop().playbooks)
    while books:
        del books[-FREED_AT_ONCE:]


class PlaybookRepository:
    """Holds the active set; a reload replaces it only with a fully valid one.

    In the daemon, reloads go through :meth:`reload_async` and :meth:`changed_async`:
    reading and parsing a thousand playbooks takes seconds of CPU, and on the event loop
    that would hold every webhook answer for as long.  They run on a worker thread; only
    the swap (one assignment) happens on the loop, so the worker sees the old set or the
    new one, never a mix.  :meth:`reload` and :meth:`changed` do the same on the calling
    thread, for the start (nothing to serve yet) and for tools.
    """

    def __init__(
        self, paths: list[str], channels: Iterable[str] | None = None, *, prometheus: bool | None = None
    ) -> None:
        self.paths = paths
        self.channels = list(channels) if channels is not None else None
        self.prometheus = prometheus
        self.current = PlaybookSet()
        self.loaded = False
        self.last_problems: list[Problem] = []
        self._stamp: Stamp = ()
        self._cache = ParseCache()
        self._log = structlog.get_logger("remediator.playbooks")
        # One reload at a time (SIGHUP and the file watcher may ask together): each reads the
        # disk afresh, so the last to finish holds what is on disk now, and two parses never
        # compete for the CPU the loop needs.
        self._reloading = asyncio.Lock()

    def __call__(self) -> PlaybookSet:
        return self.current

    def _fingerprint(self) -> Stamp:
        """What each file resolves to: the inode changes when the kubelet swaps ``..data``."""
        out = []
        for f in playbook_files(self.paths):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def read(self) -> tuple[PlaybookSet, list[Problem]]:
        """The set on disk and what is wrong with it.  A missing path and an empty set are problems:
        a daemon with no playbooks would consume every alert as ``no_match``, and lose it."""
        missing = [Problem(p, 1, "no such file or directory") for p in self.paths if not Path(p).exists()]
        pset, problems = load_paths([p for p in self.paths if Path(p).exists()], self.channels,
                                    prometheus=self.prometheus, cache=self._cache)
        problems = missing + problems
        if not problems and not pset.playbooks:
            problems = [Problem(p, 1, "no playbooks found here") for p in self.paths]
        return pset, problems

    def _scan(self) -> tuple[Stamp, PlaybookSet, list[Problem]]:
        """The files' stamp and the set they hold: all the I/O and parsing of a reload, touching no state."""
        stamp = self._fingerprint()
        return (stamp, *self.read())

    def reload(self) -> bool:
        """Read, parse and swap on the calling thread (the start, tools): see :meth:`reload_async`."""
        return self._apply(*self._scan())

    async def reload_async(self) -> bool:
        """Read and parse on a worker thread, then swap on the loop; False (last good set kept) if invalid.

        The set swapped out is let go on a worker thread too: freeing a thousand playbooks at
        the swap was most of what the swap cost the loop (a few milliseconds, in one go)."""
        async with self._reloading:
            scanned = await asyncio.to_thread(self._scan)
            retired = [self.current]
            applied = self._apply(*scanned)
            await asyncio.to_thread(_let_go, retired)
            return applied

    def _apply(self, stamp: Stamp, pset: PlaybookSet, problems: list[Problem]) -> bool:
        self._stamp = stamp
        self.last_problems = problems
        if problems:
            self._log.error(
                "playbook reload rejected: keeping the last good set" if self.loaded
                else "playbooks rejected: none loaded",
                problems=[str(p) for p in problems],
                active=len(self.current.playbooks),
            )
            return False
        self.current = pset
        self.loaded = True
        names = [p.name for p in pset.playbooks]
        # A thousand names in one INFO line drown the log; the playbooks page and the API list them all.
        shown = names[:NAMES_LOGGED] + ([f"... {len(names) - NAMES_LOGGED} more"] if len(names) > NAMES_LOGGED else [])
        self._log.info("playbooks loaded", count=len(names), version=pset.version, names=shown)
        return True

    def changed(self) -> bool:
        return self._fingerprint() != self._stamp

    async def changed_async(self) -> bool:
        """:meth:`changed`, with the walk and a ``stat`` per file on a worker thread (a thousand of them,
        every few seconds, on a slow volume)."""
        return await asyncio.to_thread(self._fingerprint) != self._stamp
