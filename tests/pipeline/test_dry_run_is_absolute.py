"""The daemon's dry-run is absolute: a playbook can add dry-run, never lift it.

`serve --dry-run` is how an SRE tries the daemon against a real cluster; a playbook that
says ``dry_run: false`` (written for the live daemon) must not act there, nor anything a live
daemon decided before a restart with ``--dry-run`` on the same data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder, playbook_dir, received

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


# -- what a live daemon decided before a restart with --dry-run ---------------------------------
# Restarting with --dry-run on the same data is the SRE's way to stop a daemon acting: executions a
# live run admitted and did not finish (queued, interrupted, waiting for an approval) must not run
# live then.  They stay unfinished and untouched, as under the kill switch; a live daemon resumes them.

RESTART = """
name: restart
match: {alertname: Down}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
"""
GATED = """
name: gated
match: {alertname: Gated}
target: {kind: Deployment, namespace: shop, name: api}
approval: {required: true, timeout: 15m}
steps: [{action: restart}]
"""
ADMIN = hashlib.sha256(b"a1").hexdigest()  # tests/tokens.py: the admin token's SHA-256


async def _decided_live(settings: Any, vclock: VirtualClock, alertname: str) -> str:
    """A live daemon decides one alert and stops before its execution queue runs anything."""
    live, dry = Recorder(), Recorder()
    async with open_runtime(settings, clock=vclock, executors=(live, dry), start_worker=False) as rt:
        [r] = received(payload(alert_json({"alertname": alertname})), vclock)
        await rt.store.record_alerts([r])
        await rt.worker.decide_all()
        [ex] = await rt.store.list_executions()
        assert ex["dry_run"] is False
    assert live.calls == [] and dry.calls == []
    return str(ex["id"])


async def test_a_dry_run_daemon_leaves_a_live_execution_unfinished_and_a_live_one_resumes_it(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    pb = playbook_dir(tmp_path, RESTART)
    did = await _decided_live(settings_factory(playbooks=pb, dry_run=False), vclock, "Down")

    live, dry = Recorder(), Recorder()
    async with open_runtime(settings_factory(playbooks=pb, dry_run=True), clock=vclock, executors=(live, dry),
                            start_worker=False) as rt:
        assert await rt.pipeline.resume_unfinished() == 0
        await rt.worker.drain()  # the execution queue's way in, too
        ex = await rt.store.get_execution(did)
    assert live.calls == [] and dry.calls == []  # nothing sent, not even planned as if it were dry
    assert ex["status"] == "pending" and ex["results"] == []

    live, dry = Recorder(), Recorder()
    async with open_runtime(settings_factory(playbooks=pb, dry_run=False), clock=vclock, executors=(live, dry),
                            start_worker=False) as rt:
        await rt.worker.drain()
        ex = await rt.store.get_execution(did)
    assert [c[0] for c in live.calls] == ["restart"] and dry.calls == []
    assert ex["status"] == "succeeded"


async def _answer(settings: Any, vclock: VirtualClock, did: str, *, approve: bool) -> tuple[Any, str, Recorder]:
    """A daemon with ``settings`` answers the approval, then runs what it may: (answer, the execution's
    status after, its live executor)."""
    live, dry = Recorder(), Recorder()
    async with open_runtime(settings, clock=vclock, executors=(live, dry), start_worker=False) as rt:
        got = await rt.pipeline.answer_approval(did, approve=approve, by="a1", token_sha256=ADMIN)
        await rt.worker.drain()
        status = (await rt.store.get_execution(did))["status"]
    assert dry.calls == []
    return got, status, live


async def test_a_dry_run_daemon_does_not_approve_a_live_execution_a_live_one_does(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    pb = playbook_dir(tmp_path, GATED)
    did = await _decided_live(settings_factory(playbooks=pb, dry_run=False), vclock, "Gated")

    got, status, live = await _answer(settings_factory(playbooks=pb, dry_run=True), vclock, did, approve=True)
    assert got.outcome == "conflict" and "dry-run" in got.message
    assert status == "awaiting_approval" and live.calls == []  # it still waits

    got, status, live = await _answer(settings_factory(playbooks=pb, dry_run=False), vclock, did, approve=True)
    assert got.outcome == "approved"  # the refused approval took nothing: the guardrails admit it now
    assert status == "succeeded" and [c[0] for c in live.calls] == ["restart"]


async def test_a_dry_run_daemon_may_deny_a_live_execution(
        tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    pb = playbook_dir(tmp_path, GATED)
    did = await _decided_live(settings_factory(playbooks=pb, dry_run=False), vclock, "Gated")
    got, status, live = await _answer(settings_factory(playbooks=pb, dry_run=True), vclock, did, approve=False)
    assert got.outcome == "denied" and status == "denied" and live.calls == []  # denying acts on nothing
