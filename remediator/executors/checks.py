"""Verification steps: ``http_check``, ``prometheus_check`` and ``wait_resolved``.

A runbook does not end at "set the image back": it ends when the health endpoint answers
and the error rate is back under its threshold.  These steps are that part.  They only
read (an HTTP endpoint, Prometheus' query API, the alerts the daemon has recorded), never
the Kubernetes API, so they sit beside whichever executor acts on the cluster:
:class:`WithChecks` runs them and hands every other step on.

Every check is one loop (:func:`_poll`): an attempt every ``interval``, on the injected
clock, until the check has passed continuously for ``for`` (one failed attempt starts the
count again) or ``timeout`` has passed.  The audit records the attempts, the last answer,
and why the check failed.  In dry-run a check is planned, not run (:func:`planned_check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from yarl import URL

from remediator.core.decisions import PlannedStep
from remediator.core.durations import format_duration
from remediator.core.errors import ConfigError, StoreUnavailable
from remediator.core.playbooks import Condition, parse_condition
from remediator.core.regex import compile_search
from remediator.core.schema import CHECK_ACTIONS
from remediator.ports import Clock, Executor, StepContext, StepResult
from remediator.settings import PrometheusSettings, read_secret

#: Redirects followed within one origin (a health endpoint moved to ``/healthz/``); beyond, a loop.
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: How much of a body is read to match ``body_matches``: enough for any health page, bounded
#: so that an endpoint streaming without end cannot hold the daemon's memory.
MAX_BODY = 1024 * 1024
#: The largest Prometheus answer read: a query whose result is larger is not a health signal.
MAX_ANSWER = 4 * 1024 * 1024
#: Samples shown in the audit from the last Prometheus answer.
SHOWN_SAMPLES = 5


class Resolves(Protocol):
    """What ``wait_resolved`` asks of the store: whether this firing episode's resolve is recorded."""

    async def resolved_for(self, fingerprint: str, starts_at: datetime) -> bool: ...


@dataclass(frozen=True)
class Attempt:
    """One try of a check.  ``final``: trying again cannot change the outcome (a query
    Prometheus refuses as malformed), so the check fails at once."""

    passed: bool
    reason: str
    status: int | None = None
    final: bool = False
    details: Mapping[str, Any] | None = None


@dataclass
class _Tally:
    attempts: int = 0
    resets: int = 0  # passing streaks broken by a failed attempt
    last: Attempt | None = None
    passing_since: float | None = None


async def _poll(
    clock: Clock, params: Mapping[str, Any], attempt: Callable[[], Awaitable[Attempt]]
) -> tuple[bool, _Tally, float]:
    """Try ``attempt`` every ``interval`` until it has passed for ``for`` without a break, or
    ``timeout`` has passed.  The last attempt is made at the deadline, with its full request
    bound (a last look cut to nothing would be no look), so a check may end that bound after
    its ``timeout``.  Returns (passed, tally, seconds taken)."""
    timeout, interval, hold = float(params["timeout"]), float(params["interval"]), float(params.get("for", 0.0))
    start = clock.monotonic()
    deadline = start + timeout
    tally = _Tally()
    while True:
        result = await attempt()
        now = clock.monotonic()
        tally.attempts += 1
        tally.last = result
        if result.passed:
            tally.passing_since = now if tally.passing_since is None else tally.passing_since
            if now - tally.passing_since >= hold:
                return True, tally, now - start
        else:
            tally.resets += tally.passing_since is not None
            tally.passing_since = None
            if result.final:
                return False, tally, now - start
        if now >= deadline:
            return False, tally, now - start
        await clock.sleep(min(interval, deadline - now))


def _span(seconds: float) -> str:
    """A duration for a message: ``1m30s`` when whole, ``0.5s`` when not (intervals can be sub-second)."""
    return format_duration(seconds) if seconds == int(seconds) else f"{seconds:g}s"


