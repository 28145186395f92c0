"""``remediator serve`` as a process: ``KUBECONFIG`` alone makes it act on that cluster; live
mode without a cluster refuses to start; a port in use is one clean line and a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube, running_fake_kube
from tests.deployed.daemon import free_port, serving
from tests.executor.harness import NS, playbook, web
from tests.payloads import alert_json, payload

RESTART = playbook("- action: restart\n")


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """The process environment with nothing of ours and no kubeconfig of the machine's."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("REMEDIATOR_", "KUBE")) and k not in ("HOME",)}
    return {**keep, "HOME": str(home), **extra}


@pytest.fixture
async def real_time_kube() -> AsyncIterator[FakeKube]:
    async with running_fake_kube(FakeCluster(clock=time.time)) as kube:
        yield kube


async def test_kubeconfig_alone_makes_serve_act_on_that_cluster(tmp_path: Path, real_time_kube: FakeKube) -> None:
    kube = real_time_kube
    kube.cluster.apply(web())
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "fix.yaml").write_text(RESTART)
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", NS)
    port = free_port()
    env = bare_env(tmp_path, KUBECONFIG=str(kubeconfig), REMEDIATOR_WEBHOOK_TOKENS="t1")
    args = ["serve", "--playbooks", str(tmp_path / "pb"), "--data-dir", str(tmp_path / "var"),
            "--listen", f"127.0.0.1:{port}"]
    async with serving(args, env, cwd=str(tmp_path)) as daemon:
        found = await daemon.named("kubernetes")
        assert found == {**found, "mode": "kubeconfig", "server": kube.url, "context": "fake", "user": "fake"}
        assert (await daemon.named("listening"))["dry_run"] is False
        async with aiohttp.ClientSession() as http:
            body = payload(alert_json({"alertname": "Broken", "deployment": "web"}))
            async with http.post(f"{daemon.url}/webhooks/alertmanager", json=body,
                                 headers={"Authorization": "Bearer t1"}) as r:
                assert r.status == 200
        finished = await daemon.named("execution finished")
        assert finished["result"] == "succeeded", daemon.log()
    patches = kube.cluster.requests.matching("PATCH", f"/namespaces/{NS}/deployments/web$")
    assert patches and "dryRun" not in patches[0].query
    template = kube.cluster.get("deployments", NS, "web")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    assert daemon.raw == []  # nothing but JSON on stderr


def test_live_mode_without_a_cluster_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "remediator", "serve", "--data-dir", str(tmp_path / "var"), "--listen",
         f"127.0.0.1:{free_port()}", "--playbooks", str(Path(__file__).resolve().parents[2] / "playbooks")],
        env=bare_env(tmp_path, REMEDIATOR_WEBHOOK_TOKENS="t1"), cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "remediator: configuration error: not in dry-run, and no Kubernetes cluster (kubernetes.mode: auto): "
        "found no service account (KUBERNETES_SERVICE_HOST and a token), no KUBECONFIG and no ~/.kube/config; "
        "configure a cluster or run with --dry-run (REMEDIATOR_DRY_RUN=true)")
    assert not (tmp_path / "var").exists()  # refused before opening anything


def test_a_port_in_use_is_one_clean_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "remediator", "serve", "--dry-run", "--data-dir", str(tmp_path / "var"),
             "--listen", f"127.0.0.1:{port}"],
            env=bare_env(tmp_path, REMEDIATOR_WEBHOOK_TOKENS="t1", REMEDIATOR_LOG_FORMAT="json"),
            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stderr.splitlines()]  # every line JSON: no traceback
    last = events[-1]
    assert (last["event"], last["level"], last["address"]) == ("cannot listen", "error", f"127.0.0.1:{port}")
    assert "in use" in last["error"]
    assert "Traceback" not in done.stderr
