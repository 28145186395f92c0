"""The web UI's pages: the timeline, an execution, the guardrails panel, the playbooks, replay,
signing in and out, and the confirmed pause/resume.

Each page over the audit reads what the JSON API reads, through the same calls
(``query_decisions`` with the decisions API's parameters, ``get_execution`` redacted,
``guardrail_status``, the guardrail state's ``usage`` and the kill switch's record,
``parked_alerts``), each bounded by ``http.store_timeout``: the UI never shows more, or less
redacted, than the API.  The playbooks page adds what only an operator's eyes need (the loaded
set, the last reload's problems, a week of decisions counted per day); replay runs the CLI's
engine on an upload (:mod:`remediator.ui.replay`).  A bad filter or upload is a 4xx page with
the reason, an unreachable store a 503 page: never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from remediator.core.alerts import format_time
from remediator.core.durations import format_duration
from remediator.core.errors import GuardrailUnavailable, StoreUnavailable
from remediator.core.guardrails import GuardUsage
from remediator.core.playbooks import PlaybookSet
from remediator.core.redact import redact_execution
from remediator.http import RECORDED_KINDS, BadQuery, _bounded, decision_query, set_paused, who
from remediator.ports import AWAITING_APPROVAL, GuardrailUsage
from remediator.runtime import ADMIN, READ, RUNTIME, Runtime
from remediator.ui import auth, charts
from remediator.ui import replay as ui_replay
from remediator.ui.render import SECURITY_HEADERS, diff, page


@dataclass
class UiState:
    """What the UI keeps per application: its templates, the live streams open now (closed at
    shutdown, which would otherwise wait on them) and the streams' bounds."""

    env: jinja2.Environment
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Streams open at once on one replica; one more is a 503.
    max_streams: int = 64
    #: Seconds a stream stays open; the browser's EventSource then reconnects and starts afresh.
    stream_lifetime: float = 900.0
    #: The bounds of a replay asked for from the replay page, and its one-at-a-time gate.
    replay: ui_replay.ReplayLimits = field(default_factory=ui_replay.ReplayLimits)


UI = web.AppKey("ui", UiState)

#: Decisions on one page of the timeline (and in the window its live stream watches).
PAGE = 50

#: Filters of the timeline, as the decisions API names them (``before`` is the page cursor).
FILTERS = ("playbook", "decision", "namespace", "target", "fingerprint", "since", "until", "before")

#: What ``<input type="datetime-local">`` sends: minutes (or seconds), no zone.  The form says UTC.
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


def filters(query: Mapping[str, str]) -> dict[str, str]:
    """The timeline's filters from the query string, a form's zone-less time read as UTC."""
    out = {name: query[name].strip() for name in FILTERS if query.get(name, "").strip()}
    for name in ("since", "until"):
        if name in out and _LOCAL_TIME.match(out[name]):
            out[name] += "Z" if out[name].count(":") == 2 else ":00Z"
    return out


def _denied(request: web.Request, ui: UiState, exc: auth.Denied) -> web.Response:
    """401: the sign-in form, in place (after it, back here); 403: what the token lacks."""
    if exc.status == 401:
        response = page(ui.env, "login.html", 401, error=str(exc), next=request.path_qs, viewer=None)
    else:
        response = page(ui.env, "error.html", exc.status, title="Not allowed", message=str(exc), viewer=None)
    if exc.clear:
        auth.clear_session(response)
    return response


View = Callable[[web.Request, Runtime, UiState, auth.Viewer], Awaitable[web.Response]]


def viewed(role: str, *, session: bool = False) -> Callable[[View], Callable[[web.Request], Awaitable[web.Response]]]:
    """A page for viewers with ``role`` (and, with ``session``, signed in through the form: the
    buttons need the session's CSRF token); anyone else gets the sign-in form or a 403 page."""

    def wrap(view: View) -> Callable[[web.Request], Awaitable[web.Response]]:
        @functools.wraps(view)
        async def handler(request: web.Request) -> web.Response:
            rt, ui = request.app[RUNTIME], request.app[UI]
            try:
                viewer = auth.viewer(request, rt, role)
                if session and not viewer.session:
                    raise auth.Denied(403, "the buttons need a signed-in session; a script pauses with "
                                           "POST /api/v1/pause")
            except auth.Denied as exc:
                return _denied(request, ui, exc)
            return await view(request, rt, ui, viewer)

        return handler

    return wrap


def _error(ui: UiState, viewer: auth.Viewer | None, status: int, title: str, message: str) -> web.Response:
    return page(ui.env, "error.html", status, title=title, message=message, viewer=viewer)


