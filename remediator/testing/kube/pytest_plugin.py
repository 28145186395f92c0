"""Reusable pytest fixtures for the fake Kubernetes API.

Not auto-registered: a suite opts in from its conftest with
``from remediator.testing.kube.pytest_plugin import fake_kube, kube_api, kube_clock, kube_cluster  # noqa: F401``.

Fixture graph: ``kube_clock`` -> ``kube_cluster`` -> ``fake_kube`` -> ``kube_api``.  Override
``kube_cluster`` in a suite to change the ready delay or seed objects before the
server starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from remediator.testing.kube.clock import ManualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube, running_fake_kube


@pytest.fixture
def kube_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kube_cluster(kube_clock: ManualClock) -> FakeCluster:
    return FakeCluster(clock=kube_clock)


@pytest_asyncio.fixture
async def fake_kube(kube_cluster: FakeCluster) -> AsyncIterator[FakeKube]:
    async with running_fake_kube(kube_cluster) as running:
        yield running


@pytest.fixture
def kube_api(fake_kube: FakeKube) -> Any:
    """A ``kubernetes_asyncio.client.ApiClient`` connected to the fake."""
    return fake_kube.api
