"""Fixtures for the tests against a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

The session's control plane is ``control_plane`` from tests/conftest.py (shared with
tests/contract): one per test session, started by the first test that asks for it, and
skipped with one line when the binaries are missing; that conftest also reports how many
tests ran on it.  Here each test gets a fresh namespace, a kubernetes-asyncio client on
its own loop, and, when it asks, the session's stand-in kubelet running its namespace.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from remediator.testing.control_plane import (
    ControlPlane,
    Kubelet,
    create_namespace,
    delete_namespace,
)


@pytest.fixture
async def kube_admin(control_plane: ControlPlane) -> AsyncIterator[Any]:
    """A kubernetes-asyncio ``ApiClient`` authenticated as the admin (group system:masters)."""
    async with control_plane.api_client() as api:
        yield api


@pytest.fixture
async def namespace(kube_admin: Any) -> AsyncIterator[str]:
    """A fresh namespace (its default ServiceAccount exists), deleted after the test."""
    name = f"t-{secrets.token_hex(4)}"
    await create_namespace(kube_admin, name)
    yield name
    await delete_namespace(kube_admin, name)


@pytest.fixture
def kubelet(control_plane: ControlPlane, namespace: str) -> Iterator[Kubelet]:
    """The session's stand-in kubelet, running this test's namespace (pods bound and readied at once).

    A test changes how its pods behave with ``kubelet.manage(namespace, PodPolicy(...))``.
    """
    running = control_plane.kubelet()
    running.manage(namespace)
    yield running
    running.release(namespace)
