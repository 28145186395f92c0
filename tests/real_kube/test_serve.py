"""The acceptance test of issue 13: ``remediator serve`` as an operator runs it, against the real control plane.

Alertmanager v4 webhooks for every shipped playbook (and a ``delete_pod`` playbook written
here) go to a daemon started as a subprocess with a kubeconfig for the cluster.  With
``--dry-run`` not one object in the namespace changes (every resourceVersion compared,
every pod still there): the once-broken dry-run ``delete_pod`` is proven on the real
apiserver.  Then the same alerts go to a live daemon, and what changed in the cluster is
exactly what the audit (``GET /api/v1/executions/<id>``) says each step changed.

The shipped playbooks allow namespaces shop, payments, checkout and default; the test
uses ``checkout`` (created and deleted here) so that they run unmodified.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from remediator.core import rollout
from remediator.testing.control_plane import ControlPlane, Kubelet, create_namespace, delete_namespace
from tests.e2e.processes import PYTHON, free_port, http_get, rfc3339, wait_for
from tests.kube_fake.helpers import deployment
from tests.payloads import PLAYBOOKS, alert_json, payload
from tests.real_kube.helpers import settled

NAMESPACE = "checkout"
FINISHED_WITHIN = 45.0

DELETE_POD_PLAYBOOK = """\
name: stuck-pod-delete
description: Delete a pod that is stuck; its ReplicaSet makes a new one
match:
  alertname: PodStuck
  matchers: ['namespace=~".+"', 'deployment=~".+"']
target:
  kind: Deployment
  namespace: "{{ labels.namespace }}"
  name: "{{ labels.deployment }}"
guardrails:
  namespaces: [checkout]
steps:
  - action: delete_pod
    pod: "{{ labels.pod }}"
  - action: wait_healthy
    timeout: 1m
