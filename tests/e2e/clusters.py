"""The cluster an end-to-end daemon acts on: the real control plane when its binaries are installed, else the fake.

Both are read the way ``kubectl get`` reads them, over HTTP: the test sees what the
apiserver holds, never the daemon's idea of it.  On the real control plane the
session's stand-in kubelet runs the namespace, so a rollout finishes as it would on
nodes; the fake (``python -m remediator.testing.kube``) rolls out on its own.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import yaml

from remediator.testing.control_plane import ControlPlane
from tests.e2e.processes import FakeKubeProcess, wait_for

#: How long a rollout (or a foreground delete) may take on either cluster.
SETTLE_TIMEOUT = 30.0


class Cluster(Protocol):
    """What an end-to-end test needs of a cluster: its objects in place, a kubeconfig, a read of one Deployment.

    The kubeconfig can be had before :meth:`start`, so that the daemon starts beside the cluster.
    """

    kind: str

    def start(self) -> None:
        """Put the cluster's manifests in place (the Deployments created; their rollout may still run)."""

    def stop(self) -> None: ...

    def kubeconfig(self, path: Path, namespace: str) -> Path: ...

    def deployment(self, namespace: str, name: str) -> dict[str, Any]: ...


def rolled_out(deployment: dict[str, Any]) -> dict[str, Any] | None:
    """The Deployment once its controller has seen its spec and every replica is updated and available."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    want = spec.get("replicas", 1)
    done = (status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
            and status.get("replicas") == status.get("updatedReplicas") == status.get("availableReplicas") == want)
    return deployment if done else None


def wait_rolled_out(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: rolled_out(cluster.deployment(namespace, name)), timeout=SETTLE_TIMEOUT,
                    what=f"Deployment {namespace}/{name} rolled out on the {cluster.kind} cluster")


class FakeCluster:
    """The fake Kubernetes API as a process of its own, seeded with ``manifest``."""

    kind = "fake"

    def __init__(self, workdir: Path, manifest: str) -> None:
        self.process = FakeKubeProcess(workdir, manifest)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def kubeconfig(self, path: Path, namespace: str) -> Path:
        return self.process.kubeconfig(path, namespace)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.process.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        return found


class RealCluster:
    """The session's real control plane, as its admin (group ``system:masters``), with ``manifest``'s Deployments.

    :meth:`start` creates them anew (the namespace must exist: :meth:`ensure_namespace`);
    :meth:`stop` leaves them, for the next start or the namespace's deletion.
    """

    kind = "real"

    def __init__(self, plane: ControlPlane, manifest: str = "") -> None:
        self.plane = plane
        self.manifest = manifest
        self._tls = ssl.create_default_context(cafile=str(plane.ca_file))

    def start(self) -> None:
        self.replace(self.manifest)

    def stop(self) -> None:
        pass

    def kubeconfig(self, path: Path, namespace: str) -> Path:
        return self.plane.write_kubeconfig(path, namespace=namespace)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.plane.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.plane.admin_token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._tls) as r:
                return int(r.status), json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        status, found = self.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        assert status == 200, f"GET deployment {namespace}/{name}: {status} {found}"
        return dict(found)

    def ensure_namespace(self, namespace: str) -> None:
        """Create ``namespace`` unless it exists; wait for its default ServiceAccount (pods need it)."""
        status, body = self.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        assert status in (201, 409), f"create namespace {namespace}: {status} {body}"
        wait_for(lambda: self._answers(f"/api/v1/namespaces/{namespace}/serviceaccounts/default", 200),
                 timeout=SETTLE_TIMEOUT, what=f"the default ServiceAccount of namespace {namespace}")

    def _answers(self, path: str, status: int) -> bool | None:
        """True once ``GET path`` answers ``status`` (a probe for :func:`wait_for`)."""
        return True if self.request("GET", path)[0] == status else None

    def replace(self, manifest: str) -> None:
        """Delete each Deployment of ``manifest`` (foreground: its pods too), then create it anew."""
        for doc in yaml.safe_load_all(manifest):
            ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
            path = f"/apis/apps/v1/namespaces/{ns}/deployments"
            self.request("DELETE", f"{path}/{name}", {"propagationPolicy": "Foreground"})
            wait_for(lambda: self._answers(f"{path}/{name}", 404),  # noqa: B023 (called before the loop moves on)
                     timeout=SETTLE_TIMEOUT, what=f"Deployment {ns}/{name} deleted")
            status, body = self.request("POST", path, doc)
            assert status == 201, f"create Deployment {ns}/{name}: {status} {body}"

    def delete_namespace(self, namespace: str) -> None:
        self.request("DELETE", f"/api/v1/namespaces/{namespace}")
