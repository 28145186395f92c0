"""The fake Kubernetes API's own suite uses the same fixtures other suites import.

Its tests create objects through the API in a few namespaces; on the fake, as on a real
cluster, a namespace must exist first, so the suite's cluster starts with them.
"""

import pytest

from remediator.testing.kube.clock import ManualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.pytest_plugin import fake_kube, kube_api, kube_clock

#: The namespaces this suite's tests write to through the API.
NAMESPACES = ("shop", "pay", "remediator")


@pytest.fixture
def kube_cluster(kube_clock: ManualClock) -> FakeCluster:
    return FakeCluster(clock=kube_clock, namespaces=NAMESPACES)


__all__ = ["fake_kube", "kube_api", "kube_clock", "kube_cluster"]
