"""Acceptance: the manifests run as written.

The daemon starts with the environment the Deployment in deploy/kubernetes and a Service
named ``remediator`` give it (the Service's link variables included, whatever
``enableServiceLinks`` says: an overlay may turn them back on), its settings and playbooks
mounted from ConfigMaps in the kubelet's layout, its tokens from the Secret volume, its
database and Redis URLs as the Secret ``remediator-backends`` gives them.  An alert gets an
execution; an atomic swap of the playbooks ConfigMap is picked up by the running daemon.

Where a pod and a test process must differ (see tests/deployed/pod.py): paths are under a
directory, the port is a free one, and the cluster is the fake apiserver through a
kubeconfig, since the in-cluster one needs TLS and the kubelet's service-account mount.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import running_fake_kube
from tests.deployed.daemon import free_port, serving
from tests.deployed.kubelet import write_configmap
from tests.deployed.pod import Pod, configmap_files, one, service_links
from tests.guardrails.conftest import REDIS_URL, delete_prefix, prefixed
from tests.kube_fake.helpers import deployment
from tests.payloads import alert_json, payload
from tests.store.conftest import fresh_schema

EXTRA = """\
name: restart-when-down
match: {alertname: ServiceDown, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: default, name: "{{ labels.deployment }}"}
guardrails: {namespaces: [default]}
steps: [{action: restart}]
"""


def starter_alert() -> dict[str, Any]:
    """An alert the shipped starter playbook matches, naming a workload that exists."""
    [starter] = [yaml.safe_load(text) for text in configmap_files("remediator-playbooks").values()]
    labels = {"alertname": starter["match"]["alertname"], "namespace": "default", "deployment": "web"}
    return payload(alert_json(labels, fingerprint=secrets.token_hex(8)))


async def test_the_manifests_run_as_written(tmp_path: Path) -> None:
    tokens = {"webhook-tokens": "hook-" + secrets.token_hex(4), "read-tokens": "read-" + secrets.token_hex(4),
              "admin-tokens": "admin-" + secrets.token_hex(4)}
    prefix = f"test-deployed-{secrets.token_hex(4)}:"
    async with fresh_schema() as schema, running_fake_kube(FakeCluster(clock=time.time)) as kube:
        backends = {("remediator-backends", "database-url"): schema.dsn,
                    ("remediator-backends", "redis-url"): prefixed(REDIS_URL, prefix)}
        pod = Pod(tmp_path / "pod", {**backends, **{("remediator-tokens", k): f"{v}\n" for k, v in tokens.items()}})
        assert sorted(pod.secret_keys("remediator-tokens")) == sorted(tokens)  # the Secret holds what the pod reads
        pod.mount()
        kube.cluster.apply(deployment("web", "default"))
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV")},
            "HOME": str(tmp_path),
            **service_links(one("Service", "remediator")),
            **pod.env(),
            "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",  # every pod has these
            # the differences from a pod (module docstring): the port, and the cluster
            "REMEDIATOR_LISTEN": f"127.0.0.1:{port}",
            "REMEDIATOR_KUBERNETES_MODE": "kubeconfig",
            "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig", "default")),
        }
        try:
            async with serving(pod.args(), env, cwd=str(pod.mounts["data"])) as daemon, \
                    aiohttp.ClientSession(base_url=daemon.url) as http:
                def auth(role: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {tokens[role + '-tokens']}"}

                async with http.get("/readyz") as r:
                    assert r.status == 200, await r.text()
                async with http.post("/webhooks/alertmanager", json=starter_alert(), headers=auth("webhook")) as r:
                    assert r.status == 200, await r.text()
                finished = await daemon.named("execution finished")
                async with http.get("/api/v1/executions", headers=auth("read")) as r:
                    assert r.status == 200
                    [execution] = (await r.json())["executions"]
                assert execution["id"] == finished["execution_id"] and execution["status"] == "dry_run"
                assert execution["target"] == {"kind": "Deployment", "namespace": "default", "name": "web"}
                async with http.post("/api/v1/pause", headers=auth("webhook")) as r:
                    assert r.status == 403  # Alertmanager's token cannot switch remediation off

                # the ConfigMap is updated: the kubelet swaps ..data, the running daemon reloads
                seen = len(daemon.events)
                playbooks = pod.mounts["playbooks"]
                files = {**configmap_files("remediator-playbooks"), "restart.yaml": EXTRA}
                write_configmap(playbooks, files)
                loaded = await daemon.named("playbooks loaded", after=seen)
                assert sorted(loaded["names"]) == sorted([yaml.safe_load(EXTRA)["name"], "starter-check-rollout"])
                down = payload(alert_json({"alertname": "ServiceDown", "deployment": "web"},
                                          fingerprint=secrets.token_hex(8)))
                async with http.post("/webhooks/alertmanager", json=down, headers=auth("webhook")) as r:
                    assert r.status == 200
                restarted = await daemon.named("execution finished", after=seen)
                async with http.get(f"/api/v1/executions/{restarted['execution_id']}", headers=auth("read")) as r:
                    detail = await r.json()
                assert detail["playbook"] == "restart-when-down" and detail["status"] == "dry_run"
        finally:
            await delete_prefix(prefix)
    assert not daemon.raw, "\n".join(daemon.raw)  # the log is JSON lines only
    assert all(w.query.get("dryRun") == "All" for w in kube.cluster.requests.writes())  # dry_run: true, as shipped
