"""Pausing and resuming from the guardrails panel: an admin session, a confirmation, the session's
CSRF token and a same-origin form, or nothing changes."""

from __future__ import annotations

import pytest

from remediator.ports import DecisionQuery
from remediator.runtime import RUNTIME
from tests.payloads import db_pool_alert
from tests.tokens import ADMIN
from tests.ui.conftest import Client, csrf_of, deliver, sign_in


async def paused(client: Client) -> bool:
    return bool(await client.app[RUNTIME].kill_switch.paused())


async def test_an_admin_pauses_and_resumes_after_confirming(client: Client) -> None:
    await sign_in(client, "a1")
    panel = await (await client.get("/ui/guardrails")).text()
    assert 'href="/ui/guardrails/pause">Pause…</a>' in panel
    confirm = await client.get("/ui/guardrails/pause")
    assert confirm.status == 200 and not await paused(client)  # asking is not doing
    r = await client.post("/ui/guardrails/pause", data={"csrf": csrf_of(await confirm.text())},
                          allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, "/ui/guardrails?done=paused")
    assert await paused(client)
    record = await client.app[RUNTIME].kill_switch.record()
    assert record is not None and record.by.startswith("admin token sha256:") and record.by.endswith("(web UI)")
    panel = await (await client.get("/ui/guardrails?done=paused")).text()
    assert 'class="switch paused"' in panel and "Remediation paused." in panel and "Resume…" in panel

    # it takes effect: a new alert is refused while paused
    await deliver(client, db_pool_alert())
    [decision] = await client.app[RUNTIME].store.query_decisions(DecisionQuery())
    assert decision["decision"] == "paused"

    confirm = await client.get("/ui/guardrails/resume")
    r = await client.post("/ui/guardrails/resume", data={"csrf": csrf_of(await confirm.text())},
                          allow_redirects=False)
    assert r.status == 303 and not await paused(client)


@pytest.mark.parametrize("csrf", ["", "0" * 64])
async def test_without_the_sessions_csrf_token_nothing_changes(client: Client, csrf: str) -> None:
    await sign_in(client, "a1")
    r = await client.post("/ui/guardrails/pause", data={"csrf": csrf} if csrf else {})
    assert r.status == 403 and "CSRF" in await r.text()
    assert not await paused(client)


async def test_a_csrf_token_is_bound_to_its_session(client: Client) -> None:
    await sign_in(client, "a1")
    old = csrf_of(await (await client.get("/ui/guardrails/pause")).text())
    await client.post("/ui/logout")
    await sign_in(client, "a1")  # a new session: a new nonce, a new CSRF token
    assert (await client.post("/ui/guardrails/pause", data={"csrf": old})).status == 403
    assert not await paused(client)


async def test_a_form_posted_from_another_origin_is_refused(client: Client) -> None:
    await sign_in(client, "a1")
    token = csrf_of(await (await client.get("/ui/guardrails/pause")).text())
    r = await client.post("/ui/guardrails/pause", data={"csrf": token}, headers={"Origin": "https://evil.example"})
    assert r.status == 403 and not await paused(client)


async def test_a_read_session_may_not_pause(client: Client) -> None:
    await sign_in(client, "r1")
    assert "Pause…" not in await (await client.get("/ui/guardrails")).text()
    confirm = await client.get("/ui/guardrails/pause")
    assert confirm.status == 403 and "needs the admin role" in await confirm.text()
    assert (await client.post("/ui/guardrails/pause", data={"csrf": "x"})).status == 403
    assert not await paused(client)


async def test_an_admin_bearer_header_is_no_session_for_the_buttons(client: Client) -> None:
    assert (await client.get("/ui/guardrails/pause", headers=ADMIN)).status == 403
    r = await client.post("/ui/guardrails/pause", headers=ADMIN)
    assert r.status == 403 and "POST /api/v1/pause" in await r.text()
    assert (await client.post("/ui/guardrails/pause")).status == 401
    assert not await paused(client)
