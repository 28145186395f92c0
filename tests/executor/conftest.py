"""Fixtures: a fake cluster on the daemon's virtual clock, served over HTTP to kubernetes-asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube, running_fake_kube
from tests.executor.harness import Harness, open_harness

OpenHarness = Callable[..., Any]


@pytest.fixture
def cluster(vclock: VirtualClock) -> FakeCluster:
    return FakeCluster(clock=lambda: vclock.now().timestamp())


@pytest.fixture
async def kube(cluster: FakeCluster) -> AsyncIterator[FakeKube]:
    async with running_fake_kube(cluster) as running:
        yield running


@pytest.fixture
def harness(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> Callable[..., Any]:
    """``async with harness({"name": playbook_yaml}, dry_run=False) as h:``."""

    def make(playbooks: dict[str, str], **kw: Any) -> Any:
        return open_harness(tmp_path, settings_factory, vclock, kube, playbooks, **kw)

    return make


__all__ = ["Harness"]