def _result(what: str, params: Mapping[str, Any], passed: bool, tally: _Tally, took: float) -> StepResult:
    last = tally.last
    details: dict[str, Any] = {
        "attempts": tally.attempts,
        "resets": tally.resets,
        "waited": round(took, 3),
        "last_status": last.status if last else None,
        "last": last.reason if last else "",
        **(dict(last.details) if last and last.details else {}),
    }
    tries = f"{tally.attempts} attempt{'s' if tally.attempts != 1 else ''}"
    if passed:
        held = float(params.get("for", 0.0))
        during = f" for {_span(held)}" if held else ""
        return StepResult("ok", f"{what}: passed{during} ({tries}, {_span(round(took, 1))}); last: {details['last']}",
                          details=details)
    if last is not None and last.final:
        why = f"failed: {last.reason}"
    elif last is not None and last.passed:
        why = (f"did not keep passing for {_span(float(params.get('for', 0.0)))} within "
               f"{_span(float(params['timeout']))}")
    else:
        why = f"did not pass within {_span(float(params['timeout']))}; last attempt: " + (
            last.reason if last else "none")
    return StepResult("failed", f"{what} {why} ({tries})", details=details)


def describe(step: PlannedStep) -> str:
    """The check in one line, for the audit: what is asked, and how long it may take."""
    p = step.params
    timing = f"every {_span(float(p.get('interval', 0)))}, within {_span(float(p['timeout']))}"
    held = f" for {_span(float(p['for']))}" if float(p.get("for", 0.0)) else ""
    if step.action == "http_check":
        match = f" with a body matching {p['body_matches']!r}" if p.get("body_matches") else ""
        statuses = " or ".join(str(s) for s in p.get("expect_status", [200]))
        return f"{p.get('method', 'GET')} {p['url']} answers {statuses}{match}{held} ({timing})"
    if step.action == "prometheus_check":
        return f"every sample of {p['query']!r} is {p['condition']}{held} ({timing})"
    return f"the alert's resolve is recorded ({timing})"


def planned_check(step: PlannedStep, ctx: StepContext) -> StepResult:
    """A check in dry-run: recorded, not run.  Nothing was changed, so there is nothing to
    verify yet, and a dry run must not sit for minutes in a wait (``wait_resolved`` would
    simply wait for its timeout) nor make requests on an alert's behalf."""
    return StepResult(
        "planned",
        f"dry-run: would check that {describe(step)}",
        details={"params": step.params, "target": ctx.target.to_json(), "server_side": False},
    )


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, (url.host or "").lower(), url.port


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await response.content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _text(body: bytes, charset: str | None) -> str:
    """The body as text in its declared charset; UTF-8 when it declares none or one Python lacks."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _tls(params: Mapping[str, Any]) -> ssl.SSLContext | bool:
    """``insecure_skip_verify`` turns verification off; ``ca_file`` trusts that CA (and only it);
    otherwise the system's trust store.  Raises OSError or ssl.SSLError for a bad CA file."""
    if params.get("insecure_skip_verify"):
        return False
    if params.get("ca_file"):
        return ssl.create_default_context(cafile=str(params["ca_file"]))
    return True


def _failed_request(exc: BaseException, seconds: float) -> Attempt:
    if isinstance(exc, TimeoutError):
        return Attempt(False, f"no answer within {seconds:g}s")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return Attempt(False, f"TLS: {exc}")
    return Attempt(False, f"{type(exc).__name__}: {exc}")


def _sample_values(data: Any) -> list[tuple[Mapping[str, str], str]] | str:
    """The (labels, value) pairs of an instant query's result, or why there are none to compare."""
    if not isinstance(data, Mapping):
        return "the answer has no data"
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector" and isinstance(result, list):
        out = []
        for sample in result:
            value = sample.get("value") if isinstance(sample, Mapping) else None
            if not (isinstance(value, list) and len(value) == 2):
                return "a sample has no value"
            metric = sample.get("metric")
            out.append((metric if isinstance(metric, Mapping) else {}, value[1]))
        return out
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [({}, result[1])]
    return f"the query returns a {kind}, not an instant vector or scalar"


