"""HTTP surface: the Alertmanager webhook, health, metrics and the audit API.

The webhook's contract with Alertmanager: 2xx only once every alert is durably
recorded, 503 when it cannot record (Alertmanager retries), 4xx with a JSON reason
for anything malformed (retrying would not help), never a 500 for bad input.

Credentials by role: the webhook takes a webhook token (Alertmanager's, good for
nothing else); the read API (executions, decisions, alerts, guardrails) a read or admin token; pause and
resume an admin token.  No or an unknown token is a 401, a known token without the
role a 403.  Approving or denying an execution that awaits approval takes an admin token too
(and, when the playbook lists ``approvers``, one of those).  ``/healthz`` and ``/readyz`` are
open (probes), ``/metrics`` too unless ``api.metrics: read``.  ``webhook.insecure_no_auth`` opens everything, for local
experiments.  What the read API shows of a step's before/after
is redacted (:mod:`remediator.core.redact`), whenever the record was written.

Edges: the webhook decodes ``Content-Encoding`` itself (a body that does not match its
encoding is a 400, an unknown encoding a 415, each with a JSON reason); a client slower
than ``http.read_timeout`` is cut off; every store or guardrail call on a request's path
gives up after ``http.store_timeout`` with a 503, so a frozen database cannot hold
requests (or Alertmanager's retries) for minutes.  On shutdown the server drains
(:class:`Drain`): a body still arriving gets a second, then a 503 with ``Retry-After``, and a
request that starts meanwhile a 503 too; never a 408 for a delivery the shutdown cut short.
Pause and resume go through the
durable kill switch (:mod:`remediator.killswitch`).  The web UI (:mod:`remediator.ui`) is
registered here too and reads through the same helpers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

import structlog
from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remediator.core.alerts import WebhookPayload, parse_time, parse_webhook
from remediator.core.decisions import DecisionKind
from remediator.core.errors import GuardrailUnavailable, PayloadError, StoreUnavailable
from remediator.core.redact import redact_execution
from remediator.inflight import InFlight
from remediator.killswitch import NotPaused
from remediator.ports import AWAITING_APPROVAL, DecisionQuery, GuardrailUsage, ReceivedAlert
from remediator.runtime import ADMIN, READ, RUNTIME, WEBHOOK, Runtime
from remediator.settings import Settings
from remediator.store.rows import alert_episode
from remediator.worker import BACKLOG_RETRY_AFTER

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


#: Seconds a client is asked to wait (``Retry-After``) after a 503 because the store is unreachable:
#: Alertmanager retries by its own backoff, a person or a script by this.
STORE_RETRY_AFTER = 5


def _unavailable(message: str, *, retry_after: int = STORE_RETRY_AFTER, **extra: Any) -> web.Response:
    """503 with ``Retry-After``: not now (the store cannot answer, the backlog is full); retry."""
    response = _error(503, message, **extra)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _presented(request: web.Request) -> str:
    """The token in ``Authorization``: a bearer token, or the password of basic auth (Alertmanager's
    ``basic_auth``); empty when there is none or it is malformed."""
    header = request.headers.get("Authorization", "")
    try:
        header.encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8: aiohttp hands them over as lone surrogates
        return ""
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


class BodyRejected(Exception):
    """A request body refused before it is parsed: its status, a reason, and the metric's label."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for aiohttp's request handler, for whoever runs the app (``serve``, tests).

    ``keepalive_timeout`` runs from the moment a connection opens: a client that has not sent a
    whole request line and headers by ``http.read_timeout`` is disconnected.  Bodies are not
    decompressed by aiohttp (it answers an unknown or broken encoding with a plain-text error, and
    a traceback in the log): the webhook decodes them itself, bounded, with a JSON reason.  A
    client that disconnects does not cancel its handler: a delivery being recorded is recorded
    (and absorbed as a duplicate when Alertmanager sends it again).

    ``shutdown_timeout`` is aiohttp's own wait at the end of a shutdown, after :func:`stop_serving`
    drained the requests in progress: aiohttp's default (60 s) alone was more than the pod's grace period.
    """
    return {"keepalive_timeout": settings.http.read_timeout, "auto_decompress": False,
            "handler_cancellation": False, "shutdown_timeout": SERVER_SHUTDOWN_TIMEOUT}


#: On shutdown, a webhook body still arriving gets this long to come in; then it is answered 503.
#: A delivery's body nearly always comes with its headers: this is for the one caught mid-transfer.
SHUTDOWN_BODY_GRACE = 1.0
#: What a request refused because this replica is stopping is told to wait (``Retry-After``):
#: another replica, or this one restarted, takes it.  (Alertmanager retries a 5xx by its own backoff.)
SHUTDOWN_RETRY_AFTER = 1
#: aiohttp's wait in ``runner.cleanup()`` (``AppRunner(shutdown_timeout=)``).  By then the drain is
#: over: only idle connections are left, or a handler past :func:`drain_timeout`, which this cuts off.
#: aiohttp may wait it twice for one connection (for the handler, then for it once cancelled).
SERVER_SHUTDOWN_TIMEOUT = 1.0


def drain_timeout(settings: Settings) -> float:
    """How long :func:`stop_serving` waits for the requests in progress: a body still arriving
    (:data:`SHUTDOWN_BODY_GRACE`), then recording it (one store call, bounded by ``http.store_timeout``),
    plus a second for parsing a large one on a thread.  A read of the audit that takes longer is cut off."""
    return SHUTDOWN_BODY_GRACE + settings.http.store_timeout + 1.0


def shutdown_budget(settings: Settings) -> float:
    """The longest the HTTP side of a shutdown takes: the drain, then aiohttp's own wait."""
    return drain_timeout(settings) + 2 * SERVER_SHUTDOWN_TIMEOUT


