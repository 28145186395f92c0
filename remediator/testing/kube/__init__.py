"""A fake Kubernetes API server that speaks the real REST protocol, with a simulated control plane.

Start it standalone with ``python -m remediator.testing.kube --port P [--state FILE]``,
or in tests with :func:`running_fake_kube` / the fixtures in :mod:`.pytest_plugin`.
State and behaviour live in :class:`FakeCluster` (no HTTP); :class:`FakeKubeServer`
only translates HTTP to it.
"""

from remediator.testing.kube.api import JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from remediator.testing.kube.clock import DEFAULT_EPOCH, Clock, ManualClock
from remediator.testing.kube.cluster import ApplyResult, FakeCluster
from remediator.testing.kube.faults import Fault, Faults, RecordedRequest, RequestLog
from remediator.testing.kube.harness import FakeKube, running_fake_kube
from remediator.testing.kube.server import FakeKubeServer
from remediator.testing.kube.status import ApiError

__all__ = [
    "DEFAULT_EPOCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "ApiError",
    "ApplyResult",
    "Clock",
    "FakeCluster",
    "FakeKube",
    "FakeKubeServer",
    "Fault",
    "Faults",
    "ManualClock",
    "RecordedRequest",
    "RequestLog",
    "running_fake_kube",
]
