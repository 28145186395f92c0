"""Who may see the web UI: the login form's session cookie, bearer headers, 401 and 403."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from remediator.ui.auth import SESSION_COOKIE, encode_session
from tests.payloads import ROOT
from tests.tokens import ADMIN, READ, WEBHOOK
from tests.ui.conftest import Client, csrf_of, sign_in

PAGES = ["/ui", "/ui/guardrails", "/ui/executions/ex-nope", "/ui/playbooks", "/ui/replay"]


@pytest.mark.parametrize("path", PAGES)
async def test_without_credentials_a_page_is_the_login_form_with_a_401(client: Client, path: str) -> None:
    r = await client.get(path + "?namespace=shop")
    assert r.status == 401
    html = await r.text()
    assert 'action="/ui/login"' in html and 'name="token"' in html
    assert f'name="next" value="{path}?namespace=shop"' in html  # back here once signed in


@pytest.mark.parametrize("path", PAGES)
async def test_bearer_tokens_by_role(client: Client, path: str) -> None:
    assert (await client.get(path, headers={"Authorization": "Bearer nobody"})).status == 401
    forbidden = await client.get(path, headers=WEBHOOK)
    assert forbidden.status == 403 and "needs the read role" in await forbidden.text()
    assert (await client.get(path, headers=READ)).status in (200, 404)
    assert (await client.get(path, headers=ADMIN)).status in (200, 404)


async def test_login_sets_a_strict_http_only_cookie_and_logout_clears_it(client: Client) -> None:
    r = await client.post("/ui/login", data={"token": "r1", "next": "/ui?namespace=shop"}, allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, "/ui?namespace=shop")
    cookie = r.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain http here: a Secure cookie would never come back
    assert "r1" not in cookie.value  # not in clear text (nor the Authorization scheme's)
    assert (await client.get("/ui")).status == 200
    out = await client.post("/ui/logout", allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (303, "/ui/login")
    assert (await client.get("/ui")).status == 401


async def test_the_cookie_is_secure_behind_https(client: Client) -> None:
    r = await client.post("/ui/login", data={"token": "r1"}, headers={"X-Forwarded-Proto": "https"},
                          allow_redirects=False)
    assert r.status == 303 and r.cookies[SESSION_COOKIE]["secure"]


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [("nobody", 401, "unknown token"), ("", 401, "unknown token"), ("t1", 403, "needs the read role")],
)
async def test_a_bad_token_at_login_is_refused(client: Client, token: str, status: int, message: str) -> None:
    r = await client.post("/ui/login", data={"token": token}, allow_redirects=False)
    assert r.status == status and message in await r.text()
    assert SESSION_COOKIE not in r.cookies


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=xx", "multipart/form-data", "application/x-www-form-urlencoded; "
                     "charset=bogus"])
async def test_a_body_that_is_no_form_is_a_400(client: Client, content_type: str) -> None:
    r = await client.post("/ui/login", data=b"garbage", headers={"Content-Type": content_type})
    assert r.status == 400 and "could not be read" in await r.text()


async def test_the_sign_in_form_is_not_read_past_a_small_bound(client: Client) -> None:
    # Read before anyone is known, under the application's own limit (the webhook's, tens of MiB):
    # anyone could make the daemon hold that much per request.
    r = await client.post("/ui/login", data={"token": "r1", "pad": "x" * (65 * 1024)}, allow_redirects=False)
    assert r.status == 400 and "could not be read" in await r.text()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: its size is not known before reading it
        yield b"token=r1"

    r = await client.post("/ui/login", data=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"},
                          allow_redirects=False)
    assert r.status == 400
    r = await client.post("/ui/login", data={"token": "r1"}, allow_redirects=False)
    assert r.status == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui", "/uix", "/api/v1/pause",
                                    "/ui/\r\nSet-Cookie: s=1", "/ui/\x00", "/ui/\x7f", "/ui/caf\u00e9"])
async def test_login_never_redirects_off_the_ui(client: Client, target: str) -> None:
    r = await client.post("/ui/login", data={"token": "r1", "next": target}, allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, "/ui")


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
async def test_a_login_posted_from_another_site_is_refused(client: Client, origin: str) -> None:
    r = await client.post("/ui/login", data={"token": "r1"}, headers={"Origin": origin}, allow_redirects=False)
    assert r.status == 403 and SESSION_COOKIE not in r.cookies


async def test_a_login_posted_from_the_ui_itself_is_accepted(client: Client) -> None:
    """Browsers send ``Origin`` with a form's POST; the pages' Referrer-Policy keeps it the real origin
    (under ``no-referrer`` it would be ``null``, and refused)."""
    page = await client.get("/ui/login")
    assert page.headers["Referrer-Policy"] == "same-origin"
    origin = f"http://{client.server.host}:{client.server.port}"
    r = await client.post("/ui/login", data={"token": "r1"}, headers={"Origin": origin}, allow_redirects=False)
    assert r.status == 303


async def test_a_session_whose_token_was_revoked_is_signed_out(client: Client) -> None:
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: encode_session("revoked")})
    r = await client.get("/ui")
    assert r.status == 401 and "no longer" in await r.text()
    assert r.cookies[SESSION_COOKIE].value == ""  # the browser drops it
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: "garbage"})
    assert (await client.get("/ui")).status == 401


async def test_a_signed_in_read_session_reads_every_page(client: Client) -> None:
    await sign_in(client, "r1")
    for path in ("/ui", "/ui/guardrails", "/ui/playbooks", "/ui/replay"):
        r = await client.get(path)
        assert r.status == 200
        assert "Sign out" in await r.text()


async def test_without_auth_the_pages_are_open_and_the_buttons_still_need_a_session(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """``insecure_no_auth`` opens the UI as it opens the API; pausing still takes a session and
    its CSRF token, so another site's page cannot pause a local daemon through the browser."""
    app = create_app(settings_factory(webhook={"tokens": ["t1"], "insecure_no_auth": True}), clock=vclock,
                     start_worker=False)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/ui/guardrails")).status == 200
        assert (await client.post("/ui/guardrails/pause")).status == 403
        await sign_in(client, "")
        confirm = await client.get("/ui/guardrails/pause")
        assert (await client.post("/ui/guardrails/pause", data={"csrf": "x"})).status == 403
        r = await client.post("/ui/guardrails/pause", data={"csrf": csrf_of(await confirm.text())},
                              allow_redirects=False)
        assert r.status == 303 and await client.app[RUNTIME].kill_switch.paused()


def test_the_templates_and_assets_are_package_data() -> None:
    """A wheel installs only what ``pyproject.toml`` declares: every template and asset must be."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["remediator"]
    package = ROOT / "remediator"
    shipped = [p for d in ("ui/templates", "ui/static") for p in (package / d).iterdir() if p.is_file()]
    assert len(shipped) >= 8
    for path in shipped:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in declared), relative
