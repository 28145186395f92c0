"""Reloading playbooks does not hold the event loop.

Reading and parsing them takes (much) longer than a webhook may wait, so the daemon's
reload parses on a worker thread and only swaps the set on the loop.  The test is
behavioural and timing-free: the parse waits for the loop to answer, which only a loop
not held by the parse can.  How long the loop is held at most (GIL contention, the swap)
is a speed figure, measured by ``bench/reload_bench.py``, never asserted here.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

from remediator import playbook_files
from remediator.playbook_files import PlaybookRepository, load_paths

PLAYBOOKS = 100  # enough to parse for a while; the thousand-playbook figures are bench/reload_bench.py's
LOOP_ANSWERS = 30.0  # seconds the parse waits for the loop: only so that a blocked loop fails, never a speed check
HANG_GUARD = 120.0  # only so that a regression fails instead of hanging; never a speed check

PLAYBOOK = """\
name: pb-{i:04d}
description: generated playbook {i}
match:
  alertname: Alert{i:04d}
  matchers:
    - severity=~"warning|critical"
    - namespace!="kube-system"
    - team="team-{team}"
    - namespace=~".+"
    - deployment=~".+"
target:
  kind: Deployment
  namespace: "{{{{ labels.namespace }}}}"
  name: "{{{{ labels.deployment }}}}"
guardrails:
  namespaces: [shop, payments]
  rate_limit: {{max: 3, per: 1h}}
  cooldown: 10m
steps:
  - action: scale
    by: 2
    max: 10
  - action: wait_healthy
    timeout: 5m
on_failure:
  - action: rollback
"""


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("playbooks")
    for i in range(PLAYBOOKS):
        (root / f"pb-{i:04d}.yaml").write_text(PLAYBOOK.format(i=i, team=i % 7))
    return root


async def test_a_reload_parses_off_the_loop_while_the_loop_keeps_serving(
    many: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the files are read and parsed, the loop must be free: here the parse waits for the
    loop to answer it.  Were it on the loop, the loop could not answer and the parse would give up
    (a deadlock, seen as a failure, not a hang).  How long the loop is held at most during a
    reload of a thousand playbooks is a speed figure: ``bench/reload_bench.py`` measures it."""
    answered = threading.Event()
    threads: list[int] = []

    def load_when_the_loop_answers(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        assert answered.wait(LOOP_ANSWERS), "the loop did not run while playbooks were parsed"
        return load_paths(*args, **kwargs)

    monkeypatch.setattr(playbook_files, "load_paths", load_when_the_loop_answers)
    repo = PlaybookRepository([str(many)])
    reload = asyncio.create_task(repo.reload_async())
    await asyncio.sleep(0)  # the reload runs up to its wait for the parse
    answered.set()  # the loop answering: reachable only if the parse is not holding it
    assert await asyncio.wait_for(reload, HANG_GUARD)
    assert threads and threads[0] != threading.get_ident()
    assert len(repo().playbooks) == PLAYBOOKS
    assert {p.name for p in repo().playbooks} == {f"pb-{i:04d}" for i in range(PLAYBOOKS)}
    assert not await repo.changed_async()


GOOD = (
    "name: {name}\nmatch: {{alertname: X}}\ntarget: {{kind: Deployment, namespace: shop, name: web}}\n"
    "steps: [{{action: restart}}]\n"
)


async def test_an_invalid_set_read_off_the_loop_keeps_the_last_good_one(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.format(name="one"))
    repo = PlaybookRepository([str(tmp_path)])
    assert await repo.reload_async() and [p.name for p in repo().playbooks] == ["one"]
    f.write_text(GOOD.format(name="two") + "  oops: [\n")
    assert await repo.changed_async()
    assert not await repo.reload_async()
    assert [p.name for p in repo().playbooks] == ["one"]
    assert repo.last_problems and repo.last_problems[0].path == str(f)
    assert not await repo.changed_async()  # the bad version was read: no reload again until it changes
    f.write_text(GOOD.format(name="three"))
    assert await repo.reload_async() and [p.name for p in repo().playbooks] == ["three"]


async def test_reloads_asked_for_together_end_with_what_is_on_disk(tmp_path: Path) -> None:
    """SIGHUP and the file watcher may both ask: the reloads take turns, each reading the disk afresh."""
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.format(name="one"))
    repo = PlaybookRepository([str(tmp_path)])
    first = asyncio.create_task(repo.reload_async())
    await asyncio.sleep(0)  # the first is under way (holding the turn)
    # Replaced in one rename, as the kubelet and editors do: the first reload, reading meanwhile,
    # must see one version or the other, never the file truncated half-way through a write.
    (tmp_path / ".p.yaml.new").write_text(GOOD.format(name="two"))
    os.replace(tmp_path / ".p.yaml.new", f)
    second = asyncio.create_task(repo.reload_async())
    assert list(await asyncio.wait_for(asyncio.gather(first, second), HANG_GUARD)) == [True, True]
    assert [p.name for p in repo().playbooks] == ["two"]


