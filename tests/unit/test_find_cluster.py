"""``kubernetes.mode: auto``: the pod's service account, else KUBECONFIG, else ~/.kube/config,
else none; and who the daemon will be there, for the startup log.  Nothing is contacted."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml

from remediator.runtime import Cluster, find_cluster
from remediator.settings import KubernetesSettings


def service_account(directory: Path, subject: str = "system:serviceaccount:ops:remediator") -> Path:
    directory.mkdir(parents=True)
    claims = base64.urlsafe_b64encode(json.dumps({"sub": subject}).encode()).decode().rstrip("=")
    (directory / "token").write_text(f"eyJhbGciOiJSUzI1NiJ9.{claims}.signature")
    (directory / "ca.crt").write_text("")
    return directory


def kubeconfig(path: Path, current: str, *contexts: tuple[str, str, str]) -> Path:
    """``contexts``: (name, server, user) each."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": f"c-{n}", "cluster": {"server": server}} for n, server, _ in contexts],
        "users": [{"name": user, "user": {"token": "x"}} for _, _, user in contexts],
        "contexts": [{"name": n, "context": {"cluster": f"c-{n}", "user": user}} for n, _, user in contexts],
    }))
    return path


AUTO = KubernetesSettings()
POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_in_a_pod_auto_uses_the_service_account(tmp_path: Path) -> None:
    sa = service_account(tmp_path / "sa")
    kc = kubeconfig(tmp_path / "kc", "dev", ("dev", "https://dev:6443", "me"))
    found = find_cluster(AUTO, {**POD, "KUBECONFIG": str(kc)}, serviceaccount=sa, home=tmp_path)
    assert found == Cluster("incluster", "https://10.96.0.1:443", "in-cluster", "system:serviceaccount:ops:remediator")
    assert found.settings(AUTO).mode == "incluster"


def test_a_service_host_without_a_token_is_not_a_pod(tmp_path: Path) -> None:
    """Kubernetes-like env in a container that mounts no token: fall through to the kubeconfig."""
    kc = kubeconfig(tmp_path / "kc", "dev", ("dev", "https://dev:6443", "me"))
    found = find_cluster(AUTO, {**POD, "KUBECONFIG": str(kc)}, serviceaccount=tmp_path / "none", home=tmp_path)
    assert (found.mode, found.server) == ("kubeconfig", "https://dev:6443")


def test_kubeconfig_names_server_context_and_user_of_the_current_or_chosen_context(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", "dev", ("dev", "https://dev:6443", "me"), ("prod", "https://prod:6443", "ops"))
    found = find_cluster(AUTO, {"KUBECONFIG": str(kc)}, serviceaccount=tmp_path / "none", home=tmp_path)
    assert found == Cluster("kubeconfig", "https://dev:6443", "dev", "me", str(kc))
    chosen = KubernetesSettings(context="prod")
    found = find_cluster(chosen, {"KUBECONFIG": str(kc)}, serviceaccount=tmp_path / "none", home=tmp_path)
    assert (found.server, found.context, found.user) == ("https://prod:6443", "prod", "ops")
    assert found.settings(chosen) == KubernetesSettings(mode="kubeconfig", kubeconfig=str(kc), context="prod")


def test_several_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", "b-ctx", ("a-ctx", "https://a:6443", "alice"))
    second = kubeconfig(tmp_path / "b", "a-ctx", ("b-ctx", "https://b:6443", "bob"))
    found = find_cluster(AUTO, {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"},
                         serviceaccount=tmp_path / "none", home=tmp_path)
    assert (found.server, found.context, found.user) == ("https://b:6443", "b-ctx", "bob")  # the first current-context


def test_without_kubeconfig_the_home_one_else_none(tmp_path: Path) -> None:
    none = find_cluster(AUTO, {}, serviceaccount=tmp_path / "none", home=tmp_path)
    assert none == Cluster("none")
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", "home", ("home", "https://home:6443", "me"))
    found = find_cluster(AUTO, {}, serviceaccount=tmp_path / "none", home=tmp_path)
    assert (found.mode, found.context, found.kubeconfig) == ("kubeconfig", "home", str(tmp_path / ".kube" / "config"))


def test_explicit_modes_are_taken_as_given(tmp_path: Path) -> None:
    sa = service_account(tmp_path / "sa")
    assert find_cluster(KubernetesSettings(mode="none"), POD, serviceaccount=sa).mode == "none"
    # a named but missing kubeconfig is the loader's to report (with the path), not silently none
    missing = KubernetesSettings(mode="kubeconfig", kubeconfig=str(tmp_path / "nope"))
    assert find_cluster(missing, {}, serviceaccount=sa) == Cluster("kubeconfig", kubeconfig=str(tmp_path / "nope"))
    assert find_cluster(KubernetesSettings(mode="incluster"), {}, serviceaccount=tmp_path).mode == "incluster"
