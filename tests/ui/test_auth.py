"""Who may see the web UI: the login form's session cookie, bearer headers, 401 and 403."""

from __future__ import annotations

import pytest

from remediator.ui.auth import SESSION_COOKIE, encode_session
from tests.tokens import ADMIN, READ, WEBHOOK
from tests.ui.conftest import Client, sign_in

PAGES = ["/ui", "/ui/guardrails", "/ui/executions/ex-nope"]


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


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui", "/uix", "/api/v1/pause"])
async def test_login_never_redirects_off_the_ui(client: Client, target: str) -> None:
    r = await client.post("/ui/login", data={"token": "r1", "next": target}, allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, "/ui")


async def test_a_login_posted_from_another_site_is_refused(client: Client) -> None:
    r = await client.post("/ui/login", data={"token": "r1"}, headers={"Origin": "https://evil.example"},
                          allow_redirects=False)
    assert r.status == 403 and SESSION_COOKIE not in r.cookies


async def test_a_session_whose_token_was_revoked_is_signed_out(client: Client) -> None:
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: encode_session("revoked")})
    r = await client.get("/ui")
    assert r.status == 401 and "no longer" in await r.text()
    assert r.cookies[SESSION_COOKIE].value == ""  # the browser drops it
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: "garbage"})
    assert (await client.get("/ui")).status == 401


async def test_a_signed_in_read_session_reads_every_page(client: Client) -> None:
    await sign_in(client, "r1")
    for path in ("/ui", "/ui/guardrails"):
        r = await client.get(path)
        assert r.status == 200
        assert "Sign out" in await r.text()
