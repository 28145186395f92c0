"""Reloading a thousand playbooks does not hold the event loop.

Reading and parsing them takes (much) longer than a webhook may wait, so the daemon's
reload parses on a worker thread and only swaps the set on the loop.  The test is
behavioural: while a reload runs, a probe task on the loop measures how late it is
scheduled, on the monotonic clock.  The bound is generous (a loaded 2-core machine
shares it with other work), and the reload itself must take longer than the bound, or
the test could not tell a blocking reload from a fast one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from remediator.playbook_files import PlaybookRepository

PLAYBOOKS = 1000
MAX_LAG = 0.2  # seconds the loop may be held at once during the reload (the target is 50 ms)
TICK = 0.005  # the probe's cadence: it asks to run every 5 ms and records how late it ran
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
def thousand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("playbooks")
    for i in range(PLAYBOOKS):
        (root / f"pb-{i:04d}.yaml").write_text(PLAYBOOK.format(i=i, team=i % 7))
    return root


class LagProbe:
    """A task on the loop that asks to run every ``TICK`` and records its worst lateness.

    Entered only once it has ticked: a probe not yet running would not see a blocking
    reload that starts right away (its first wake-up would come after it, on time)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._ticked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(TICK)  # the measurement itself: how late this wake-up comes
            self.worst = max(self.worst, time.monotonic() - asked - TICK)
            self.ticks += 1
            self._ticked.set()

    async def __aenter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._ticked.wait(), HANG_GUARD)
        self.worst, self.ticks = 0.0, 0
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_reloading_a_thousand_playbooks_never_holds_the_loop(thousand: Path) -> None:
    repo = PlaybookRepository([str(thousand)])
    async with LagProbe() as probe:
        started = time.monotonic()
        assert await asyncio.wait_for(repo.reload_async(), HANG_GUARD)
        took = time.monotonic() - started
    assert took > MAX_LAG, f"the reload took {took:.3f}s: too fast for this test to see it block the loop"
    assert probe.ticks > 0
    assert probe.worst < MAX_LAG, f"the loop was held {probe.worst * 1000:.0f} ms during a {took:.1f}s reload"
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
    f.write_text(GOOD.format(name="two"))
    second = asyncio.create_task(repo.reload_async())
    assert list(await asyncio.wait_for(asyncio.gather(first, second), HANG_GUARD)) == [True, True]
    assert [p.name for p in repo().playbooks] == ["two"]
