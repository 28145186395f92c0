"""The web UI's pages on data the daemon recorded: the timeline and its filters, an execution with
its diff, events and notifications, the guardrails panel; the headers and assets every page needs;
and hostile alert content rendered inert."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.core.decisions import PlannedStep
from remediator.ports import ReceivedAlert, StepContext, StepResult
from remediator.runtime import RUNTIME
from remediator.ui.render import CSP
from tests.payloads import alert_json, db_pool_alert, payload
from tests.tokens import READ
from tests.ui.conftest import Client, deliver

HOSTILE = "<script>alert(1)</script>"


async def page(client: Client, path: str, status: int = 200) -> str:
    r = await client.get(path, headers=READ)
    assert r.status == status, await r.text()
    assert r.content_type == "text/html"
    return await r.text()


def rows(html: str) -> list[str]:
    """The timeline's rows, each as its decision kind."""
    return re.findall(r'<tr data-id="[^"]+" class="kind-(\w+)">', html)


@pytest.fixture
async def decided(client: Client, vclock: VirtualClock) -> Client:
    """An execution on shop/orders-api, and a refusal for a namespace off the playbook's allowlist."""
    await deliver(client, db_pool_alert())
    await vclock.advance(60)
    await deliver(client, db_pool_alert(namespace="kube-public", deployment="dns"))
    return client


async def test_every_page_has_the_security_headers_and_only_its_own_assets(decided: Client) -> None:
    [ex] = await decided.app[RUNTIME].store.list_executions()
    for path in ("/ui", "/ui/guardrails", f"/ui/executions/{ex['id']}", "/ui/login", "/ui/playbooks", "/ui/replay"):
        r = await decided.get(path, headers=READ)
        assert r.headers["Content-Security-Policy"] == CSP
        assert "default-src 'self'" in CSP and "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        html = await r.text()
        assert "<script>" not in html and " on" + "click=" not in html  # no inline script at all
        for asset in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', html):
            got = await decided.get(asset)
            assert got.status == 200 and got.content_type in ("text/css", "text/javascript", "application/javascript")
        assert not re.search(r'(?:src="|<link[^>]*href=")(?:https?:)?//', html)  # nothing loaded from the network


async def test_the_timeline_shows_decisions_with_their_reasons_and_executions(decided: Client) -> None:
    html = await page(decided, "/ui")
    assert rows(html) == ["not_allowed", "executed"]  # newest first
    assert "not in the playbook&#39;s allowlist" in html
    [ex] = await decided.app[RUNTIME].store.list_executions()
    assert f'href="/ui/executions/{ex["id"]}">succeeded</a>' in html
    assert "Deployment/shop/orders-api" in html and "HighDatabaseConnectionUsage" in html
    assert 'href="/ui?fingerprint=1c9fd6f4d9b5ca7d"' in html
    assert 'data-stream="/ui/events?"' in html  # live


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("decision=not_allowed", ["not_allowed"]),
        ("namespace=shop", ["executed"]),
        ("playbook=db-pool-exhaustion", ["not_allowed", "executed"]),
        ("playbook=service-down-restart", []),
        ("target=kube-public/dns", ["not_allowed"]),
        ("fingerprint=1c9fd6f4d9b5ca7d", ["executed"]),  # one alert's decisions: its fingerprint links here
        ("since=2026-11-22T10:00:30Z", ["not_allowed"]),
        ("until=2026-11-22T10:00", []),  # a form's zone-less minute, read as UTC; until is exclusive
        ("until=2026-11-22T10:00:30", ["executed"]),
    ],
)
async def test_filters(decided: Client, query: str, expected: list[str]) -> None:
    html = await page(decided, f"/ui?{query}")
    assert rows(html) == expected


async def test_a_filter_keeps_its_value_in_the_form(decided: Client) -> None:
    html = await page(decided, "/ui?decision=not_allowed&namespace=kube-public")
    assert '<option value="not_allowed" selected>' in html and 'name="namespace" value="kube-public"' in html
    assert 'data-stream="/ui/events?decision=not_allowed&amp;namespace=kube-public"' in html  # live, same filters


@pytest.mark.parametrize(
    ("query", "reason"),
    [("decision=bogus", "unknown kind &#39;bogus&#39;"), ("since=yesterday", "since: invalid RFC 3339"),
     ("target=a/b/c/d", "target must be a name")],
)
async def test_a_bad_filter_is_a_400_page_with_the_reason(decided: Client, query: str, reason: str) -> None:
    html = await page(decided, f"/ui?{query}", 400)
    assert reason in html and rows(html) == [] and "data-stream" not in html


async def test_older_decisions_are_a_link_away(client: Client) -> None:
    for i in range(51):
        await deliver(client, db_pool_alert(deployment=f"api-{i}"))
    html = await page(client, "/ui?namespace=shop")
    assert len(rows(html)) == 50
    [older] = re.findall(r'href="(/ui\?namespace=shop&amp;before=[^"]+)"', html)
    second = await page(client, older.replace("&amp;", "&"))
    assert len(rows(second)) == 1 and "data-stream" not in second  # an older page is not live


