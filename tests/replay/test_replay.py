"""`remediator replay`: a crafted history with known answers, live-vs-replay agreement, input errors."""

from __future__ import annotations

import functools
import io
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.cli import main
from remediator.clock import VirtualClock
from remediator.core.alerts import parse_time
from remediator.core.decisions import PlannedStep
from remediator.playbook_files import load_paths
from remediator.ports import StepContext, StepResult
from remediator.replay import Entry, read_events, replay
from remediator.runtime import RUNTIME
from remediator.store.tools import export_alerts
from tests.payloads import T0, alert_json
from tests.replay.history import EXPECTED, HISTORY, at, firing, summarise, write_history, write_playbooks
from tests.tokens import ADMIN

AUTH = {"Authorization": "Bearer t1"}


class _Collect:
    """A listener keeping every decision's entry in ``into``."""

    def __init__(self, into: list[Entry]) -> None:
        self.into = into

    def decision(self, entry: Entry) -> None:
        self.into.append(entry)

    def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
        return None


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_crafted_history_yields_exactly_the_known_decisions(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    pb, history = write_playbooks(tmp_path / "pb"), write_history(tmp_path / "history.jsonl")
    code, out, err = run_cli(capsys, "replay", str(history), "--playbooks", str(pb), "--format", "json")
    assert code == 0, err
    assert err == ""  # no progress bar when stderr is not a terminal, no log noise
    doc = json.loads(out)
    assert [summarise(e) for e in doc["decisions"]] == EXPECTED
    first = doc["decisions"][0]
    assert first["steps"] == [{"action": "resize_pool",
                               "params": {"container": "app", "env": "POOL_SIZE", "by": 10, "max": 50}}]
    assert first["fingerprint"] and first["dry_run"] is True and first["reason"] == "all guardrails passed"
    # orders ran at 10:00 and 10:06: the next fits when the first leaves the hour
    assert doc["decisions"][4]["reason"] == (
        "rate limited: 2 of 2 executions in the last 1h; next allowed at 2026-11-22T11:00:00Z"
    )
    summary = doc["summary"]
    assert summary["alerts"] == 15  # the redelivered duplicate included
    assert summary["decisions"] == {"executed": 6, "cooldown": 1, "rate_limited": 1, "not_allowed": 1,
                                    "no_match": 2, "resolved_cancelled": 1, "paused": 2}
    assert summary["playbooks"] == {
        "pool": {"executed": 4, "cooldown": 1, "rate_limited": 1, "not_allowed": 1, "paused": 1},
        "restart-when-down": {"executed": 2, "paused": 1, "resolved_cancelled": 1},
    }
    assert summary["targets"]["Deployment/shop/orders"] == {"executed": 3, "cooldown": 1, "rate_limited": 1}
    assert summary["from"] == at(0) and summary["to"] == at(67)


def test_table_output_has_a_row_per_decision_and_the_summary(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pb, history = write_playbooks(tmp_path / "pb"), write_history(tmp_path / "history.jsonl")
    code, out, _ = run_cli(capsys, "replay", str(history), "--playbooks", str(pb))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["AT", "DECISION", "PLAYBOOK", "TARGET"]
    rows = lines[1:1 + len(EXPECTED)]
    assert [r.split()[1] for r in rows] == [e[4] for e in EXPECTED]
    assert rows[0].split()[:4] == [at(0), "executed", "pool", "Deployment/shop/orders"]
    assert rows[0].endswith("resize_pool(container=app,env=POOL_SIZE,by=10,max=50)")
    assert "15 alert(s), 14 decision(s): 6 executed, 2 no_match, 2 paused" in out
    code, out, _ = run_cli(capsys, "replay", str(history), "--playbooks", str(pb), "--summary")
    assert out.startswith("15 alert(s), 14 decision(s)")


async def test_live_daemon_and_replay_decide_identically(tmp_path: Path, settings_factory: Callable[..., Any],
                                                         vclock: VirtualClock) -> None:
    pb = write_playbooks(tmp_path / "pb")
    by_minute: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for minute, line in HISTORY:
        by_minute[minute].append(line)
    live: list[Any] = []

    class Succeeds:  # a live daemon whose cluster always obliges: replay shows what live would do
        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            return StepResult("ok", f"{step.action} done")

    app = create_app(settings_factory(playbooks=str(pb), dry_run=False), clock=vclock,
                     executors=(Succeeds(), Succeeds()), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        decide = rt.pipeline.decide

        async def recording(received: Any, **kw: Any) -> Any:
            outcome = await decide(received, **kw)
            live.extend(outcome.decisions)
            return outcome

        rt.pipeline.decide = recording  # type: ignore[method-assign]
        for minute in range(0, 90):  # the worker looks once a minute, and after every delivery
            vclock.set(T0 + timedelta(minutes=minute))
            await rt.worker.drain()
            for line in by_minute.get(minute, []):
                if "control" in line:
                    r = await client.post(f"/api/v1/{line['control']}", headers=ADMIN)
                else:
                    r = await client.post("/webhooks/alertmanager", json=line, headers=AUTH)
                assert r.status == 200, await r.text()
                await rt.worker.drain()
        recorded = await rt.store.list_decisions()
        exported = io.StringIO()
        await export_alerts(rt.store, T0, T0 + timedelta(hours=3), exported)

    pset, problems = load_paths([pb])
    assert not problems
    replayed: list[Entry] = []
    Collect = functools.partial(_Collect, replayed)

    with write_history(tmp_path / "history.jsonl").open("rb") as fh:
        await replay(read_events(fh, "history.jsonl"), [pset], settings_factory(playbooks=str(pb)), [Collect()])

    def norm(d: dict[str, Any]) -> tuple[Any, ...]:
        steps = [(s["action"], s["params"]) for s in d["steps"]]
        return d["alert"], d["playbook"] or None, d["at"], d["decision"], d["reason"], d["target"], steps

    live_all = [norm(d.to_json()) for d in live]
    assert [norm(e) for e in replayed] == live_all
    assert len(live_all) == len(EXPECTED)
    # and what the daemon recorded in its audit store is what replay reports (no_match is never recorded)
    assert [norm(d) for d in recorded] == [norm(e) for e in replayed if e["decision"] != "no_match"]

    # the daemon's own export replays to the same decisions: the kill switch's pauses and resumes are in it
    lines = [json.loads(x) for x in exported.getvalue().splitlines()]
    assert sum("payload" in x for x in lines) == 14  # the duplicate delivery was never recorded
    assert [(parse_time(x["at"]), x["control"]) for x in lines if "control" in x] == [
        (parse_time(line["at"]), line["control"]) for _, line in HISTORY if "control" in line]
    export = tmp_path / "export.jsonl"
    export.write_text(exported.getvalue())
    replayed.clear()
    with export.open("rb") as fh:
        await replay(read_events(fh, str(export)), [pset], settings_factory(playbooks=str(pb)), [Collect()])
    assert [norm(e) for e in replayed] == live_all


def test_wrapped_lines_take_their_time_from_received_at(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pb = write_playbooks(tmp_path / "pb")
    body = {"version": "4", "status": "firing", "alerts": [firing("PoolHigh", "orders", 0)]}
    lines = [
        {"received_at": at(3), "payload": body, "id": 7},  # an export line: extra keys are ignored
        {"received_at": at(4), "payload": {**body, "alerts": [firing("PoolHigh", "orders", 4)]}},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    code, out, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb), "--format", "json")
    assert code == 0, err
    assert [(d["at"], d["decision"]) for d in json.loads(out)["decisions"]] == [(at(3), "executed"),
                                                                                (at(4), "cooldown")]


def test_slightly_out_of_order_input_is_sorted_and_too_far_back_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pb = write_playbooks(tmp_path / "pb")
    path = tmp_path / "h.jsonl"
    order = [0, 4, 2, 30, 1]
    path.write_text("".join(json.dumps({"received_at": at(m), "payload": {
        "version": "4", "status": "firing", "alerts": [firing("PoolHigh", f"d{m}", m)]}}) + "\n" for m in order))
    code, out, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb), "--format", "json")
    assert code == 1
    assert err.strip() == (
        f"{path}:5: event at {at(1)} is earlier than {at(4)}, already replayed: the input may be out of order "
        "by at most 300s (sort it, or widen the window)"
    )
    code, out, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb), "--format", "json",
                             "--reorder-window", "3600")
    assert code == 0, err
    assert [d["at"] for d in json.loads(out)["decisions"]] == [at(m) for m in sorted(order)]


