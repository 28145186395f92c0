"""The fake Kubernetes API's own suite uses the same fixtures other suites import."""

from remediator.testing.kube.pytest_plugin import fake_kube, kube_api, kube_clock, kube_cluster

__all__ = ["fake_kube", "kube_api", "kube_clock", "kube_cluster"]
