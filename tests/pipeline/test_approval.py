"""The approval gate (issue 16, item 3): an execution of a playbook with ``approval:`` waits for a
human, who approves (the guardrails are re-checked then) or denies it; nobody answering expires it.

On the embedded store and guardrails, on a virtual clock; the same paths with two replicas on
real PostgreSQL and Redis are in ``tests/store/test_approval_replicas.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.decisions import Decision, DecisionKind, execution_id
from remediator.core.guardrails import Check, Request
from remediator.core.playbooks import parse_playbooks
from remediator.runtime import RUNTIME, Runtime, open_runtime
from tests.payloads import T0, alert_json, payload
from tests.pipeline.test_pipeline import Recorder, received
from tests.tokens import ADMIN, READ

GATED = """
name: gated
match: {alertname: Gated, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
approval: {required: true, timeout: 15m%s}
guardrails: {cooldown: 1h}
notify: [ops]
steps: [{action: restart}]
"""
CHANNELS = {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}
#: what playbooks list to let the admin token ``a1`` (tests/tokens.py) approve
A1 = "sha256:" + hashlib.sha256(b"a1").hexdigest()[:12]


class Notices:
    """A notifier that keeps what it was asked to send: (event, execution id, detail)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Mapping[str, Any]]] = []

    async def notify(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        self.sent.append((event, decision.execution_id or "", detail))

    def events(self, did: str) -> list[str]:
        return [e for e, d, _ in self.sent if d == did]


def gated_settings(settings_factory: Callable[..., Any], tmp_path: Path, approvers: str = "", **more: Any) -> Any:
    pb = tmp_path / "pb"
    pb.mkdir(exist_ok=True)
    (pb / "gated.yaml").write_text(GATED % (f", approvers: [{approvers}]" if approvers else ""))
    return settings_factory(playbooks=str(pb), dry_run=False, channels=CHANNELS, **more)


def gated_alert(app: str = "web", fingerprint: str = "a1a1a1a1a1a1a1a1", starts_at: str = "2026-11-22T10:00:00Z"
                ) -> dict[str, Any]:
    return payload(alert_json({"alertname": "Gated", "app": app}, fingerprint=fingerprint, starts_at=starts_at))


async def decide(rt: Runtime, raw: dict[str, Any]) -> str:
    """Record and decide one alert; the id of its (awaiting) execution."""
    [r] = received(raw, rt.clock)
    await rt.store.record_alerts([r])
    await rt.worker.drain()
    return execution_id(r.alert.dedup_key, "gated")


@contextlib.asynccontextmanager
async def gated_runtime(settings: Any, clock: VirtualClock) -> AsyncIterator[tuple[Runtime, Recorder, Notices]]:
    cluster, notices = Recorder(), Notices()
    async with open_runtime(settings, clock=clock, executors=(cluster, cluster), notifier=notices,
                            start_worker=False) as rt:
        yield rt, cluster, notices


async def resolve(rt: Runtime, ends_at: str) -> None:
    """Record and decide the resolve of :func:`gated_alert`."""
    resolved = alert_json({"alertname": "Gated", "app": "web"}, fingerprint="a1a1a1a1a1a1a1a1", status="resolved",
                          ends_at=ends_at)
    [r] = received(payload(resolved), rt.clock)
    await rt.store.record_alerts([r])
    await rt.worker.drain()


async def answer(rt: Runtime, did: str, approve: bool, token: str = "a1") -> Any:
    return await rt.pipeline.answer_approval(did, approve=approve, by=f"test {token}",
                                             token_sha256=hashlib.sha256(token.encode()).hexdigest())


# -- the pipeline, on a virtual clock ---------------------------------------------------


async def test_a_gated_execution_waits_and_runs_once_approved(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        await rt.worker.queue.drain()  # nothing claims an execution that awaits approval
        ex = await rt.store.get_execution(did)
        assert ex is not None and cluster.calls == []
        assert (ex["decision"], ex["status"]) == ("awaiting_approval", "awaiting_approval")
        assert ex["approval_deadline"] == "2026-11-22T10:15:00Z"
        assert "awaiting approval until 2026-11-22T10:15:00Z" in ex["reason"]
        [(event, _, detail)] = [n for n in notices.sent if n[1] == did]
        assert event == "approval_requested" and detail["channels"] == ("ops",)
        # the guardrails were read, not taken: the target is neither locked nor in cooldown
        assert await rt.store.unfinished(did) is False

        await vclock.advance(60)
        got = await answer(rt, did, True)
        assert (got.outcome, got.status) == ("approved", "pending")
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded"
        assert [c[:2] for c in cluster.calls] == [("restart", "Deployment/shop/web")]
        assert [(e["journal"], e["by"]) for e in ex["events"]] == [("approved", "test a1")]
        assert notices.events(did) == ["approval_requested", "started", "succeeded"]
        again = await answer(rt, did, True)
        assert again.outcome == "conflict" and "not awaiting approval: it is succeeded" in again.message


async def test_denied_runs_nothing_and_is_notified(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        got = await answer(rt, did, False)
        assert (got.outcome, got.status) == ("denied", "denied")
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "denied" and ex["finished_at"] == "2026-11-22T10:00:00Z"
        assert [(e["journal"], e["by"]) for e in ex["events"]] == [("denied", "test a1")]
        assert cluster.calls == [] and notices.events(did) == ["approval_requested", "approval_denied"]
        late = await answer(rt, did, True)
        assert (late.outcome, late.status) == ("conflict", "denied")
        assert (await answer(rt, "ex-nope", True)).outcome == "not_found"


async def test_nobody_answering_expires_it_at_its_deadline(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        await vclock.advance(15 * 60 - 1)
        await rt.worker.queue.fill()
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        await vclock.advance(1)
        # past the deadline, an answer is refused even before the sweep has run
        assert (await answer(rt, did, True)).message.endswith("its approval expired at 2026-11-22T10:15:00Z")
        await rt.worker.queue.fill()
        ex = await rt.store.get_execution(did)
        assert ex is not None and (ex["status"], ex["finished_at"]) == ("expired", "2026-11-22T10:15:00Z")
        assert [e["journal"] for e in ex["events"]] == ["expired"]
        assert notices.events(did) == ["approval_requested", "approval_expired"]
        await rt.worker.queue.fill()  # expired once, notified once
        assert notices.events(did) == ["approval_requested", "approval_expired"] and cluster.calls == []


async def test_the_sweep_runs_at_most_once_per_poll_interval(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """Every decision and every finished execution starts a queue round; expiring is not asked each time."""
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, _cluster, _notices):
        asked: list[Any] = []
        real = rt.store.expire_approvals

        async def counted(now: Any, **kw: Any) -> list[str]:
            asked.append(now)
            return await real(now, **kw)

        rt.store.expire_approvals = counted  # type: ignore[method-assign]
        for _ in range(3):
            await rt.worker.queue.fill()
        await vclock.advance(rt.settings.worker.poll_interval)
        await rt.worker.queue.fill()
        await rt.worker.queue.fill()
        assert asked == [T0, T0 + timedelta(seconds=rt.settings.worker.poll_interval)]


async def test_an_alert_that_resolves_while_waiting_leaves_nothing_to_approve(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        await vclock.advance(120)
        await resolve(rt, "2026-11-22T10:02:00Z")
        ex = await rt.store.get_execution(did)
        assert ex is not None and (ex["status"], ex["finished_at"]) == ("resolved_cancelled", "2026-11-22T10:02:00Z")
        assert [(e["journal"], e["reason"]) for e in ex["events"]] == [
            ("resolved_cancelled", "the alert resolved before anyone approved it")]
        late = await answer(rt, did, True)
        assert late.outcome == "conflict" and "it is resolved_cancelled" in late.message
        assert cluster.calls == [] and notices.events(did) == ["approval_requested"]


async def test_an_approval_after_another_execution_left_a_cooldown_is_refused_with_the_reason(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        first = await decide(rt, gated_alert(fingerprint="f1f1f1f1f1f1f1f1"))
        await vclock.advance(30)
        second = await decide(rt, gated_alert(fingerprint="f2f2f2f2f2f2f2f2", starts_at="2026-11-22T10:00:30Z"))
        # both wait: neither decision took the cooldown the other would have met
        assert {(await rt.store.approval(d)).status for d in (first, second)} == {"awaiting_approval"}  # type: ignore[union-attr]
        assert (await answer(rt, second, True)).outcome == "approved"
        await rt.worker.queue.drain()
        await vclock.advance(60)
        got = await answer(rt, first, True)
        assert (got.outcome, got.status, got.decision) == ("refused", "refused", "cooldown")
        assert got.message.startswith("in cooldown until 2026-11-22T11:00:30Z")
        ex = await rt.store.get_execution(first)
        assert ex is not None and ex["status"] == "refused"
        [event] = ex["events"]
        assert (event["journal"], event["verdict"], event["reason"]) == ("refused", "cooldown", got.message)
        assert notices.events(first) == ["approval_requested", "approval_refused"]
        assert [c[0] for c in cluster.calls] == ["restart"]  # the second's only


async def test_only_listed_approvers_may_answer(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    settings = gated_settings(settings_factory, tmp_path, approvers=f"'{A1}'",
                              api={"read_tokens": ["r1"], "admin_tokens": ["a1", "a2"]})
    async with gated_runtime(settings, vclock) as (rt, _cluster, _notices):
        did = await decide(rt, gated_alert())
        assert (await answer(rt, did, True, token="a2")).outcome == "forbidden"
        assert (await answer(rt, did, False, token="a2")).outcome == "forbidden"
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        assert (await answer(rt, did, True, token="a1")).outcome == "approved"


async def test_an_approval_whose_claim_is_held_is_answered_by_its_holder_only(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """A claim left by an answer cut short (its replica died) blocks others until its lease ends."""
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, _cluster, _notices):
        did = await decide(rt, gated_alert())
        assert await rt.store.claim_approval(did, "dead-replica", 300)
        held = await answer(rt, did, True)
        assert held.outcome == "conflict" and "another request" in held.message
        await vclock.advance(301)
        assert (await answer(rt, did, True)).outcome == "approved"


def test_the_playbook_format_checks_approval() -> None:
    ok, problems = parse_playbooks(GATED % f", approvers: ['{A1}']", "gated.yaml")
    assert problems == [] and ok[0].approval is not None and ok[0].approval.timeout == 900.0
    assert ok[0].needs_approval and ok[0].approval.allows(hashlib.sha256(b"a1").hexdigest())
    _, problems = parse_playbooks(GATED % ", approvers: [alice]", "gated.yaml")
    assert [str(p).split(":")[:2] for p in problems] == [["gated.yaml", "5"]] and "approvers" in str(problems[0])
    _, problems = parse_playbooks(GATED.replace("timeout: 15m", "timeout: 0s") % "", "gated.yaml")
    assert [str(p) for p in problems] == ["gated.yaml:5: approval.timeout: must be positive"]
    [off], _ = parse_playbooks(GATED.replace("required: true", "required: false") % "", "gated.yaml")
    assert not off.needs_approval


async def test_a_playbook_with_approval_not_required_runs_at_once(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    settings = gated_settings(settings_factory, tmp_path)
    (tmp_path / "pb" / "gated.yaml").write_text((GATED % "").replace("required: true", "required: false"))
    async with gated_runtime(settings, vclock) as (rt, cluster, _notices):
        did = await decide(rt, gated_alert())
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "succeeded" and "approval_deadline" not in ex
        assert [c[0] for c in cluster.calls] == ["restart"]


async def test_an_execution_whose_playbook_was_removed_can_be_denied_but_not_approved(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """Approving runs the playbook's steps under its guardrails, which a reload took away: refused, and
    the execution still waits for a denial or its deadline; denying needs nothing of the playbook."""
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        (tmp_path / "pb" / "gated.yaml").write_text((GATED % "").replace("name: gated", "name: other"))
        assert rt.playbooks.reload() and [p.name for p in rt.playbooks().playbooks] == ["other"]

        got = await answer(rt, did, True)
        assert (got.outcome, got.status) == ("conflict", "awaiting_approval")
        assert got.message == "playbook gated is no longer loaded: deny the execution or let it expire"
        denied = await answer(rt, did, False)
        assert (denied.outcome, denied.status) == ("denied", "denied")
        await rt.worker.queue.drain()
        assert cluster.calls == [] and notices.events(did) == ["approval_requested", "approval_denied"]


async def test_approving_a_dry_run_plans_it_and_takes_nothing_from_the_guardrails(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """A dry-run playbook waits for approval too; approved, it is planned by the dry executor
    alone, and (dry runs not consuming guardrails in the daemon) leaves no cooldown behind."""
    settings = gated_settings(settings_factory, tmp_path)
    (tmp_path / "pb" / "gated.yaml").write_text((GATED % "").replace("{cooldown: 1h}", "{cooldown: 1h, dry_run: true}"))
    live, dry, notices = Recorder(), Recorder(), Notices()
    async with open_runtime(settings, clock=vclock, executors=(live, dry), notifier=notices,
                            start_worker=False) as rt:
        first = await decide(rt, gated_alert(fingerprint="f1f1f1f1f1f1f1f1"))
        await vclock.advance(30)
        second = await decide(rt, gated_alert(fingerprint="f2f2f2f2f2f2f2f2", starts_at="2026-11-22T10:00:30Z"))
        for did in (first, second):
            assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
            got = await answer(rt, did, True)
            assert (got.outcome, got.status) == ("approved", "pending")  # not refused for a cooldown
            await rt.worker.queue.drain()
            ex = await rt.store.get_execution(did)
            assert ex is not None and (ex["status"], ex["dry_run"]) == ("dry_run", True)
        assert live.calls == [] and [c[:2] for c in dry.calls] == [("restart", "Deployment/shop/web")] * 2
        assert notices.events(first) == ["approval_requested", "started", "dry_run"]


# -- the HTTP endpoints -------------------------------------------------------------


@pytest.fixture
async def client(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> AsyncIterator[TestClient[Any, Any]]:
    cluster = Recorder()
    app = create_app(gated_settings(settings_factory, tmp_path), clock=vclock, executors=(cluster, cluster),
                     notifier=Notices(), start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_the_endpoints_need_an_admin_token_and_answer_json(client: TestClient[Any, Any]) -> None:
    rt: Runtime = client.app[RUNTIME]
    did = await decide(rt, gated_alert())
    for headers, status in (({}, 401), (READ, 403), ({"Authorization": "Bearer t1"}, 403)):
        r = await client.post(f"/api/v1/executions/{did}/approve", headers=headers)
        assert r.status == status and "error" in await r.json()
    r = await client.post("/api/v1/executions/ex-unknown/approve", headers=ADMIN)
    assert (r.status, (await r.json())["outcome"]) == (404, "not_found")
    r = await client.post(f"/api/v1/executions/{did}/deny", headers=ADMIN)
    assert (r.status, await r.json()) == (200, {"outcome": "denied", "message": "denied by admin token sha256:"
                                                f"{A1.removeprefix('sha256:')}", "status": "denied"})
    r = await client.post(f"/api/v1/executions/{did}/approve", headers=ADMIN)
    body = await r.json()
    assert r.status == 409 and body["outcome"] == "conflict" and "it is denied" in body["error"]
    r = await client.post(f"/api/v1/executions/{did}/deny", headers=ADMIN)
    assert r.status == 409


async def test_approve_over_http_runs_it_and_a_refusal_is_a_409_with_the_reason(
    client: TestClient[Any, Any], vclock: VirtualClock
) -> None:
    rt: Runtime = client.app[RUNTIME]
    first = await decide(rt, gated_alert(fingerprint="f1f1f1f1f1f1f1f1"))
    second = await decide(rt, gated_alert(fingerprint="f2f2f2f2f2f2f2f2", starts_at="2026-11-22T10:00:30Z"))
    r = await client.get("/api/v1/decisions?decision=awaiting_approval", headers=READ)
    listed = (await r.json())["decisions"]
    assert [(d["execution_id"], d["status"]) for d in listed] == [(second, "awaiting_approval"),
                                                                   (first, "awaiting_approval")]
    r = await client.post(f"/api/v1/executions/{second}/approve", headers=ADMIN)
    assert (r.status, (await r.json())["status"]) == (200, "pending")
    r = await client.post(f"/api/v1/executions/{second}/approve", headers=ADMIN)
    assert r.status == 409
    await rt.worker.queue.drain()
    r = await client.post(f"/api/v1/executions/{first}/approve", headers=ADMIN)
    body = await r.json()
    assert r.status == 409 and (body["outcome"], body["decision"]) == ("refused", "cooldown")
    assert body["error"].startswith("in cooldown until 2026-11-22T11:00:00Z")
    r = await client.get(f"/api/v1/executions/{first}", headers=READ)
    assert (await r.json())["status"] == "refused"


async def test_an_unreachable_store_is_a_503_and_the_execution_still_waits(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, _cluster, _notices):
        did = await decide(rt, gated_alert())
        from remediator.http import answer_approval

        real = rt.store.claim_approval

        async def down(*args: Any) -> bool:
            from remediator.core.errors import StoreUnavailable

            raise StoreUnavailable("down for the test")

        rt.store.claim_approval = down  # type: ignore[method-assign]
        status, body = await answer_approval(rt, did, approve=True, by="test", presented="a1")
        assert (status, body["outcome"]) == (503, "unavailable") and "down for the test" in body["error"]
        rt.store.claim_approval = real  # type: ignore[method-assign]
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]


def test_the_approval_notice_links_to_the_execution_page() -> None:
    from remediator.notify.events import build_notice, render_text
    from remediator.notify.slack import slack_payload

    d = Decision("k", "fp", "gated", "v", DecisionKind.AWAITING_APPROVAL, "awaiting approval", T0,
                 dry_run=False, execution_id="ex-1")
    detail = {"message": "approve or deny before 2026-11-22T10:15:00Z"}
    notice = build_notice("approval_requested", d, detail, at=T0, public_url="https://rem.example/")
    assert notice.approval_url == "https://rem.example/ui/executions/ex-1"
    text, error = render_text("", notice)
    assert error == "" and text.startswith("Approval requested")
    assert text.endswith(" | approve or deny before 2026-11-22T10:15:00Z: https://rem.example/ui/executions/ex-1")
    buttons = slack_payload(notice, text)["blocks"][-1]["elements"]
    assert {"Approve or deny": "https://rem.example/ui/executions/ex-1"}.items() <= {
        b["text"]["text"]: b["url"] for b in buttons}.items()
    assert build_notice("approval_requested", d, detail, at=T0).approval_url == "/ui/executions/ex-1"
    assert build_notice("started", d, detail, at=T0, public_url="https://rem.example").approval_url == ""


@pytest.mark.parametrize(("change", "why"), [
    ('guardrails: {cooldown: 1h, namespaces: [payments]}\ntarget: {kind: Deployment, namespace: "{{ labels.ns '
     "| default('shop') }}\", name: \"{{ labels.app }}\"}",
     "namespace 'shop' is not in the playbook's allowlist ['payments']"),
    ('guardrails: {cooldown: 1h}\ntarget: {kind: Deployment, namespace: shop, name: "{{ labels.app }}-v2"}',
     "it now names Deployment/shop/web-v2 for this alert"),
])
async def test_an_approval_after_a_reload_that_no_longer_allows_the_target_is_refused(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock, change: str, why: str
) -> None:
    # A reload took the namespace off the allowlist while the execution waited: approving ran it all the
    # same, under a request made from the playbook's settings with no rate limit.
    async with gated_runtime(gated_settings(settings_factory, tmp_path), vclock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        edited = "\n".join(line for line in (GATED % "").splitlines()
                           if not line.startswith(("target:", "guardrails:"))) + "\n" + change + "\n"
        (tmp_path / "pb" / "gated.yaml").write_text(edited)
        assert rt.playbooks.reload(), edited
        got = await answer(rt, did, True)
        assert (got.outcome, got.status, got.decision) == ("refused", "refused", "not_allowed")
        assert got.message == f"the playbook as loaded now does not allow this execution: {why}"
        await rt.worker.queue.drain()
        assert cluster.calls == [] and notices.events(did) == ["approval_requested", "approval_refused"]


#: the same playbook with its approval on a step instead: admitted at once, it stops before the restart
STEP_GATED = """
name: gated
match: {alertname: Gated, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.ns | default('shop') }}", name: "{{ labels.app }}"}
guardrails: {cooldown: 1h, namespaces: %s}
notify: [ops]
steps:
  - {action: scale, to: 3}
  - {action: restart, approval: {timeout: 10m}}
"""


def rival(rt: Runtime) -> Request:
    """Another execution, asking for the step-gated execution's target now."""
    return Request("rival", "other", "Deployment/shop/web", "other|rival", "shop", rt.clock.now().timestamp())


async def take_the_lock_back(rt: Runtime, did: str, **kw: Any) -> None:
    """What an approval cut short after taking the lock back leaves: the waiting execution holds it."""
    own = Request(did, "gated", "Deployment/shop/web", "gated|Deployment/shop/web", "shop",
                  rt.clock.now().timestamp(), cooldown=3600, **kw)
    assert (await rt.guardrails.take_back(own)).check is Check.PASSED
    assert (await rt.guardrails.evaluate(rival(rt))).kind is DecisionKind.LOCKED


@contextlib.asynccontextmanager
async def step_gated(settings_factory: Callable[..., Any], tmp_path: Path, clock: VirtualClock, namespaces: str
                     ) -> AsyncIterator[tuple[Runtime, Recorder, Notices, str]]:
    """A runtime with STEP_GATED, and the execution of one alert, stopped at the restart's gate."""
    pb = tmp_path / "pb"
    pb.mkdir()
    (pb / "gated.yaml").write_text(STEP_GATED % namespaces)
    settings = settings_factory(playbooks=str(pb), dry_run=False, channels=CHANNELS)
    async with gated_runtime(settings, clock) as (rt, cluster, notices):
        did = await decide(rt, gated_alert())
        assert (await rt.store.approval(did)).status == "awaiting_approval"  # type: ignore[union-attr]
        assert [c[0] for c in cluster.calls] == ["scale"]
        yield rt, cluster, notices, did


@pytest.mark.parametrize("held", [False, True])
async def test_a_step_approval_after_a_reload_that_no_longer_allows_the_target_is_refused(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock, held: bool
) -> None:
    # The step's approval did not ask the playbook as loaded now: it took the lock back and ran the
    # rest of the execution in a namespace a reload had taken off the allowlist while it waited.
    # held: the execution still holds its target's lock (an earlier approval was cut short after
    # taking it back); refused, nothing will run under it, and the lock is given up.
    async with step_gated(settings_factory, tmp_path, vclock, "[shop, payments]") as (rt, cluster, notices, did):
        if held:
            await take_the_lock_back(rt, did)
        (tmp_path / "pb" / "gated.yaml").write_text(STEP_GATED % "[payments]")
        assert rt.playbooks.reload()
        await vclock.advance(60)
        got = await answer(rt, did, True)
        why = "the playbook as loaded now does not allow this execution: namespace 'shop' is not in the playbook's " \
              "allowlist ['payments']"
        assert (got.outcome, got.status, got.decision, got.message) == ("refused", "refused", "not_allowed", why)
        await rt.worker.queue.drain()
        ex = await rt.store.get_execution(did)
        assert ex is not None and ex["status"] == "refused"
        assert [(r["phase"], r["action"], r["status"]) for r in ex["results"]] == [
            ("main", "scale", "ok"), ("approval", "approval", "failed")]  # the gate closed, the restart never began
        [gate] = [r for r in ex["results"] if r["phase"] == "approval"]
        assert gate["message"].endswith(f"; not approved: refused ({why})")
        assert [c[0] for c in cluster.calls] == ["scale"]
        assert notices.events(did) == ["started", "approval_requested", "approval_refused"]
        assert (await rt.guardrails.evaluate(rival(rt))).kind is DecisionKind.EXECUTED  # the target's lock is free
        assert (await answer(rt, did, True)).outcome == "conflict"


@pytest.mark.parametrize("end", ["denied", "expired", "resolved_cancelled"])
async def test_a_lock_still_held_at_a_step_gate_is_given_up_however_the_execution_ends(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock, end: str
) -> None:
    # An approval cut short after taking the lock back (the replica died, the request timed out) left
    # the waiting execution holding its target.  Denied, expired or cancelled by its resolve, nothing
    # runs under it any more: the lock used to stay until its TTL, refusing every other execution on
    # the target meanwhile; only a refusal (the playbook as loaded now) gave it up.
    async with step_gated(settings_factory, tmp_path, vclock, "[shop]") as (rt, cluster, _notices, did):
        await take_the_lock_back(rt, did, lock_ttl=3600)  # outlives the 10 min gate
        if end == "denied":
            assert (await answer(rt, did, False)).outcome == "denied"
        elif end == "expired":
            await vclock.advance(10 * 60)
            await rt.worker.queue.fill()
        else:
            await vclock.advance(60)
            await resolve(rt, "2026-11-22T10:01:00Z")
        assert (await rt.store.approval(did)).status == end  # type: ignore[union-attr]
        assert [c[0] for c in cluster.calls] == ["scale"]  # the gated restart never ran
        assert (await rt.guardrails.evaluate(rival(rt))).kind is DecisionKind.EXECUTED  # the target is free now