class Drain:
    """The HTTP side of a shutdown: which requests are in progress, and which bodies are being read.

    Why not aiohttp's shutdown alone: ``runner.cleanup()`` marks every connection closing at once
    and from then on drops the bytes that arrive on them, so a delivery whose body was still
    coming in waited out the whole ``http.read_timeout`` and got a 408, which Alertmanager does not
    retry (the alert waited for its group's next flush).  Here the listener is closed first, a
    body still arriving gets :data:`SHUTDOWN_BODY_GRACE` to come in and is otherwise answered 503
    with ``Retry-After``, and a request that starts during the drain is answered 503; aiohttp's
    shutdown comes after, with nothing left to wait for.
    """

    def __init__(self) -> None:
        self.draining = False
        self._deadline: float | None = None  # loop time by which a body being read must be in
        self._reads: set[asyncio.Timeout] = set()
        self._requests = InFlight()

    def serving(self) -> contextlib.AbstractContextManager[None]:
        """Around a request's handler: counted in progress until it has its answer."""
        return self._requests.inside()

    @contextlib.contextmanager
    def reading(self, scope: asyncio.Timeout) -> Iterator[None]:
        """Around reading a body within ``scope``: a drain brings its deadline forward."""
        self._reads.add(scope)
        self._cut(scope)
        try:
            yield
        finally:
            self._reads.discard(scope)

    def _cut(self, scope: asyncio.Timeout) -> None:
        if self._deadline is None or scope.expired():
            return
        when = scope.when()
        if when is None or when > self._deadline:
            scope.reschedule(self._deadline)

    def begin(self, grace: float = SHUTDOWN_BODY_GRACE) -> None:
        """From now on new requests are refused, and bodies being read must be in within ``grace``."""
        self.draining = True
        self._deadline = asyncio.get_running_loop().time() + grace
        for scope in list(self._reads):
            self._cut(scope)

    @property
    def in_progress(self) -> int:
        return self._requests.count

    async def idle(self) -> None:
        """Wait until no request is in progress."""
        await self._requests.none_left()


DRAIN = web.AppKey("drain", Drain)


async def stop_serving(runner: web.BaseRunner, drain: Drain, settings: Settings) -> None:
    """The HTTP drain, before ``runner.cleanup()``: stop listening (new connections are refused;
    Alertmanager retries them), refuse new requests on open connections, and let those in progress
    finish, within :func:`drain_timeout`."""
    for site in list(runner.sites):
        await site.stop()
    drain.begin()
    try:
        async with asyncio.timeout(drain_timeout(settings)):
            await drain.idle()
    except TimeoutError:
        structlog.get_logger("remediator.http").warning(
            "requests still in progress at the end of the drain: cut off", requests=drain.in_progress)


