"""`remediator replay --approve all|none`: replay has nobody to ask, so the answer to a playbook's
approval request is simulated, and says so in the report."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from remediator.playbook_files import load_paths
from remediator.replay import Engine, read_events
from remediator.settings import load_settings
from remediator.store.memory import MemoryStore
from tests.payloads import alert_json, payload
from tests.pipeline.test_approval import GATED
from tests.pipeline.test_step_approval import STEPPED
from tests.replay.test_replay import run_cli

FREE = """
name: free
match: {alertname: Free, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
steps: [{action: restart}]
"""


def history(path: Path) -> Path:
    """Two firings of the gated playbook on one target, 5 minutes apart (its cooldown is 1h), and
    one of an ungated playbook."""
    lines = [
        {"received_at": "2026-11-22T10:00:00Z",
         "payload": payload(alert_json({"alertname": "Gated", "app": "web"}, fingerprint="a" * 16))},
        {"received_at": "2026-11-22T10:05:00Z",
         "payload": payload(alert_json({"alertname": "Gated", "app": "web"}, fingerprint="b" * 16,
                                       starts_at="2026-11-22T10:05:00Z"))},
        {"received_at": "2026-11-22T10:06:00Z",
         "payload": payload(alert_json({"alertname": "Free", "app": "api"}, fingerprint="c" * 16,
                                       starts_at="2026-11-22T10:06:00Z"))},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def playbooks(path: Path) -> Path:
    path.mkdir()
    (path / "gated.yaml").write_text((GATED % "").replace("notify: [ops]\n", ""))
    (path / "free.yaml").write_text(FREE)
    return path


@pytest.mark.parametrize(("approve", "expected"), [
    (None, [("gated", "awaiting_approval"), ("gated", "awaiting_approval"), ("free", "executed")]),
    ("none", [("gated", "awaiting_approval"), ("gated", "awaiting_approval"), ("free", "executed")]),
    # approved at once, the first execution's cooldown holds the second back, as it would live
    ("all", [("gated", "executed"), ("gated", "cooldown"), ("free", "executed")]),
])
def test_replay_simulates_the_answer_to_approval_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], approve: str | None, expected: list[tuple[str, str]]
) -> None:
    args = ["replay", str(history(tmp_path / "h.jsonl")), "--playbooks", str(playbooks(tmp_path / "pb")),
            "--format", "json", *(["--approve", approve] if approve else [])]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    doc = json.loads(out)
    assert [(d["playbook"], d["decision"]) for d in doc["decisions"]] == expected
    first = doc["decisions"][0]
    if approve == "all":
        assert first["reason"] == "all guardrails passed; approval simulated (--approve all)"
        assert doc["summary"]["playbooks"]["gated"] == {"executed": 1, "cooldown": 1}
    else:
        assert first["reason"] == "all guardrails passed; approval required, not given (--approve none)"
        assert doc["summary"]["decisions"] == {"awaiting_approval": 2, "executed": 1}


def test_the_table_shows_the_decisions_awaiting_approval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "replay", str(history(tmp_path / "h.jsonl")), "--playbooks",
                             str(playbooks(tmp_path / "pb")))
    assert code == 0, err
    assert out.count("awaiting_approval") >= 2 and "(--approve none)" in out


def test_an_unknown_answer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, "replay", str(tmp_path / "h.jsonl"), "--approve", "some")
    assert exit_.value.code == 2 and "invalid choice: 'some'" in capsys.readouterr().err


@pytest.mark.parametrize(("approve", "execution"), [("none", "awaiting_approval"), ("all", None)])
def test_replay_stops_at_a_steps_approval_unless_told_it_was_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], approve: str, execution: str | None
) -> None:
    """The decision admits the execution (its steps before the gate run, as live); without a simulated
    yes it stops at the gated step, and the report says so."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "stepped.yaml").write_text((STEPPED % "").replace("notify: [ops]\n", ""))
    line = {"received_at": "2026-11-22T10:00:00Z",
            "payload": payload(alert_json({"alertname": "Stepped", "app": "web"}, fingerprint="d" * 16))}
    (tmp_path / "h.jsonl").write_text(json.dumps(line) + "\n")
    code, out, err = run_cli(capsys, "replay", str(tmp_path / "h.jsonl"), "--playbooks", str(tmp_path / "pb"),
                             "--format", "json", "--approve", approve)
    assert code == 0, err
    [decision] = json.loads(out)["decisions"]
    assert (decision["decision"], decision.get("execution")) == ("executed", execution)
    assert [s["action"] for s in decision["steps"]] == ["scale", "restart", "wait_healthy"]


class _Ignore:
    def decision(self, entry: dict[str, Any]) -> None:
        return None

    def alert_done(self, alert_key: str, entries: list[dict[str, Any]]) -> None:
        return None


@pytest.mark.parametrize("playbook", [GATED, STEPPED], ids=["plan", "step"])
async def test_an_execution_nobody_approves_ends_when_its_alert_resolves_and_is_forgotten(
    tmp_path: Path, playbook: str
) -> None:
    """``--approve none`` records no deadline (nobody was asked).  The resolve ends the execution, as
    live; it stayed open instead, kept by the store and read at every later event, so a long replay
    with an approval playbook held every such alert and slowed down quadratically."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text((playbook % "").replace("notify: [ops]\n", ""))
    pset, problems = load_paths([tmp_path / "pb"])
    assert not problems
    name = "Gated" if playbook is GATED else "Stepped"
    lines = []
    for i, app in enumerate(("web", "api", "db")):
        start, end = f"2026-11-22T10:0{i}:00Z", f"2026-11-22T10:0{i}:30Z"
        lines.append({"received_at": start, "payload": payload(
            alert_json({"alertname": name, "app": app}, fingerprint=str(i) * 16, starts_at=start))})
        lines.append({"received_at": end, "payload": payload(alert_json(
            {"alertname": name, "app": app}, fingerprint=str(i) * 16, starts_at=start, status="resolved",
            ends_at=end))})
    events = list(read_events(io.BytesIO("".join(json.dumps(x) + "\n" for x in lines).encode()), "h"))
    async with Engine.open(pset, load_settings(None, env={}, overrides={}), _Ignore(), start=events[0].at) as engine:
        store = engine.intake
        assert isinstance(store, MemoryStore)
        await engine.feed(events[0])
        [did] = [d["id"] for d in await store.list_executions()]
        assert (await store.get_execution(did) or {})["status"] == "awaiting_approval"
        for event in events[1:]:
            await engine.feed(event)
        await engine.finish()
        assert await store.get_execution(did) is None  # ended by its resolve, then forgotten
        assert await store.list_executions() == [] and await store.count_alerts() == 0


async def test_replay_rounds_of_the_execution_queue_are_skipped_only_when_nothing_can_be_found(
    tmp_path: Path,
) -> None:
    """Replay drains after every event; a round of the execution queue that can find nothing (a sweep,
    a ping, a claim) was a tenth of its time, so it is skipped, but only while nothing runs or
    backs off, nothing was made executable since the last round, and no approval has a deadline."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "free.yaml").write_text(FREE)
    pset, problems = load_paths([tmp_path / "pb"])
    assert not problems
    events = list(read_events(io.BytesIO(history(tmp_path / "h.jsonl").read_bytes()), "h"))
    settings = load_settings(None, env={}, overrides={})
    async with Engine.open(pset, settings, _Ignore(), start=events[0].at) as engine:
        queue = engine.worker.queue
        assert not queue.idle  # at first the store may hold executions from before: look once
        await engine.feed(events[-1])  # the ungated playbook's execution runs inside its decision
        assert queue.idle
        queue.wake()  # an execution was made executable (an approval, a resumed run)
        assert not queue.idle
        await engine.worker.drain()
        assert queue.idle
        queue.pipeline.settings = replace(queue.pipeline.settings, approvals="ask")  # deadlines can pass
        assert not queue.idle