def test_a_bare_payload_re_sent_hours_after_its_alerts_started_is_replayed_not_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A raw capture of webhook bodies holds Alertmanager's repeat_interval re-sends: the same
    still-firing group, its newest alert hours old.  A bare payload's time is only the earliest it
    can have been sent, so such a line comes at the time already replayed (a duplicate, as live),
    where it stopped the whole replay; a wrapped line's received_at is exact and still checked."""
    pb = write_playbooks(tmp_path / "pb")
    path = tmp_path / "h.jsonl"
    bodies = [[firing("PoolHigh", "orders", 0)], [firing("PoolHigh", "cart", 30)],
              [firing("PoolHigh", "web", 239)], [firing("PoolHigh", "orders", 0)]]  # re-sent after 4h
    path.write_text("".join(json.dumps({"version": "4", "status": "firing", "alerts": a}) + "\n" for a in bodies))
    code, out, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["alerts"] == 4
    assert [(d["at"], d["decision"]) for d in doc["decisions"]] == [
        (at(0), "executed"), (at(30), "executed"), (at(239), "executed")]  # the re-send: a duplicate
    with path.open("rb") as fh:
        events = list(read_events(fh, str(path)))
    # at the earliest time it can be given now: the last one released (line 3 still waits in the window)
    assert [e.line for e in events] == [1, 2, 4, 3]
    assert events[2].at == events[2].alerts[0].received_at == parse_time(at(30))
    wrapped = tmp_path / "wrapped.jsonl"
    wrapped.write_text("".join(x + "\n" for x in path.read_text().splitlines()[:3]) + json.dumps(
        {"received_at": at(0), "payload": {"version": "4", "status": "firing", "alerts": bodies[0]}}) + "\n")
    code, _, err = run_cli(capsys, "replay", str(wrapped), "--playbooks", str(pb))
    assert code == 1 and err.startswith(f"{wrapped}:4: event at {at(0)} is earlier than {at(30)}"), err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"version": "4"', "{}"], "1: not valid JSON: Expecting ',' delimiter at column 16"),
        (["{}", "[1]"], "1: body: 'version' is a required property"),
        ([json.dumps({"received_at": at(0), "payload": {"version": "4", "status": "firing", "alerts": []}}), "[1]"],
         "2: expected a JSON object (a webhook payload, a wrapped payload or a control line)"),
        ([json.dumps({"at": at(0), "control": "stop"})], "1: control must be 'pause' or 'resume', not 'stop'"),
        ([json.dumps({"control": "pause"})], '1: a control line needs "at": an RFC 3339 time'),
        ([json.dumps({"received_at": "yesterday", "payload": {"version": "4", "status": "firing", "alerts": []}})],
         "1: invalid RFC 3339 timestamp 'yesterday'"),
        ([b"\xff\xfe".decode("latin-1")], "1: not valid"),
    ],
)
def test_malformed_lines_fail_with_path_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 lines: list[str], message: str) -> None:
    pb = write_playbooks(tmp_path / "pb")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    code, _, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb))
    assert code == 1
    assert err.startswith(f"{path}:{message}"), err


