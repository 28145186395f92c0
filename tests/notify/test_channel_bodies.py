"""Acceptance 1: each channel's request body is exactly what the service expects.

An alert runs through the real pipeline; Slack, a webhook consumer and PagerDuty are
local receivers, and every field of what they received is asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.executors.plan_only import PlanOnlyExecutor
from remediator.notify.events import notice_id
from tests.notify.conftest import PUBLIC_URL, OpenRuntime, deliver, secret_file
from tests.notify.receivers import Receiver, settle
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder

FP = "a1b2c3d4"
LABELS = {"alertname": "WebDown", "namespace": "shop", "deployment": "web", "severity": "critical"}
EX = execution_id(f"{FP}|2026-11-22T10:00:00Z|firing", "restart-web")
EX_URL = f"{PUBLIC_URL}/api/v1/executions/{EX}"
ROUTING_KEY = "R0UT1NGKEY0000000000000000000000"
# one incident per execution: a later execution's failure pages anew (see notify/pagerduty.py)
DEDUP = hashlib.sha256(f"remediator|{FP}|restart-web|{EX}".encode()).hexdigest()
WHERE = " | alert WebDown on Deployment shop/web | playbook restart-web"


def firing() -> dict[str, Any]:
    return payload(alert_json(LABELS, fingerprint=FP))


def resolved() -> dict[str, Any]:
    return payload(alert_json(LABELS, fingerprint=FP, status="resolved", ends_at="2026-11-22T10:05:00Z"))


def channels(tmp_path: Path, slack: Receiver, hook: Receiver, pd: Receiver) -> dict[str, dict[str, Any]]:
    return {
        "ops-slack": {"type": "slack", "url_file": secret_file(tmp_path, "slack-url", slack.url("/services/T/B/X"))},
        "ops-hook": {"type": "webhook", "url": hook.url(), "secret_file": secret_file(tmp_path, "hook", "s3cret")},
        "ops-pd": {
            "type": "pagerduty",
            "url": pd.url("/v2/enqueue"),
            "routing_key_file": secret_file(tmp_path, "pd-key", ROUTING_KEY),
        },
    }


def alert_section() -> dict[str, Any]:
    return {
        "fingerprint": FP,
        "status": "firing",
        "alertname": "WebDown",
        "labels": LABELS,
        "annotations": {"summary": "test"},
        "startsAt": "2026-11-22T10:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
    }


def slack_body(header: str, text: str, actions: str, result: str) -> dict[str, Any]:
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Alert*\nWebDown (critical)"},
                    {"type": "mrkdwn", "text": "*Target*\nDeployment shop/web"},
                    {"type": "mrkdwn", "text": f"*Actions*\n{actions}"},
                    {"type": "mrkdwn", "text": f"*Result*\n{result}"},
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"playbook `restart-web` · execution `{EX}`"}]},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Alert source"},
                        "url": "http://prometheus:9090/graph",
                    },
                    {"type": "button", "text": {"type": "plain_text", "text": "Execution"}, "url": EX_URL},
                ],
            },
        ],
    }


async def test_a_successful_remediation_reaches_every_channel_in_its_format(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    async with (
        Receiver(vclock) as slack,
        Receiver(vclock) as hook,
        Receiver(vclock, ok=202) as pd,
        open_notify_runtime(channels(tmp_path, slack, hook, pd), Recorder()) as rt,
    ):
        await deliver(rt, firing())
        assert rt.notifications is not None
        await settle(vclock, rt.notifications)
        decision = await rt.store.decision(EX)
        assert decision is not None
        [execution] = await rt.store.list_executions()
    assert execution["status"] == "succeeded"

    # Slack: the started and the succeeded messages, to the configured (secret) URL
    assert [r.path for r in slack.requests] == ["/services/T/B/X"] * 2
    started, succeeded = (r.json() for r in slack.requests)
    assert started == slack_body(
        "Remediation started", "Remediation started" + WHERE, "restart, notify", "in progress"
    )
    assert succeeded == slack_body(
        "Remediation succeeded", "Remediation succeeded" + WHERE, "restart: ok\nnotify: ok", "succeeded"
    )
    assert slack.requests[0].headers["Content-Type"] == "application/json"

    # Webhook: started, the playbook's notify step, succeeded; in that order
    assert [r.json()["event"] for r in hook.requests] == ["started", "message", "succeeded"]
    message, done = hook.requests[1].json(), hook.requests[2].json()
    common = {
        "version": "1",
        "at": "2026-11-22T10:00:00Z",
        "channel": "ops-hook",
        "dry_run": False,
        "execution": {"id": EX, "url": EX_URL, "approval_url": None, "decision": "executed",
                      "reason": decision.reason},
        "playbook": {"name": "restart-web", "version": decision.playbook_version},
        "target": {"kind": "Deployment", "namespace": "shop", "name": "web"},
        "alert": alert_section(),
    }
    assert message == {
        **common,
        "id": notice_id(EX, "message", decision.steps[1]),
        "event": "message",
        "text": "restarted web" + WHERE,
        "message": "restarted web",
        "result": "message",
        "steps": [],
    }
    assert done == {
        **common,
        "id": notice_id(EX, "succeeded"),
        "event": "succeeded",
        "text": "Remediation succeeded" + WHERE,
        "message": "",
        "result": "succeeded",
        "steps": [
            {"phase": "main", "index": 0, "action": "restart", "status": "ok", "message": "restart done"},
            {
                "phase": "main",
                "index": 1,
                "action": "notify",
                "status": "ok",
                "message": "message queued for channel ops-hook",
            },
        ],
    }
    headers = hook.requests[2].headers
    assert headers["X-Remediator-Event"] == "succeeded"
    assert headers["X-Remediator-Delivery"] == done["id"]
    # Signed when sent.  settle() moves the virtual clock a second per 5 ms of real time while the
    # request is in flight, so a loaded machine sees a few seconds pass in transit (a bound of 1
    # failed once in CI); receivers check a freshness window of minutes.
    assert 0 <= hook.requests[2].wall - int(headers["X-Remediator-Timestamp"]) <= 10
    assert headers["X-Remediator-Signature"].startswith("v1=")

    # PagerDuty: started sends nothing (the daemon never acknowledges), success resolves the execution's incident
    assert [r.json() for r in pd.requests] == [
        {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": DEDUP},
    ]
    assert pd.requests[0].path == "/v2/enqueue"


async def test_a_failed_remediation_pages_and_the_alert_resolving_closes_the_incident(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    failing = Recorder(fail={"restart"})
    async with (
        Receiver(vclock) as slack,
        Receiver(vclock) as hook,
        Receiver(vclock, ok=202) as pd,
        open_notify_runtime(channels(tmp_path, slack, hook, pd), failing) as rt,
    ):
        await deliver(rt, firing())
        assert rt.notifications is not None
        await settle(vclock, rt.notifications)
        await deliver(rt, resolved())
        await settle(vclock, rt.notifications)

    failed_text = "Remediation failed: manual intervention required" + WHERE + (
        " | step restart failed: restart failed on purpose"
    )
    trigger = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": DEDUP,
        "payload": {
            "summary": failed_text,
            "source": "Deployment/shop/web",
            "severity": "critical",
            "timestamp": "2026-11-22T10:00:00Z",
            "component": "web",
            "group": "shop",
            "class": "WebDown",
            "custom_details": {
                "event": "failed",
                "playbook": "restart-web",
                "execution_id": EX,
                "execution_url": EX_URL,
                "result": "failed",
                "failed_step": "step restart failed: restart failed on purpose",
                "message": None,
                "steps": [
                    {
                        "phase": "main",
                        "index": 0,
                        "action": "restart",
                        "status": "failed",
                        "message": "restart failed on purpose",
                    },
                    {"phase": "main", "index": 1, "action": "notify", "status": "pending", "message": ""},
                ],
                "alert_labels": LABELS,
                "alert_fingerprint": FP,
            },
        },
        "client": "remediator",
        "client_url": EX_URL,
        "links": [
            {"href": "http://prometheus:9090/graph", "text": "Alert source"},
            {"href": EX_URL, "text": "Execution"},
        ],
    }
    resolve = {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": DEDUP}
    assert [r.json() for r in pd.requests] == [trigger, resolve]  # one dedup_key from trigger to resolve

    assert [r.json()["event"] for r in hook.requests] == ["started", "failed", "resolved"]
    back = hook.requests[2].json()
    assert back["alert"]["status"] == "resolved" and back["result"] == "alert resolved"
    assert back["execution"]["id"] == EX

    failed_msg, resolved_msg = slack.requests[1].json(), slack.requests[2].json()
    assert failed_msg == slack_body(
        "Remediation failed: manual intervention required", failed_text, "restart: failed\nnotify: pending", "failed"
    )
    assert resolved_msg["blocks"][0]["text"]["text"] == "Alert resolved after remediation"
    assert resolved_msg["text"] == "Alert resolved after remediation" + WHERE


async def test_dry_runs_are_marked_and_never_page(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    async with (
        Receiver(vclock) as slack,
        Receiver(vclock) as hook,
        Receiver(vclock, ok=202) as pd,
        open_notify_runtime(channels(tmp_path, slack, hook, pd), PlanOnlyExecutor(), dry_run=True) as rt,
    ):
        await deliver(rt, firing())
        assert rt.notifications is not None
        await settle(vclock, rt.notifications)
    assert pd.requests == []
    assert [r.json()["event"] for r in hook.requests] == ["started", "message", "dry_run"]
    assert all(r.json()["dry_run"] is True for r in hook.requests)
    assert hook.requests[1].json()["text"].startswith("[DRY RUN] restarted web")
    started, finished = (r.json() for r in slack.requests)
    assert started["blocks"][0]["text"]["text"] == "[DRY RUN] Remediation started"
    assert finished["blocks"][0]["text"]["text"] == "Dry run: remediation planned, nothing was changed"
    assert finished["blocks"][3]["elements"][0]["text"].endswith("· *DRY RUN*: nothing was changed")
    assert finished["blocks"][2]["fields"][2]["text"] == "*Actions*\nrestart: planned\nnotify: ok"


def test_a_template_that_renders_to_nothing_for_this_alert_sends_the_default_text() -> None:
    """A label the alert has empty: Slack refuses an empty section and PagerDuty an empty summary, as
    permanent errors, so the message (the page) would be lost; the default text goes out instead."""
    import json
    from datetime import UTC, datetime

    from remediator.core.alerts import Alert
    from remediator.notify.channels import Channel
    from remediator.notify.events import build_notice, render_text
    from tests.notify.helpers import sample_decision

    alert = Alert("fp1", "firing", {"alertname": "WebDown", "team": ""})
    notice = build_notice("failed", sample_decision(), {"alert": alert}, at=datetime(2026, 11, 22, tzinfo=UTC))
    text, error = render_text("{{ labels.team }}", notice)
    assert text.strip() and error == "the template rendered to no text for this notice"
    slack = Channel("s", "slack", "https://hooks.slack.com/x", template="{{ labels.team }}", events=("failed",))
    pd = Channel("p", "pagerduty", "https://e/v2/enqueue", routing_key="k", template="{{ labels.team }}",
                 events=("failed",))
    assert json.loads(slack.encode(notice).body)["blocks"][1]["text"]["text"].strip()
    assert json.loads(pd.encode(notice).body)["payload"]["summary"].strip()


def test_a_dry_runs_slack_text_says_so_whatever_the_channel_template() -> None:
    # Slack's mobile notifications show the message's text only: with a channel template, the text
    # lacked the marker the header has, and a dry run read on the on-call's phone as a real one.
    import json
    from dataclasses import replace
    from datetime import UTC, datetime

    from remediator.core.alerts import Alert
    from remediator.notify.channels import Channel
    from remediator.notify.events import build_notice
    from tests.notify.helpers import sample_decision

    alert = Alert("fp1", "firing", {"alertname": "WebDown", "app": "web"})
    decision = replace(sample_decision(), dry_run=True)
    notice = build_notice("started", decision, {"alert": alert}, at=datetime(2026, 11, 22, tzinfo=UTC))
    assert notice.dry_run
    slack = Channel("s", "slack", "https://hooks.slack.com/x", template="Remediation started on {{ labels.app }}",
                    events=("started",))
    body = json.loads(slack.encode(notice).body)
    assert body["text"] == "[DRY RUN] Remediation started on web"
    assert body["blocks"][1]["text"]["text"] == "[DRY RUN] Remediation started on web"
    live = build_notice("started", sample_decision(), {"alert": alert}, at=datetime(2026, 11, 22, tzinfo=UTC))
    assert json.loads(slack.encode(live).body)["text"] == "Remediation started on web"


class _FailsWhenReleased:
    """The restart runs until the test lets it end, then fails."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, step: Any, ctx: Any) -> Any:
        from remediator.ports import StepResult

        if step.action == "restart":
            self.entered.set()
            await self.release.wait()
            return StepResult("failed", "rollout did not finish")
        return StepResult("ok", "done")