async def test_the_set_swapped_out_is_freed_off_the_loop(tmp_path: Path) -> None:
    """Freeing a thousand playbooks is one call that holds the GIL: done at the swap, on the loop,
    it held every webhook answer as long.  Where a swapped-out playbook is freed is seen by a
    finalizer (a weak reference: it does not keep it alive)."""
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.format(name="one"))
    repo = PlaybookRepository([str(tmp_path)])
    assert await repo.reload_async()
    freed_on: list[int] = []
    weakref.finalize(repo().playbooks[0], lambda: freed_on.append(threading.get_ident()))
    f.write_text(GOOD.format(name="two"))
    assert await repo.reload_async() and [p.name for p in repo().playbooks] == ["two"]
    assert freed_on and freed_on[0] != threading.get_ident()


async def test_a_rejected_reload_keeps_the_set_alive(tmp_path: Path) -> None:
    """What is let go after a rejected reload is the set still in use: only a reference to it goes."""
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.format(name="one"))
    repo = PlaybookRepository([str(tmp_path)])
    assert await repo.reload_async()
    freed: list[bool] = []
    weakref.finalize(repo().playbooks[0], lambda: freed.append(True))
    f.write_text("oops: [\n")
    assert not await repo.reload_async()
    assert [p.name for p in repo().playbooks] == ["one"] and not freed


_GOOD_PLAYBOOK = """name: p
match:
  alertname: A
target:
  kind: Deployment
  namespace: shop
  name: api
steps:
  - action: wait_healthy
    timeout: 5m
"""
#: Shapes the schema did not foresee, each raised out of the loader (a traceback from `validate`, and a
#: reload that killed the daemon's supervised playbook watcher) where a file:line problem was due.
_ODD_SHAPES = {
    "a list where a duration goes": (_GOOD_PLAYBOOK.replace("timeout: 5m", "timeout: [5m]"), 1),
    "a list where an action goes": (_GOOD_PLAYBOOK.replace("action: wait_healthy", "action: [wait_healthy]"), 1),
    "a list where a guardrail duration goes": (_GOOD_PLAYBOOK + "guardrails: {lock_ttl: [10m]}\n", 1),
    "a tag its value cannot be": (_GOOD_PLAYBOOK.replace("name: api", "name: !!int api"), 7),
    "a date that does not exist": (_GOOD_PLAYBOOK + "description: 2026-02-30\n", 11),
    "nested deeper than the stack": (_GOOD_PLAYBOOK + "description: " + "[" * 3000 + "]" * 3000 + "\n", 1),
}


@pytest.mark.parametrize(("text", "line"), _ODD_SHAPES.values(), ids=_ODD_SHAPES.keys())
def test_a_playbook_of_an_unforeseen_shape_is_a_problem_at_its_line(text: str, line: int) -> None:
    from remediator.core.playbooks import parse_playbooks

    playbooks, problems = parse_playbooks(text, "bad.yaml")
    assert playbooks == [] and problems
    assert problems[0].path == "bad.yaml" and problems[0].line == line, problems


async def test_a_reload_that_finds_such_a_file_keeps_the_last_good_set(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(_GOOD_PLAYBOOK)
    repo = PlaybookRepository([str(tmp_path)])
    assert repo.reload()
    f.write_text(_ODD_SHAPES["a list where a duration goes"][0])
    assert not await repo.reload_async()  # rejected, not raised
    assert repo.current.by_name("p") is not None
    assert repo.last_problems and repo.last_problems[0].path.endswith("p.yaml")
