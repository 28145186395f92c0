"""Approval of a single step (issue 16, item 3: ``approval:`` "on a playbook (or a single step)").

The execution is admitted at its decision and runs its steps up to the gated one; there it stops,
``awaiting_approval`` with the step's deadline, its lease ended and its target's lock freed.
Approving takes the lock back (only while no other execution has held the target since) and
the queue runs the rest; denying or nobody answering ends it there, without ``on_failure``.

On the embedded store and guardrails, on a virtual clock; two replicas on real PostgreSQL and
Redis are in ``tests/store/test_approval_replicas.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import Decision, DecisionKind, decision_from_json, execution_id
from remediator.core.guardrails import Request
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import parse_playbooks
from remediator.pipeline import gate_step
from remediator.ports import StepResult
from remediator.runtime import Runtime
from tests.payloads import T0, alert_json, payload
from tests.pipeline.test_approval import A1, CHANNELS, answer, gated_runtime
from tests.pipeline.test_pipeline import received

STEPPED = """
name: stepped
match: {alertname: Stepped, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
guardrails: {cooldown: 1h, lock_ttl: 5m}
notify: [ops]
steps:
  - {action: scale, to: 3}
  - action: restart
    approval: {timeout: 10m%s}
  - {action: wait_healthy}
on_failure: [{action: rollback}]
"""


def stepped_settings(settings_factory: Callable[..., Any], tmp_path: Path, approvers: str = "",
                     **more: Any) -> Any:
    pb = tmp_path / "pb"
    pb.mkdir(exist_ok=True)
    (pb / "stepped.yaml").write_text(STEPPED % (f", approvers: [{approvers}]" if approvers else ""))
    more.setdefault("dry_run", False)
    return settings_factory(playbooks=str(pb), channels=CHANNELS, **more)


def stepped_alert(fingerprint: str = "b1b1b1b1b1b1b1b1", status: str = "firing", app: str = "web",
                  **more: Any) -> dict[str, Any]:
    return payload(alert_json({"alertname": "Stepped", "app": app}, fingerprint=fingerprint, status=status, **more))


#: the same runtime as the playbook gate's tests: embedded store, a recording executor and notifier
stepped_runtime = gated_runtime


async def run_to_gate(rt: Runtime, raw: dict[str, Any]) -> str:
    """Record, decide and run one alert's execution as far as it goes; its id."""
    [r] = received(raw, rt.clock)
    await rt.store.record_alerts([r])
    await rt.worker.drain()
    return execution_id(r.alert.dedup_key, "stepped")


def rival(rt: Runtime, owner: str = "rival") -> Request:
    return Request(owner, "other", "Deployment/shop/web", f"other|{owner}", "shop", rt.clock.now().timestamp())


def results(ex: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["phase"], r["action"], r["status"]) for r in ex["results"]]


def gate_message(ex: dict[str, Any]) -> str:
    [gate] = [r for r in ex["results"] if r["phase"] == "approval"]
    return str(gate["message"])


async def test_the_steps_before_the_gate_run_and_the_rest_once_the_step_is_approved(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await run_to_gate(rt, stepped_alert())
        ex = await rt.store.get_execution(did)
        assert ex is not None and (ex["decision"], ex["status"]) == ("executed", "awaiting_approval")
        assert ex["approval_deadline"] == "2026-11-22T10:10:00Z"
        assert [c[0] for c in cluster.calls] == ["scale"]
        assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "awaiting_approval")]
        assert ex["results"][1]["message"] == "approval asked before step 1 (restart) until 2026-11-22T10:10:00Z"
        assert [(e["journal"], e.get("before")) for e in ex["events"]] == [("approval_requested", "step 1 (restart)")]
        assert notices.events(did) == ["started", "approval_requested"]
        [(_, _, asked)] = [n for n in notices.sent if n[0] == "approval_requested"]
        assert asked["message"] == "approve or deny step 1 (restart) before 2026-11-22T10:10:00Z"
        # nothing holds the target while a human decides: another execution would be admitted
        assert (await rt.guardrails.evaluate(rival(rt))).kind is DecisionKind.EXECUTED
        await rt.worker.queue.drain()  # nobody claims an execution that awaits approval
        assert [c[0] for c in cluster.calls] == ["scale"]

        await vclock.advance(60)
        got = await answer(rt, did, True)
        assert (got.outcome, got.status) == ("approved", "pending")
        assert got.message == "approved: step 1 (restart) runs next"
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded"
        assert [c[0] for c in cluster.calls] == ["scale", "restart", "wait_healthy"]  # scale not run again
        assert [c[2] for c in cluster.calls[1:]] == [None, None]  # the restart is a fresh step, not a re-check
        assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "ok"), ("main", "restart", "ok"),
                               ("main", "wait_healthy", "ok")]
        assert [(e["journal"], e.get("by"), e.get("reason")) for e in ex["events"]] == [
            ("approval_requested", None, None), ("approved", "test a1", None), ("resumed", None, "approved")]
        assert notices.events(did) == ["started", "approval_requested", "succeeded"]
        again = await answer(rt, did, True)
        assert again.outcome == "conflict" and "it is succeeded" in again.message