"""

#: Alert labels per playbook, each on its own Deployment so that each change is one playbook's.
ALERTS: dict[str, dict[str, str]] = {
    "db-pool-exhaustion": {"alertname": "HighDatabaseConnectionUsage", "severity": "critical",
                           "deployment": "orders-api"},
    "error-rate-after-deploy-rollback": {"alertname": "HighErrorRateAfterDeploy", "severity": "critical",
                                         "deployment": "web"},
    "high-latency-scale-up": {"alertname": "HighLatency", "severity": "warning", "deployment": "api"},
    "service-down-restart": {"alertname": "ServiceDown", "severity": "critical", "deployment": "frontend"},
    "stuck-pod-delete": {"alertname": "PodStuck", "severity": "warning", "deployment": "worker"},
}


class Serve:
    """``python -m remediator serve [--dry-run]`` on a free port, configured through its environment."""

    def __init__(self, workdir: Path, playbooks: Path, kubeconfig: Path, *, dry_run: bool) -> None:
        workdir.mkdir(parents=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.webhook_token, self.read_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.log_path = workdir / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_") and k != "KUBECONFIG"}
        env.update(
            REMEDIATOR_WEBHOOK_TOKENS=self.webhook_token,
            REMEDIATOR_API_READ_TOKENS=self.read_token,
            REMEDIATOR_KUBERNETES_MODE="kubeconfig",
            REMEDIATOR_KUBERNETES_KUBECONFIG=str(kubeconfig),
            REMEDIATOR_WORKER_POLL_INTERVAL="200ms",
            REMEDIATOR_LOG_FORMAT="json",
        )
        argv = [str(PYTHON if PYTHON.exists() else sys.executable), "-m", "remediator", "serve",
                *(["--dry-run"] if dry_run else []), "--playbooks", str(playbooks),
                "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(workdir / "data")]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, timeout=30, what=f"the daemon's /readyz ({self.log_path})")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def _ready(self) -> bool | None:
        if self.proc.poll() is not None:
            pytest.fail(f"daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
        try:
            return True if http_get(self.base + "/readyz", timeout=1)[0] == 200 else None
        except OSError:
            return None

    def alert(self, labels: dict[str, str]) -> None:
        """One Alertmanager v4 webhook delivery, firing since a minute ago."""
        fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        body = payload(alert_json(labels, starts_at=rfc3339(datetime.now(UTC) - timedelta(minutes=1)),
                                  fingerprint=fingerprint))
        request = urllib.request.Request(
            self.base + "/webhooks/alertmanager", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.webhook_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())["new"] == 1

    def get(self, path: str) -> Any:
        status, body = http_get(self.base + path, token=self.read_token)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)

    def finished(self, count: int) -> list[dict[str, Any]]:
        """The ``count`` executions once every one has ended (bounded wait on the daemon)."""

        def done() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = self.get("/api/v1/executions?limit=1000")["executions"]
            ended = len(items) == count and all(e["status"] not in ("pending", "running") for e in items)
            return items if ended else None

        return wait_for(done, timeout=FINISHED_WITHIN, what=f"{count} finished executions ({self.log_path})")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, f"daemon exited with {code}:\n{self.log_path.read_text()[-3000:]}"


@pytest.fixture
def playbooks(tmp_path: Path) -> Path:
    """The shipped playbooks, unchanged, plus the delete_pod one."""
    folder = tmp_path / "playbooks"
    folder.mkdir()
    for shipped in sorted(PLAYBOOKS.glob("*.yaml")):
        shutil.copy(shipped, folder / shipped.name)
    (folder / "stuck-pod-delete.yaml").write_text(DELETE_POD_PLAYBOOK)
    return folder


@pytest.fixture
async def checkout(kube_admin: Any, control_plane: ControlPlane) -> AsyncIterator[Any]:
    """Namespace ``checkout`` with five ready Deployments (web at its second revision), run by the kubelet."""
    await create_namespace(kube_admin, NAMESPACE)
    kubelet: Kubelet = control_plane.kubelet()
    kubelet.manage(NAMESPACE)
    apps = client.AppsV1Api(kube_admin)
    try:
        pool = [{"name": "DB_POOL_MAX_SIZE", "value": "20"}]
        for name in ("orders-api", "web", "api", "frontend", "worker"):
            env = pool if name == "orders-api" else None
            await apps.create_namespaced_deployment(NAMESPACE, deployment(name, NAMESPACE, replicas=2, env=env))
        for name in ("orders-api", "web", "api", "frontend", "worker"):
            await settled(kube_admin, NAMESPACE, name, mark=False)
        image = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:2.0"}]}}}}
        await apps.patch_namespaced_deployment("web", NAMESPACE, image)
        await settled(kube_admin, NAMESPACE, "web", mark=False)
        yield kube_admin
    finally:
        kubelet.release(NAMESPACE)
        await delete_namespace(kube_admin, NAMESPACE)


async def everything(api: Any, namespace: str) -> dict[str, dict[str, Any]]:
    """Every object of every namespaced resource the apiserver serves in ``namespace``, by ``resource/name``.

    Found by discovery, so nothing is left out by a list kept here.  Events are left out:
    they are the controllers' and the kubelet's diary, written by nobody we test.
    """
    core = await _get(api, "/api/v1")
    paths = [f"/api/v1/namespaces/{namespace}/{r['name']}" for r in core["resources"] if _listable(r)]
    for group in (await _get(api, "/apis"))["groups"]:
        version = group["preferredVersion"]["groupVersion"]
        found = await _get(api, f"/apis/{version}")
        paths += [f"/apis/{version}/namespaces/{namespace}/{r['name']}" for r in found["resources"] if _listable(r)]
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        listed = await _get(api, path)
        resource = path.rsplit("/", 1)[1]
        for item in listed.get("items") or []:
            out[f"{resource}/{item['metadata']['name']}"] = item
    return out


async def _get(api: Any, path: str) -> Any:
    return await api.call_api(path, "GET", response_types_map={200: "object"}, auth_settings=["BearerToken"],
                              _return_http_data_only=True)


def _listable(resource: dict[str, Any]) -> bool:
    return (resource.get("namespaced") and "list" in resource.get("verbs", []) and "/" not in resource["name"]
            and resource["name"] != "events")


def versions(objects: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    return {k: (o["metadata"]["resourceVersion"], o["metadata"].get("deletionTimestamp")) for k, o in objects.items()}


def spec_changes(diff: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """A diff's changes to ``spec``, comparable across objects: (path, op, value after) as JSON."""
    return {(d["path"], d["op"], json.dumps(d.get("after"), sort_keys=True))
            for d in diff if d["path"].startswith("/spec/")}