def test_unreadable_input_and_invalid_playbooks_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = write_playbooks(tmp_path / "pb")
    code, _, err = run_cli(capsys, "replay", str(tmp_path / "missing.jsonl"), "--playbooks", str(pb))
    assert (code, err.strip()) == (1, f"{tmp_path / 'missing.jsonl'}:1: cannot read: No such file or directory")
    bad = write_playbooks(tmp_path / "bad", "name: x\nmatch: {alertname: X}\n")
    history = write_history(tmp_path / "h.jsonl")
    code, _, err = run_cli(capsys, "replay", str(history), "--playbooks", str(bad))
    assert code == 1 and err.startswith(f"{bad / 'playbooks.yaml'}:1: ")


def test_progress_is_drawn_only_on_a_terminal() -> None:
    from remediator.replay import Event
    from remediator.replay_report import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, drawn in ((io.StringIO(), False), (Terminal(), True)):
        progress = Progress(100, lambda: 50, stream, delay=0)
        progress(Event(T0, 1))
        progress.close()
        assert ("50.0%" in stream.getvalue()) is drawn


TRIAL = """
name: trial
match: {alertname: Slow, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
guardrails: {dry_run: true, cooldown: 30m}
steps: [{action: restart}]
---
name: live
match: {alertname: Down, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
steps: [{action: restart}]
"""


async def test_a_playbook_on_trial_only_reads_the_guardrails_as_it_did_live(
    tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    """A playbook's own dry_run (on trial beside live ones) takes nothing from the guardrails live:
    no cooldown, no budget.  Replay, which runs every playbook dry, had it consume them, so the
    trial's own cooldown and the live playbook's budget answered what they never did live."""
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "p.yaml").write_text(TRIAL)
    pset, problems = load_paths([tmp_path / "pb"])
    assert not problems
    lines = [firing("Slow", "cart", 0), {**firing("Slow", "cart", 1), "labels": {
        **firing("Slow", "cart", 1)["labels"], "pod": "b"}}, firing("Down", "orders", 2), firing("Down", "web", 3)]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"received_at": at(i), "payload": {
        "version": "4", "status": "firing", "alerts": [a]}}) + "\n" for i, a in enumerate(lines)))
    replayed: list[Entry] = []
    settings = settings_factory(playbooks=str(tmp_path / "pb"),
                                guardrails={"budgets": [{"scope": "*", "max": 1, "per": "1h"}]})
    with path.open("rb") as fh:
        await replay(read_events(fh, str(path)), [pset], settings, [_Collect(replayed)])
    assert [(e["playbook"], e["target"]["name"], e["decision"]) for e in replayed] == [
        ("trial", "cart", "executed"), ("trial", "cart", "executed"),  # no cooldown taken by the first
        ("live", "orders", "executed"),  # the budget untouched by the trial
        ("live", "web", "budget_exhausted"),  # the live playbook's own run still counts
    ]


