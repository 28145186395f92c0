"""``prometheus_check`` against Debian's real Prometheus, scraping a target the test serves.

Prometheus runs as an operator would run it, scraping every 500ms a tiny exporter (aiohttp,
in the test's own loop) whose error ratio the test sets.  The check is made from a playbook
step planned for an alert, exactly as the daemon makes it, and queries the real HTTP API:
what Prometheus answers (label sets, value formats, errors for a malformed expression,
empty results) is Prometheus' own, not a fake's idea of it.  Waiting is real here (a real
process scrapes on real time), always within the check's own timeout.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml
from aiohttp import web

from remediator.clock import SystemClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import parse_playbooks
from remediator.executors.checks import Checks, open_checks
from remediator.ports import StepContext, StepResult
from remediator.settings import PrometheusSettings
from tests.e2e.monitoring import Prometheus
from tests.e2e.processes import free_port
from tests.payloads import ROOT, T0

pytestmark = pytest.mark.e2e

#: The alert's own expression, for the series the alert is about.
QUERY = "demo_error_ratio{job={{ labels.job | tojson }}}"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, int]]:
    """A running Prometheus and the port of the target it scrapes (served by :func:`exporter`)."""
    binary = shutil.which("prometheus")
    if binary is None:
        reason = "Debian's prometheus is not installed (apt-get install -y prometheus; make lint installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must have it")
        pytest.skip(reason)
    target_port = free_port()
    server = Prometheus(binary, tmp_path_factory.mktemp("prometheus"))
    server.start({
        "global": {"scrape_interval": "500ms", "scrape_timeout": "400ms"},
        "scrape_configs": [{"job_name": "demo", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    })
    try:
        yield server, target_port
    finally:
        server.stop()


class Exporter:
    """The scrape target: one gauge, whose value the test sets."""

    def __init__(self) -> None:
        self.value = 0.0
        self.served = 0

    async def metrics(self, request: web.Request) -> web.Response:
        text = f'# TYPE demo_error_ratio gauge\ndemo_error_ratio{{service="api"}} {self.value}\n'
        # A service fresh from a rollback, as Micrometer exports it: requests served, none of them a
        # 5xx, so there is no 5xx series at all (counters appear with their first increment).
        self.served += 10
        text += ("# TYPE http_server_requests_seconds_count counter\n"
                 f'http_server_requests_seconds_count{{status="200",uri="/orders"}} {self.served}\n')
        return web.Response(text=text, content_type="text/plain")


@pytest.fixture
async def exporter(prometheus: tuple[Prometheus, int]) -> AsyncIterator[Exporter]:
    exporter = Exporter()
    app = web.Application()
    app.router.add_get("/metrics", exporter.metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", prometheus[1]).start()
    try:
        yield exporter
    finally:
        await runner.cleanup()


def planned(alert: Alert | None = None, **step: Any) -> PlannedStep:
    text = yaml.safe_dump({"name": "verify", "match": {"alertname": "HighErrorRate"},
                           "target": {"kind": "Deployment", "namespace": "shop", "name": "api"},
                           "steps": [{"action": "prometheus_check", "query": QUERY, "interval": "500ms", **step}]})
    [pb], problems = parse_playbooks(text, "verify.yaml")
    assert not problems, problems
    plan = make_plan(pb, alert or ALERT, global_dry_run=False)
    assert isinstance(plan, Plan), plan
    return plan.steps[0]


ALERT = Alert("e2e", "firing", {"alertname": "HighErrorRate", "job": "demo"}, starts_at=T0)
CTX = StepContext("e2e-1", ALERT, ResolvedTarget("Deployment", "shop", "api"), False, SystemClock())


class NoHistory:
    async def resolved_for(self, fingerprint: str, starts_at: Any) -> bool:
        return False


async def check(checks: Checks, **step: Any) -> StepResult:
    return await checks.run(planned(**step), CTX)


async def test_prometheus_check_follows_the_real_series(prometheus: tuple[Prometheus, int],
                                                        exporter: Exporter) -> None:
    server, _ = prometheus
    exporter.value = 0.5
    async with open_checks(PrometheusSettings(url=server.url, timeout=5.0), NoHistory()) as checks:
        # the error ratio is high: the alert's condition holds once Prometheus has scraped it
        firing = await check(checks, condition="> 0.1", timeout="30s")
        assert firing.status == "ok", firing.message
        assert firing.details["values"][0]["labels"] == {"__name__": "demo_error_ratio", "job": "demo",
                                                         "instance": f"127.0.0.1:{prometheus[1]}",
                                                         "service": "api"}
        # verification while it is still high: fails at its timeout, naming the sample
        still = await check(checks, condition="< 0.01", timeout="2s")
        assert still.status == "failed" and still.details["attempts"] >= 3
        assert still.details["last"].startswith("1 of 1 samples not < 0.01") and "= 0.5" in still.details["last"]
        # the exporter reports recovery: the check passes, and keeps passing for 1s
        exporter.value = 0.002
        recovered = await check(checks, condition="< 0.01", timeout="30s", **{"for": "1s"})
        assert recovered.status == "ok", recovered.message
        assert recovered.details["values"] == [{"labels": firing.details["values"][0]["labels"], "value": 0.002}]
        assert recovered.details["waited"] >= 1.0


async def test_what_prometheus_refuses_or_does_not_have(prometheus: tuple[Prometheus, int]) -> None:
    server, _ = prometheus
    async with open_checks(PrometheusSettings(url=server.url, timeout=5.0), NoHistory()) as checks:
        malformed = await check(checks, query="sum(demo_error_ratio", condition="< 1", timeout="30s")
        assert malformed.status == "failed" and malformed.details["attempts"] == 1  # at once, not at the timeout
        assert "HTTP 400: Prometheus answered bad_data" in malformed.message
        ranged = await check(checks, query="demo_error_ratio[1m]", condition="< 1", timeout="30s")
        assert ranged.details["attempts"] == 1 and "returns a matrix" in ranged.message
        empty = await check(checks, query='demo_error_ratio{job="none"}', condition="< 1", timeout="1s")
        assert empty.status == "failed" and empty.details["last"] == "no samples (on_empty: fail)"
        gone = await check(checks, query='demo_error_ratio{job="none"}', condition="< 1", on_empty="pass")
        assert gone.status == "ok" and gone.details["attempts"] == 1
        scalar = await check(checks, query="scalar(vector(0))", condition="== 0")
        assert scalar.status == "ok", scalar.message


async def test_a_label_quoted_with_tojson_is_one_prometheus_accepts_whatever_it_holds(
        prometheus: tuple[Prometheus, int]) -> None:
    # tojson wrote an emoji as a JSON surrogate pair (\\ud83d\\ude80), which PromQL's lexer refuses:
    # every check of an alert with such a label failed at once (HTTP 400), feeding on_failure and the breaker.
    server, _ = prometheus
    job = "api-\U0001F680 caf\u00e9 \"q\" \\ <&>' \u2028"
    alert = Alert("e2e", "firing", {"alertname": "HighErrorRate", "job": job}, starts_at=T0)
    step = planned(alert, condition="< 1", on_empty="pass")
    async with open_checks(PrometheusSettings(url=server.url, timeout=5.0), NoHistory()) as checks:
        result = await checks.run(step, StepContext("e2e-2", alert, CTX.target, False, SystemClock()))
    assert (result.status, result.details["attempts"]) == ("ok", 1), result.message
    assert result.details["last"] == "no samples (on_empty: pass)"


async def test_the_shipped_runbooks_error_ratio_check_passes_on_a_service_with_no_5xx_series(
        prometheus: tuple[Prometheus, int], exporter: Exporter) -> None:
    # Its query divided sum(rate(...5xx...)) by the total: with no 5xx series (fresh pods after the
    # rollback) the ratio was empty, on_empty failed the check, and on_failure undid the rollback.
    server, _ = prometheus
    book = yaml.safe_load((ROOT / "examples/runbooks/playbooks/api-service.yaml").read_text())
    [step] = [s for pb in book["playbooks"] for s in pb["steps"] if s["action"] == "prometheus_check"]
    query = step["query"].replace('job="api-service"', 'job="demo"').replace("[2m]", "[5s]")
    async with open_checks(PrometheusSettings(url=server.url, timeout=5.0), NoHistory()) as checks:
        result = await check(checks, query=query, condition=step["condition"], timeout="30s")
    assert result.status == "ok", result.message
    assert result.details["values"][0]["value"] == 0.0