async def test_an_execution_page(decided: Client) -> None:
    rt = decided.app[RUNTIME]
    [ex] = await rt.store.list_executions()
    await rt.store.record_event(ex["id"], "paused", rt.clock.now(), reason="kill switch on")
    await rt.store.record_notification(ex["id"], {"at": "2026-11-22T10:00:01Z", "channel": "ops-slack",
                                                  "event": "succeeded", "result": "failed", "attempts": 3,
                                                  "error": "HTTP 500"})
    html = await page(decided, f"/ui/executions/{ex['id']}")
    assert "db-pool-exhaustion" in html and ex["playbook_version"] in html
    assert "<td>deployment</td><td>orders-api</td>" in html  # the alert's labels
    assert [s for s in re.findall(r"<h3>main (\d): (\w+)", html)] == [("0", "resize_pool"), ("1", "wait_healthy")]
    assert "&#34;env&#34;: &#34;DB_POOL_MAX_SIZE&#34;" in html  # each step's parameters
    assert '<span class="del">-    &#34;replicas&#34;: 2</span>' in html  # before/after as a diff
    assert '<span class="add">+    &#34;replicas&#34;: 4</span>' in html
    assert "<strong>paused</strong> · reason: kill switch on" in html
    assert "ops-slack" in html and "HTTP 500" in html
    assert '<a href="http://prometheus:9090/graph"' in html


async def test_an_unknown_execution_is_a_404_page(client: Client) -> None:
    html = await page(client, "/ui/executions/ex-nope", 404)
    assert "No execution &#39;ex-nope&#39; is recorded" in html


async def test_hostile_alert_content_is_rendered_inert(client: Client) -> None:
    evil = db_pool_alert(note=HOSTILE)
    evil["annotations"] = {"summary": HOSTILE}
    evil["generatorURL"] = "javascript:alert(1)"
    refused = db_pool_alert(deployment=HOSTILE)  # an invalid name: refused, and the reason quotes it
    await deliver(client, evil, refused, alert_json({"alertname": HOSTILE, "namespace": "shop"}))
    [ex] = await client.app[RUNTIME].store.list_executions()
    for html in (await page(client, "/ui"), await page(client, f"/ui/executions/{ex['id']}")):
        assert HOSTILE not in html and html.count("<script") == html.count('<script src="/ui/static/')
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html and "javascript:alert(1)" in html  # shown, not linked


async def test_the_guardrails_panel(client: Client) -> None:
    rt = client.app[RUNTIME]
    await rt.store.record_alerts([_received(rt, db_pool_alert(deployment="poison"))])
    [stored] = await rt.store.claim_alerts("test", 1, 60)
    await rt.store.park_alert(stored.id, f"boom {HOSTILE}")
    html = await page(client, "/ui/guardrails")
    assert 'class="switch running"' in html
    for name in ("db-pool-exhaustion", "service-down-restart"):
        assert f"<td>{name}</td><td><span class=\"badge closed\">closed</span>" in html
    assert "boom &lt;script&gt;" in html and "HighDatabaseConnectionUsage" in html
    assert "Pause…" not in html  # a read token has no buttons


def _received(rt: Any, raw: dict[str, Any]) -> ReceivedAlert:
    [alert] = validate_payload(payload(raw)).alerts
    return ReceivedAlert(alert, rt.clock.now())


async def test_an_unreachable_store_is_a_503_page(decided: Client) -> None:
    await decided.app[RUNTIME].store.close()
    assert "store unavailable" in await page(decided, "/ui", 503)
    assert "Store unavailable" in await page(decided, "/ui/executions/ex-1", 503)
    assert "store unavailable" in await page(decided, "/ui/guardrails", 503)


class PausesAfterItsFirstStep:
    """An executor whose first step pauses remediation (an operator hitting the kill switch mid-run):
    the execution stops before its next step, unfinished, with a ``paused`` event."""

    def __init__(self) -> None:
        self.runtime: Any = None

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        await self.runtime.kill_switch.pause("operator")
        return StepResult("ok", "done")


async def test_an_execution_stopped_by_the_kill_switch(settings_factory: Any, vclock: VirtualClock) -> None:
    executor = PausesAfterItsFirstStep()
    app = create_app(settings_factory(dry_run=False), clock=vclock, executors=(executor, executor),
                     start_worker=False)
    async with TestClient(TestServer(app)) as client:
        executor.runtime = client.app[RUNTIME]
        await deliver(client, db_pool_alert())
        [ex] = await client.app[RUNTIME].store.list_executions()
        panel = await page(client, "/ui/guardrails")
        assert f'<a href="/ui/executions/{ex["id"]}"><code>{ex["id"]}</code></a>' in panel
        assert f'<span class="badge {ex["status"]}">{ex["status"]}</span>' in panel and ex["status"] == "running"
        assert 'class="switch paused"' in panel and "Last set to paused by operator" in panel
        html = await page(client, f"/ui/executions/{ex['id']}")
    assert "<strong>paused</strong> · before: main step 1 (wait_healthy) · reason: " in html
    assert "<li>main 1: wait_healthy</li>" in html  # not run yet


async def test_nothing_in_progress(client: Client) -> None:
    assert "None: nothing is running or waiting to resume." in await page(client, "/ui/guardrails")