def _labels(metric: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def judge(samples: list[tuple[Mapping[str, str], float]], condition: Condition, on_empty: str) -> Attempt:
    """Every sample must satisfy the condition; an empty result passes only with ``on_empty: pass``."""
    shown = [{"labels": dict(m), "value": v if math.isfinite(v) else str(v)} for m, v in samples[:SHOWN_SAMPLES]]
    details = {"samples": len(samples), "values": shown}
    if not samples:
        verdict = on_empty == "pass"
        return Attempt(verdict, f"no samples (on_empty: {on_empty})", details=details)
    failing = [(m, v) for m, v in samples if not condition.holds(v)]
    if failing:
        metric, value = failing[0]
        return Attempt(False, f"{len(failing)} of {len(samples)} samples not {condition}, e.g. "
                              f"{_labels(metric)} = {value:g}", details=details)
    return Attempt(True, f"all {len(samples)} samples {condition}", details=details)


class Checks:
    """Runs the verification steps.  One HTTP session for all of them; each check's TLS
    options apply to its own requests only."""

    def __init__(self, session: aiohttp.ClientSession, history: Resolves, prometheus: PrometheusSettings) -> None:
        self._session = session
        self._history = history
        self._prometheus = prometheus

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if step.action == "http_check":
            return await self._http_check(step, ctx)
        if step.action == "prometheus_check":
            return await self._prometheus_check(step, ctx)
        if step.action == "wait_resolved":
            return await self._wait_resolved(step, ctx)
        return StepResult("failed", f"{step.action!r} is not a verification step")

    # -- http_check -------------------------------------------------------------------

    async def _http_check(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        p = step.params
        try:
            tls = _tls(p)
        except (OSError, ssl.SSLError) as exc:
            return StepResult("failed", f"http_check: cannot use ca_file {p.get('ca_file')!r}: {exc}")
        pattern = compile_search(str(p["body_matches"])) if p.get("body_matches") else None
        expect = frozenset(int(s) for s in p.get("expect_status", [200]))
        bound = float(p.get("request_timeout", 10.0))

        async def attempt() -> Attempt:
            try:
                return await self._http_attempt(URL(str(p["url"])), str(p.get("method", "GET")), expect, pattern,
                                                 tls, bound)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return _failed_request(exc, bound)

        passed, tally, took = await _poll(ctx.clock, p, attempt)
        return _result(f"http_check {p.get('method', 'GET')} {p['url']}", p, passed, tally, took)

    async def _http_attempt(
        self, url: URL, method: str, expect: frozenset[int], pattern: Any, tls: ssl.SSLContext | bool, seconds: float
    ) -> Attempt:
        """One request, following redirects only within the URL's own origin (scheme, host and
        port): a redirect elsewhere is a failed attempt, never a request to another host.

        ``seconds`` bounds the whole attempt, every hop with it: a timeout per request let a chain
        of redirects take ``MAX_REDIRECTS + 1`` times ``request_timeout``."""
        async with asyncio.timeout(seconds):
            return await self._http_hops(url, method, expect, pattern, tls)

    async def _http_hops(
        self, url: URL, method: str, expect: frozenset[int], pattern: Any, tls: ssl.SSLContext | bool
    ) -> Attempt:
        for _hop in range(MAX_REDIRECTS + 1):
            async with self._session.request(method, url, allow_redirects=False, ssl=tls) as resp:
                status = resp.status
                location = resp.headers.get("Location")
                if status in _REDIRECTS and status not in expect and location:
                    following = resp.url.join(URL(location))
                    if _origin(following) != _origin(url):
                        return Attempt(False, f"status {status}: redirected to another origin "
                                              f"({following.scheme}://{following.host}:{following.port}), "
                                              "not followed", status)
                    url = following
                    continue
                if status not in expect:
                    wanted = " or ".join(map(str, sorted(expect)))
                    return Attempt(False, f"status {status}, expected {wanted}", status)
                if pattern is not None:
                    body = _text(await _read_capped(resp, MAX_BODY), resp.charset)
                    if not pattern.search(body):
                        return Attempt(False, f"status {status}, but the body does not match "
                                              f"{pattern.pattern!r}", status)
                return Attempt(True, f"status {status}", status)
        return Attempt(False, f"more than {MAX_REDIRECTS} redirects")

    # -- prometheus_check -------------------------------------------------------------

    async def _prometheus_check(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        p = step.params
        what = f"prometheus_check {p['query']!r} {p['condition']}"
        if not self._prometheus.url:
            return StepResult("failed", f"{what}: no Prometheus configured (prometheus.url)")
        try:
            token = read_secret("", self._prometheus.bearer_token_file)
        except ConfigError as exc:
            return StepResult("failed", f"{what}: {exc}")
        condition = parse_condition(p["condition"])
        on_empty = str(p.get("on_empty", "fail"))

        async def attempt() -> Attempt:
            seconds = self._prometheus.timeout
            try:
                return await self._query(str(p["query"]), token, condition, on_empty, seconds)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                return _failed_request(exc, seconds)

        passed, tally, took = await _poll(ctx.clock, p, attempt)
        return _result(what, p, passed, tally, took)

    async def _query(self, query: str, token: str, condition: Condition, on_empty: str, seconds: float) -> Attempt:
        """One instant query (``POST /api/v1/query``: a long expression fits in a form body)."""
        url = self._prometheus.url.rstrip("/") + "/api/v1/query"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self._session.post(url, data={"query": query}, headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=seconds)) as resp:
            status = resp.status
            if status in _REDIRECTS:
                # Not followed: a 301/302 turns the POST into a GET without the query (Prometheus then
                # answers bad_data, as if the expression were wrong), and takes the token along.
                where = resp.headers.get("Location", "elsewhere")
                return Attempt(False, f"HTTP {status}: Prometheus redirects to {where}: set prometheus.url "
                                      "to the address it points to", status, final=True)
            raw = await _read_capped(resp, MAX_ANSWER + 1)
        if len(raw) > MAX_ANSWER:
            return Attempt(False, f"the answer is larger than {MAX_ANSWER} bytes", status, final=True)
        try:
            answer = json.loads(raw)
        except ValueError:
            return Attempt(False, f"HTTP {status}: the answer is not JSON", status)
        if not isinstance(answer, Mapping):
            return Attempt(False, f"HTTP {status}: the answer is not a JSON object", status)
        if answer.get("status") != "success" or status >= 300:
            error = f"{answer.get('errorType', 'error')}: {answer.get('error', 'no reason given')}"
            # 400 bad_data: the expression itself is wrong, and will be on every try
            return Attempt(False, f"HTTP {status}: Prometheus answered {error}", status, final=status == 400)
        pairs = _sample_values(answer.get("data"))
        if isinstance(pairs, str):
            return Attempt(False, pairs, status, final=True)
        try:
            samples = [(metric, float(value)) for metric, value in pairs]
        except (TypeError, ValueError):
            return Attempt(False, "a sample's value is not a number", status)
        verdict = judge(samples, condition, on_empty)
        return Attempt(verdict.passed, verdict.reason, status, details=verdict.details)

    # -- wait_resolved ----------------------------------------------------------------

    async def _wait_resolved(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        """Polls the store rather than waiting for the intake to signal: the resolve may reach
        any replica, and the store is where all of them record it."""
        alert = ctx.alert

        async def attempt() -> Attempt:
            if alert.status == "resolved":
                return Attempt(True, "the alert is itself a resolve")
            try:
                resolved = await self._history.resolved_for(alert.fingerprint, alert.starts_at)
            except StoreUnavailable as exc:
                return Attempt(False, f"store unavailable: {exc}")
            return Attempt(resolved, "resolve recorded" if resolved else "still firing (no resolve recorded)")

        passed, tally, took = await _poll(ctx.clock, {**step.params, "for": 0.0}, attempt)
        return _result(f"wait_resolved {alert.alertname or alert.fingerprint}", step.params, passed, tally, took)


class WithChecks:
    """An executor that runs verification steps itself and hands every other step to ``inner``.

    Dry-run is the execution's (``ctx.dry_run``), so one wrapper serves the live and the
    dry executor alike."""

    def __init__(self, inner: Executor, checks: Checks) -> None:
        self.inner = inner
        self.checks = checks

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if step.action not in CHECK_ACTIONS:
            return await self.inner.run(step, ctx)
        if ctx.dry_run:
            return planned_check(step, ctx)
        return await self.checks.run(step, ctx)


@contextlib.asynccontextmanager
async def open_checks(prometheus: PrometheusSettings, history: Resolves) -> AsyncIterator[Checks]:
    """The checks with their HTTP session, closed on the way out.  ``trust_env`` is off: a
    proxy from the environment would see every health URL and the Prometheus token.  No cookies
    are kept: an ingress's affinity cookie (INGRESSCOOKIE, AWSALB) set by one answer pinned every
    later check of that host, from any alert, to one backend, sampling one pod for the whole service."""
    async with aiohttp.ClientSession(trust_env=False, raise_for_status=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield Checks(session, history, prometheus)
