"""Choosing the cluster from settings: kubeconfig (+context), in-cluster, auto; and the runtime's wiring of it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.clock import VirtualClock
from remediator.core.errors import ConfigError
from remediator.executors.kube import open_kube_executors
from remediator.runtime import open_runtime
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, Harness, playbook, web

RESTART = playbook("- action: restart\n")


def two_context_kubeconfig(kube: FakeKube, path: Path) -> Path:
    """The fake as context ``fake``, next to a current context that points nowhere."""
    cfg = kube.kubeconfig(NS)
    cfg["clusters"].append({"name": "prod", "cluster": {"server": "http://127.0.0.1:9"}})
    cfg["contexts"].append({"name": "prod", "context": {"cluster": "prod", "user": "fake"}})
    cfg["current-context"] = "prod"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def no_pod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


def settings_with(settings_factory: Callable[..., Any], tmp_path: Path, dry_run: bool, **kubernetes: Any) -> Any:
    directory = tmp_path / "pb"
    directory.mkdir(exist_ok=True)
    (directory / "fix.yaml").write_text(RESTART)
    return settings_factory(playbooks=str(directory), dry_run=dry_run, kubernetes=kubernetes)


async def test_kubeconfig_with_a_context_drives_the_chosen_cluster(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    path = two_context_kubeconfig(kube, tmp_path / "kubeconfig")
    kube.cluster.apply(web())
    settings = settings_with(settings_factory, tmp_path, False, mode="kubeconfig", kubeconfig=str(path),
                             context="fake")
    kube.cluster.faults.server_error(503, method="PATCH", times=1)
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        ex = await Harness(rt, kube, vclock).fire()
        errors = rt.metrics.registry.get_sample_value("remediator_kube_api_errors_total", {"code": "503"})
        retries = rt.metrics.registry.get_sample_value("remediator_kube_api_retries_total", {"action": "restart"})
    assert ex["status"] == "succeeded"
    assert "kubectl.kubernetes.io/restartedAt" in kube.cluster.get("deployments", NS, "web")["spec"]["template"][
        "metadata"]["annotations"]
    assert (errors, retries) == (1.0, 1.0)  # the daemon's own /metrics show the API trouble it got past


async def test_dry_run_with_a_cluster_configured_is_server_side(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube, no_pod_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig", NS)))
    kube.cluster.apply(web())
    rv = kube.cluster.resource_version
    settings = settings_with(settings_factory, tmp_path, True, mode="auto")  # not in a pod: falls back to KUBECONFIG
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        ex = await Harness(rt, kube, vclock).fire()
    assert ex["status"] == "dry_run"
    assert ex["results"][0]["details"]["server_side"] is True
    assert [w.query.get("dryRun") for w in kube.cluster.requests.writes()] == ["All"]
    assert kube.cluster.resource_version == rv


@pytest.mark.parametrize(
    ("kubernetes", "expected"),
    [
        ({"mode": "incluster"}, "cannot load Kubernetes configuration (incluster): Service host/port is not set."),
        ({"mode": "kubeconfig", "kubeconfig": "/nonexistent/kubeconfig"},
         "cannot load Kubernetes configuration (kubeconfig): no kubeconfig file at /nonexistent/kubeconfig"),
        ({"mode": "kubeconfig", "context": "staging"}, "cannot load Kubernetes configuration (kubeconfig)"),
    ],
)
async def test_an_unusable_cluster_configuration_is_a_clear_startup_error(
    kubernetes: dict[str, str], expected: str, tmp_path: Path, settings_factory: Callable[..., Any],
    vclock: VirtualClock, kube: FakeKube, no_pod_env: None,
) -> None:
    if kubernetes.get("context"):
        kubernetes = {**kubernetes, "kubeconfig": str(kube.write_kubeconfig(tmp_path / "kubeconfig"))}
    settings = settings_with(settings_factory, tmp_path, False, **kubernetes)
    with pytest.raises(ConfigError) as err:
        async with open_kube_executors(settings, vclock):
            pass
    assert str(err.value).startswith(expected)
    if kubernetes.get("context"):
        assert "staging" in str(err.value)


async def test_incluster_mode_uses_the_pods_service_account(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi
    from kubernetes_asyncio.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token-123")
    shutil.copy(certifi.where(), ca)  # any valid PEM bundle stands in for the cluster CA
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    for mode in ("incluster", "auto"):  # auto prefers the service account when running in a pod
        settings = settings_with(settings_factory, tmp_path, False, mode=mode, kubeconfig="/nonexistent")
        async with open_kube_executors(settings, vclock) as (live, dry):
            conf = live.api.configuration
            assert conf.host == "https://10.96.0.1:443"
            assert conf.api_key == {"BearerToken": "Bearer sa-token-123"}
            assert conf.ssl_ca_cert == str(ca)
            assert dry.api is live.api and dry.server_dry_run and not live.server_dry_run
