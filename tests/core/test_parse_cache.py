"""A reload parses again only the files whose text changed, and reports what a fresh parse would.

:class:`remediator.playbook_files.ParseCache` keeps each file's parse by path and text.  Each
test here fails for a cache that is wrong in one way: one that trusts the file's stat rather
than its text, keeps a deleted file, keys by text alone, or forgets the problems of a file it
did not parse again.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from remediator import playbook_files
from remediator.core.playbooks import PlaybookSet
from remediator.core.yamllines import Problem
from remediator.playbook_files import ParseCache, PlaybookRepository, load_paths

DATA = Path(__file__).parent / "data"

GOOD = (
    "name: {name}\nmatch: {{alertname: X{name}}}\ntarget: {{kind: Deployment, namespace: shop, name: web}}\n"
    "steps: [{{action: restart}}]\n"
)
#: A problem the cache could hide: a step that is not an action.
BAD = GOOD.replace("restart", "restar")


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each file was parsed (by file name)."""
    counts: Counter[str] = Counter()
    real = playbook_files.parse_playbooks

    def counting(text: str, source: str) -> Any:
        counts[Path(source).name] += 1
        return real(text, source)

    monkeypatch.setattr(playbook_files, "parse_playbooks", counting)
    return counts


def names(repo: PlaybookRepository) -> list[str]:
    return [p.name for p in repo().playbooks]


def write(path: Path, text: str, *, like: Path | None = None) -> None:
    """Write ``text``, keeping ``like``'s times: the change must be seen by its text alone."""
    stat = (like or path).stat() if (like or path).exists() else None
    path.write_text(text)
    if stat is not None:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_an_unchanged_file_is_not_parsed_again(tmp_path: Path, parsed: Counter[str]) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(GOOD.format(name=name))
    repo = PlaybookRepository([str(tmp_path)])
    assert repo.reload()
    first = repo()
    write(tmp_path / "b.yaml", GOOD.format(name="z"))  # same size, same mtime: only the text tells
    assert repo.reload()
    assert names(repo) == ["a", "z", "c"]
    assert parsed == Counter({"a.yaml": 1, "b.yaml": 2, "c.yaml": 1})
    assert repo().playbooks[0] is first.playbooks[0]  # reused whole, not rebuilt


def test_a_file_changed_back_and_forth_holds_its_text_each_time(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.format(name="one"))
    repo = PlaybookRepository([str(tmp_path)])
    seen = []
    for name in ("one", "two", "one", "two"):
        write(f, GOOD.format(name=name))
        assert repo.reload()
        seen.append(names(repo))
    assert seen == [["one"], ["two"], ["one"], ["two"]]


def test_a_deleted_file_disappears_and_a_new_one_at_its_path_is_read(tmp_path: Path, parsed: Counter[str]) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.format(name="a"))
    (tmp_path / "b.yaml").write_text(GOOD.format(name="b"))
    repo = PlaybookRepository([str(tmp_path)])
    assert repo.reload() and names(repo) == ["a", "b"]
    (tmp_path / "b.yaml").unlink()
    assert repo.reload() and names(repo) == ["a"]
    (tmp_path / "b.yaml").write_text(GOOD.format(name="b"))
    assert repo.reload() and names(repo) == ["a", "b"]
    assert parsed["b.yaml"] == 2  # forgotten when deleted, so read again when it came back


def test_a_renamed_file_reports_its_new_path(tmp_path: Path) -> None:
    """The same text at another path is another parse: problems and locations name the file as it is now."""
    (tmp_path / "a.yaml").write_text(BAD.format(name="a"))
    repo = PlaybookRepository([str(tmp_path)])
    assert not repo.reload()
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    assert not repo.reload()
    assert [p.path for p in repo.last_problems] == [str(tmp_path / "b.yaml")]


def test_the_problems_of_an_unchanged_file_are_reported_on_every_reload(
    tmp_path: Path, parsed: Counter[str]
) -> None:
    (tmp_path / "a.yaml").write_text(GOOD.format(name="a"))
    (tmp_path / "bad.yaml").write_text(BAD.format(name="bad"))
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    repo = PlaybookRepository([str(tmp_path)])
    reports = []
    for _ in range(3):
        assert not repo.reload()
        reports.append([str(p) for p in repo.last_problems])
    assert reports[0] == reports[1] == reports[2]
    assert [Path(p.split(":")[0]).name for p in reports[0]] == ["bad.yaml", "latin1.yaml"]
    assert parsed["bad.yaml"] == 1  # reported from the cache, not by parsing it again


def test_a_name_defined_twice_is_reported_on_every_reload(tmp_path: Path) -> None:
    shutil.copytree(DATA / "playbooks_dup", tmp_path / "dup")
    repo = PlaybookRepository([str(tmp_path / "dup")])
    assert not repo.reload()
    first = repo.last_problems
    assert any("duplicate playbook name" in p.message for p in first)
    assert not repo.reload()
    assert repo.last_problems == first


def _load(paths: list[Path], cache: ParseCache | None) -> tuple[PlaybookSet, list[Problem]]:
    return load_paths(paths, ["ops"], prometheus=False, cache=cache)


@pytest.mark.parametrize("where", ["playbooks_bad", "playbooks_dup"])
def test_a_cached_load_gives_what_an_uncached_one_does(where: str) -> None:
    cache = ParseCache()
    paths = [DATA / where]
    fresh_set, fresh_problems = _load(paths, None)
    for _ in range(2):  # cold, then from the cache
        pset, problems = _load(paths, cache)
        assert [str(p) for p in problems] == [str(p) for p in fresh_problems]
        assert pset == fresh_set
