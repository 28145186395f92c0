"""DELETE options are decoded as kube-apiserver decodes them (handlers/delete.go, DeleteResource):
a non-empty body is the whole DeleteOptions and the query's dryRun, gracePeriodSeconds,
propagationPolicy and orphanDependents are then ignored; only a body-less DELETE reads them
from the query.  Real HTTP requests, so the server's own decoding is what is tested.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from remediator.testing.kube import FakeCluster, FakeKube
from tests.kube_fake.helpers import deployment

NS = "shop"


@pytest_asyncio.fixture
async def http(fake_kube: FakeKube) -> AsyncIterator[aiohttp.ClientSession]:
    fake_kube.cluster.apply(deployment(replicas=1))
    async with aiohttp.ClientSession(base_url=fake_kube.url) as session:
        yield session


def only_pod(cluster: FakeCluster) -> dict[str, Any]:
    [pod] = cluster.pods_of(NS, "web")
    return pod


async def delete(
    http: aiohttp.ClientSession, name: str, query: str = "", body: Any = None, *, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """DELETE a pod; ``body=None`` and no ``raw`` sends no body at all."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    async with http.delete(f"/api/v1/namespaces/{NS}/pods/{name}{query}", data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_query_dry_run_is_ignored_when_a_body_is_sent(http: aiohttp.ClientSession, fake_kube: FakeKube) -> None:
    """The bug this guards: ?dryRun=All next to a body without dryRun really deletes."""
    cluster = fake_kube.cluster
    pod = only_pod(cluster)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    status, _ = await delete(http, name, "?dryRun=All", {"preconditions": {"uid": uid}})
    assert status == 200
    assert cluster.get("pods", NS, name) is None
    assert only_pod(cluster)["metadata"]["uid"] != uid  # the ReplicaSet replaced it
    [entry] = cluster.requests.matching("DELETE", "/pods/")
    assert entry.query == {"dryRun": "All"} and entry.body == {"preconditions": {"uid": uid}}


async def test_dry_run_in_the_body_leaves_the_pod(http: aiohttp.ClientSession, fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    pod = only_pod(cluster)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    version = cluster.resource_version
    status, result = await delete(http, name, body={"dryRun": ["All"], "preconditions": {"uid": uid}})
    assert status == 200
    assert result["metadata"]["uid"] == uid and result["metadata"]["deletionTimestamp"]
    assert cluster.get("pods", NS, name) is not None and cluster.resource_version == version


async def test_a_body_less_delete_reads_the_query(http: aiohttp.ClientSession, fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    name = only_pod(cluster)["metadata"]["name"]
    status, result = await delete(http, name, "?dryRun=All&gracePeriodSeconds=7")
    assert status == 200 and result["metadata"]["deletionGracePeriodSeconds"] == 7
    assert cluster.get("pods", NS, name) is not None


async def test_kubernetes_asyncio_sends_no_body_for_body_none(fake_kube: FakeKube, kube_api: Any) -> None:
    """So the client's own dry_run= query parameter still works when no body is given..."""
    cluster = fake_kube.cluster
    cluster.apply(deployment(replicas=1))
    name = only_pod(cluster)["metadata"]["name"]
    core = client.CoreV1Api(kube_api)
    await core.delete_namespaced_pod(name, NS, dry_run="All", grace_period_seconds=3)
    [entry] = cluster.requests.matching("DELETE", "/pods/")
    assert entry.body is None and entry.query == {"dryRun": "All", "gracePeriodSeconds": "3"}
    assert cluster.get("pods", NS, name) is not None


async def test_an_empty_options_object_is_a_body(fake_kube: FakeKube, kube_api: Any) -> None:
    """...but ``body=V1DeleteOptions()`` goes out as ``{}``: a body, so the query's dryRun is ignored."""
    cluster = fake_kube.cluster
    cluster.apply(deployment(replicas=1))
    name = only_pod(cluster)["metadata"]["name"]
    core = client.CoreV1Api(kube_api)
    await core.delete_namespaced_pod(name, NS, dry_run="All", body=client.V1DeleteOptions())
    [entry] = cluster.requests.matching("DELETE", "/pods/")
    assert entry.body == {} and entry.query == {"dryRun": "All"}
    assert cluster.get("pods", NS, name) is None


async def test_the_body_grace_period_wins_over_the_query(http: aiohttp.ClientSession, fake_kube: FakeKube) -> None:
    name = only_pod(fake_kube.cluster)["metadata"]["name"]
    status, result = await delete(http, name, "?gracePeriodSeconds=60", {"dryRun": ["All"], "gracePeriodSeconds": 5})
    assert status == 200 and result["metadata"]["deletionGracePeriodSeconds"] == 5
    # a body without gracePeriodSeconds: the pod's own terminationGracePeriodSeconds, not the query's
    status, result = await delete(http, name, "?gracePeriodSeconds=60", {"dryRun": ["All"]})
    assert status == 200 and result["metadata"]["deletionGracePeriodSeconds"] == 30
    assert fake_kube.cluster.get("pods", NS, name) is not None


async def test_the_query_propagation_policy_is_ignored_when_a_body_is_sent(
    http: aiohttp.ClientSession, fake_kube: FakeKube
) -> None:
    cluster = fake_kube.cluster
    async with http.delete(f"/apis/apps/v1/namespaces/{NS}/deployments/web?propagationPolicy=Orphan",
                           json={}) as resp:
        assert resp.status == 200
    assert cluster.objects("replicasets", NS) == []  # not orphaned: the garbage collector took them
    cluster.apply(deployment(replicas=1))
    async with http.delete(f"/apis/apps/v1/namespaces/{NS}/deployments/web?propagationPolicy=Orphan") as resp:
        assert resp.status == 200
    [rs] = cluster.objects("replicasets", NS)
    assert rs["metadata"]["ownerReferences"] == []


@pytest.mark.parametrize(("query", "body"), [("", {"dryRun": ["Yes"]}), ("?dryRun=Yes", None)])
async def test_a_dry_run_other_than_all_is_invalid(
    query: str, body: Any, http: aiohttp.ClientSession, fake_kube: FakeKube
) -> None:
    name = only_pod(fake_kube.cluster)["metadata"]["name"]
    status, result = await delete(http, name, query, body)
    assert status == 422 and result["reason"] == "Invalid"
    assert result["message"] == (
        'DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: ["Yes"]: supported values: "All"'
    )
    assert result["details"]["kind"] == "DeleteOptions"
    assert fake_kube.cluster.get("pods", NS, name) is not None


async def test_a_body_that_is_not_delete_options_is_refused(
    http: aiohttp.ClientSession, fake_kube: FakeKube
) -> None:
    name = only_pod(fake_kube.cluster)["metadata"]["name"]
    for raw in (b"[1]", b'{"gracePeriodSeconds": "5"}', b'{"dryRun": "All"}'):
        status, result = await delete(http, name, "?dryRun=All", raw=raw)
        assert status == 400 and result["reason"] == "BadRequest", raw
    assert fake_kube.cluster.get("pods", NS, name) is not None
