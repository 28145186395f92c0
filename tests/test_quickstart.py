"""The README's promise: `make run`, then the README's curl, gives a visible dry-run execution."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readme_curl() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\ncurl -s -X POST (.+?)\n#", text, re.S)
    assert block, "README.md lost its curl example"
    return "curl -s -X POST " + block.group(1).replace("\\\n", " ")


def readme_read_token() -> str:
    """The token the README's curl reads the audit with (`make run` must accept it as it is)."""
    text = (ROOT / "README.md").read_text()
    read = re.search(r"curl -s -H 'Authorization: Bearer (\S+)' http://127\.0\.0\.1:8080/api/v1/executions", text)
    assert read, "README.md lost how to read the executions"
    return read.group(1)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("curl") is None, reason="needs make and curl")
def test_make_run_then_readme_curl_shows_a_dry_run_execution(tmp_path: Path) -> None:
    port = free_port()
    read_token = readme_read_token()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}  # plain `make run`
    proc = subprocess.Popen(
        ["make", "-s", "run", f"LISTEN=127.0.0.1:{port}", f"DATA_DIR={tmp_path / 'var'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "daemon exited"
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "daemon did not become ready"
            time.sleep(0.1)
        cmd = readme_curl().replace("http://127.0.0.1:8080", base)
        out = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert json.loads(out) == {"status": "accepted", "alerts": 1, "new": 1, "duplicates": 0,
                                   "truncatedAlerts": 0}
        executions: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            listing = urllib.request.Request(base + "/api/v1/executions",
                                             headers={"Authorization": f"Bearer {read_token}"})  # as the README's curl
            with urllib.request.urlopen(listing, timeout=2) as r:
                executions = json.loads(r.read())["executions"]
            if executions and all(e["status"] not in ("pending", "running") for e in executions):
                break
            time.sleep(0.1)
        [ex] = executions
        assert ex["playbook"] == "db-pool-exhaustion"
        assert ex["status"] == "dry_run"
        assert ex["target"] == {"kind": "Deployment", "namespace": "shop", "name": "orders-api"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