async def test_an_alert_that_resolves_while_its_remediation_runs_is_told_resolved_after_the_outcome(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """Told at once, the resolve came before a later failure: PagerDuty got resolve, then trigger, and
    the incident stayed open for an alert already gone.  Now the execution's end says both, in order."""
    from tests.notify.conftest import record

    cluster = _FailsWhenReleased()
    async with (
        Receiver(vclock) as slack,
        Receiver(vclock) as hook,
        Receiver(vclock, ok=202) as pd,
        open_notify_runtime(channels(tmp_path, slack, hook, pd), cluster) as rt,
    ):
        assert rt.notifications is not None
        await record(rt, firing())
        await rt.worker.decide_all()
        running = asyncio.create_task(rt.worker.queue.drain())
        await asyncio.wait_for(cluster.entered.wait(), 10)
        await record(rt, resolved())  # resolves while the restart runs
        await rt.worker.decide_all()
        await settle(vclock, rt.notifications)
        cluster.release.set()
        await asyncio.wait_for(running, 10)
        await settle(vclock, rt.notifications)
    assert [r.json()["event_action"] for r in pd.requests] == ["trigger", "resolve"]
    assert [r.json()["event"] for r in hook.requests] == ["started", "failed", "resolved"]


async def test_notifications_go_through_the_proxy_the_environment_names(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HTTP(S)_PROXY was ignored: in a cluster whose egress goes through a proxy, no notice (no page)
    # ever reached Slack or PagerDuty.
    async with Receiver(vclock) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        outside = {"ops-hook": {"type": "webhook", "url": "http://hooks.example.invalid/remediator"}}
        async with open_notify_runtime(outside, Recorder(), notify=("ops-hook",)) as rt:
            await deliver(rt, firing())
            assert rt.notifications is not None
            await settle(vclock, rt.notifications)
    assert [r.json()["event"] for r in proxy.requests] == ["started", "message", "succeeded"]
    assert {r.headers["Host"] for r in proxy.requests} == {"hooks.example.invalid"}