async def test_denied_or_expired_ends_it_at_the_gate_without_on_failure(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        denied = await run_to_gate(rt, stepped_alert())
        expired = await run_to_gate(rt, stepped_alert(fingerprint="b2b2b2b2b2b2b2b2", app="api"))
        assert [c[0] for c in cluster.calls] == ["scale", "scale"]
        got = await answer(rt, denied, False)
        assert (got.outcome, got.status) == ("denied", "denied")
        await vclock.advance(10 * 60 - 1)
        await rt.worker.queue.drain()
        assert (await rt.store.approval(expired)).status == "awaiting_approval"  # type: ignore[union-attr]
        await vclock.advance(1)
        await rt.worker.queue.drain()
        for did, status, why in ((denied, "denied", "by test a1"),
                                 (expired, "expired", "nobody approved it before its deadline")):
            ex = await rt.store.get_execution(did)
            assert ex is not None and ex["status"] == status
            assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "failed")]  # no longer waiting
            assert gate_message(ex).startswith("approval asked before step 1 (restart) until ")
            assert gate_message(ex).endswith(f"; not approved: {status} ({why})")
            assert notices.events(did) == ["started", "approval_requested", f"approval_{status}"]
        assert [c[0] for c in cluster.calls] == ["scale", "scale"]  # no restart, and no rollback either


async def test_an_approval_after_another_execution_acted_on_the_target_is_refused(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """What that execution did came after this plan: running the rest of it could revert it."""
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await run_to_gate(rt, stepped_alert())
        other = rival(rt)
        assert (await rt.guardrails.admit(other)).admitted
        await rt.guardrails.release(other, succeeded=True)  # it acted, and is done
        await vclock.advance(60)
        got = await answer(rt, did, True)
        assert (got.outcome, got.status, got.decision) == ("refused", "refused", "superseded")
        assert got.message.startswith("another execution has acted on Deployment/shop/web since this one stopped")
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "refused"
        assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "failed")]
        assert "; not approved: refused (another execution has acted on Deployment/shop/web" in gate_message(ex)
        assert notices.events(did) == ["started", "approval_requested", "approval_refused"]
        assert [c[0] for c in cluster.calls] == ["scale"]


async def test_an_approval_while_the_concurrency_limit_is_full_is_not_taken_and_it_keeps_waiting(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """Its slot went with the wait: going on now would run one execution more than ``max_running``.
    Ending it instead would leave it half run, so it keeps waiting, and the approver is told why."""
    settings = stepped_settings(settings_factory, tmp_path, guardrails={"max_running": 1})
    async with stepped_runtime(settings, vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
        busy = Request("busy", "other", "Deployment/shop/api", "other|busy", "shop", rt.clock.now().timestamp())
        assert (await rt.guardrails.admit(busy)).admitted  # the one slot, taken meanwhile
        got = await answer(rt, did, True)
        assert (got.outcome, got.status) == ("conflict", "awaiting_approval")
        assert got.message == ("not approved yet: 1 executions already running, as many as the guardrails allow; "
                               "it still waits: approve again once one has finished")
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "awaiting_approval"
        assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "awaiting_approval")]
        await rt.guardrails.release(busy, succeeded=True)
        assert (await answer(rt, did, True)).outcome == "approved"
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["scale", "restart", "wait_healthy"]