def test_an_alert_the_webhook_refuses_alone_is_told_and_the_rest_of_its_delivery_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Live, one bad alert no longer costs its whole delivery: the webhook takes the others and
    refuses it alone.  Replay refused the whole line and stopped the whole history there."""
    pb = write_playbooks(tmp_path / "pb")
    bad = {**firing("PoolHigh", "cart", 0), "startsAt": "2026-12-31T23:59:60Z"}
    lines = [{"received_at": at(0), "payload": {"version": "4", "status": "firing",
                                                "alerts": [firing("PoolHigh", "orders", 0), bad]}},
             {"received_at": at(1), "payload": {"version": "4", "status": "firing", "alerts": [bad]}}]
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(lines[0]) + "\n")
    code, out, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb), "--format", "json")
    assert code == 0, err
    assert err == (f"{path}:1: body.alerts[1].startsAt: invalid timestamp '2026-12-31T23:59:60Z': "
                   "second must be in 0..59\n")
    doc = json.loads(out)
    assert [(d["target"]["name"], d["decision"]) for d in doc["decisions"]] == [("orders", "executed")]
    assert doc["summary"]["alerts"] == 1 and "warnings" not in doc  # the CLI's document is as it was
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))  # a delivery with nothing to take: refused whole
    code, out, err = run_cli(capsys, "replay", str(path), "--playbooks", str(pb), "--format", "json")
    assert code == 1 and err.endswith(f"{path}:2: body.alerts[0].startsAt: invalid timestamp "
                                      "'2026-12-31T23:59:60Z': second must be in 0..59\n"), err


SAME_INSTANT = """\
name: bounce
match: {alertname: Bounce, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
steps: [{action: restart}]
"""


async def test_executions_decided_at_one_instant_hold_their_locks_and_slots_as_live(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """Steps take time: live, an execution holds its target's lock and a running slot from its
    admission to its end, so the alerts of one notification (decided together, before any of them
    ran) see each other's.  Replay plans each execution as its alert is decided, and freed both
    there and then: two alerts for one target in one notification were ``executed, executed``
    (live: ``executed, locked``), and ``max_running`` never bound.  Now they are held until the
    virtual clock moves on: the same decisions, live and replayed."""
    pb = write_playbooks(tmp_path / "pb", SAME_INSTANT)

    def alert(deployment: str, pod: str, minute: int) -> dict[str, Any]:
        return alert_json({"alertname": "Bounce", "namespace": "shop", "deployment": deployment, "pod": pod},
                          starts_at=at(minute))

    deliveries = [
        (0, [alert("web", "web-1", 0), alert("web", "web-2", 0)]),  # one target, twice in one notification
        (1, [alert("a", "a-1", 1), alert("b", "b-1", 1), alert("c", "c-1", 1)]),  # three targets, max_running 2
        (2, [alert("web", "web-3", 2)]),  # a minute on: the lock and slots were freed
    ]
    overrides = {"playbooks": str(pb), "guardrails": {"max_running": 2}}
    live: list[Any] = []

    class Succeeds:
        async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
            return StepResult("ok", f"{step.action} done")

    app = create_app(settings_factory(**overrides, dry_run=False), clock=vclock,
                     executors=(Succeeds(), Succeeds()), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        for minute, alerts in deliveries:
            vclock.set(T0 + timedelta(minutes=minute))
            r = await client.post("/webhooks/alertmanager", headers=AUTH,
                                  json={"version": "4", "status": "firing", "alerts": alerts})
            assert r.status == 200, await r.text()
            await rt.worker.drain()
        live = [(d["at"], d["decision"], (d.get("target") or {}).get("name")) for d in
                sorted(await rt.store.list_decisions(), key=lambda d: (d["at"], d["alert"]))]

    history = tmp_path / "h.jsonl"
    history.write_text("".join(json.dumps({"received_at": at(m), "payload": {
        "version": "4", "status": "firing", "alerts": alerts}}) + "\n" for m, alerts in deliveries))
    pset, problems = load_paths([pb])
    assert not problems
    replayed: list[Entry] = []
    with history.open("rb") as fh:
        await replay(read_events(fh, "h.jsonl"), [pset], settings_factory(**overrides), [_Collect(replayed)])
    got = [(e["at"], e["decision"], (e.get("target") or {}).get("name")) for e in
           sorted(replayed, key=lambda e: (e["at"], e["alert"]))]
    assert sorted(x[1] for x in live if x[0] == at(0)) == ["executed", "locked"]
    assert sorted(x[1] for x in live if x[0] == at(1)) == ["budget_exhausted", "executed", "executed"]
    assert got == live
