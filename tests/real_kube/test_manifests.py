"""deploy/kubernetes as the real apiserver sees it: kubectl applies it, and the RBAC grants what the executor uses.

``kubectl apply -k deploy/kubernetes --dry-run=server`` sends every object through the
apiserver's decoding, defaulting, validation and admission without storing it.  Unknown or
misspelt fields are caught by the apiserver too: ``--validate=warn`` asks for server-side
field validation, and every warning it returns (``unknown field "...livenesProbe"``) fails
the check.  (``--validate=strict`` would do the same, but this kubectl first fetches the
OpenAPI v3 documents, which the test apiserver serves unreliably.)  A broken copy of the
base must fail the same check, which shows it can fail.

The RBAC objects are applied for real (the ServiceAccount, the ClusterRole, and the
``grant/`` RoleBinding in one test namespace), then ``kubectl auth can-i`` asks the
authorizer, as the ServiceAccount, about every (verb, resource) the role lists: allowed in
the granted namespace, refused in another one, and nothing beyond the list.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.testing.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy/kubernetes"
SERVICE_ACCOUNT = "system:serviceaccount:remediator:remediator"
#: A minimal PrometheusRule/ServiceMonitor CRD pair (the Prometheus Operator's, reduced to what
#: the apiserver needs to accept our objects): enough to dry-run deploy/kubernetes/monitoring.
OPERATOR_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
            }],
        },
    }
    for kind, plural in (("PrometheusRule", "prometheusrules"), ("ServiceMonitor", "servicemonitors"))
]


class Kubectl:
    """The assets' kubectl (it bundles kustomize) pointed at the session's control plane as the admin."""

    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", "--request-timeout=30s", *args],
            input=stdin, capture_output=True, text=True, timeout=90, check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Iterator[Kubectl]:
    """kubectl for the control plane, with namespace ``remediator`` created for real.

    A server-side dry-run stores nothing, so the base's Namespace would not exist for the
    objects in it: the namespace is created first, as a first real apply would have.
    """
    binary = control_plane.assets / "kubectl"
    if not binary.is_file():
        found = shutil.which("kubectl")
        if found is None:
            pytest.skip("kubectl not found in $KUBEBUILDER_ASSETS nor on PATH")
        binary = Path(found)
    tool = Kubectl(binary, control_plane.kubeconfig_path)
    tool.ok("apply", "--validate=false", "-f", str(BASE / "namespace.yaml"))
    yield tool


def dry_run(kubectl: Kubectl, directory: Path) -> tuple[str, str]:
    """(what kubectl applied, what went wrong: its errors and the apiserver's warnings; empty when clean)."""
    done = kubectl("apply", "-k", str(directory), "--dry-run=server", "--validate=warn")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("Warning:")]
    problems = done.stderr if done.returncode != 0 else "\n".join(warnings)
    return done.stdout, problems


def test_the_base_applies_with_a_server_side_dry_run(kubectl: Kubectl) -> None:
    out, problems = dry_run(kubectl, BASE)
    assert problems == "", problems
    applied = {line.split(" ")[0] for line in out.splitlines()}
    for expected in (
        "namespace/remediator", "serviceaccount/remediator", "clusterrole.rbac.authorization.k8s.io/remediator",
        "configmap/remediator-playbooks", "service/remediator", "deployment.apps/remediator",
        "poddisruptionbudget.policy/remediator", "networkpolicy.networking.k8s.io/remediator",
    ):
        assert expected in applied, out
    assert any(name.startswith("configmap/remediator-config-") for name in applied), out


@pytest.mark.parametrize(
    ("mistake", "edit"),
    [
        ("a misspelt field", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
            livenesProbe=d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"])),
        ("a value the apiserver refuses", lambda d: d["spec"].update(replicas=-1)),
    ],
)
def test_a_broken_copy_of_the_base_is_refused(
    kubectl: Kubectl, tmp_path: Path, mistake: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(BASE, copy)
    docs = list(yaml.safe_load_all((copy / "deployment.yaml").read_text()))
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    edit(deployment)
    (copy / "deployment.yaml").write_text(yaml.safe_dump_all(docs))
    out, problems = dry_run(kubectl, copy)
    assert problems, f"{mistake} was accepted:\n{out}"
    assert "deployment" in problems.lower() or "livenesProbe" in problems, problems


def test_the_monitoring_addon_applies_once_the_operator_crds_exist(kubectl: Kubectl) -> None:
    kubectl.ok("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump_all(OPERATOR_CRDS))
    for crd in OPERATOR_CRDS:
        kubectl.ok("wait", "--for=condition=Established", "--timeout=30s", f"crd/{crd['metadata']['name']}")
    out, problems = dry_run(kubectl, BASE / "monitoring")
    assert problems == "", problems
    assert "prometheusrule.monitoring.coreos.com/remediator" in out
    assert "servicemonitor.monitoring.coreos.com/remediator" in out


def granted_rules() -> list[tuple[str, str, str]]:
    """(verb, resource[.group], subresource) for every rule in deploy/kubernetes/rbac.yaml."""
    docs = list(yaml.safe_load_all((BASE / "rbac.yaml").read_text()))
    out = []
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    base, _, sub = resource.partition("/")
                    for verb in rule["verbs"]:
                        out.append((verb, f"{base}.{group}" if group else base, sub))
    return out


def can_i(kubectl: Kubectl, namespace: str, verb: str, resource: str, sub: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, "-n", namespace, f"--as={SERVICE_ACCOUNT}"]
    if sub:
        args.append(f"--subresource={sub}")
    done = kubectl(*args)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"
    return answer == "yes"


def test_the_grant_allows_exactly_the_executors_verbs_in_its_namespace(kubectl: Kubectl, namespace: str) -> None:
    rules = granted_rules()
    assert len(rules) >= 10, rules
    other = f"{namespace}-other"
    refused = [
        ("create", "deployments.apps", ""), ("delete", "deployments.apps", ""), ("watch", "pods", ""),
        ("get", "secrets", ""), ("create", "pods", "exec"), ("update", "deployments.apps", ""),
    ]
    # one verb of each rule is enough to show the grant stops at its namespace's edge
    elsewhere = list({(resource, sub): (verb, resource, sub) for verb, resource, sub in rules}.values())
    kubectl.ok("create", "namespace", other)
    try:
        kubectl.ok("apply", "--validate=false", "-f", str(BASE / "rbac.yaml"))
        kubectl.ok("apply", "--validate=false", "-n", namespace, "-k", str(BASE / "grant"))
        questions = [(namespace, *r) for r in rules] + [(other, *r) for r in elsewhere] + \
            [(namespace, *r) for r in refused]
        # One kubectl per question, a few at a time: each is a separate SubjectAccessReview.
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = dict(zip(questions, pool.map(lambda q: can_i(kubectl, *q), questions), strict=True))
    finally:
        kubectl("delete", "namespace", other, "--wait=false")
    assert [q for q in questions if q[0] == namespace and q[1:] in rules and not answers[q]] == [], \
        "refused in the granted namespace"
    assert [q for q in questions if q[0] == other and answers[q]] == [], "allowed without a grant"
    assert [q for q in questions if q[1:] in refused and answers[q]] == [], "allowed beyond the role's rules"