@viewed(READ)
async def timeline(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """The latest decisions (every refusal with its reason) and their executions, newest first."""
    chosen = filters(request.query)
    context: dict[str, Any] = dict(
        viewer=viewer, chosen=chosen, kinds=RECORDED_KINDS, decisions=[], next=None, error=None,
        playbooks=[p.name for p in rt.playbooks().playbooks], live="before" not in chosen,
    )
    try:
        query = decision_query({**chosen, "limit": str(PAGE)})
    except BadQuery as exc:
        return page(ui.env, "timeline.html", 400, **{**context, "error": str(exc), "live": False})
    try:
        items = await _bounded(rt, rt.store.query_decisions(query), StoreUnavailable)
    except StoreUnavailable:
        return page(ui.env, "timeline.html", 503, **{**context, "error": "store unavailable", "live": False})
    older = {**chosen, "before": items[-1]["id"]} if len(items) == PAGE else None
    return page(ui.env, "timeline.html", **{**context, "decisions": items, "next": older})


@viewed(READ)
async def execution(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """One execution: its alert, playbook version, steps (parameters, result, diff), events, notifications."""
    try:
        item = await _bounded(rt, rt.store.get_execution(request.match_info["id"]), StoreUnavailable)
    except StoreUnavailable:
        return _error(ui, viewer, 503, "Store unavailable", "The store did not answer; try again.")
    if item is None:
        return _error(ui, viewer, 404, "No such execution", f"No execution {request.match_info['id']!r} is recorded.")
    ex = redact_execution(item)
    done = {(r["phase"], r["index"]) for r in ex["results"]}
    steps = [{**r, "diff": diff(r.get("before"), r.get("after"))} for r in ex["results"]]
    pending = [s for s in ex["steps"] if (s["phase"], s["index"]) not in done]
    return page(ui.env, "execution.html", viewer=viewer, ex=ex, steps=steps, pending=pending)


@viewed(READ)
async def guardrails(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """The kill switch (who set it, when; the buttons for an admin session), breakers, each budget's
    use, the concurrency slots and target locks held now (read from the guardrail state, which
    enforces them, not inferred from the audit), executions in progress, executions waiting for a
    person's approval (each until its deadline), parked alerts."""
    problems = []
    usage: GuardUsage | None = None
    try:
        status = await _bounded(rt, rt.pipeline.guardrail_status(), GuardrailUnavailable)
        if isinstance(rt.guardrails, GuardrailUsage):
            usage = await _bounded(rt, rt.guardrails.usage(), GuardrailUnavailable)
    except GuardrailUnavailable as exc:
        status = None
        problems.append(f"guardrail state unreachable: {exc}")
    try:
        record = await _bounded(rt, rt.kill_switch.record(), StoreUnavailable)
        parked = await _bounded(rt, rt.store.parked_alerts(limit=PAGE), StoreUnavailable)
        unfinished = [ex for status in UNFINISHED for ex in await _bounded(
            rt, rt.store.list_executions(status=status, limit=PAGE), StoreUnavailable)]
        awaiting = await _bounded(rt, rt.store.list_executions(status=AWAITING_APPROVAL, limit=PAGE),
                                  StoreUnavailable)  # each with its approval_deadline
    except StoreUnavailable:
        record, parked, unfinished, awaiting = None, [], [], []
        problems.append("store unavailable: the kill switch's record, executions in progress or awaiting "
                        "approval and parked alerts cannot be read")
    # paused if either home of the switch says so, as the pipeline (and the API) read it
    paused = bool((status and status.paused) or (record and record.paused))
    breakers = {name: view.to_json() for name, view in status.breakers.items()} if status else {}
    return page(ui.env, "guardrails.html", 503 if problems else 200, viewer=viewer, paused=paused, record=record,
                breakers=breakers, parked=parked, unfinished=unfinished, awaiting=awaiting, problems=problems,
                usage=usage,
                moment=_moment, span=format_duration,
                done=request.query.get("done") if request.query.get("done") in DONE else None)


@viewed(READ)
async def playbooks(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """The loaded set (its version, each playbook's source, match and steps), what the last reload
    found wrong (``file:line``: the set shown is then the last good one), and a week of decisions
    per playbook as bars, counted by one grouped query."""
    repo = rt.playbooks
    now = rt.clock.now()
    problems = []
    try:
        counts = await _bounded(rt, rt.store.decision_counts(charts.first_day(now)), StoreUnavailable)
    except StoreUnavailable:
        counts = []
        problems.append("store unavailable: the week of decisions cannot be counted")
    bars = charts.week(counts, now.astimezone(UTC).date())
    loaded = {p.name for p in repo.current.playbooks}
    return page(ui.env, "playbooks.html", 503 if problems else 200, viewer=viewer, pset=repo.current,
                load_errors=[str(p) for p in repo.last_problems], bars=bars, problems=problems,
                gone=sorted(name for name in bars if name not in loaded), chart=charts)


@viewed(READ)
async def replay_form(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """The replay form: an export to upload, and optionally the playbooks to replay it against
    (instead of the loaded set) and a second set to compare with."""
    return page(ui.env, "replay.html", **_replay_context(rt, ui, viewer))


def _replay_context(rt: Runtime, ui: UiState, viewer: auth.Viewer, **more: Any) -> dict[str, Any]:
    return {"viewer": viewer, "limits": ui.replay, "pset": rt.playbooks.current, "report": None, "error": None,
            "spans": ui_replay.SPANS, **more}


@viewed(READ)
async def replay_run(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """Replay the uploaded export (see :mod:`remediator.ui.replay`): its report as a page, or with
    ``format=json`` the CLI's JSON document.  Every refusal is a 4xx (or 503) page with the reason."""

    def refused(status: int, reason: str) -> web.Response:
        return page(ui.env, "replay.html", status, **_replay_context(rt, ui, viewer, error=reason))

    if not auth.same_origin(request):
        return refused(403, "Replay from this daemon's own replay page.")
    with ui_replay.scratch() as root:
        try:
            async with asyncio.timeout(rt.settings.http.read_timeout):
                upload = await ui_replay.read_upload(request, Path(root), ui.replay)
        except TimeoutError:
            return refused(408, f"the upload did not arrive within {rt.settings.http.read_timeout:g}s")
        except ui_replay.UploadRefused as exc:
            return refused(exc.status, str(exc))
        if viewer.session and not viewer.csrf_ok(upload.fields.get("csrf", "")):
            return refused(403, "The form's CSRF token is missing or wrong: reload the replay page and try again.")
        if ui.replay.running.locked():
            return refused(429, "A replay is running on this replica: try again when it has finished.")
        async with ui.replay.running:
            try:
                if upload.export is None:  # this daemon's own history, as `remediator export` writes it
                    async with asyncio.timeout(ui.replay.timeout):
                        await ui_replay.export_history(upload, rt.store, rt.clock.now(), ui.replay)
                # Parsed on a thread, as the daemon's own reloads are: a few KB of YAML built to expand
                # (aliases, many documents) held the event loop, webhooks and probes included, for seconds.
                before = await asyncio.to_thread(ui_replay.load_side, upload, ui_replay.BEFORE)
                after = await asyncio.to_thread(ui_replay.load_side, upload, ui_replay.AFTER)
                sets = [before or rt.playbooks.current, *([after] if after else [])]
                document = await ui_replay.run_bounded(upload, sets, rt.settings, ui.replay, rt.clock)
            except ui_replay.UploadRefused as exc:
                return refused(exc.status, str(exc))
            except ui_replay.ReplayInputError as exc:
                return refused(400, str(exc))
            except StoreUnavailable as exc:
                return refused(503, f"this daemon's history cannot be read now: {exc}")
            except TimeoutError:
                return refused(503, f"reading this daemon's history took over {ui.replay.timeout:g}s: replay a "
                                    "shorter span")
            except ui_replay.Stopped:
                if ui.replay.stopping.is_set():
                    return refused(503, "The daemon is shutting down: replay again in a moment (on another replica).")
                return refused(503, f"The replay ran past its {ui.replay.timeout:g}s limit and was stopped: replay a "
                                    "shorter export here, or the whole one with `remediator replay`.")
    if upload.fields.get("format") == "json":
        return web.Response(text=document, content_type="application/json", headers={
            **SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="replay.json"'})
    sides = [_side("uploaded", before) if before else _side("loaded", rt.playbooks.current)]
    if after:
        sides.append(_side("uploaded", after))
    return page(ui.env, "replay.html", **_replay_context(
        rt, ui, viewer, report=ui_replay.report_view(document, compare=after is not None),
        export=upload.export_name, sides=sides))


def _side(origin: str, pset: PlaybookSet) -> str:
    n = len(pset.playbooks)
    return f"the {origin} set, {n} playbook{'' if n == 1 else 's'}, version {pset.version}"


def _moment(at: float) -> str:
    """A guardrail time (seconds since the epoch) as the panel shows it: RFC 3339 UTC, to the second."""
    return format_time(datetime.fromtimestamp(at, UTC).replace(microsecond=0))


#: Execution statuses of the panel's "in progress" (admitted and not started, or started and not finished:
#: running, or stopped before a step by the kill switch, the breaker or an outage, to resume).
UNFINISHED = ("running", "pending")

ACTIONS = {"pause": True, "resume": False}
#: What the panel may say was done (the redirect after a button): nothing a crafted link could choose.
DONE = ("paused", "resumed")


@viewed(ADMIN, session=True)
async def confirm(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """The confirmation step: what pausing or resuming does, and the form that does it."""
    action = request.match_info["action"]
    return page(ui.env, "confirm.html", viewer=viewer, action=action)


@viewed(ADMIN, session=True)
async def act(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """Pause or resume, confirmed: an admin session, its CSRF token and a same-origin form."""
    action = request.match_info["action"]
    refused = await confirmed_form(request, ui, viewer, "guardrails")
    if refused is not None:
        return refused
    status, body = await set_paused(rt, ACTIONS[action], who(viewer.token) + " (web UI)")
    if status != 200:
        return _error(ui, viewer, status, f"Not {action}d", body["error"])
    raise web.HTTPSeeOther(f"/ui/guardrails?done={action}d")


async def confirmed_form(request: web.Request, ui: UiState, viewer: auth.Viewer, where: str) -> web.Response | None:
    """None when a button's post may act: a readable form, same-origin, carrying the signed-in
    session's CSRF token; else the error page to answer with (``where``: the page to reload)."""
    form = await _form(request)
    if form is None:
        return _error(ui, viewer, 400, "Bad request", "The form could not be read.")
    if not auth.same_origin(request) or not viewer.csrf_ok(form.get("csrf", "")):
        return _error(ui, viewer, 403, "Not allowed", "The form's CSRF token is missing or wrong: reload the "
                                                      f"{where} page and try again.")
    return None


#: The largest form body read (bytes): the UI's forms hold a token, a CSRF token and a path.  The
#: application's own limit is the webhook's (twice ``webhook.max_body_bytes``, tens of MiB), and the
#: sign-in form is read before anyone is known: without this, anyone could make the daemon hold
#: that much per request.
FORM_MAX_BYTES = 64 * 1024


async def _form(request: web.Request) -> dict[str, str] | None:
    """A posted form's text fields; None for a body that is not a readable form (a broken multipart
    body, an unknown charset, one without a length or over :data:`FORM_MAX_BYTES`): a 400, never a 500."""
    if request.content_length is None or request.content_length > FORM_MAX_BYTES:
        return None
    try:
        form = await request.post()
    except (ValueError, LookupError):
        return None
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def login_form(request: web.Request) -> web.Response:
    """The sign-in form; ``next`` is where to go once signed in (a UI path only)."""
    ui = request.app[UI]
    return page(ui.env, "login.html", error=None, next=auth.local_next(request.query.get("next")), viewer=None)


async def login(request: web.Request) -> web.Response:
    """Check the token once here (and on every later request); set the session cookie."""
    rt, ui = request.app[RUNTIME], request.app[UI]
    form = await _form(request)
    if form is None:
        return _error(ui, None, 400, "Bad request", "The form could not be read.")
    token, target = form.get("token", "").strip(), auth.local_next(form.get("next"))
    if not auth.same_origin(request):
        return _error(ui, None, 403, "Not allowed", "Sign in from this daemon's own login page.")
    if rt.settings.webhook.insecure_no_auth:
        roles: frozenset[str] | None = frozenset({READ, ADMIN})
    else:
        rt.credentials.refresh()
        roles = rt.credentials.roles_of(token) if token else None
    if roles is None:
        return page(ui.env, "login.html", 401, error="unknown token", next=target, viewer=None)
    if READ not in roles:
        return page(ui.env, "login.html", 403, error="this token may not read the audit: it needs the read role",
                    next=target, viewer=None)
    response = web.Response(status=303, headers={"Location": target})
    auth.set_session(response, request, token)
    return response


async def logout(request: web.Request) -> web.Response:
    """Drop the session cookie (the token itself stays valid: it is the operator's, not the session's)."""
    if not auth.same_origin(request):
        return _error(request.app[UI], None, 403, "Not allowed", "Sign out from this daemon's own pages.")
    response = web.Response(status=303, headers={"Location": "/ui/login"})
    auth.clear_session(response)
    return response