def _stopping(message: str) -> web.Response:
    response = _unavailable(message, retry_after=SHUTDOWN_RETRY_AFTER, retry=True)
    response.force_close()  # this replica is going away: the client's next request goes elsewhere
    return response


@web.middleware
async def drain_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: a request that starts while the server drains gets a 503 (the listener is closed,
    but a kept-alive connection can still bring one); the others are counted in progress."""
    drain = request.app[DRAIN]
    if drain.draining:
        if request.path == WEBHOOK_PATH and RUNTIME in request.app:
            request.app[RUNTIME].metrics.webhook_rejected.labels("shutdown").inc()
        return _stopping("this replica is shutting down; retry (another replica takes it)")
    with drain.serving():
        return await handler(request)


async def _read_body(request: web.Request, limit: int, within: float, drain: Drain | None = None) -> bytes:
    """The body, at most ``limit`` bytes once decoded, in at most ``within`` seconds (less if
    ``drain`` begins meanwhile: then a 503, see :class:`Drain`)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyRejected(413, f"body larger than {limit} bytes", "too_large")
    try:
        if request.content.is_eof():
            # All of it came in with the headers (nearly every delivery): nothing to wait for,
            # so no timer and no chunk loop, which were a fifth of this handler's own CPU.
            body = request.content.read_nowait()
            if len(body) > limit:
                raise BodyRejected(413, f"body larger than {limit} bytes", "too_large")
        else:
            body = await _receive(request.content, limit, within, drain)
    except RequestPayloadError as exc:  # a body aiohttp decoded itself (a server run without server_options)
        raise BodyRejected(400, f"body does not match its Content-Encoding: {exc.args[0] if exc.args else exc}",
                           "malformed") from None
    return decode_body(body, request.headers.getall("Content-Encoding", []), limit)


async def _receive(content: StreamReader, limit: int, within: float, drain: Drain | None = None) -> bytes:
    """A body still arriving: chunk by chunk, refused once over ``limit`` or ``within`` seconds.
    Cut short by a shutdown (``drain``), it is a 503: the sender is not at fault and should retry."""
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(within) as scope:
            with drain.reading(scope) if drain is not None else contextlib.nullcontext():
                async for chunk in content.iter_chunked(65536):
                    size += len(chunk)
                    if size > limit:
                        raise BodyRejected(413, f"body larger than {limit} bytes", "too_large")
                    chunks.append(chunk)
    except TimeoutError:
        if drain is not None and drain.draining:
            raise BodyRejected(503, "this replica is shutting down and the body did not come in before; retry",
                               "shutdown") from None
        raise BodyRejected(408, f"body not received within {within:g}s", "timeout") from None
    return b"".join(chunks)


