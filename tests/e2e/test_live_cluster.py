"""The whole product, live: Alertmanager -> daemon (not dry-run) -> Kubernetes API (the fake, as a process).

The daemon is configured the way an operator would (a kubeconfig named in its
environment) and acts on the fake over HTTP with the shipped playbooks; the result is
read back from the fake's API, as `kubectl get` would show it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import Alertmanager, Daemon, FakeKubeProcess, wait_for

pytestmark = pytest.mark.e2e

CLUSTER = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders-api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: orders-api}}
  template:
    metadata: {labels: {app: orders-api}}
    spec:
      containers:
        - name: app
          image: registry.example/orders:1.4
          env: [{name: DB_POOL_MAX_SIZE, value: "20"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: registry.example/web:2.0}]
"""


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[FakeKubeProcess]:
    workdir = tmp_path / "kube"
    workdir.mkdir()
    fake = FakeKubeProcess(workdir, CLUSTER)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def live_daemon(tmp_path: Path, fake_cluster: FakeKubeProcess) -> Iterator[Daemon]:
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    kubeconfig = fake_cluster.kubeconfig(workdir / "kubeconfig", "shop")
    d = Daemon(workdir, dry_run=False, env={"REMEDIATOR_KUBERNETES_MODE": "kubeconfig",
                                           "REMEDIATOR_KUBERNETES_KUBECONFIG": str(kubeconfig)})
    d.start()
    yield d
    if d.proc is not None:
        assert d.stop() == 0, d.log()


def finished(daemon: Daemon, playbook: str) -> dict[str, Any] | None:
    found = [e for e in daemon.executions() if e["playbook"] == playbook]
    return found[0] if found and found[0]["status"] not in ("running", "pending") else None


def test_alerts_remediate_the_cluster_for_real(
    alertmanager_binaries: tuple[str, str], live_daemon: Daemon, fake_cluster: FakeKubeProcess, tmp_path: Path
) -> None:
    binary, amtool = alertmanager_binaries
    (tmp_path / "am").mkdir()
    am = Alertmanager(binary, amtool, tmp_path / "am", live_daemon)
    am.start()
    try:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        am.add_alert({"alertname": "HighDatabaseConnectionUsage", "severity": "critical", "namespace": "shop",
                      "deployment": "orders-api"}, start=start)
        am.add_alert({"alertname": "HighLatency", "severity": "warning", "namespace": "shop",
                      "deployment": "web"}, start=start)
        pool = wait_for(lambda: finished(live_daemon, "db-pool-exhaustion"), timeout=60, what="the pool resize")
        scale = wait_for(lambda: finished(live_daemon, "high-latency-scale-up"), timeout=60, what="the scale-up")
    finally:
        am.stop()

    assert (pool["status"], pool["dry_run"]) == ("succeeded", False), live_daemon.get_json(
        f"/api/v1/executions/{pool['id']}")
    assert scale["status"] == "succeeded"
    orders = fake_cluster.get("/apis/apps/v1/namespaces/shop/deployments/orders-api")
    assert orders["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "DB_POOL_MAX_SIZE", "value": "30"}]
    assert orders["status"]["updatedReplicas"] == 2  # rolled out, which wait_healthy waited for
    web = fake_cluster.get("/apis/apps/v1/namespaces/shop/deployments/web")
    assert web["spec"]["replicas"] == 3  # 2 x 1.5, rounded up
    detail = live_daemon.get_json(f"/api/v1/executions/{pool['id']}")
    assert [(r["action"], r["status"]) for r in detail["results"]] == [("resize_pool", "ok"), ("wait_healthy", "ok")]
