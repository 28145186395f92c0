"""What the browser tests and ``make screenshots`` look at: the real daemon (``remediator serve``, not
dry-run, embedded store) acting on the fake Kubernetes API (both processes), and Debian's headless
chromium driven by selenium.

Shared by ``conftest.py`` and ``screenshots.py`` so that the pictures in the README show exactly
what the tests check.  The only waiting is bounded polling on those external processes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.processes import Daemon, FakeKubeProcess, http_get, wait_for
from tests.e2e.test_live_cluster import CLUSTER as LIVE_CLUSTER
from tests.payloads import payload

#: Where Debian's packages put them (``make browser`` installs them).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: What chromium needs to run headless as root in a container, offline, without side trips:
#: no sandbox (root), no GPU, no QUIC, no first-run UI, no update/sync/component traffic.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)

#: The cluster the daemon acts on: the live end-to-end test's (shop/orders-api with a DB pool, shop/web).
CLUSTER = LIVE_CLUSTER

#: The playbooks the daemon runs: the shipped ones' actions, on targets every matched alert names.
PLAYBOOKS = {
    "grow-pool.yaml": """\
name: grow-pool
description: Grow the connection pool when it is nearly exhausted
match:
  alertname: HighDatabaseConnectionUsage
  matchers: ['namespace=~".+"', 'deployment=~".+"']
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop, payments]
  rate_limit: {max: 3, per: 1h}
  cooldown: 10m
steps:
  - {action: resize_pool, container: app, env: DB_POOL_MAX_SIZE, by: 10, max: 50}
  - {action: wait_healthy, timeout: 1m}
""",
    "scale-up.yaml": """\
name: scale-up
description: Scale a saturated deployment up by 50%
match:
  alertname: HighLatency
  matchers: ['namespace=~".+"', 'deployment=~".+"']
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop, payments]
  cooldown: 10m
  max_replicas: 10
steps:
  - {action: scale, factor: 1.5, min: 2, max: 10}
  - {action: wait_healthy, timeout: 1m}
""",
    "restart-approved.yaml": """\
name: restart-approved
description: Restart a crash-looping deployment once a person approves
match:
  alertname: KubeDeploymentCrashLooping
  matchers: ['namespace=~".+"', 'deployment=~".+"']
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop, payments]
  cooldown: 30m
approval: {required: true, timeout: 15m}
steps:
  - {action: restart}
  - {action: wait_healthy, timeout: 1m}
""",
}


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (one line), or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if absent:
        return f"{' and '.join(absent)} not installed (`make browser` installs Debian's chromium and chromium-driver)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium session on a fresh profile, removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="remediator-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Stack:
    """The daemon, its cluster and the tokens of each role."""

    daemon: Daemon
    cluster: FakeKubeProcess
    read_token: str
    admin_token: str

    @property
    def base(self) -> str:
        return self.daemon.base

    def post_alerts(self, *alerts: dict[str, Any]) -> None:
        """Post alerts as Alertmanager does (the webhook token)."""
        body = json.dumps(payload(*alerts)).encode()
        request = urllib.request.Request(self.base + "/webhooks/alertmanager", data=body, method="POST", headers={
            "Authorization": f"Bearer {self.daemon.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200, r.read()

    def api(self, path: str) -> Any:
        """GET a read API path with the read token."""
        status, body = http_get(self.base + path, timeout=10, token=self.read_token)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)

    def decisions(self, **query: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api("/api/v1/decisions?" + urllib.parse.urlencode(query))["decisions"]
        return items

    def paused(self) -> bool:
        return bool(self.api("/api/v1/guardrails")["paused"])

    def wait_decided(self, count: int) -> list[dict[str, Any]]:
        """The decisions once there are ``count`` of them (newest first)."""
        def probe() -> list[dict[str, Any]] | None:
            items = self.decisions(limit="100")
            return items if len(items) >= count else None
        return wait_for(probe, timeout=30, what=f"{count} decisions")

    def wait_finished(self, execution_id: str) -> dict[str, Any]:
        """An execution once it has finished (its steps ran against the fake cluster)."""
        def probe() -> dict[str, Any] | None:
            ex: dict[str, Any] = self.api(f"/api/v1/executions/{execution_id}")
            return ex if ex.get("finished_at") else None
        return wait_for(probe, timeout=60, what=f"execution {execution_id} to finish")


@contextmanager
def started(workdir: Path) -> Iterator[Stack]:
    """The fake cluster and the daemon (live, this module's playbooks), started at once (each needs
    only the other's address, known before either starts), stopped afterwards."""
    (workdir / "kube").mkdir(parents=True, exist_ok=True)
    (workdir / "daemon").mkdir(parents=True, exist_ok=True)
    cluster = FakeKubeProcess(workdir / "kube", CLUSTER)
    read, admin = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    kubeconfig = cluster.kubeconfig(workdir / "daemon" / "kubeconfig")
    playbooks = workdir / "playbooks"
    playbooks.mkdir(exist_ok=True)
    for name, text in PLAYBOOKS.items():
        (playbooks / name).write_text(text)
    daemon = Daemon(workdir / "daemon", dry_run=False, playbooks=playbooks, env={
        "REMEDIATOR_KUBERNETES_MODE": "kubeconfig",
        "REMEDIATOR_KUBERNETES_KUBECONFIG": str(kubeconfig),
        "REMEDIATOR_API_READ_TOKENS": read,
        "REMEDIATOR_API_ADMIN_TOKENS": admin,
    })
    try:
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(cluster.start), pool.submit(daemon.start)]:
                future.result()
        yield Stack(daemon, cluster, read, admin)
    finally:
        daemon.kill()
        cluster.stop()


def sign_in(driver: Any, base: str, token: str) -> None:
    """Sign in through the login form, as a person would (a fresh session each time)."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for(lambda: True if driver.current_url.rstrip("/").endswith("/ui") else None, timeout=10,
             what="the timeline after signing in")
