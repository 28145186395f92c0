"""Running the fake on a loopback port for a test, with a real kubernetes_asyncio client attached."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.server import FakeKubeServer


def kubeconfig_for(url: str, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig whose current context is the fake at ``url`` (a token the fake ignores)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        "current-context": "fake",
    }


@dataclass
class FakeKube:
    """A running fake: its URL, the cluster behind it, and a client pointed at it."""

    url: str
    cluster: FakeCluster
    server: FakeKubeServer
    api: Any  # kubernetes_asyncio.client.ApiClient

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig selecting this fake, for code that loads configuration the standard way."""
        return kubeconfig_for(self.url, namespace)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        target = Path(path)
        target.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return target


@contextlib.asynccontextmanager
async def running_fake_kube(
    cluster: FakeCluster | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    watch_timeout: float = 10.0,
) -> AsyncIterator[FakeKube]:
    """Serve ``cluster`` (a fresh one on a manual clock by default) until the block ends.

    ``watch_timeout`` bounds watches that do not set ``timeoutSeconds``; it is short so a
    test that forgets one fails quickly instead of hanging.
    """
    cluster = cluster if cluster is not None else FakeCluster()
    server = FakeKubeServer(cluster, watch_timeout=watch_timeout)
    url = await server.start(host, port)
    api = client.ApiClient(client.Configuration(host=url))
    try:
        yield FakeKube(url, cluster, server, api)
    finally:
        await api.close()
        await server.stop()
