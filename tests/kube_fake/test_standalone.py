"""``python -m remediator.testing.kube`` as a process: starts, serves a state file, stops on signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config

STATE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: registry.example/web:1.0
        env: [{name: DB_POOL_MAX_SIZE, value: "10"}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remediator.testing.kube", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
    assert line.startswith("fake-kube listening on http://127.0.0.1:"), line
    return proc, line.split(" on ", 1)[1].strip()


async def stop(proc: asyncio.subprocess.Process, sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=15)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serves_a_state_file_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    state = tmp_path / "state.yaml"
    state.write_text(STATE)
    port = free_port()
    proc, url = await start("--port", str(port), "--state", str(state))
    try:
        assert url == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(50):  # bounded: the first reconcile has already run, but be tolerant
                async with http.get(f"{url}/api/v1/namespaces/shop/pods") as resp:
                    if len((await resp.json())["items"]) == 2:
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the seeded deployment never got its pods")
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            f"apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
            "users: [{name: fake, user: {token: t}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\ncurrent-context: fake\n"
        )
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        async with client.ApiClient(configuration) as api:
            apps: Any = client.AppsV1Api(api)
            d = await apps.read_namespaced_deployment("web", "shop")
            assert d.status.ready_replicas == 2 and d.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
            patch = {"spec": {"template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "DB_POOL_MAX_SIZE", "value": "20"}]}]}}}}
            await apps.patch_namespaced_deployment("web", "shop", patch)
            d = await apps.read_namespaced_deployment("web", "shop")
            assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    finally:
        code, out, err = await stop(proc, sig)
    assert code == 0
    assert "fake-kube stopped" in out
    assert "skipped Service/web (kind not served)" in err


async def test_port_zero_picks_a_free_port_and_http_faults_work() -> None:
    proc, url = await start("--port", "0", "--ready-delay", "0.1")
    try:
        async with aiohttp.ClientSession(base_url=url) as http:
            async with http.post("/_fake/faults", json={"path": "/version", "status": 503}) as resp:
                assert resp.status == 201
            async with http.get("/version") as resp:
                assert resp.status == 503 and (await resp.json())["reason"] == "ServiceUnavailable"
            async with http.get("/version") as resp:
                assert resp.status == 200 and (await resp.json())["major"] == "1"
    finally:
        code, _, _ = await stop(proc, signal.SIGTERM)
    assert code == 0


async def test_unreadable_state_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\nmetadata: [\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remediator.testing.kube", "--port", "0", "--state", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 2
    assert str(bad) in err.decode() and "invalid YAML" in err.decode()
