"""HTTP surface: the Alertmanager webhook, health, metrics and the audit API.

The webhook's contract with Alertmanager: 2xx only once every alert is durably
recorded, 503 when it cannot record (Alertmanager retries), 4xx with a JSON reason
for anything malformed (retrying would not help), never a 500 for bad input.

Credentials by role: the webhook takes a webhook token (Alertmanager's, good for
nothing else); the read API (executions, guardrails) a read or admin token; pause and
resume an admin token.  No or an unknown token is a 401, a known token without the
role a 403.  ``/healthz`` and ``/readyz`` are open (probes), ``/metrics`` too unless
``api.metrics: read``.  ``webhook.insecure_no_auth`` opens everything, for local
experiments.  What the read API shows of a step's before/after
is redacted (:mod:`remediator.core.redact`), whenever the record was written.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remediator.core.alerts import WebhookPayload, parse_webhook
from remediator.core.errors import GuardrailUnavailable, PayloadError, StoreUnavailable
from remediator.core.redact import redact_execution
from remediator.ports import ReceivedAlert
from remediator.runtime import ADMIN, READ, RUNTIME, WEBHOOK, Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _presented(request: web.Request) -> str:
    """The token in ``Authorization``: a bearer token, or the password of basic auth (Alertmanager's
    ``basic_auth``); empty when there is none or it is malformed."""
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer":
        return credential.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or invalid credentials"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="remediator"'},
    )


def _require(request: web.Request, rt: Runtime, role: str) -> web.Response | None:
    """None when the request's token has ``role``; 401 for no or an unknown token, 403 for a
    known token without the role (a webhook token on the audit API, a read token on pause)."""
    if rt.settings.webhook.insecure_no_auth:
        return None
    rt.credentials.refresh()
    presented = _presented(request)
    roles = rt.credentials.roles_of(presented) if presented else None
    if roles is None:
        if role == WEBHOOK:
            rt.metrics.webhook_rejected.labels("unauthorized").inc()
        return _unauthorized()
    if role not in roles:
        if role == WEBHOOK:
            rt.metrics.webhook_rejected.labels("forbidden").inc()
        return _error(403, f"this token may not do this: it needs the {role} role", role=role)
    return None


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


#: Bodies larger than this are parsed on a worker thread.  Decoding and validating is
#: CPU work (over a second for a 2,500-alert delivery); on the event loop it would hold up
#: every other request, health probes included, for as long.  Smaller bodies, nearly all
#: deliveries, are parsed in place: cheaper than the hop to a thread.
PARSE_IN_LOOP_BYTES = 64 * 1024


async def _parse(body: bytes) -> WebhookPayload:
    """``parse_webhook``, off the event loop for large bodies: same result, same PayloadError."""
    if len(body) <= PARSE_IN_LOOP_BYTES:
        return parse_webhook(body)
    return await asyncio.to_thread(parse_webhook, body)


async def webhook(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    started = time.perf_counter()
    try:
        denied = _require(request, rt, WEBHOOK)
        if denied is not None:
            return denied
        body = await _read_limited(request, rt.settings.webhook.max_body_bytes)
        if body is None:
            rt.metrics.webhook_rejected.labels("too_large").inc()
            return _error(413, f"body larger than {rt.settings.webhook.max_body_bytes} bytes")
        try:
            payload = await _parse(body)
        except PayloadError as exc:
            rt.metrics.webhook_rejected.labels("malformed").inc()
            return _error(400, str(exc))
        now = rt.clock.now()
        received = [
            ReceivedAlert(a, now, payload.receiver, payload.group_key, payload.external_url) for a in payload.alerts
        ]
        try:
            new = await rt.store.record_alerts(received)
        except StoreUnavailable as exc:
            rt.metrics.store_unavailable.inc()
            rt.metrics.webhook_rejected.labels("store_unavailable").inc()
            structlog.get_logger("remediator.http").error("cannot record alerts: answering 503", error=str(exc))
            return _error(503, "cannot record alerts right now; retry", retry=True)
        for a in payload.alerts:
            rt.metrics.alerts_received.labels(a.status).inc()
        if len(received) > new:
            rt.metrics.alerts_duplicate.inc(len(received) - new)
        if new:
            rt.wake()
        return web.json_response(
            {
                "status": "accepted",
                "alerts": len(received),
                "new": new,
                "duplicates": len(received) - new,
                "truncatedAlerts": payload.truncated_alerts,
            }
        )
    finally:
        rt.metrics.webhook_latency.observe(time.perf_counter() - started)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    checks: dict[str, str] = {"playbooks": "ok" if rt.playbooks.loaded else "not loaded"}
    try:
        await rt.store.ping()
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        checks["store"] = f"unavailable: {exc}"
    try:
        await rt.guardrails.ping()
        checks["guardrails"] = "ok"
    except GuardrailUnavailable as exc:
        checks["guardrails"] = f"unavailable: {exc}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if rt.settings.api.metrics == "read":
        denied = _require(request, rt, READ)
        if denied is not None:
            return denied
    # Breaker and pause gauges mirror the shared state as of this scrape; when it is unreachable the
    # last values stay and remediator_guardrail_unavailable_total and /readyz tell the story.
    with contextlib.suppress(GuardrailUnavailable):
        await rt.pipeline.guardrail_status()
    resp = web.Response(body=generate_latest(rt.metrics.registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def list_executions(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    denied = _require(request, rt, READ)
    if denied is not None:
        return denied
    q = request.query
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        return _error(400, "limit must be an integer")
    if not 1 <= limit <= 1000:
        return _error(400, "limit must be between 1 and 1000")
    try:
        items = await rt.store.list_executions(
            playbook=q.get("playbook") or None,
            status=q.get("status") or None,
            limit=limit,
            before=q.get("before") or None,
        )
    except StoreUnavailable:
        return _error(503, "store unavailable")
    # the cursor for the next page: pass it back as ?before=
    return web.json_response(
        {"executions": [redact_execution(i) for i in items], "next": items[-1]["id"] if len(items) == limit else None}
    )


async def get_execution(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    denied = _require(request, rt, READ)
    if denied is not None:
        return denied
    try:
        item = await rt.store.get_execution(request.match_info["id"])
    except StoreUnavailable:
        return _error(503, "store unavailable")
    if item is None:
        return _error(404, "no such execution")
    return web.json_response(redact_execution(item))  # also records written before snapshots were redacted


async def guardrails(request: web.Request) -> web.Response:
    """The kill switch and every playbook's circuit breaker, as all replicas share them."""
    rt = request.app[RUNTIME]
    denied = _require(request, rt, READ)
    if denied is not None:
        return denied
    try:
        status = await rt.pipeline.guardrail_status()
    except GuardrailUnavailable as exc:
        return _error(503, f"guardrail state unreachable: {exc}")
    breakers = {name: view.to_json() for name, view in status.breakers.items()}
    return web.json_response({"paused": status.paused, "breakers": breakers})


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    rt = request.app[RUNTIME]
    denied = _require(request, rt, ADMIN)
    if denied is not None:
        return denied
    try:
        await rt.guardrails.set_paused(paused)
    except GuardrailUnavailable as exc:
        return _error(503, f"guardrail state unreachable: {exc}")
    rt.metrics.paused.set(1 if paused else 0)
    structlog.get_logger("remediator.http").warning("kill switch", paused=paused)
    return web.json_response({"paused": paused})


async def pause(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON, and an unexpected one is logged, never leaked."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        structlog.get_logger("remediator.http").exception("unhandled error", path=request.path)
        return _error(500, "internal error")


def routes(app: web.Application) -> None:
    app.router.add_post("/webhooks/alertmanager", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/executions", list_executions)
    app.router.add_get("/api/v1/executions/{id}", get_execution)
    app.router.add_get("/api/v1/guardrails", guardrails)
    app.router.add_post("/api/v1/pause", pause)
    app.router.add_post("/api/v1/resume", resume)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
