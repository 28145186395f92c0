"""The in-process harness: a kubeconfig for code that loads configuration the standard way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from remediator.testing.kube import FakeKube
from tests.kube_fake.helpers import deployment


async def test_written_kubeconfig_points_a_standard_client_at_the_fake(fake_kube: FakeKube, tmp_path: Path) -> None:
    fake_kube.cluster.apply(deployment())
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == fake_kube.url
    async with client.ApiClient(configuration) as api:
        apps: Any = client.AppsV1Api(api)
        assert (await apps.read_namespaced_deployment("web", "shop")).status.ready_replicas == 3
    assert fake_kube.cluster.requests.entries[-1].path == "/apis/apps/v1/namespaces/shop/deployments/web"
