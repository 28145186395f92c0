"""Playbook reloads keep the last good set; shutdown parks work durably."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.core.decisions import PlannedStep
from remediator.playbook_files import PlaybookRepository
from remediator.ports import ReceivedAlert, StepContext, StepResult
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload

GOOD = (
    "name: {name}\nmatch: {{alertname: X}}\ntarget: {{kind: Deployment, namespace: shop, name: web}}\n"
    "steps: [{{action: restart}}]\n"
)


def test_bad_reload_keeps_last_good_set(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD.format(name="one"))
    repo = PlaybookRepository([str(tmp_path)])
    assert repo.reload() and [p.name for p in repo().playbooks] == ["one"]
    f.write_text(GOOD.format(name="two") + "  oops: [\n")
    assert repo.changed()
    assert not repo.reload()
    assert [p.name for p in repo().playbooks] == ["one"]
    assert repo.last_problems and repo.last_problems[0].path == str(f)
    f.write_text(GOOD.format(name="three"))
    assert repo.reload() and [p.name for p in repo().playbooks] == ["three"]


async def test_sighup_reloads_playbooks(tmp_path: Path, settings_factory: Callable[..., Any],
                                        vclock: VirtualClock) -> None:
    (tmp_path / "pb").mkdir()
    f = tmp_path / "pb" / "p.yaml"
    f.write_text(GOOD.format(name="before"))
    async with open_runtime(settings_factory(playbooks=str(tmp_path / "pb")), clock=vclock,
                            start_worker=False) as rt:
        f.write_text(GOOD.format(name="after"))
        reloaded = asyncio.Event()
        original = rt.playbooks.reload_async

        async def spy() -> bool:
            ok = await original()
            reloaded.set()
            return ok

        rt.playbooks.reload_async = spy  # type: ignore[method-assign]
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(reloaded.wait(), timeout=10)
        assert [p.name for p in rt.playbooks().playbooks] == ["after"]
        assert rt.metrics.playbook_reloads.labels("ok")._value.get() == 1


async def test_shutdown_parks_in_flight_work_and_restart_finishes_it(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(GOOD.format(name="slow"))
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False, worker={"shutdown_timeout": 0})
    started = asyncio.Event()

    class Stuck:
        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    async with open_runtime(settings, clock=vclock, executors=(Stuck(), Stuck())) as rt:
        p = validate_payload(payload(alert_json({"alertname": "X"})))
        await rt.store.record_alerts([ReceivedAlert(a, vclock.now()) for a in p.alerts])
        rt.wake()
        await asyncio.wait_for(started.wait(), timeout=10)
    # the runtime closed while the step hung: the execution is parked as unfinished

    class Quick:
        calls = 0

        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            Quick.calls += 1
            assert ctx.previous is not None and ctx.previous.status == "started"
            return StepResult("ok", "done after restart")

    async with open_runtime(settings, clock=vclock, executors=(Quick(), Quick()), start_worker=False) as rt:
        assert await rt.store.unfinished_executions()
        assert await rt.pipeline.resume_unfinished() == 1
        await rt.worker.drain()  # the alert itself is re-processed: its decision exists, nothing runs again
        [ex] = await rt.store.list_executions()
    assert ex["status"] == "succeeded" and Quick.calls == 1