#: Content codings a webhook body may use, to the zlib window that decodes each.
CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(body: bytes, headers: list[str], limit: int) -> bytes:
    """Undo ``Content-Encoding`` (last applied, first undone); bytes that do not match it are a 400,
    an encoding we do not speak a 415, and a decoded body over ``limit`` a 413 (a zip bomb stops there)."""
    codings = [c.strip().lower() for h in headers for c in h.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding not in CODINGS:
            raise BodyRejected(415, f"Content-Encoding {coding!r} is not supported (gzip, deflate or identity)",
                               "unsupported_encoding")
        decoder = zlib.decompressobj(CODINGS[coding])
        try:
            out = decoder.decompress(body, limit + 1)
            if len(out) <= limit and not decoder.eof:
                out += decoder.flush()
        except zlib.error as exc:
            raise BodyRejected(400, f"body does not match its Content-Encoding {coding}: {exc}", "malformed") from None
        if len(out) > limit:
            raise BodyRejected(413, f"body larger than {limit} bytes once decoded ({coding})", "too_large")
        if not decoder.eof:
            raise BodyRejected(400, f"body does not match its Content-Encoding {coding}: truncated", "malformed")
        if decoder.unused_data:
            raise BodyRejected(400, f"body does not match its Content-Encoding {coding}: bytes after the end",
                               "malformed")
        body = out
    return body


async def _bounded(rt: Runtime, call: Awaitable[T], unavailable: type[Exception]) -> T:
    """``call`` with at most ``http.store_timeout`` seconds: a frozen store or Redis makes a request
    fail fast (503, Alertmanager retries) instead of holding it, and a connection, for minutes."""
    limit = rt.settings.http.store_timeout
    try:
        async with asyncio.timeout(limit):
            return await call
    except TimeoutError:
        raise unavailable(f"no answer within {limit:g}s") from None


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
        try:  # bounded like every store call on this path: a frozen store must not hold the delivery
            backlog = await _bounded(rt, rt.worker.backlog_over(), StoreUnavailable)
        except StoreUnavailable:
            backlog = None  # uncounted: recording tells whether the store answers
        if backlog is not None:
            return _backlog_full(rt, backlog)
        try:
            body = await _read_body(request, rt.settings.webhook.max_body_bytes, rt.settings.http.read_timeout,
                                    request.app.get(DRAIN))
        except BodyRejected as exc:
            rt.metrics.webhook_rejected.labels(exc.reason).inc()
            if exc.status == 503:  # cut short by a shutdown
                return _stopping(str(exc))
            response = _error(exc.status, str(exc))
            response.force_close()  # what is left of this connection's input cannot be trusted
            return response
        # Deciding gives way to it (worker.Pacer) once it is read: a client slow to send holds nobody up.
        with rt.worker.pacer.receiving():
            return await _take_in(rt, body)
    finally:
        rt.metrics.webhook_latency.observe(time.perf_counter() - started)


async def _take_in(rt: Runtime, body: bytes) -> web.Response:
    """Parse and record one delivery's body, and answer it."""
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
        new = await _bounded(rt, rt.store.record_alerts(received), StoreUnavailable)
    except StoreUnavailable as exc:
        rt.metrics.store_unavailable.inc()
        rt.metrics.webhook_rejected.labels("store_unavailable").inc()
        structlog.get_logger("remediator.http").error("cannot record alerts: answering 503", error=str(exc))
        return _unavailable("cannot record alerts right now; retry", retry=True)
    for status, count in Counter(a.status for a in payload.alerts).items():  # a label lookup per status
        rt.metrics.alerts_received.labels(status).inc(count)
    if len(received) > new:
        rt.metrics.alerts_duplicate.inc(len(received) - new)
    if new:
        rt.wake()
    answer: dict[str, Any] = {
        "status": "accepted",
        "alerts": len(received),
        "new": new,
        "duplicates": len(received) - new,
        "truncatedAlerts": payload.truncated_alerts,
    }
    if payload.truncated_alerts:  # the group was larger than the receiver's max_alerts: never sent, never seen
        rt.metrics.alerts_truncated.inc(payload.truncated_alerts)
        structlog.get_logger("remediator.http").warning(
            "Alertmanager left alerts out of a delivery (its max_alerts); those are not recorded",
            truncated=payload.truncated_alerts, recorded=len(received), group_key=payload.group_key[:200])
    if payload.refused:  # the others were taken: Alertmanager would not retry a 4xx, and re-send them all
        rt.metrics.alerts_refused.inc(len(payload.refused))
        structlog.get_logger("remediator.http").warning(
            "alerts refused from a delivery; the others were recorded", refused=len(payload.refused),
            reasons=list(payload.refused[:10]), group_key=payload.group_key[:200])
        answer["refused"] = list(payload.refused)
    return web.json_response(answer)


def _backlog_full(rt: Runtime, backlog: int) -> web.Response:
    """Too much waits to be decided: Alertmanager keeps the alerts and retries, rather than the
    backlog growing without bound ahead of the decision loop."""
    rt.metrics.webhook_rejected.labels("backlog").inc()
    response = _unavailable(f"{backlog} alerts are waiting to be decided, more than worker.max_backlog "
                            f"({rt.settings.worker.max_backlog}); retry later", retry_after=BACKLOG_RETRY_AFTER,
                            retry=True)
    response.force_close()  # the body was not read
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    checks: dict[str, str] = {"playbooks": "ok" if rt.playbooks.loaded else "not loaded"}
    try:
        await _bounded(rt, rt.store.ping(), StoreUnavailable)
        checks["store"] = "ok"
    except StoreUnavailable as exc:
        checks["store"] = f"unavailable: {exc}"
    try:
        await _bounded(rt, rt.guardrails.ping(), GuardrailUnavailable)
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
        await _bounded(rt, rt.pipeline.guardrail_status(), GuardrailUnavailable)
    resp = web.Response(body=generate_latest(rt.metrics.registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


class BadQuery(ValueError):
    """A query parameter of the read API that cannot be used: a 400 with this reason."""


def _limit(q: Mapping[str, str], default: int = 50) -> int:
    try:
        limit = int(q.get("limit", str(default)))
    except ValueError:
        raise BadQuery("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


#: The most items one page of the read API holds.
MAX_LIMIT = 1000

#: Decision kinds the store records (``no_match`` is only counted, never recorded).
RECORDED_KINDS = tuple(k.value for k in DecisionKind if k is not DecisionKind.NO_MATCH)

#: The statuses an execution is recorded with (docs/playbooks.md): not over (pending, running, awaiting
#: approval), then how it ended, run or not.  ``/api/v1/executions?status=`` takes one of them.
EXECUTION_STATUSES = ("pending", "running", AWAITING_APPROVAL, "succeeded", "failed", "superseded", "dry_run",
                      "resolved_cancelled", "denied", "expired", "refused")


def _time(q: Mapping[str, str], name: str) -> datetime | None:
    if not q.get(name):
        return None
    try:
        return parse_time(q[name])
    except PayloadError as exc:
        raise BadQuery(f"{name}: {exc}") from None


def decision_query(q: Mapping[str, str]) -> DecisionQuery:
    """``/api/v1/decisions``' parameters as a query; BadQuery names the parameter at fault.

    ``decision`` takes one kind or several, comma-separated (``rate_limited,cooldown``);
    ``target`` a workload's name, ``namespace/name`` or ``Kind/namespace/name``."""
    kinds = tuple(k.strip() for k in q.get("decision", "").split(",") if k.strip())
    if unknown := [k for k in kinds if k not in RECORDED_KINDS]:
        raise BadQuery(f"decision: unknown kind {unknown[0]!r} (one of {', '.join(RECORDED_KINDS)})")
    namespace = q.get("namespace") or None
    target_kind = target_name = None
    if q.get("target"):
        parts = q["target"].split("/")
        if len(parts) > 3 or not all(parts):
            raise BadQuery("target must be a name, namespace/name or Kind/namespace/name")
        *prefix, target_name = parts
        if prefix:
            target_kind, ns = prefix if len(prefix) == 2 else (None, prefix[0])
            if namespace is not None and namespace != ns:
                raise BadQuery(f"target's namespace {ns!r} contradicts namespace={namespace!r}")
            namespace = ns
    since, until = _time(q, "since"), _time(q, "until")
    if since is not None and until is not None and since >= until:
        raise BadQuery("since must be earlier than until")
    return DecisionQuery(
        playbook=q.get("playbook") or None,
        kinds=tuple(DecisionKind(k) for k in dict.fromkeys(kinds)),
        namespace=namespace,
        target_kind=target_kind,
        target_name=target_name,
        fingerprint=q.get("fingerprint") or None,
        since=since,
        until=until,
        limit=_limit(q),
        before=q.get("before") or None,
    )


def _reader(handler: Callable[[web.Request, Runtime], Awaitable[web.Response]]) -> Handler:
    """A read-API handler: the read role is checked first; a bad query parameter is a 400 and an
    unreachable (or frozen, see :func:`_bounded`) store a 503, each with its JSON reason,
    whichever call in the handler raised it."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.Response:
        rt = request.app[RUNTIME]
        denied = _require(request, rt, READ)
        if denied is not None:
            return denied
        try:
            return await handler(request, rt)
        except BadQuery as exc:
            return _error(400, str(exc))
        except StoreUnavailable:
            return _unavailable("store unavailable")

    return checked


@_reader
async def list_decisions(request: web.Request, rt: Runtime) -> web.Response:
    """Every recorded decision, refusals included, newest first, paged by keyset (``next``)."""
    query = decision_query(request.query)
    items = await _bounded(rt, rt.store.query_decisions(query), StoreUnavailable)
    # An unknown cursor (a mistyped id, or a decision retention removed) would read as the end
    # of the listing; say so instead.  Asked only when a page comes back empty.
    if not items and query.before is not None and await _bounded(
        rt, rt.store.decision(query.before), StoreUnavailable
    ) is None:
        return _error(400, f"before: no decision {query.before!r} is recorded")
    return web.json_response({"decisions": items, "next": items[-1]["id"] if len(items) == query.limit else None})


@_reader
async def get_alert(request: web.Request, rt: Runtime) -> web.Response:
    """One alert's episode: its deliveries, the decisions about it and their executions."""
    fingerprint = request.match_info["fingerprint"]
    limit = _limit(request.query, 100)
    deliveries = await _bounded(rt, rt.store.deliveries(fingerprint, limit=limit), StoreUnavailable)
    decisions = await _bounded(
        rt, rt.store.query_decisions(DecisionQuery(fingerprint=fingerprint, limit=limit)), StoreUnavailable
    )
    if not deliveries and not decisions:
        return _error(404, f"nothing is recorded for the alert with fingerprint {fingerprint!r}")
    return web.json_response(alert_episode(fingerprint, deliveries, decisions))


@_reader
async def list_executions(request: web.Request, rt: Runtime) -> web.Response:
    q = request.query
    limit = _limit(q)
    status, before = q.get("status") or None, q.get("before") or None
    if status is not None and status not in EXECUTION_STATUSES:
        raise BadQuery(f"status: unknown status {status!r} (one of {', '.join(EXECUTION_STATUSES)})")
    items = await _bounded(rt, rt.store.list_executions(
        playbook=q.get("playbook") or None,
        status=status,
        limit=limit,
        before=before,
    ), StoreUnavailable)
    # An unknown cursor would read as the end of the listing, as in list_decisions: say so instead.
    if not items and before is not None and await _bounded(rt, rt.store.decision(before), StoreUnavailable) is None:
        return _error(400, f"before: no execution {before!r} is recorded")
    # the cursor for the next page: pass it back as ?before=
    return web.json_response(
        {"executions": [redact_execution(i) for i in items], "next": items[-1]["id"] if len(items) == limit else None}
    )


@_reader
async def get_execution(request: web.Request, rt: Runtime) -> web.Response:
    item = await _bounded(rt, rt.store.get_execution(request.match_info["id"]), StoreUnavailable)
    if item is None:
        return _error(404, "no such execution")
    return web.json_response(redact_execution(item))  # also records written before snapshots were redacted


@_reader
async def guardrails(request: web.Request, rt: Runtime) -> web.Response:
    """The kill switch, every playbook's circuit breaker and, where the guardrail state reports them, each
    budget's use and the live concurrency slots and locks, as all replicas share them."""
    try:
        status = await _bounded(rt, rt.pipeline.guardrail_status(), GuardrailUnavailable)
    except GuardrailUnavailable as exc:
        return _error(503, f"guardrail state unreachable: {exc}")
    try:  # paused if either home of the switch says so, as the pipeline reads it
        record = await _bounded(rt, rt.kill_switch.record(), StoreUnavailable)
    except StoreUnavailable:
        record = None
    breakers = {name: view.to_json() for name, view in status.breakers.items()}
    body: dict[str, object] = {"paused": status.paused or bool(record and record.paused), "breakers": breakers}
    if isinstance(rt.guardrails, GuardrailUsage):  # budgets used, live slots and locks (the UI's panel)
        try:
            body.update((await _bounded(rt, rt.guardrails.usage(), GuardrailUnavailable)).to_json())
        except GuardrailUnavailable as exc:
            return _error(503, f"guardrail state unreachable: {exc}")
    return web.json_response(body)


def who(presented: str) -> str:
    """Who sets the kill switch, for its record and the log: the token's fingerprint, never the token."""
    if not presented:
        return "unauthenticated (insecure_no_auth)"
    return f"admin token sha256:{hashlib.sha256(presented.encode()).hexdigest()[:12]}"


async def set_paused(rt: Runtime, paused: bool, by: str) -> tuple[int, dict[str, Any]]:
    """Pause or resume through the durable kill switch: (HTTP status, JSON body).  Shared by the
    API and the web UI's buttons, so both answer a half-reachable state the same way."""
    switch = rt.kill_switch
    what = "pause" if paused else "resume"
    try:
        await _bounded(rt, switch.pause(by) if paused else switch.resume(by), TimeoutError)
    except TimeoutError as exc:  # cut short somewhere between its two writes: what holds is not known
        return 503, {"error": f"no answer ({exc}): the {what} may not be in force; retry (it is safe to repeat)",
                     "paused": None}
    except NotPaused as exc:
        return 503, {"error": f"not paused: store and guardrail state unreachable ({exc}); retry",
                     "paused": None}
    except StoreUnavailable as exc:
        if paused:  # in force, but a Redis restart would lose it: the operator retries
            rt.metrics.paused.set(1)
            return 503, {"error": f"paused, but not recorded durably: store unreachable ({exc}); retry",
                         "paused": True}
        return 503, {"error": f"not resumed: store unreachable ({exc}); retry", "paused": True}
    except GuardrailUnavailable as exc:
        if paused:  # recorded: the state is re-armed from the store once it is back; nothing is admitted meanwhile
            return 503, {"error": f"guardrail state unreachable: {exc}; the pause is recorded and applied once it "
                                  "is back", "paused": True}
        return 503, {"error": f"guardrail state unreachable: {exc}; not resumed yet, retry", "paused": True}
    rt.metrics.paused.set(1 if paused else 0)
    return 200, {"paused": paused}


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    rt = request.app[RUNTIME]
    denied = _require(request, rt, ADMIN)
    if denied is not None:
        return denied
    status, body = await set_paused(rt, paused, who(_presented(request)))
    return web.json_response(body, status=status)


async def pause(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


#: HTTP status of each way an approval request can end (:class:`remediator.pipeline.ApprovalAnswer`).
APPROVAL_STATUS = {"approved": 200, "denied": 200, "refused": 409, "not_found": 404, "forbidden": 403,
                   "conflict": 409, "unavailable": 503}


async def answer_approval(
    rt: Runtime, did: str, *, approve: bool, by: str, presented: str
) -> tuple[int, dict[str, Any]]:
    """Approve or deny an execution: (HTTP status, JSON body), shared by the API and the web UI's
    buttons.  The approver is the admin token by fingerprint (``who``), as playbooks list them."""
    digest = hashlib.sha256(presented.encode()).hexdigest() if presented else ""
    try:
        answer = await _bounded(
            rt, rt.pipeline.answer_approval(did, approve=approve, by=by, token_sha256=digest), StoreUnavailable
        )
    except StoreUnavailable as exc:
        return 503, {"error": f"store unavailable: {exc}; retry", "outcome": "unavailable"}
    body = answer.to_json()
    status = APPROVAL_STATUS[answer.outcome]
    if status >= 400:
        body["error"] = answer.message
    return status, body


async def _answer(request: web.Request, approve: bool) -> web.Response:
    rt = request.app[RUNTIME]
    denied = _require(request, rt, ADMIN)
    if denied is not None:
        return denied
    presented = _presented(request)
    status, body = await answer_approval(rt, request.match_info["id"], approve=approve, by=who(presented),
                                         presented=presented)
    return web.json_response(body, status=status)


async def approve(request: web.Request) -> web.Response:
    """``POST /api/v1/executions/<id>/approve``: the guardrails are re-checked; 409 with their reason
    when they refuse (the execution is then recorded ``refused``)."""
    return await _answer(request, True)


async def deny(request: web.Request) -> web.Response:
    return await _answer(request, False)


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
    except ConnectionResetError:  # the client went away mid-request: its business, not an error of ours
        structlog.get_logger("remediator.http").debug("client disconnected", path=request.path)
        raise
    except Exception:
        structlog.get_logger("remediator.http").exception("unhandled error", path=request.path)
        return _error(500, "internal error")


WEBHOOK_PATH = "/webhooks/alertmanager"


def routes(app: web.Application) -> None:
    app.router.add_post(WEBHOOK_PATH, webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/executions", list_executions)
    app.router.add_get("/api/v1/executions/{id}", get_execution)
    app.router.add_post("/api/v1/executions/{id}/approve", approve)
    app.router.add_post("/api/v1/executions/{id}/deny", deny)
    app.router.add_get("/api/v1/decisions", list_decisions)
    app.router.add_get("/api/v1/alerts/{fingerprint}", get_alert)
    app.router.add_get("/api/v1/guardrails", guardrails)
    app.router.add_post("/api/v1/pause", pause)
    app.router.add_post("/api/v1/resume", resume)
    # Imported here, not at the top: the web UI builds on this module's helpers (token, bounds, queries).
    from remediator import ui

    ui.routes(app)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
