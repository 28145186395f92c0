"""Fault injection and the request log, from Python and over the /_fake/ HTTP API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.testing.kube import FakeKube
from tests.kube_fake.helpers import deployment, status_of

WEB = r"/namespaces/shop/deployments/web$"


@pytest.fixture
def apps(kube_api: Any) -> Any:
    return client.AppsV1Api(kube_api)


@pytest.fixture(autouse=True)
def seeded(kube_cluster: Any) -> None:
    kube_cluster.apply(deployment(replicas=1))


async def test_forced_conflict_hits_only_the_next_matching_request(apps: Any, fake_kube: FakeKube) -> None:
    fault = fake_kube.cluster.faults.conflict(method="PATCH", path=WEB)
    await apps.read_namespaced_deployment("web", "shop")  # a GET does not match
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 2}})
    assert err.value.status == 409
    assert status_of(err.value)["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert status_of(err.value)["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    stored = fake_kube.cluster.get("deployments", "shop", "web") or {}
    assert stored["spec"]["replicas"] == 1  # the failed request changed nothing
    assert (await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 2}})).spec.replicas == 2
    patches = fake_kube.cluster.requests.matching("PATCH", WEB)
    assert [(p.status, p.fault) for p in patches] == [(409, fault.id), (200, None)]
    assert fault.hits == 1 and fake_kube.cluster.faults.rules == []


async def test_throttling_429_is_plain_text_with_retry_after(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.throttle(method="GET", path=WEB, retry_after=3)
    with pytest.raises(ApiException) as err:
        await apps.read_namespaced_deployment("web", "shop")
    assert err.value.status == 429 and err.value.reason == "Too Many Requests"
    assert err.value.headers.get("Retry-After") == "3"
    assert err.value.headers.get("Content-Type", "").startswith("text/plain")
    assert err.value.body == "Too many requests, please try again later.\n"


async def test_status_bearing_429(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.throttle(path=WEB, retry_after=2, status_body=True)
    with pytest.raises(ApiException) as err:
        await apps.read_namespaced_deployment("web", "shop")
    body = status_of(err.value)
    assert (body["reason"], body["code"], body["details"]["retryAfterSeconds"]) == ("TooManyRequests", 429, 2)
    assert err.value.headers.get("Retry-After") == "2"


async def test_server_errors_for_n_requests(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.server_error(500, path=WEB, times=2, message="etcdserver: leader changed")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            await apps.read_namespaced_deployment("web", "shop")
        body = status_of(err.value)
        assert (err.value.status, body["reason"]) == (500, "InternalError")
        assert body["message"] == "Internal error occurred: etcdserver: leader changed"
    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"
    fake_kube.cluster.faults.fail(503, path=WEB)
    with pytest.raises(ApiException) as err:
        await apps.read_namespaced_deployment("web", "shop")
    assert status_of(err.value)["reason"] == "ServiceUnavailable"


async def test_forbidden_names_the_verb_and_resource(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.fail(403, method="PATCH", path=WEB)
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 2}})
    assert status_of(err.value)["message"] == (
        'deployments.apps "web" is forbidden: User "system:serviceaccount:remediator:remediator" cannot patch '
        'resource "deployments" in API group "apps" in the namespace "shop"')


async def test_faults_until_cleared(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.fail(500, path=WEB, times=None)
    for _ in range(3):
        with pytest.raises(ApiException):
            await apps.read_namespaced_deployment("web", "shop")
    fake_kube.cluster.faults.clear()
    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"


async def test_delay_then_answer(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.delay(0.3, method="GET", path=WEB)
    started = time.monotonic()
    assert (await apps.read_namespaced_deployment("web", "shop")).metadata.name == "web"
    assert time.monotonic() - started >= 0.3


async def test_a_hung_api_times_the_client_out_until_released(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.hang(method="GET", path=WEB, times=None)
    with pytest.raises(asyncio.TimeoutError):
        await apps.read_namespaced_deployment("web", "shop", _request_timeout=0.2)
    slow = asyncio.ensure_future(apps.read_namespaced_deployment("web", "shop"))
    for _ in range(100):  # bounded: wait until the request is being held
        if len(fake_kube.cluster.requests.matching("GET", WEB)) == 2:
            break
        await asyncio.sleep(0.01)
    fake_kube.cluster.faults.clear()
    assert (await asyncio.wait_for(slow, timeout=5)).metadata.name == "web"


async def test_delay_and_status_combined(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.faults.add(method="GET", path=WEB, delay=0.1, status=504)
    with pytest.raises(ApiException) as err:
        await apps.read_namespaced_deployment("web", "shop")
    assert err.value.status == 504 and status_of(err.value)["reason"] == "Timeout"


async def test_request_log_records_what_was_sent(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.requests.clear()
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 2}}, dry_run="All",
                                           field_manager="remediator")
    [entry] = fake_kube.cluster.requests.writes()
    assert (entry.method, entry.path) == ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web")
    assert entry.query == {"dryRun": "All", "fieldManager": "remediator"} and entry.dry_run
    assert entry.content_type == "application/strategic-merge-patch+json"
    assert entry.body == {"spec": {"replicas": 2}} and entry.status == 200


async def test_never_ready_applies_to_new_pods_of_one_workload(fake_kube: FakeKube) -> None:
    cluster = fake_kube.cluster
    cluster.apply(deployment("api", replicas=1))
    cluster.faults.never_ready("shop", "web")
    cluster.delete("pods", "shop", cluster.pods_of("shop", "web")[0]["metadata"]["name"])
    cluster.delete("pods", "shop", cluster.pods_of("shop", "api")[0]["metadata"]["name"])
    cluster.advance(60)
    [web] = cluster.pods_of("shop", "web")
    [api] = cluster.pods_of("shop", "api")
    assert web["status"]["phase"] == "Running" and web["status"]["containerStatuses"][0]["ready"] is False
    assert api["status"]["containerStatuses"][0]["ready"] is True


async def test_http_control_api(apps: Any, fake_kube: FakeKube) -> None:
    async with aiohttp.ClientSession(base_url=fake_kube.url) as http:
        async with http.post("/_fake/faults", json={"method": "GET", "path": WEB, "status": 429,
                                                    "retryAfter": 1, "times": 1}) as resp:
            assert resp.status == 201
            fault = (await resp.json())["fault"]
            assert (fault["status"], fault["plainText"], fault["remaining"]) == (429, True, 1)
        with pytest.raises(ApiException) as err:
            await apps.read_namespaced_deployment("web", "shop")
        assert err.value.status == 429
        async with http.post("/_fake/faults", json={"path": "deployments", "status": 500, "times": None}) as resp:
            fault_id = (await resp.json())["fault"]["id"]
        async with http.get("/_fake/faults") as resp:
            assert [f["id"] for f in (await resp.json())["faults"]] == [fault_id]
        async with http.delete(f"/_fake/faults/{fault_id}") as resp:
            assert resp.status == 200
        async with http.post("/_fake/never-ready", json={"namespace": "shop", "name": "web"}) as resp:
            assert (await resp.json())["neverReady"] == [["shop", "Deployment", "web"]]
        assert fake_kube.cluster.faults.blocks_readiness("shop", "Deployment", "web")
        async with http.delete("/_fake/faults") as resp:
            assert resp.status == 200
        assert not fake_kube.cluster.faults.blocks_readiness("shop", "Deployment", "web")
        async with http.get("/_fake/requests") as resp:
            logged = (await resp.json())["requests"]
            assert logged[-1]["path"] == "/apis/apps/v1/namespaces/shop/deployments/web"
            assert logged[-1]["status"] == 429
            assert not any(r["path"].startswith("/_fake/") for r in logged)
        async with http.post("/_fake/compact") as resp:
            version = (await resp.json())["resourceVersion"]
        async with http.get("/apis/apps/v1/deployments", params={"watch": "1", "resourceVersion": "1"}) as resp:
            assert b'"Expired"' in await resp.read()
        async with http.post("/_fake/advance", json={"seconds": 5}) as resp:
            assert resp.status == 200
        assert int(fake_kube.cluster.resource_version) >= int(version)
