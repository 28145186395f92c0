"""The execution page's Approve and Deny buttons: an admin session, a confirmation, the session's
CSRF token and a same-origin form (the kill switch's pattern), answered as the API answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from tests.pipeline.test_approval import Notices, decide, gated_alert, gated_settings
from tests.pipeline.test_step_approval import run_to_gate, stepped_alert, stepped_settings
from tests.ui.conftest import Client, Snapshots, csrf_of, sign_in


@pytest.fixture
async def gated(settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[Client]:
    executor = Snapshots()
    app = create_app(gated_settings(settings_factory, tmp_path), clock=vclock, executors=(executor, executor),
                     notifier=Notices(), start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_an_admin_approves_from_the_execution_page_and_it_runs(gated: Client) -> None:
    rt = gated.app[RUNTIME]
    did = await decide(rt, gated_alert())
    await sign_in(gated, "a1")
    html = await (await gated.get(f"/ui/executions/{did}")).text()
    assert "Waiting for approval until <time>2026-11-22T10:15:00Z</time>" in html
    assert f'href="/ui/executions/{did}/approve">Approve…</a>' in html and "Deny…" in html
    confirm = await gated.get(f"/ui/executions/{did}/approve")
    assert confirm.status == 200 and (await rt.store.approval(did)).status == "awaiting_approval"  # asking is not doing
    r = await gated.post(f"/ui/executions/{did}/approve", data={"csrf": csrf_of(await confirm.text())},
                         allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, f"/ui/executions/{did}")
    await rt.worker.queue.drain()
    html = await (await gated.get(f"/ui/executions/{did}")).text()
    assert '<span class="badge succeeded">succeeded</span>' in html and "Approve…" not in html
    assert "<strong>approved</strong> · by: admin token sha256:" in html and "(web UI)" in html


async def test_deny_needs_the_csrf_token_and_a_second_answer_is_a_409_page(gated: Client) -> None:
    rt = gated.app[RUNTIME]
    did = await decide(rt, gated_alert())
    await sign_in(gated, "a1")
    confirm = await gated.get(f"/ui/executions/{did}/deny")
    assert "Deny this execution?" in await confirm.text()
    assert (await gated.post(f"/ui/executions/{did}/deny", data={"csrf": "0" * 64})).status == 403
    assert (await rt.store.approval(did)).status == "awaiting_approval"
    form = {"csrf": csrf_of(await confirm.text())}
    r = await gated.post(f"/ui/executions/{did}/deny", data=form, allow_redirects=False)
    assert r.status == 303 and (await rt.store.approval(did)).status == "denied"
    again = await gated.post(f"/ui/executions/{did}/approve", data=form, allow_redirects=False)
    assert again.status == 409 and "not awaiting approval: it is denied" in await again.text()


async def test_a_read_session_sees_no_buttons_and_cannot_answer(gated: Client) -> None:
    rt = gated.app[RUNTIME]
    did = await decide(rt, gated_alert())
    await sign_in(gated, "r1")
    html = await (await gated.get(f"/ui/executions/{did}")).text()
    assert "Waiting for approval" in html and "Approve…" not in html
    assert (await gated.get(f"/ui/executions/{did}/approve")).status == 403
    assert (await gated.post(f"/ui/executions/{did}/approve", data={"csrf": "x"})).status == 403
    assert (await rt.store.approval(did)).status == "awaiting_approval"


async def test_the_guardrails_panel_lists_what_waits_for_approval_until_it_is_decided(gated: Client) -> None:
    rt = gated.app[RUNTIME]
    did = await decide(rt, gated_alert())
    await sign_in(gated, "a1")
    html = await (await gated.get("/ui/guardrails")).text()
    waiting = html.split("<h2>Awaiting approval</h2>", 1)[1].split("<h2>", 1)[0]
    assert f'<a href="/ui/executions/{did}"><code>{did}</code></a>' in waiting
    assert "<time>2026-11-22T10:15:00Z</time>" in waiting  # its deadline

    confirm = await gated.get(f"/ui/executions/{did}/deny")
    await gated.post(f"/ui/executions/{did}/deny", data={"csrf": csrf_of(await confirm.text())}, allow_redirects=False)
    html = await (await gated.get("/ui/guardrails")).text()
    assert "None: no execution waits for a person's approval." in html and did not in html.split(
        "<h2>Awaiting approval</h2>", 1)[1].split("<h2>", 1)[0]


async def test_a_step_awaiting_approval_is_approved_from_its_page_which_shows_who_approved_it(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    executor = Snapshots()
    app = create_app(stepped_settings(settings_factory, tmp_path), clock=vclock, executors=(executor, executor),
                     notifier=Notices(), start_worker=False)
    async with TestClient(TestServer(app)) as c:
        rt = c.app[RUNTIME]
        did = await run_to_gate(rt, stepped_alert())
        await sign_in(c, "a1")
        assert '<span class="badge">approval before a step</span>' in await (await c.get("/ui/playbooks")).text()
        html = await (await c.get(f"/ui/executions/{did}")).text()
        assert "Waiting for approval until <time>2026-11-22T10:10:00Z</time>" in html and "Approve…" in html
        confirm = await c.get(f"/ui/executions/{did}/approve")
        r = await c.post(f"/ui/executions/{did}/approve", data={"csrf": csrf_of(await confirm.text())},
                         allow_redirects=False)
        assert r.status == 303
        await rt.worker.queue.drain()
        html = await (await c.get(f"/ui/executions/{did}")).text()
        assert '<span class="badge succeeded">succeeded</span>' in html and "Approve…" not in html
        assert "approved by admin token sha256:" in html  # the gate's own record, beside the steps


@pytest.mark.parametrize("crafted", [
    "/ui/executions/..%2Fexecutions%2F{did}%2Fapprove%23/deny",  # "Yes, deny" would post an approval
    "/ui/executions/..%2Fguardrails%2Fpause%23/deny",  # ... or pause all remediation
])
async def test_a_crafted_link_gets_no_confirmation_page_whose_button_posts_elsewhere(
        gated: Client, crafted: str) -> None:
    """The confirmation page builds its form's action from the id in its path, decoded: an id that is not
    an execution id must not reach it (the admin's CSRF token would go with the button)."""
    rt = gated.app[RUNTIME]
    did = await decide(rt, gated_alert())
    await sign_in(gated, "a1")
    r = await gated.get(crafted.format(did=did))
    assert r.status == 404
    assert "<form" not in await r.text()
    assert (await rt.store.approval(did)).status == "awaiting_approval"
