"""The monitoring side of an end-to-end run: Debian's Prometheus, and the service it watches.

:class:`Prometheus` runs the real binary with a configuration the test writes (scrape
jobs, rule files, the Alertmanager it sends alerts to).  :class:`ApiService` stands in
for the service a runbook is about: an HTTP server (aiohttp, on a thread of its own so
it answers scrapes whatever the test is doing) exposing the request counters the alert
rules read, the health endpoint a playbook's ``http_check`` asks, and the on-call
webhook the daemon notifies.  The test sets how the service behaves (requests per
second, the share of 5xx answers); the counters grow with real time between scrapes,
as a real exporter's do.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from remediator.notify.webhook import verify_signature
from tests.e2e.processes import _Service, free_port, http_get

START_TIMEOUT = 30.0


class Prometheus(_Service):
    """Debian's ``prometheus`` on a loopback port chosen up front (the daemon is configured with its URL first)."""

    name = "prometheus"
    ready_path = "/-/ready"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", workdir / "prometheus.log")
        self.config = workdir / "prometheus.yml"

    def start(self, config: Mapping[str, Any]) -> None:
        """Write ``config`` (a prometheus.yml as a mapping) and run Prometheus with it."""
        self.config.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self._spawn([self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"], self.workdir)

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data`` (asserting Prometheus answered ``success``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.url}/api/v1/{path}{query}")
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"prometheus /api/v1/{path}: {status} {answer}"
        return answer["data"]

    def query(self, expr: str) -> list[float]:
        """The values of an instant query's samples (a vector result)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [float(sample["value"][1]) for sample in data["result"]]

    def alerts(self) -> dict[str, str]:
        """Every alert Prometheus holds: alertname -> state (``pending`` / ``firing``)."""
        return {a["labels"]["alertname"]: a["state"] for a in self.api("alerts")["alerts"]}


@dataclass(frozen=True)
class Traffic:
    """What the service is doing: requests per second, and the share of them answered with a 500."""

    rps: float
    error_ratio: float


@dataclass(frozen=True)
class Notification:
    """One webhook-channel delivery the on-call endpoint received, and whether its signature held."""

    body: dict[str, Any]
    signed: bool


class ApiService:
    """The service under the runbook, as Prometheus and the daemon see it (a thread running an aiohttp app).

    ``GET /metrics``: ``http_server_requests_seconds_count{status="200"|"500"}`` counters
    and ``release_last_good_info{service, version}`` (what the deploy pipeline would
    export: the rule's ``rollback_version`` annotation queries it).  ``GET /actuator/health``:
    Spring Boot's ``{"status": "UP"}``.  ``POST /oncall``: the daemon's webhook channel,
    each delivery kept with its signature checked against ``secret``.  ``port`` and ``url``
    are set by :meth:`start`.
    """

    def __init__(self, *, last_good_version: str, secret: str, traffic: Traffic) -> None:
        self.port = 0  # the kernel picks it when the server binds: no race with other tests for a "free" port
        self.url = ""
        self.last_good_version = last_good_version
        self.secret = secret
        self._lock = threading.Lock()
        self._traffic = traffic
        self._counts = {"200": 0.0, "500": 0.0}
        self._since = time.monotonic()
        self._notifications: list[Notification] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # -- what the test sets and reads, from its own thread ------------------------------

    def set_traffic(self, traffic: Traffic) -> None:
        with self._lock:
            self._advance()
            self._traffic = traffic

    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def _advance(self) -> None:
        """Count the requests served since the last look, at the current traffic (the lock is held)."""
        now = time.monotonic()
        served = self._traffic.rps * (now - self._since)
        self._counts["500"] += served * self._traffic.error_ratio
        self._counts["200"] += served * (1 - self._traffic.error_ratio)
        self._since = now

    # -- the HTTP side ------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        with self._lock:
            self._advance()
            counts = dict(self._counts)
        lines = ["# TYPE http_server_requests_seconds_count counter"]
        lines += [f'http_server_requests_seconds_count{{status="{s}",uri="/orders"}} {n}' for s, n in counts.items()]
        lines += ["# TYPE release_last_good_info gauge",
                  f'release_last_good_info{{service="api-service",version="{self.last_good_version}"}} 1']
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    async def _oncall(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signed = verify_signature(self.secret, request.headers.get("X-Remediator-Timestamp", ""), raw,
                                  request.headers.get("X-Remediator-Signature", ""), now=time.time())
        with self._lock:
            self._notifications.append(Notification(json.loads(raw), signed))
        return web.json_response({"ok": True})

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/actuator/health", self._health)
        app.router.add_post("/oncall", self._oncall)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                self.port = int(runner.addresses[0][1])
                self.url = f"http://127.0.0.1:{self.port}"
                self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            finally:
                self._started.set()  # listening, or failed: start() is told either way
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="api-service", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT) or self._stop is None:
            raise RuntimeError("the test's api-service did not start listening")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)
            self._thread = None
