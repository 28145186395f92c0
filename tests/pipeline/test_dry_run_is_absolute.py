"""The daemon's dry-run is absolute: a playbook can add dry-run, never lift it.

`serve --dry-run` is how an SRE tries the daemon against a real cluster; a playbook that
says ``dry_run: false`` (written for the live daemon) must not act there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder, received

PLAYBOOK = """
name: restart
match: {{alertname: Down}}
target: {{kind: Deployment, namespace: shop, name: web}}
guardrails: {{dry_run: {playbook_dry_run}}}
steps: [{{action: restart}}]
"""


@pytest.mark.parametrize(("daemon_dry_run", "playbook_dry_run", "acts"), [
    (True, "false", False),  # the case that must never act
    (True, "true", False),
    (False, "true", False),  # a playbook on trial while the daemon is live
    (False, "false", True),
])
async def test_only_a_live_daemon_and_a_live_playbook_act(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
    daemon_dry_run: bool, playbook_dry_run: str, acts: bool,
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "restart.yaml").write_text(PLAYBOOK.format(playbook_dry_run=playbook_dry_run))
    live, dry = Recorder(), Recorder()
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=daemon_dry_run)
    async with open_runtime(settings, clock=vclock, executors=(live, dry), start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "Down"})), vclock))
        await rt.worker.drain()
        [ex] = await rt.store.list_executions()
    assert bool(live.calls) is acts
    assert bool(dry.calls) is not acts
    assert ex["status"] == ("succeeded" if acts else "dry_run")