async def test_only_the_steps_approvers_may_answer_and_its_plan_keeps_them(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    settings = stepped_settings(settings_factory, tmp_path, approvers=f"'{A1}'",
                                api={"read_tokens": ["r1"], "admin_tokens": ["a1", "a2"]})
    async with stepped_runtime(settings, vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
        assert (await answer(rt, did, True, token="a2")).outcome == "forbidden"
        assert (await answer(rt, did, False, token="a2")).outcome == "forbidden"
        assert (await answer(rt, did, True, token="a1")).outcome == "approved"
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["scale", "restart", "wait_healthy"]


async def test_it_waits_across_a_restart_and_runs_once_approved_after_it(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    settings = stepped_settings(settings_factory, tmp_path)
    async with stepped_runtime(settings, vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
    async with stepped_runtime(settings, vclock) as (rt, cluster, _notices):
        await rt.pipeline.resume_unfinished()
        await rt.worker.queue.drain()
        assert cluster.calls == []  # the restarted daemon resumes nothing: it waits
        assert (await answer(rt, did, True)).outcome == "approved"
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["restart", "wait_healthy"]
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded"


async def test_an_alert_that_resolves_while_a_step_waits_ends_it_there(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
        await vclock.advance(120)
        await run_to_gate(rt, stepped_alert(status="resolved", ends_at="2026-11-22T10:02:00Z"))
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "resolved_cancelled"
        assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "failed")]
        assert gate_message(ex).endswith("; not approved: resolved_cancelled (the alert resolved before anyone "
                                         "approved it)")
        assert (await answer(rt, did, True)).outcome == "conflict"
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["scale"]


async def test_an_alert_that_resolves_after_the_approval_before_the_step_runs_ends_it_there(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """The approval was for a firing alert: once it resolved, the approved step would remediate what
    is already well, as an approved execution that has not begun would (its resolve came after the
    wait ended, so nothing cancelled it)."""
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
        assert (await answer(rt, did, True)).outcome == "approved"
        await vclock.advance(120)
        await run_to_gate(rt, stepped_alert(status="resolved", ends_at="2026-11-22T10:02:00Z"))
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "resolved_cancelled"
        assert results(ex) == [("main", "scale", "ok"), ("approval", "approval", "ok")]
        assert [c[0] for c in cluster.calls] == ["scale"]


async def test_a_dry_run_stops_at_the_gate_too(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """As an execution of a playbook with ``approval:`` does: a dry run shows what would wait."""
    settings = stepped_settings(settings_factory, tmp_path, dry_run=True)
    async with stepped_runtime(settings, vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["dry_run"] and ex["status"] == "awaiting_approval"
        assert (await answer(rt, did, True)).outcome == "approved"
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "dry_run"
        assert [c[0] for c in cluster.calls] == ["scale", "restart", "wait_healthy"]


def test_the_playbook_format_checks_a_steps_approval() -> None:
    [ok], problems = parse_playbooks(STEPPED % f", approvers: ['{A1}']", "stepped.yaml")
    assert problems == [] and not ok.needs_approval and ok.asks_approval
    gate = ok.steps[1].approval
    assert gate is not None and gate.timeout == 600.0 and gate.approvers == (A1,)
    assert "approval" not in ok.steps[1].params
    _, problems = parse_playbooks(STEPPED % ", approvers: [alice]", "stepped.yaml")
    assert [str(p).split(":")[:2] for p in problems] == [["stepped.yaml", "10"]] and "approvers" in str(problems[0])
    _, problems = parse_playbooks(STEPPED.replace("timeout: 10m", "timeout: 0s") % "", "stepped.yaml")
    assert [str(p) for p in problems] == ["stepped.yaml:10: steps.1.approval.timeout: must be positive"]
    text = STEPPED.replace("[{action: rollback}]", "[{action: rollback, approval: {timeout: 5m}}]") % ""
    _, problems = parse_playbooks(text, "stepped.yaml")
    assert [str(p) for p in problems] == [
        "stepped.yaml:12: on_failure.0.approval: an on_failure step cannot wait for approval (it runs because a "
        "step failed); put approval on the step before it"]
    [off], _ = parse_playbooks(STEPPED.replace("timeout: 10m", "required: false, timeout: 10m") % "", "stepped.yaml")
    assert not off.asks_approval


def test_a_gate_travels_with_the_decision_and_decisions_without_one_read_as_before() -> None:
    [pb], _ = parse_playbooks(STEPPED % "", "stepped.yaml")
    plan = make_plan(pb, Alert.from_json(alert_json({"alertname": "Stepped", "app": "web"})), global_dry_run=False)
    assert isinstance(plan, Plan)
    assert [s.approval is not None for s in plan.steps] == [False, True, False]
    assert "approval" not in plan.steps[0].to_json() and plan.steps[1].to_json()["approval"]["timeout"] == 600.0
    decision = Decision("k", "f", "stepped", "v", DecisionKind.EXECUTED, "r", T0, steps=plan.steps)
    assert decision_from_json(decision.to_json()).steps == plan.steps


async def test_an_approval_cut_short_after_recording_the_gate_is_answered_again(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """The replica approving died between the gate's record and the status change: the execution
    still waits, for the same step, and the next answer approves it (its own lock taken back, not
    an admission its own cooldown would refuse)."""
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, _notices):
        did = await run_to_gate(rt, stepped_alert())
        decision = await rt.store.decision(did)
        assert decision is not None
        gated = decision.steps[1]
        now = vclock.now()
        await rt.store.record_step(did, gate_step(gated), StepResult("ok", "approved by the dead"), started=now,
                                   finished=now)
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        got = await answer(rt, did, True)
        assert (got.outcome, got.message) == ("approved", "approved: step 1 (restart) runs next")
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["scale", "restart", "wait_healthy"]


async def test_an_admitted_execution_awaiting_approval_with_no_gate_recorded_is_not_answered(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """The gate's record is written before the wait, so only a store edited by hand (or a bug)
    holds an admitted execution that awaits approval before no step: neither approving nor
    denying guesses which step it meant; the answer says what is wrong."""
    async with stepped_runtime(stepped_settings(settings_factory, tmp_path), vclock) as (rt, cluster, _notices):
        recorded = await rt.store.decision(await run_to_gate(rt, stepped_alert()))
        assert recorded is not None
        did = execution_id("hand-made|key", "stepped")
        await rt.store.record_decision(dataclasses.replace(recorded, alert_key="hand-made|key", execution_id=did))
        assert await rt.store.claim_execution(did, "hand", 60)
        now = vclock.now()
        await rt.store.record_step(did, recorded.steps[0], StepResult("ok", "scaled"), started=now, finished=now)
        assert await rt.store.await_approval(did, "hand", now + timedelta(minutes=10))  # and no gate record
        for approve in (True, False):
            got = await answer(rt, did, approve)
            assert (got.outcome, got.status) == ("conflict", "awaiting_approval")
            assert got.message == f"execution {did} awaits approval before no step of its plan"
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["scale"]  # only the real execution's first step


async def test_a_playbook_that_asks_before_it_runs_and_before_a_step_waits_twice(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """Its decision stays ``awaiting_approval``; the second wait is the step's (its rules, no second
    admission, which the execution's own cooldown would refuse)."""
    settings = stepped_settings(settings_factory, tmp_path)
    text = (tmp_path / "pb" / "stepped.yaml").read_text()
    (tmp_path / "pb" / "stepped.yaml").write_text(text.replace("notify: [ops]", "notify: [ops]\napproval: {}"))
    async with stepped_runtime(settings, vclock) as (rt, cluster, notices):
        did = await run_to_gate(rt, stepped_alert())
        assert cluster.calls == []
        assert (await answer(rt, did, True)).message == "approved: all guardrails passed"
        await rt.worker.queue.drain()
        assert [c[0] for c in cluster.calls] == ["scale"]
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        assert (await answer(rt, did, True)).message == "approved: step 1 (restart) runs next"
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and (ex["decision"], ex["status"]) == ("awaiting_approval", "succeeded")
        assert [c[0] for c in cluster.calls] == ["scale", "restart", "wait_healthy"]
        assert notices.events(did) == ["approval_requested", "started", "approval_requested", "succeeded"]
