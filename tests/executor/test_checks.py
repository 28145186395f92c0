"""Verification steps against real HTTP servers on loopback, on the virtual clock.

The services are aiohttp apps whose answer is a function of the virtual time of the
request, so "healthy from t=20s", "one 503 at t=10s" and "never healthy" are exact,
and time moves only when the check under test sleeps (:func:`drive`).  Steps are made
the way the daemon makes them: parsed from a playbook, then planned for an alert.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from aiohttp import web

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert, validate_payload
from remediator.core.decisions import PlannedStep, ResolvedTarget, execution_id
from remediator.core.errors import ConfigError, StoreUnavailable
from remediator.core.planning import Plan, Refusal, make_plan
from remediator.core.playbooks import parse_playbooks
from remediator.executors.checks import Checks, WithChecks, open_checks
from remediator.executors.plan_only import PlanOnlyExecutor
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from remediator.settings import PrometheusSettings
from tests.payloads import T0, alert_json, payload
from tests.pipeline.test_pipeline import Recorder, deliver, received

T = TypeVar("T")
TARGET = ResolvedTarget("Deployment", "shop", "api")
Answer = Callable[[float, web.Request], Awaitable[web.StreamResponse]]


# -- a service on loopback whose answer depends on the virtual time ---------------------------


@dataclass
class Service:
    clock: VirtualClock
    url: str = ""
    answer: Answer | None = None
    seen: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, method, path, authorization)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends every hanging answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        t = self.clock.monotonic()
        self.seen.append((t, request.method, request.path_qs, request.headers.get("Authorization", "")))
        assert self.answer is not None
        return await self.answer(t, request)

    def paths(self) -> list[str]:
        return [path for _, _, path, _ in self.seen]


async def _serve(service: Service, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Service]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    service.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield service
    finally:
        service.release.set()
        await runner.cleanup()


@pytest.fixture
async def service(vclock: VirtualClock) -> AsyncIterator[Service]:
    async for s in _serve(Service(vclock)):
        yield s


def status(code: int, body: str = "ok") -> Answer:
    async def answer(t: float, request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text=body)

    return answer


def schedule(codes: Callable[[float], int]) -> Answer:
    async def answer(t: float, request: web.Request) -> web.StreamResponse:
        return web.Response(status=codes(t), text="ok")

    return answer


def hangs(service: Service) -> Answer:
    async def answer(t: float, request: web.Request) -> web.StreamResponse:
        await service.release.wait()
        return web.Response(text="late")

    return answer


# -- steps as the daemon makes them, and a clock that moves only when the check sleeps -----------


def alert(**labels: str) -> Alert:
    return Alert("f00d", "firing", {"alertname": "A", **labels}, starts_at=T0)


def playbook_text(*steps: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "name": "verify", "match": {"alertname": "A"},
        "target": {"kind": "Deployment", "namespace": "shop", "name": "api"}, "steps": list(steps),
    }, sort_keys=False)


def planned(step: dict[str, Any], **labels: str) -> PlannedStep:
    [pb], problems = parse_playbooks(playbook_text(step), "verify.yaml")
    assert not problems, problems
    plan = make_plan(pb, alert(**labels), global_dry_run=False)
    assert isinstance(plan, Plan), plan
    return plan.steps[0]


def context(clock: VirtualClock, *, dry_run: bool = False, subject: Alert | None = None) -> StepContext:
    return StepContext("ex-1", subject or alert(), TARGET, dry_run, clock)


async def drive(clock: VirtualClock, work: Awaitable[T], *, within: float = math.inf) -> T:
    """Run ``work``, moving the clock to each sleeper's deadline as soon as ``work`` sleeps.

    In the daemon other tasks sleep too (a lease renewal, the step's bound): ``within`` limits
    the moves to sleepers due that soon, so a request in flight never sees time jump."""
    task = asyncio.ensure_future(work)
    while not task.done():
        asleep = asyncio.ensure_future(clock.sleeping(lambda left: left <= within))
        await asyncio.wait({task, asleep}, return_when=asyncio.FIRST_COMPLETED)
        if asleep.done():
            await clock.advance(asleep.result())
        else:
            asleep.cancel()
    return task.result()


class History:
    """The store's ``resolved_for``, resolved from a given virtual time on (None: never)."""

    def __init__(self, clock: VirtualClock, resolved_at: float | None = None, *, down: bool = False) -> None:
        self.clock, self.resolved_at, self.down = clock, resolved_at, down
        self.asked: list[tuple[str, datetime]] = []

    async def resolved_for(self, fingerprint: str, starts_at: datetime) -> bool:
        self.asked.append((fingerprint, starts_at))
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.resolved_at is not None and self.clock.monotonic() >= self.resolved_at


@pytest.fixture
async def checks(service: Service, vclock: VirtualClock) -> AsyncIterator[Checks]:
    async with open_checks(PrometheusSettings(url=service.url, timeout=0.3), History(vclock)) as c:
        yield c


async def run(checks: Checks, clock: VirtualClock, step: PlannedStep, **kw: Any) -> StepResult:
    return await drive(clock, checks.run(step, context(clock, **kw)))


# -- http_check -----------------------------------------------------------------------------


async def test_http_check_passes_at_the_first_good_answer(service: Service, checks: Checks,
                                                          vclock: VirtualClock) -> None:
    service.answer = status(200)
    result = await run(checks, vclock, planned({"action": "http_check", "url": service.url + "/healthz"}))
    assert result.status == "ok", result.message
    assert result.details["attempts"] == 1 and result.details["last_status"] == 200
    assert service.seen == [(0.0, "GET", "/healthz", "")]


async def test_http_check_must_keep_passing_for_its_duration(service: Service, checks: Checks,
                                                             vclock: VirtualClock) -> None:
    service.answer = status(200)
    step = planned({"action": "http_check", "url": service.url, "for": "30s", "interval": "10s"})
    result = await run(checks, vclock, step)
    assert result.status == "ok", result.message
    assert [t for t, *_ in service.seen] == [0.0, 10.0, 20.0, 30.0]
    assert result.details["waited"] == 30.0


async def test_one_failed_attempt_starts_the_duration_again(service: Service, checks: Checks,
                                                           vclock: VirtualClock) -> None:
    service.answer = schedule(lambda t: 503 if t == 10.0 else 200)
    step = planned({"action": "http_check", "url": service.url, "for": "30s", "interval": "10s"})
    result = await run(checks, vclock, step)
    assert result.status == "ok", result.message
    # passing from 0, broken at 10, passing again from 20: it holds for 30s at 50, not at 30
    assert [t for t, *_ in service.seen] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert result.details["resets"] == 1


async def test_http_check_fails_at_its_timeout_with_the_last_answer(service: Service, checks: Checks,
                                                                   vclock: VirtualClock) -> None:
    service.answer = status(503, "down")
    step = planned({"action": "http_check", "url": service.url, "timeout": "1m", "interval": "10s"})
    result = await run(checks, vclock, step)
    assert result.status == "failed"
    # the last attempt is made at the deadline, and then no more
    assert [t for t, *_ in service.seen] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert result.details["attempts"] == 7 and result.details["last_status"] == 503
    assert "did not pass within 1m" in result.message and "status 503, expected 200" in result.message


async def test_a_flap_near_the_end_fails_a_check_that_never_held_long_enough(
    service: Service, checks: Checks, vclock: VirtualClock
) -> None:
    service.answer = schedule(lambda t: 200 if t >= 40.0 else 500)
    step = planned({"action": "http_check", "url": service.url, "timeout": "1m", "for": "30s", "interval": "10s"})
    result = await run(checks, vclock, step)
    assert result.status == "failed"
    assert "did not keep passing for 30s within 1m" in result.message


async def test_expected_status_and_body_match(service: Service, checks: Checks, vclock: VirtualClock) -> None:
    service.answer = status(204, "")
    assert (await run(checks, vclock, planned(
        {"action": "http_check", "url": service.url, "expect_status": [200, 204]}))).status == "ok"
    service.answer = status(200, '{"status": "degraded"}')
    step = planned({"action": "http_check", "url": service.url, "body_matches": '"status": *"ok"', "timeout": "20s"})
    result = await run(checks, vclock, step)
    assert result.status == "failed" and "the body does not match" in result.details["last"]
    assert "degraded" not in result.message  # the audit says why, it does not copy the body
    service.answer = status(200, '{"status":"ok"}')
    assert (await run(checks, vclock, step)).status == "ok"

    async def unknown_charset(t: float, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"status": "ok"}', headers={"Content-Type": "application/json; charset=x-nope"})

    service.answer = unknown_charset  # read as UTF-8 rather than failing on the name
    assert (await run(checks, vclock, step)).status == "ok"


async def test_head_sends_head(service: Service, checks: Checks, vclock: VirtualClock) -> None:
    service.answer = status(200)
    result = await run(checks, vclock, planned({"action": "http_check", "url": service.url, "method": "HEAD"}))
    assert result.status == "ok" and service.seen[0][1] == "HEAD"


async def test_redirects_are_followed_within_the_origin_only(service: Service, checks: Checks,
                                                            vclock: VirtualClock) -> None:
    other_host = service.url.replace("127.0.0.1", "localhost")  # the same server, by another name

    async def answer(t: float, request: web.Request) -> web.StreamResponse:
        if request.path == "/moved":
            raise web.HTTPFound("/healthz")
        if request.path == "/away":
            raise web.HTTPFound(other_host + "/healthz")
        return web.Response(text="ok")

    service.answer = answer
    assert (await run(checks, vclock, planned({"action": "http_check", "url": service.url + "/moved"}))).ok
    assert service.paths() == ["/moved", "/healthz"]
    service.seen.clear()
    result = await run(checks, vclock, planned({"action": "http_check", "url": service.url + "/away",
                                                "timeout": "10s"}))
    assert result.status == "failed" and "redirected to another origin" in result.details["last"]
    assert service.paths() == ["/away", "/away"]  # never a request to the other host


async def test_a_slow_endpoint_is_a_failed_attempt(service: Service, checks: Checks, vclock: VirtualClock) -> None:
    service.answer = hangs(service)
    step = planned({"action": "http_check", "url": service.url, "timeout": "1s", "interval": "1s",
                    "request_timeout": "200ms"})
    result = await run(checks, vclock, step)
    assert result.status == "failed" and result.details["attempts"] == 2
    assert result.details["last"] == "no answer within 0.2s"


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 (openssl, as an operator would make one)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    yield cert, key


async def test_tls_verification_ca_file_and_insecure_skip_verify(
    certificate: tuple[Path, Path], vclock: VirtualClock
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async for service in _serve(Service(vclock, answer=status(200)), server_tls):
        async with open_checks(PrometheusSettings(), History(vclock)) as checks:
            untrusted = await run(checks, vclock, planned({"action": "http_check", "url": service.url,
                                                           "timeout": "10s"}))
            assert untrusted.status == "failed" and "TLS" in untrusted.details["last"]
            trusted = await run(checks, vclock, planned({"action": "http_check", "url": service.url,
                                                         "ca_file": str(cert)}))
            assert trusted.status == "ok", trusted.message
            skipped = await run(checks, vclock, planned({"action": "http_check", "url": service.url,
                                                         "insecure_skip_verify": True}))
            assert skipped.status == "ok", skipped.message
            missing = await run(checks, vclock, planned({"action": "http_check", "url": service.url,
                                                         "ca_file": str(cert.parent / "absent.pem")}))
            assert missing.status == "failed" and "cannot use ca_file" in missing.message
        assert len(service.seen) == 2  # the untrusted handshakes never became requests


# -- prometheus_check ---------------------------------------------------------------------------


def vector(*values: str) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": f"api-{i}"}, "value": [1_700_000_000.0, v]} for i, v in enumerate(values)]}}


def prometheus(answers: Callable[[float], tuple[int, Any]]) -> Answer:
    """A Prometheus query API: ``answers(t)`` is (HTTP status, JSON document or raw text)."""

    async def answer(t: float, request: web.Request) -> web.StreamResponse:
        assert request.path.endswith("/api/v1/query")
        form = await request.post()
        assert form["query"]
        code, doc = answers(t)
        return web.Response(status=code, text=doc if isinstance(doc, str) else json.dumps(doc),
                            content_type="application/json")

    return answer


def query_step(**extra: Any) -> PlannedStep:
    return planned({"action": "prometheus_check", "query": 'sum(rate(errors{ns="shop"}[5m]))',
                    "condition": "< 0.01", "interval": "10s", "timeout": "1m", **extra})


async def test_prometheus_check_every_sample_must_satisfy_the_condition(
    service: Service, checks: Checks, vclock: VirtualClock
) -> None:
    service.answer = prometheus(lambda t: (200, vector("0.002", "0.5") if t < 20 else vector("0.002", "0.004")))
    result = await run(checks, vclock, query_step(**{"for": "20s"}))
    assert result.status == "ok", result.message
    assert [t for t, *_ in service.seen] == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert result.details["samples"] == 2 and result.details["values"][1] == {"labels": {"pod": "api-1"},
                                                                              "value": 0.004}


async def test_prometheus_check_fails_at_timeout_naming_a_failing_sample(
    service: Service, checks: Checks, vclock: VirtualClock
) -> None:
    service.answer = prometheus(lambda t: (200, vector("0.002", "0.5")))
    result = await run(checks, vclock, query_step())
    assert result.status == "failed" and result.details["attempts"] == 7
    assert result.details["last"] == '1 of 2 samples not < 0.01, e.g. {pod="api-1"} = 0.5'


async def test_an_empty_result_fails_unless_on_empty_pass(service: Service, checks: Checks,
                                                          vclock: VirtualClock) -> None:
    service.answer = prometheus(lambda t: (200, vector()))
    failed = await run(checks, vclock, query_step(timeout="10s"))
    assert failed.status == "failed" and failed.details["last"] == "no samples (on_empty: fail)"
    assert (await run(checks, vclock, query_step(on_empty="pass"))).status == "ok"


async def test_scalar_results_and_nan(service: Service, checks: Checks, vclock: VirtualClock) -> None:
    service.answer = prometheus(lambda t: (200, {"status": "success",
                                                 "data": {"resultType": "scalar", "result": [1.0, "0"]}}))
    assert (await run(checks, vclock, query_step(condition="== 0"))).status == "ok"
    service.answer = prometheus(lambda t: (200, vector("NaN")))
    assert (await run(checks, vclock, query_step(condition="< 1", timeout="10s"))).status == "failed"


async def test_server_errors_and_bad_answers_are_retried_until_good(
    service: Service, checks: Checks, vclock: VirtualClock
) -> None:
    answers = {0.0: (503, {"status": "error", "errorType": "unavailable", "error": "overloaded"}),
               10.0: (502, "<html>bad gateway</html>"),
               20.0: (200, "{not json"),
               30.0: (200, {"status": "success", "data": {"resultType": "vector",
                                                          "result": [{"metric": {}, "value": [1, "x"]}]}})}
    service.answer = prometheus(lambda t: answers.get(t, (200, vector("0"))))
    result = await run(checks, vclock, query_step())
    assert result.status == "ok" and result.details["attempts"] == 5
    service.answer = prometheus(lambda t: answers[0.0])
    failed = await run(checks, vclock, query_step(timeout="10s"))
    assert failed.details["last"] == "HTTP 503: Prometheus answered unavailable: overloaded"
    service.answer = prometheus(lambda t: answers[10.0])
    assert (await run(checks, vclock, query_step(timeout="10s"))).details["last"] == \
        "HTTP 502: the answer is not JSON"


async def test_a_query_prometheus_refuses_fails_at_once(service: Service, checks: Checks,
                                                        vclock: VirtualClock) -> None:
    service.answer = prometheus(lambda t: (400, {"status": "error", "errorType": "bad_data",
                                                 "error": "parse error: unexpected character"}))
    result = await run(checks, vclock, query_step())
    assert result.status == "failed" and result.details["attempts"] == 1
    assert "bad_data: parse error" in result.message
    service.answer = prometheus(lambda t: (200, {"status": "success",
                                                 "data": {"resultType": "matrix", "result": []}}))
    ranged = await run(checks, vclock, query_step())
    assert ranged.details["attempts"] == 1 and "returns a matrix" in ranged.message


async def test_a_slow_prometheus_is_a_failed_attempt(service: Service, checks: Checks, vclock: VirtualClock) -> None:
    service.answer = hangs(service)
    result = await run(checks, vclock, query_step(timeout="10s"))
    assert result.status == "failed" and result.details["attempts"] == 2
    assert result.details["last"] == "no answer within 0.3s"  # prometheus.timeout


async def test_the_bearer_token_is_read_from_its_file(service: Service, tmp_path: Path, vclock: VirtualClock) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    service.answer = prometheus(lambda t: (200, vector("0")))
    settings = PrometheusSettings(url=service.url + "/prom/", bearer_token_file=str(token))
    async with open_checks(settings, History(vclock)) as checks:
        assert (await run(checks, vclock, query_step())).status == "ok"
        token.write_text("rotated\n")
        assert (await run(checks, vclock, query_step())).status == "ok"
    assert [(path, auth) for _, _, path, auth in service.seen] == [
        ("/prom/api/v1/query", "Bearer s3cret"), ("/prom/api/v1/query", "Bearer rotated")]  # prefix kept


async def test_prometheus_check_without_a_prometheus_fails_clearly(vclock: VirtualClock) -> None:
    async with open_checks(PrometheusSettings(), History(vclock)) as checks:
        result = await run(checks, vclock, query_step())
    assert result.status == "failed" and "no Prometheus configured (prometheus.url)" in result.message


# -- wait_resolved ------------------------------------------------------------------------------


async def test_wait_resolved_passes_once_the_resolve_is_recorded(vclock: VirtualClock) -> None:
    history = History(vclock, resolved_at=25.0)
    async with open_checks(PrometheusSettings(), history) as checks:
        result = await run(checks, vclock, planned({"action": "wait_resolved", "interval": "10s"}))
    assert result.status == "ok" and result.details["attempts"] == 4 and result.details["waited"] == 30.0
    assert history.asked[0] == ("f00d", T0)  # this firing episode's resolve, not any other


async def test_wait_resolved_fails_at_its_timeout(vclock: VirtualClock) -> None:
    async with open_checks(PrometheusSettings(), History(vclock)) as checks:
        result = await run(checks, vclock, planned({"action": "wait_resolved", "timeout": "30s", "interval": "10s"}))
    assert result.status == "failed" and result.details["attempts"] == 4
    assert "did not pass within 30s" in result.message and "no resolve recorded" in result.message


async def test_wait_resolved_rides_out_an_unreachable_store(vclock: VirtualClock) -> None:
    history = History(vclock, resolved_at=0.0, down=True)
    async with open_checks(PrometheusSettings(), history) as checks:
        task = asyncio.ensure_future(drive(vclock, checks.run(planned({"action": "wait_resolved"}), context(vclock))))
        await vclock.sleeping()
        history.down = False
        result = await task
    assert result.status == "ok" and result.details["attempts"] == 2


async def test_wait_resolved_on_a_resolve_passes_at_once(vclock: VirtualClock) -> None:
    resolved = Alert("f00d", "resolved", {"alertname": "A"}, starts_at=T0)
    async with open_checks(PrometheusSettings(), History(vclock)) as checks:
        result = await checks.run(planned({"action": "wait_resolved"}), context(vclock, subject=resolved))
    assert result.status == "ok" and vclock.monotonic() == 0.0


# -- dry-run, and the executor they are wrapped around ----------------------------------------------


async def test_dry_run_plans_checks_and_sends_nothing(service: Service, checks: Checks, vclock: VirtualClock) -> None:
    inner = Recorder()
    executor = WithChecks(inner, checks)
    step = planned({"action": "http_check", "url": service.url + "/healthz", "for": "1m"})
    result = await executor.run(step, context(vclock, dry_run=True))
    assert result.status == "planned"
    assert result.message == f"dry-run: would check that GET {service.url}/healthz answers 200 for 1m " \
                             "(every 10s, within 5m)"
    assert service.seen == [] and inner.calls == []
    for other in (planned({"action": "wait_resolved"}), query_step()):
        assert (await PlanOnlyExecutor().run(other, context(vclock, dry_run=True))).status == "planned"
    assert vclock.monotonic() == 0.0  # nothing waited


@pytest.mark.parametrize("check", ["http_check", "prometheus_check", "wait_resolved"])
async def test_in_dry_run_every_check_is_planned_asks_nothing_and_waits_for_nothing(
    check: str, service: Service, vclock: VirtualClock
) -> None:
    """What dry-run means for a check: the rendered step is planned and shown; no request is sent
    (endpoint, Prometheus), the store is not asked for a resolve, and no time passes."""
    history = History(vclock, resolved_at=0.0)
    inner = Recorder()
    step = {"http_check": planned({"action": "http_check", "url": service.url + "/healthz"}),
            "prometheus_check": query_step(), "wait_resolved": planned({"action": "wait_resolved"})}[check]
    async with open_checks(PrometheusSettings(url=service.url), history) as checks:
        result = await WithChecks(inner, checks).run(step, context(vclock, dry_run=True))
    assert result.status == "planned" and result.message.startswith("dry-run: would "), result.message
    assert service.seen == [] and history.asked == [] and inner.calls == []
    assert vclock.monotonic() == 0.0


async def test_other_steps_go_to_the_inner_executor(checks: Checks, vclock: VirtualClock) -> None:
    inner = Recorder()
    result = await WithChecks(inner, checks).run(planned({"action": "restart"}), context(vclock))
    assert result.status == "ok" and [c[0] for c in inner.calls] == ["restart"]


# -- refused before any request: at load time (file:line) and at plan time --------------------------


def test_bad_parameters_are_refused_at_load_with_their_line() -> None:
    text = playbook_text(
        {"action": "http_check", "url": "ftp://example/health"},
        {"action": "http_check", "url": "https://user:pw@example/health"},
        {"action": "http_check", "url": "http://x/", "method": "HEAD", "body_matches": "ok"},
        {"action": "http_check", "url": "http://x/", "body_matches": "(?=ok)"},
        {"action": "http_check", "url": "http://x/", "for": "5m"},
        {"action": "http_check", "url": "http://x/", "method": "POST"},
        {"action": "prometheus_check", "query": "up", "condition": "below 1"},
        {"action": "prometheus_check", "query": "up", "condition": "< {{ labels.x }}"},
        {"action": "prometheus_check", "query": "up", "condition": "> 0", "interval": "0s"},
        {"action": "http_check", "url": "http://x/", "ca_file": "/ca.pem", "insecure_skip_verify": True},
        {"action": "wait_resolved", "for": "1m"},
    )
    _, problems = parse_playbooks(text, "verify.yaml")
    # every step is refused, each problem at a line of its own step (the step's, or its key's)
    starts = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("- action:")]
    step_of = {p.message: max(i for i, start in enumerate(starts) if start <= p.line) for p in problems}
    expected = ["not an absolute http or https URL", "carries credentials", "a HEAD answer has no body", "look-ahead",
                "must be shorter than the timeout", "'POST' is not one of", "is not a condition",
                "a fixed value, not a template", "interval: must be positive", "contradict",
                "for: unknown field of action 'wait_resolved'"]
    for index, fragment in enumerate(expected):
        assert [m for m, i in step_of.items() if fragment in m and i == index], (fragment, problems)
    assert all(p.path == "verify.yaml" for p in problems)


def test_rendered_values_are_checked_before_any_request() -> None:
    text = playbook_text(
        {"action": "http_check", "url": "http://{{ labels.host }}/healthz"},
        {"action": "prometheus_check", "query": 'up{job="{{ labels.job }}"}', "condition": "== 1"},
    )
    [pb], problems = parse_playbooks(text, "verify.yaml")
    assert not problems
    for labels, why in ((dict(host="evil@10.0.0.1", job="api"), "carries credentials"),
                        (dict(host="web shop", job="api"), "whitespace"),
                        (dict(host="web", job="api\x00"), "control characters")):
        refusal = make_plan(pb, alert(**labels), global_dry_run=False)
        assert isinstance(refusal, Refusal) and why in refusal.reason, refusal
    plan = make_plan(pb, alert(host="web.shop:8080", job="api"), global_dry_run=False)
    assert isinstance(plan, Plan) and plan.steps[0].params["url"] == "http://web.shop:8080/healthz"


# -- in the daemon ------------------------------------------------------------------------------------


CHECK_PLAYBOOK = """\
name: verify
match: {alertname: A}
target: {kind: Deployment, namespace: shop, name: api}
steps:
  - action: http_check
    url: "http://{{ labels.host }}/healthz"
"""


async def test_the_daemon_runs_checks_live_plans_them_in_dry_run_and_refuses_bad_urls(
    service: Service, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "verify.yaml").write_text(CHECK_PLAYBOOK)
    service.answer = status(200)
    host = service.url.removeprefix("http://")
    for dry_run in (True, False):
        async with open_runtime(settings_factory(dry_run=dry_run, playbooks=str(tmp_path / "pb"),
                                                 data_dir=str(tmp_path / f"data-{dry_run}")),
                                clock=vclock, start_worker=False) as rt:
            good, bad = (validate_payload(payload(alert_json({"alertname": "A", "host": h}))).alerts[0]
                         for h in (host, f"x@{host}"))
            await deliver(rt, payload(alert_json({"alertname": "A", "host": host}),
                                      alert_json({"alertname": "A", "host": f"x@{host}"})))
            ran = await rt.store.get_execution(execution_id(good.dedup_key, "verify"))
            assert ran is not None and ran["results"][0]["status"] == ("planned" if dry_run else "ok"), ran
            refused = await rt.store.decision(execution_id(bad.dedup_key, "verify"))
            assert refused is not None and refused.kind.value == "not_allowed"
            assert "carries credentials" in refused.reason
        assert len(service.seen) == (0 if dry_run else 1)  # never for the refused URL, nor in dry-run


async def test_the_daemon_will_not_start_with_a_prometheus_check_and_no_prometheus(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "verify.yaml").write_text(playbook_text(
        {"action": "restart"}, {"action": "prometheus_check", "query": "up", "condition": "== 1"}))
    with pytest.raises(ConfigError, match=r"verify.yaml:\d+: prometheus_check steps need prometheus.url"):
        async with open_runtime(settings_factory(playbooks=str(tmp_path / "pb")), clock=vclock,
                                start_worker=False):
            pass
    with pytest.raises(ConfigError, match=r"prometheus\.url: 'ftp://prom' is not an absolute http"):
        async with open_runtime(settings_factory(playbooks=str(tmp_path / "pb"), prometheus={"url": "ftp://prom"}),
                                clock=vclock, start_worker=False):
            pass


async def test_a_reload_that_adds_a_prometheus_check_without_prometheus_keeps_the_last_good_set(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    book = tmp_path / "pb" / "verify.yaml"
    book.write_text(playbook_text({"action": "restart"}))
    async with open_runtime(settings_factory(playbooks=str(tmp_path / "pb")), clock=vclock,
                            start_worker=False) as rt:
        before = rt.playbooks.current
        book.write_text(playbook_text({"action": "restart"}, {"action": "prometheus_check", "query": "up",
                                                              "condition": "== 1"}))
        assert not await rt.playbooks.reload_async()
        assert rt.playbooks.current is before
        assert [p.message for p in rt.playbooks.last_problems] == [
            "prometheus_check steps need prometheus.url (REMEDIATOR_PROMETHEUS_URL)"]


async def test_wait_resolved_in_the_daemon_reads_the_resolve_the_webhook_recorded(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "verify.yaml").write_text(playbook_text({"action": "wait_resolved", "interval": "10s"}))
    firing = alert_json({"alertname": "A"})
    async with open_runtime(settings_factory(dry_run=False, playbooks=str(tmp_path / "pb")), clock=vclock,
                            start_worker=False) as rt:
        running = asyncio.ensure_future(deliver(rt, payload(firing)))
        await vclock.sleeping(lambda left: left == 10.0)  # the check has looked once, and waits its interval
        await vclock.advance(10.0)
        await vclock.sleeping(lambda left: left == 10.0)
        await rt.store.record_alerts(received(payload({**firing, "status": "resolved",
                                                       "endsAt": "2026-11-22T10:05:00Z"}), vclock))
        await vclock.advance(10.0)
        await running
        [execution] = await rt.store.list_executions()
        full = await rt.store.get_execution(execution["id"])
    assert execution["status"] == "succeeded"
    assert full["results"][0]["details"]["attempts"] == 3 and full["results"][0]["details"]["waited"] == 20.0


#: check -> (its step, with the service's URL as {url}; the attempts the resumed check makes)
CRASH_CASES: dict[str, tuple[dict[str, Any], int]] = {
    "http_check": ({"action": "http_check", "url": "{url}", "for": "20s", "interval": "10s"}, 3),
    "prometheus_check": ({"action": "prometheus_check", "query": "up", "condition": "== 1", "for": "20s",
                          "interval": "10s"}, 3),
    "wait_resolved": ({"action": "wait_resolved", "interval": "10s"}, 1),  # resolved while the daemon was down
}


@pytest.mark.parametrize("check", sorted(CRASH_CASES))
async def test_a_check_cut_off_by_a_crash_checks_again_on_resume_and_repeats_no_write(
    check: str, service: Service, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """The daemon dies while the check waits between attempts.  The resumed execution checks afresh
    (a check has no intent: it wrote nothing) and never repeats the write made before it."""
    step, attempts = CRASH_CASES[check]
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "verify.yaml").write_text(playbook_text(
        {"action": "restart"}, {k: v.format(url=service.url) if k == "url" else v for k, v in step.items()}))
    settings = settings_factory(dry_run=False, playbooks=str(tmp_path / "pb"), prometheus={"url": service.url})
    service.answer = prometheus(lambda t: (200, vector("1"))) if check == "prometheus_check" else status(200)
    firing = alert_json({"alertname": "A"})
    first = Recorder()
    async with open_runtime(settings, clock=vclock, executors=(first, first), start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(firing), vclock))
        crashed = asyncio.ensure_future(rt.worker.drain())
        await vclock.sleeping(lambda left: left == 10.0)  # the check looked once and waits: the daemon "dies"
        crashed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await crashed
        if check == "wait_resolved":
            await rt.store.record_alerts(received(payload({**firing, "status": "resolved",
                                                           "endsAt": "2026-11-22T10:05:00Z"}), vclock))
    assert [c[0] for c in first.calls] == ["restart"]
    assert len(service.seen) == (0 if check == "wait_resolved" else 1)
    second = Recorder()
    async with open_runtime(settings, clock=vclock, executors=(second, second), start_worker=False) as rt:
        assert await drive(vclock, rt.pipeline.resume_unfinished(), within=10.0) == 1
        [execution] = await rt.store.list_executions()
        full = await rt.store.get_execution(execution["id"])
    assert second.calls == []  # the restart is not made again
    assert execution["status"] == "succeeded"
    result = full["results"][1]
    assert result["status"] == "ok" and result["details"]["attempts"] == attempts  # for: 20s counted afresh
    assert "intent" not in result["details"] and "wrote" not in result["details"]


async def test_a_body_is_searched_in_linear_time_whatever_the_pattern(service: Service, checks: Checks,
                                                                     vclock: VirtualClock) -> None:
    # One unbounded repeat sent the search to Python's backtracking engine, quadratic in a line's
    # length, on the event loop: a 1 MiB one-line answer without a match held the loop 11 minutes.
    service.answer = status(200, "x" * (1024 * 1024 - 100))
    step = planned({"action": "http_check", "url": service.url, "body_matches": '.*"status":"UP"',
                    "timeout": "1s", "interval": "1s"})
    result = await run(checks, vclock, step)  # an RE2 scan: milliseconds (pytest-timeout fails the old way)
    assert result.status == "failed" and "the body does not match" in result.details["last"]
    service.answer = status(200, "x" * 1000 + '"status":"UP"')
    assert (await run(checks, vclock, step)).status == "ok"


async def test_no_cookie_is_kept_from_one_check_to_the_next(service: Service, checks: Checks,
                                                          vclock: VirtualClock) -> None:
    # An ingress's affinity cookie pinned every later check of that host, from any alert, to one pod.
    cookies: list[str] = []

    async def sticky(t: float, request: web.Request) -> web.StreamResponse:
        cookies.append(request.headers.get("Cookie", ""))
        response = web.Response(text="ok")
        response.set_cookie("INGRESSCOOKIE", "pod-a")
        return response

    service.answer = sticky
    by_name = service.url.replace("127.0.0.1", "localhost")  # aiohttp keeps no cookie for a bare IP anyway
    for _ in range(2):
        assert (await run(checks, vclock, planned({"action": "http_check", "url": by_name}))).ok
    assert cookies == ["", ""]


async def test_request_timeout_bounds_an_attempt_with_its_redirects(service: Service, checks: Checks,
                                                                    vclock: VirtualClock) -> None:
    # Each same-origin hop had a timeout of its own: five slow hops took five times request_timeout.
    async def slow_hops(t: float, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.15)  # the server's own slowness, in real time (the client's bound is real time)
        hop = int(request.query.get("hop", "0"))
        if hop < 4:
            raise web.HTTPFound(f"/?hop={hop + 1}")
        return web.Response(text="ok")

    service.answer = slow_hops
    step = planned({"action": "http_check", "url": service.url, "timeout": "1s", "interval": "1s",
                    "request_timeout": "400ms"})
    result = await run(checks, vclock, step)
    assert result.status == "failed" and result.details["last"] == "no answer within 0.4s"


async def test_a_prometheus_that_redirects_is_told_not_followed(service: Service, checks: Checks,
                                                                vclock: VirtualClock) -> None:
    # Followed, a 301 turned the POST into a GET without the query, taking the bearer token along;
    # what answered it (here a page that looks like a passing result) was judged as the query's answer.
    async def moved(t: float, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            raise web.HTTPMovedPermanently("/prometheus/api/v1/query")
        return web.json_response(vector("0"))

    service.answer = moved
    result = await run(checks, vclock, query_step())
    assert result.status == "failed" and result.details["attempts"] == 1
    assert "HTTP 301: Prometheus redirects to /prometheus/api/v1/query: set prometheus.url" in result.message
    assert [(method, path) for _, method, path, _ in service.seen] == [("POST", "/api/v1/query")]
