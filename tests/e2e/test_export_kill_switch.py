"""The real daemon's own history, exported and replayed, decides as the daemon did under its kill switch.

``remediator export`` once wrote the alerts only: an alert decided ``paused`` live (the kill switch
engaged) replayed as ``executed``, though replay is meant to let the kill switch decide as it would
have.  Pause, alert, resume on a running daemon; export its store with the CLI; replay it with the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import PYTHON, ROOT, Daemon, rfc3339, wait_for

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-token"
ORDERS = {"alertname": "HighDatabaseConnectionUsage", "severity": "warning", "namespace": "shop",
          "deployment": "orders-api"}


def post(daemon: Daemon, path: str, token: str, body: dict[str, Any] | None = None) -> int:
    request = urllib.request.Request(daemon.base + path, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PYTHON if PYTHON.exists() else sys.executable), "-m", "remediator", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_pause_alert_resume_export_replay_decides_paused_as_live(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, env={"REMEDIATOR_API_ADMIN_TOKENS": ADMIN})
    daemon.start()
    try:
        assert post(daemon, "/api/v1/pause", ADMIN) == 200
        alert = {"status": "firing", "labels": ORDERS, "annotations": {}, "startsAt": rfc3339(datetime.now(UTC))}
        assert post(daemon, "/webhooks/alertmanager", daemon.token,
                    {"version": "4", "status": "firing", "receiver": "remediator", "alerts": [alert]}) == 200
        live = wait_for(lambda: daemon.get_json("/api/v1/decisions")["decisions"] or None, timeout=30,
                        what="the alert's decision")
        assert post(daemon, "/api/v1/resume", ADMIN) == 200
    finally:
        assert daemon.stop() == 0
    assert [(d["playbook"], d["decision"]) for d in live] == [("db-pool-exhaustion", "paused")]

    export = tmp_path / "export.jsonl"
    exported = cli("export", "--data-dir", str(daemon.data_dir), "-o", str(export), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert [x.get("control", "alert") for x in lines] == ["pause", "alert", "resume"]

    replayed = cli("replay", str(export), "--playbooks", str(ROOT / "playbooks"), "--format", "json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    decided = [(d["playbook"], d["decision"]) for d in json.loads(replayed.stdout)["decisions"] if d["playbook"]]
    assert decided == [("db-pool-exhaustion", "paused")]  # as live, not "executed"
