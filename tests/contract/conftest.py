"""The contract suite: every request the executor relies on, asserted identically on the fake and the real apiserver.

Each test takes ``backend`` and runs twice: ``[fake]`` against the project's fake API
server (:mod:`remediator.testing.kube`) and ``[real]`` against the session's real
control plane (etcd, kube-apiserver, kube-controller-manager, and the stand-in kubelet
of :mod:`remediator.testing.control_plane`).  The expected values are what the real
apiserver answers; a test passing on both is what keeps the fake honest.  Without the
binaries the ``[real]`` half skips with one line (the session ``control_plane`` fixture
in tests/conftest.py).

Both backends give a test a fresh namespace of its own, pods that a kubelet binds and
readies at once, and a kubelet that finishes graceful deletes at once, unless the test
says otherwise (:meth:`Backend.hold_terminating`, :meth:`Backend.without_kubelet`).
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
from kubernetes_asyncio import client
from multidict import CIMultiDictProxy

from remediator.core import rollout
from remediator.testing.control_plane import (
    ControlPlane,
    Kubelet,
    PodPolicy,
    create_namespace,
    delete_namespace,
    poll_until,
)
from remediator.testing.kube import FakeCluster, FakeKube, running_fake_kube
from tests.kube_fake.helpers import deployment

#: As in tests/conftest.py (conftest modules are not imported from one another).
ON_CONTROL_PLANE = ("control_plane", "requested")

T = TypeVar("T")

#: Bound on every wait for the real cluster's asynchronous controllers (the fake is settled at once).
LIMIT = 20.0


@dataclass(frozen=True)
class Raw:
    """One HTTP exchange as sent and answered, for what the typed client hides (headers, exact bodies)."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Backend:
    """One API server with one fresh namespace, driven the same way whichever it is."""

    name: str  # "fake" | "real"
    api: Any  # kubernetes_asyncio ApiClient, admin
    namespace: str
    url: str
    token: str
    tls: ssl.SSLContext | None
    fake: FakeCluster | None = None
    plane: ControlPlane | None = None
    kubelet: Kubelet | None = None

    @property
    def apps(self) -> Any:
        return client.AppsV1Api(self.api)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    def path(self, resource: str, name: str = "", group: str = "apps") -> str:
        base = "/api/v1" if group == "" else f"/apis/{group}/v1"
        return f"{base}/namespaces/{self.namespace}/{resource}" + (f"/{name}" if name else "")

    async def raw(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Raw:
        """Send exactly this request (the typed client would reshape it) and keep everything of the answer."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, str) else json.dumps(body)
            headers["Content-Type"] = content_type
        async with aiohttp.ClientSession() as session, session.request(
            method, self.url + path, data=data, headers=headers, params=query, ssl=self.tls if self.tls else False
        ) as response:
            return Raw(response.status, response.headers, await response.text())

    async def until(self, probe: Callable[[], Awaitable[T | None]], what: str) -> T:
        """Wait for the real cluster's controllers (bounded polling); the fake has settled already."""
        return await poll_until(probe, limit=LIMIT if self.name == "real" else 1.0, what=what, interval=0.1)

    async def read(self, name: str = "web") -> dict[str, Any]:
        out: dict[str, Any] = self.api.sanitize_for_serialization(
            await self.apps.read_namespaced_deployment(name, self.namespace))
        return out

    async def web(self, **kw: Any) -> dict[str, Any]:
        """Create Deployment ``web`` (container ``app``) and wait until its rollout is done and the namespace quiet."""
        await self.apps.create_namespaced_deployment(self.namespace, deployment("web", self.namespace, **kw))
        return await self.settled()

    async def settled(self, name: str = "web") -> dict[str, Any]:
        """The Deployment once its rollout is done (kubectl's rule) and no controller is still writing."""

        async def done() -> dict[str, Any] | None:
            dep = await self.read(name)
            return dep if rollout.health("Deployment", dep).done else None

        await self.until(done, f"Deployment {self.namespace}/{name} to finish its rollout")
        await self.quiet()
        return await self.read(name)

    async def quiet(self) -> None:
        """Wait until two reads of everything in the namespace, a moment apart, agree (the fake is quiet at once)."""
        seen: list[Any] = []

        async def same() -> bool | None:
            now = await self.snapshot()
            settled = bool(seen) and seen[-1] == now
            seen.append(now)
            return True if settled else None

        if self.name == "real":
            await self.until(same, f"namespace {self.namespace} to go quiet")

    async def snapshot(self) -> dict[str, str]:
        """``kind/name`` -> resourceVersion of every workload, ReplicaSet, revision and pod in the namespace."""
        out: dict[str, str] = {}
        for kind, fn in (("deployments", self.apps.list_namespaced_deployment),
                         ("statefulsets", self.apps.list_namespaced_stateful_set),
                         ("replicasets", self.apps.list_namespaced_replica_set),
                         ("controllerrevisions", self.apps.list_namespaced_controller_revision),
                         ("pods", self.core.list_namespaced_pod)):
            listed = self.api.sanitize_for_serialization(await fn(self.namespace))
            for item in listed.get("items") or []:
                out[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
        return out

    async def pods(self, selector: str = "app=web") -> list[dict[str, Any]]:
        listed = self.api.sanitize_for_serialization(
            await self.core.list_namespaced_pod(self.namespace, label_selector=selector))
        return sorted(listed["items"], key=lambda p: p["metadata"]["name"])

    def hold_terminating(self) -> None:
        """From now on a deleted pod of this namespace stays Terminating: its kubelet never finishes it."""
        if self.kubelet is not None:
            self.kubelet.manage(self.namespace, PodPolicy(finalize_after=None))
        if self.fake is not None:
            self.fake.termination_delay = float("inf")

    def release_terminating(self) -> None:
        """Deleted pods of this namespace finish again, those held so far included (ends :meth:`hold_terminating`)."""
        if self.kubelet is not None:
            self.kubelet.manage(self.namespace)
        if self.fake is not None:
            self.fake.termination_delay = 0.0
            self.fake.reconcile()

    def never_ready(self, image: str, workload: str = "web") -> None:
        """From now on new pods running ``image`` stay Running and never Ready: a broken release.

        Real: the kubelet's policy, by image.  Fake: its readiness fault, by workload, until
        :meth:`ready_again` (its pods of another image are not spared meanwhile)."""
        if self.kubelet is not None:
            self.kubelet.manage(self.namespace, PodPolicy(never_ready_images=frozenset({image})))
        if self.fake is not None:
            self.fake.faults.never_ready(self.namespace, workload)

    def ready_again(self, workload: str = "web") -> None:
        """Before a rollout away from :meth:`never_ready`'s image: the fake's fault goes (the real policy is
        by image)."""
        if self.fake is not None:
            self.fake.faults.allow_ready(self.namespace, workload)

    def tick(self) -> None:
        """The fake's controllers act on the time that has passed (a progress deadline); the real ones do so
        by themselves."""
        if self.fake is not None:
            self.fake.reconcile()

    def without_kubelet(self) -> None:
        """No kubelet or scheduler for this namespace's pods (real: the stand-in kubelet lets go of it).

        The fake keeps its scheduler and kubelet; tests that use this create pods that
        neither touches (another ``schedulerName``, or bound to another node).
        """
        if self.kubelet is not None:
            self.kubelet.release(self.namespace)


@pytest.fixture(params=["fake", "real"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    name = f"c-{secrets.token_hex(4)}"
    if request.param == "fake":
        cluster = FakeCluster(clock=time.time)  # timestamps comparable with the real cluster's
        async with running_fake_kube(cluster) as kube:
            yield await _fake(kube, name)
        return
    request.node.user_properties.append(ON_CONTROL_PLANE)  # counted and reported with the control plane's tests
    plane: ControlPlane = request.getfixturevalue("control_plane")
    async with plane.api_client() as api:
        await create_namespace(api, name)
        kubelet = plane.kubelet()
        kubelet.manage(name)
        tls = ssl.create_default_context(cafile=str(plane.ca_file))
        try:
            yield Backend("real", api, name, plane.url, plane.admin_token, tls, plane=plane, kubelet=kubelet)
        finally:
            kubelet.release(name)
            await delete_namespace(api, name)


async def _fake(kube: FakeKube, namespace: str) -> Backend:
    """A namespace is created through the API, as on the real cluster (the fake requires it too)."""
    api = kube.api
    await client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    return Backend("fake", api, namespace, kube.url, "fake-token", None, fake=kube.cluster)

