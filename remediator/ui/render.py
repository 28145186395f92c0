"""Rendering the web UI: the template environment, the headers every page carries, and the
small view helpers the templates lean on (a before/after diff, a link that is safe to follow).

Everything an alert carries (labels, annotations, its generator URL) is hostile input: anyone
who can make Prometheus fire can choose it.  So autoescaping is on for every template, there
is no ``|safe`` anywhere, a URL becomes a link only when it is http(s), and the
Content-Security-Policy allows no inline script at all: even markup that slipped through
escaping could not run.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

#: Only the daemon's own assets, no inline script or style, no framing, forms post back here only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: under it a browser posts the UI's own forms with ``Origin: null``, which the
    # same-origin check must refuse.  same-origin still tells other sites nothing.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show audit data and a CSRF token: no shared or back-button caches
}


def environment() -> jinja2.Environment:
    """The templates shipped in the package, autoescaped (HTML-escaping every value).  A field an
    older record lacks renders empty rather than failing the page: the audit outlives versions."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("remediator.ui", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty
    env.filters["link"] = safe_link
    env.globals["with_filters"] = with_filters
    return env


def page(env: jinja2.Environment, template: str, status: int = 200, **context: Any) -> web.Response:
    """An HTML page with the security headers."""
    body = env.get_template(template).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=SECURITY_HEADERS)


def pretty(value: Any) -> str:
    """A JSON value as indented text (parameters, details, snapshots), escaped by the template."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def safe_link(url: Any) -> str | None:
    """``url`` if it may be an ``href``: http or https only.  An alert's ``generatorURL`` of
    ``javascript:...`` is shown as text, never as a link."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The step's before/after snapshots as a unified diff, each line with its kind (``add``,
    ``del``, ``hunk``, ``ctx``); empty when the step recorded neither (dry-run, a check)."""
    if before is None and after is None:
        return []
    old = pretty(before).splitlines() if before is not None else []
    new = pretty(after).splitlines() if after is not None else []
    lines = list(difflib.unified_diff(old, new, "before", "after", lineterm="", n=3))
    if not lines:
        return [("ctx", "(no change)")]
    out = []
    for line in lines[2:]:  # the ---/+++ header says what the table's caption already says
        kind = "hunk" if line.startswith("@@") else {"+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append((kind, line))
    return out


def with_filters(chosen: Mapping[str, str], **changes: str | None) -> dict[str, str]:
    """The timeline's filters with some changed (None removes one): links that keep the rest."""
    merged = {**chosen, **changes}
    return {k: v for k, v in merged.items() if v}
