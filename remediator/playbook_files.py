"""Loading playbooks from disk, and keeping the last good set across reloads.

The pure parser lives in :mod:`remediator.core.playbooks`; this adapter reads files,
watches them (by polling mtimes: cheap, portable, no inotify limits in containers),
and swaps in a new set only when the whole set is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from remediator.core.playbooks import Playbook, PlaybookSet, check_channels, combine, parse_playbooks
from remediator.core.yamllines import Problem

SUFFIXES = (".yaml", ".yml")


def playbook_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.suffix in SUFFIXES and f.is_file() and "tests" not in f.relative_to(p).parts
            )
        else:
            files.append(p)
    return files


def load_paths(paths: Iterable[str | Path], channels: Iterable[str] | None = None) -> tuple[PlaybookSet, list[Problem]]:
    results: list[tuple[list[Playbook], list[Problem]]] = []
    for f in playbook_files(paths):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            results.append(([], [Problem(str(f), 1, f"cannot read: {exc}")]))
            continue
        results.append(parse_playbooks(text, str(f)))
    pset, problems = combine(results)
    if channels is not None:
        problems += check_channels(pset, channels)
    return pset, problems


class PlaybookRepository:
    """Holds the active set; ``reload`` replaces it only with a fully valid one."""

    def __init__(self, paths: list[str], channels: Iterable[str] | None = None) -> None:
        self.paths = paths
        self.channels = list(channels) if channels is not None else None
        self.current = PlaybookSet()
        self.loaded = False
        self.last_problems: list[Problem] = []
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self._log = structlog.get_logger("remediator.playbooks")

    def __call__(self) -> PlaybookSet:
        return self.current

    def _fingerprint(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        for f in playbook_files(self.paths):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_mtime, st.st_size))
        return tuple(out)

    def reload(self) -> bool:
        stamp = self._fingerprint()
        pset, problems = load_paths(self.paths, self.channels)
        self._stamp = stamp
        self.last_problems = problems
        if problems:
            self._log.error(
                "playbook reload rejected: keeping the last good set",
                problems=[str(p) for p in problems],
                active=len(self.current.playbooks),
            )
            return False
        self.current = pset
        self.loaded = True
        self._log.info(
            "playbooks loaded", count=len(pset.playbooks), version=pset.version, names=[p.name for p in pset.playbooks]
        )
        return True

    def changed(self) -> bool:
        return self._fingerprint() != self._stamp