async def test_serve_dry_run_changes_nothing_and_the_live_run_changes_exactly_what_its_audit_says(
    checkout: Any, control_plane: ControlPlane, playbooks: Path, tmp_path: Path
) -> None:
    api = checkout
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    before = await everything(api, NAMESPACE)
    pods_before = sorted(k for k in before if k.startswith("pods/"))
    victim = pods_before[-1].removeprefix("pods/")
    assert victim.startswith("worker-") and len(pods_before) == 10
    alerts = {name: {**labels, "namespace": NAMESPACE} for name, labels in ALERTS.items()}
    alerts["stuck-pod-delete"]["pod"] = victim

    def serve(workdir: Path, *, dry_run: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Start a daemon, send every alert, wait for every execution to end: (list, their audit details)."""
        daemon = Serve(workdir, playbooks, kubeconfig, dry_run=dry_run)
        try:
            for labels in alerts.values():
                daemon.alert(labels)
            executions = daemon.finished(len(alerts))
            return executions, [daemon.get(f"/api/v1/executions/{e['id']}") for e in executions]
        finally:
            daemon.stop()

    # --- dry-run: every playbook runs, and the cluster is left exactly as it was ---------------
    executions, details = serve(tmp_path / "dry", dry_run=True)
    assert {e["playbook"]: e["status"] for e in executions} == dict.fromkeys(alerts, "dry_run")
    would = {d["playbook"]: [(r["action"], r["status"]) for r in d["results"]] for d in details}
    assert would["stuck-pod-delete"] == [("delete_pod", "planned"), ("wait_healthy", "planned")]
    assert all(r["message"].startswith("dry-run") for d in details for r in d["results"]), details
    after = await everything(api, NAMESPACE)
    assert versions(after) == versions(before), "serve --dry-run changed the cluster"
    assert sorted(k for k in after if k.startswith("pods/")) == pods_before  # the victim too

    # --- live: the same alerts; the cluster changes exactly as the audit says ------------------
    executions, details = serve(tmp_path / "live", dry_run=False)
    assert {e["playbook"]: e["status"] for e in executions} == dict.fromkeys(alerts, "succeeded"), details
    after = await everything(api, NAMESPACE)

    said: dict[str, set[tuple[str, str, str]]] = {}
    deleted_pods: set[str] = set()
    for detail in details:
        target = detail["target"]["name"]
        for result in detail["results"]:
            said.setdefault(target, set()).update(spec_changes(result.get("details", {}).get("diff") or []))
            if result["action"] == "delete_pod":
                deleted_pods.add(result["details"]["pod"])
    deployments = sorted(k.removeprefix("deployments/") for k in before if k.startswith("deployments/"))
    did = {name: spec_changes(rollout.diff(before[f"deployments/{name}"]["spec"], after[f"deployments/{name}"]["spec"],
                                           "/spec"))
           for name in deployments}
    assert did == {name: said.get(name, set()) for name in deployments}
    # each playbook but delete_pod changed its Deployment's spec: the audit is not just empty
    assert [name for name, changes in did.items() if not changes] == ["worker"], did
    gone = {k.removeprefix("pods/") for k in pods_before
            if k not in after or after[k]["metadata"].get("deletionTimestamp")} & {
        k.removeprefix("pods/") for k in pods_before if k.startswith("pods/worker-")}
    assert gone == deleted_pods == {victim}
