"""Who is looking at the web UI, and may they do what they ask.

A browser cannot send a bearer header when it follows a link, so the UI signs in once: the
login form takes a read or admin token and sets a session cookie holding it (base64, beside a
random nonce), ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
makes the browser send it), ``Secure`` when served over https, scoped to ``/ui``.  The token
is checked against the configured tokens on every request, not once at login: a token taken
out of the Secret stops working at its next page, on every replica, with no session store.

Pausing and resuming also need a CSRF token in the form.  It is an HMAC of the session's nonce
keyed by its token, so it is per session, needs no server state, and cannot be made without
the cookie (which no other site can read).  A bearer header is accepted for reading pages too
(scripts, tests), but never for the buttons: a script pauses through ``POST /api/v1/pause``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from remediator.http import _presented
from remediator.runtime import ADMIN, READ, Runtime

SESSION_COOKIE = "remediator_session"
COOKIE_PATH = "/ui"


@dataclass(frozen=True)
class Viewer:
    """A request's credentials: the token (empty under ``insecure_no_auth``), its roles, and the
    session nonce when it came from the login cookie (empty for a bearer header)."""

    token: str
    roles: frozenset[str]
    nonce: str = ""

    @property
    def admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def session(self) -> bool:
        return bool(self.nonce)

    @property
    def csrf(self) -> str:
        """The session's CSRF token; empty without a session (no form may act then)."""
        if not self.nonce:
            return ""
        return hmac.new(self.token.encode(), self.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, given: str) -> bool:
        return self.session and hmac.compare_digest(given.encode(), self.csrf.encode())


class Denied(Exception):
    """Why a request may not go on: 401 (no or an unknown token: sign in) or 403 (the token lacks
    the role); ``clear`` when a session cookie it carried is no good and should be dropped."""

    def __init__(self, status: int, message: str, *, clear: bool = False) -> None:
        super().__init__(message)
        self.status, self.clear = status, clear


def encode_session(token: str) -> str:
    """A new session's cookie value: a fresh nonce and the token (base64url: any token survives
    cookie syntax)."""
    return f"{secrets.token_urlsafe(16)}.{base64.urlsafe_b64encode(token.encode()).decode()}"


def decode_session(value: str) -> tuple[str, str] | None:
    """(nonce, token) from a cookie value; None when it is not one of ours."""
    nonce, dot, encoded = value.partition(".")
    if not dot or not nonce:
        return None
    try:
        return nonce, base64.urlsafe_b64decode(encoded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def viewer(request: web.Request, rt: Runtime, role: str = READ) -> Viewer:
    """The request's viewer if it has ``role``; Denied otherwise.  A bearer header wins over the
    cookie (an explicit credential over an ambient one)."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    session = decode_session(cookie) if cookie else None
    if rt.settings.webhook.insecure_no_auth:  # everything is open, as on the API
        return Viewer(session[1] if session else "", frozenset({READ, ADMIN}), session[0] if session else "")
    rt.credentials.refresh()
    bearer = _presented(request)
    if bearer:
        token, nonce = bearer, ""
    elif session is not None:
        nonce, token = session
    else:
        raise Denied(401, "sign in with a read or admin token", clear=bool(cookie))
    roles = rt.credentials.roles_of(token)
    if roles is None:
        raise Denied(401, "this token is not (or no longer) valid: sign in again", clear=bool(cookie))
    if role not in roles:
        raise Denied(403, f"this token may not do this: it needs the {role} role")
    return Viewer(token, roles, nonce)


def same_origin(request: web.Request) -> bool:
    """False when the browser says the form was posted from another origin.  Defence in depth
    beside SameSite and the CSRF token; a request without ``Origin`` (an old browser, curl) passes."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        return urlsplit(origin).netloc == request.host
    except ValueError:
        return False


def secure(request: web.Request) -> bool:
    """Whether the browser reached us over https, directly or through a TLS-terminating proxy."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_session(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, encode_session(token), path=COOKIE_PATH, httponly=True,
                        samesite="Strict", secure=secure(request))


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def local_next(target: str | None) -> str:
    """Where to go after signing in: a path of the UI only (never another site: no open redirect),
    in printable ASCII (it becomes the ``Location`` header: a CR/LF in it made aiohttp refuse to
    write the answer, and the sign-in ended in a dropped connection)."""
    if target and (target == "/ui" or target.startswith(("/ui/", "/ui?"))) and target.isascii() \
            and target.isprintable():
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return "/ui"
