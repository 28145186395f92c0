"""Real processes for the end-to-end tests: the daemon as a subprocess, and Debian's Alertmanager as its client.

Nothing here is mocked: the daemon is started exactly as an operator would start it
(``python -m remediator serve``), and Alertmanager talks to it over HTTP with a bearer
token from a credentials file, retrying and regrouping as it does in production.  The
only waiting is bounded polling on those external processes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from remediator.testing.kube.harness import kubeconfig_for

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something other than None (bounded: external processes only)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0, token: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(base: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` at ``base``/metrics whose labels include ``labels`` (0 when none)."""
    status, body = http_get(base + "/metrics")
    assert status == 200, f"GET {base}/metrics: {status}"
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def require_binary(binary: str, *alternatives: str) -> str:
    """The binary's path; a failure in CI (where `make test` installs it), a skip elsewhere."""
    for name in (binary, *alternatives):
        path = shutil.which(name)
        if path:
            return path
    reason = f"{binary} is not installed (`make alertmanager` installs Debian's prometheus-alertmanager)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must have it")
    pytest.skip(reason)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Daemon:
    """``remediator serve --dry-run`` on a fixed port and data dir, so it can be stopped and started again."""

    def __init__(self, workdir: Path, *, dry_run: bool = True, env: Mapping[str, str] | None = None,
                 playbooks: Path = ROOT / "playbooks") -> None:
        self.workdir = workdir
        self.dry_run = dry_run
        self.playbooks = playbooks
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.db_path = self.data_dir / "remediator.db"
        self.token = secrets.token_urlsafe(24)
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
        env.update(
            REMEDIATOR_WEBHOOK_TOKENS=self.token,
            REMEDIATOR_API_READ_TOKENS=self.token,  # get_json reads the audit with the same token
            REMEDIATOR_WORKER_POLL_INTERVAL="200ms",
            REMEDIATOR_LOG_FORMAT="json",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        assert self.proc is None, "daemon already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [
                    str(PYTHON if PYTHON.exists() else sys.executable),
                    "-m",
                    "remediator",
                    "serve",
                    *(["--dry-run"] if self.dry_run else []),
                    "--playbooks",
                    str(self.playbooks),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--data-dir",
                    str(self.data_dir),
                ],
                # not the repository: a stray ./remediator.yaml there would be picked up as the config
                cwd=self.workdir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(self._ready, timeout=STARTUP_TIMEOUT, what=f"the daemon's /readyz on port {self.port}")
        except BaseException:  # pytest's fail/skip too: never leave a daemon behind
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None

    def _ready(self) -> bool | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"daemon exited with {self.proc.returncode} before it was ready:\n{_tail(self.log_path)}")
        try:
            status, _ = http_get(self.base + "/readyz", timeout=1)
        except OSError:
            return None
        return True if status == 200 else None

    def stop(self) -> int:
        """SIGTERM, as a container runtime would; the exit code (0 means a graceful shutdown)."""
        assert self.proc is not None, "daemon not running"
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"daemon ignored SIGTERM for {STOP_TIMEOUT:.0f}s:\n{_tail(self.log_path)}")

    def log(self) -> str:
        return _tail(self.log_path)

    def get_json(self, path: str) -> Any:
        status, body = http_get(self.base + path, token=self.token)  # the read API takes the webhook token
        assert status == 200, f"GET {path}: {status} {body[:500]!r}"
        return json.loads(body)

    def executions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get_json("/api/v1/executions?limit=1000")["executions"]
        return items

    def metric(self, name: str, **labels: str) -> float:
        return scrape(self.base, name, **labels)

    def log_levels(self) -> set[str]:
        """The levels of every JSON log line the daemon wrote (it runs with ``log.format: json``)."""
        levels = set()
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                levels.add(str(json.loads(line).get("level")))
        return levels


class _Service:
    """A helper process with an HTTP readiness endpoint, its output in a log file."""

    name = "process"
    ready_path = "/readyz"

    def __init__(self, url: str, log_path: Path) -> None:
        self.url = url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], cwd: Path) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, timeout=STARTUP_TIMEOUT, what=f"{self.name}'s {self.ready_path} at {self.url}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
        try:
            status, _ = http_get(self.url + self.ready_path, timeout=1)
        except OSError:
            return None
        return True if status == 200 else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None

    def log(self) -> str:
        return _tail(self.log_path)


class FakeKubeProcess(_Service):
    """``python -m remediator.testing.kube`` seeded from manifests, on real time: the daemon's cluster."""

    name = "fake-kube"

    def __init__(self, workdir: Path, manifests: str) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", workdir / "fake-kube.log")
        self.state = workdir / "cluster.yaml"
        self.state.write_text(manifests)

    def start(self) -> None:
        self._spawn([str(PYTHON if PYTHON.exists() else sys.executable), "-m", "remediator.testing.kube",
                     "--port", str(self.port), "--state", str(self.state)], ROOT)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump(kubeconfig_for(self.url, namespace)))
        return path

    def get(self, path: str) -> Any:
        status, body = http_get(self.url + path)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)


class Alertmanager(_Service):
    """Debian's prometheus-alertmanager, routing everything to the daemon's webhook; amtool to fire alerts."""

    name = "alertmanager"
    ready_path = "/-/ready"

    def __init__(self, binary: str, amtool: str, workdir: Path, daemon: Daemon) -> None:
        self.binary = binary
        self.amtool = amtool
        self.workdir = workdir
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", workdir / "alertmanager.log")
        self.config_path = workdir / "alertmanager.yml"
        token_file = workdir / "remediator-token"
        token_file.write_text(daemon.token + "\n")
        token_file.chmod(0o600)
        config = {
            "route": {
                "receiver": "remediator",
                # one group per namespace: a new alert in a namespace re-sends the group's older
                # alerts, so the daemon sees real duplicate deliveries
                "group_by": ["namespace"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "4h",
            },
            "receivers": [
                {
                    "name": "remediator",
                    "webhook_configs": [
                        {
                            "url": f"{daemon.base}/webhooks/alertmanager",
                            "send_resolved": True,
                            "max_alerts": 0,
                            "http_config": {
                                "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                            },
                        }
                    ],
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        (self.workdir / "am-data").mkdir(exist_ok=True)
        self._spawn(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no HA gossip: a single, isolated instance
                "--log.level=debug",
            ],
            self.workdir,
        )

    def metric(self, name: str, **labels: str) -> float:
        return scrape(self.url, name, **labels)

    def add_alert(
        self,
        labels: Mapping[str, str],
        *,
        start: datetime,
        end: datetime | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """``amtool alert add``; an ``end`` in the past makes the alert resolved.

        ``start`` is always explicit: Alertmanager keeps the earliest startsAt of an alert,
        and the daemon keys deliveries on (fingerprint, startsAt, status).
        """
        cmd = [
            self.amtool,
            "alert",
            "add",
            f"--alertmanager.url={self.url}",
            f"--start={rfc3339(start)}",
            *[f"{k}={v}" for k, v in labels.items()],
            *[f"--annotation={k}={v}" for k, v in (annotations or {}).items()],
        ]
        if end is not None:
            cmd.append(f"--end={rfc3339(end)}")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=self.workdir)
        assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}"
