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


def test_rbac_grants_nothing_dangerous() -> None:
    """The exact set is derived from the executor's requests in tests/executor/test_rbac.py."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text()))
    rules = [rule for d in docs if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]
    assert rules
    for rule in rules:
        assert not set(rule["verbs"]) & {"create", "*", "escalate", "bind", "impersonate"}
        assert not set(rule["resources"]) & {"secrets", "pods/exec", "*"}
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert bindings == []  # per-namespace RoleBindings only


def test_deployment_manifest_points_probes_at_real_endpoints() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/deployment.yaml").read_text()))
    [dep] = [d for d in docs if d["kind"] == "Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
