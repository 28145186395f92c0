"""The shipped deploy/ files are valid for the tools that consume them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_alertmanager_config_is_accepted_by_amtool() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        if os.environ.get("CI"):
            pytest.fail("amtool missing: `make test` installs prometheus-alertmanager")
        pytest.skip("amtool not installed")
    out = subprocess.run(
        [amtool, "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    conf = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    [hook] = next(r for r in conf["receivers"] if r["name"] == "remediator")["webhook_configs"]
    assert hook["send_resolved"] is True and hook["url"].endswith("/webhooks/alertmanager")


def test_rbac_grants_only_what_the_actions_need() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text()))
    [role] = [d for d in docs if d["kind"] == "ClusterRole"]
    grants = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert grants == {
        ("apps", "deployments"): {"get", "list", "watch", "patch"},
        ("apps", "statefulsets"): {"get", "list", "watch", "patch"},
        ("apps", "deployments/scale"): {"get", "patch", "update"},
        ("apps", "statefulsets/scale"): {"get", "patch", "update"},
        ("apps", "replicasets"): {"get", "list", "watch"},
        ("apps", "controllerrevisions"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch", "delete"},
    }
    for verbs in grants.values():
        assert not verbs & {"create", "*", "escalate", "bind"}


def test_deployment_manifest_points_probes_at_real_endpoints() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/deployment.yaml").read_text()))
    [dep] = [d for d in docs if d["kind"] == "Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
