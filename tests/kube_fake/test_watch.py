"""Watches through kubernetes_asyncio's Watch: initial state, resumption, expiry, timeouts, selectors."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.testing.kube import FakeCluster, FakeKube, running_fake_kube
from tests.kube_fake.helpers import deployment


@pytest.fixture
def apps(kube_api: Any) -> Any:
    return client.AppsV1Api(kube_api)


async def test_without_resource_version_current_objects_come_first_as_added(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment("a", replicas=1))
    fake_kube.cluster.apply(deployment("b", replicas=1))
    seen: list[tuple[str, str, int]] = []
    async with watch.Watch().stream(apps.list_namespaced_deployment, "shop", timeout_seconds=5) as stream:
        async for event in stream:
            obj = event["object"]
            assert isinstance(obj, client.V1Deployment)
            seen.append((event["type"], obj.metadata.name, obj.spec.replicas))
            if len(seen) == 2:
                await apps.patch_namespaced_deployment("a", "shop", {"spec": {"replicas": 2}})
            if event["type"] == "MODIFIED" and obj.spec.replicas == 2 and obj.status.ready_replicas == 2:
                await apps.delete_namespaced_deployment("a", "shop")
            if event["type"] == "DELETED":
                break
    assert seen[:2] == [("ADDED", "a", 1), ("ADDED", "b", 1)]
    assert ("MODIFIED", "a", 2) in seen[2:]
    assert seen[-1] == ("DELETED", "a", 2)
    assert all(kind != "ADDED" for kind, _, _ in seen[2:])


async def test_with_resource_version_only_later_events_arrive(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment("web", replicas=1))
    listed = await apps.list_namespaced_deployment("shop", field_selector="metadata.name=web")
    version = listed.metadata.resource_version
    await apps.patch_namespaced_deployment("web", "shop", {"metadata": {"labels": {"step": "1"}}})
    fake_kube.cluster.apply(deployment("other", replicas=1))
    events = []
    async with watch.Watch().stream(apps.list_namespaced_deployment, "shop", field_selector="metadata.name=web",
                                    resource_version=version, timeout_seconds=5) as stream:
        async for event in stream:
            events.append(event)
            if event["raw_object"]["metadata"]["labels"].get("step") == "1":
                break
    assert [e["type"] for e in events] == ["MODIFIED"]
    assert int(events[0]["raw_object"]["metadata"]["resourceVersion"]) > int(version)


async def test_resource_version_older_than_history_is_410_expired(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment(replicas=1))
    version = (await apps.list_namespaced_deployment("shop")).metadata.resource_version
    await apps.patch_namespaced_deployment("web", "shop", {"spec": {"replicas": 2}})
    fake_kube.cluster.compact_history()
    with pytest.raises(ApiException) as err:
        async with watch.Watch().stream(apps.list_namespaced_deployment, "shop", resource_version=version,
                                        timeout_seconds=5) as stream:
            async for _ in stream:
                pass
    assert err.value.status == 410
    assert err.value.reason.startswith("Expired: too old resource version")
    # the raw stream: one ERROR event carrying a Status, then the end
    async with aiohttp.ClientSession() as http, http.get(
        f"{fake_kube.url}/apis/apps/v1/namespaces/shop/deployments",
        params={"watch": "1", "resourceVersion": version},
    ) as resp:
        lines = (await resp.read()).decode().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert {k: event["object"][k] for k in ("kind", "status", "reason", "code")} == {
        "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}


async def test_bounded_history_expires_old_versions_by_itself() -> None:
    cluster = FakeCluster(history_size=5)
    cluster.apply(deployment(replicas=1))
    cluster.apply(deployment(replicas=2))
    with pytest.raises(Exception, match="too old resource version"):
        cluster.watch("deployments", 1)


async def test_timeout_seconds_closes_the_stream(apps: Any) -> None:
    started = time.monotonic()
    async with watch.Watch().stream(apps.list_namespaced_deployment, "shop", timeout_seconds=1) as stream:
        events = [e async for e in stream]
    assert events == []
    assert 0.9 <= time.monotonic() - started < 5


async def test_watches_without_timeout_close_at_the_server_default() -> None:
    async with running_fake_kube(watch_timeout=0.2) as fk, aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.get(f"{fk.url}/api/v1/pods", params={"watch": "true"}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
            assert await resp.read() == b""
        assert time.monotonic() - started < 3


async def test_selector_filtered_watch_turns_edits_into_added_and_deleted(apps: Any, fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment(replicas=0))
    types: list[str] = []
    async with watch.Watch().stream(apps.list_namespaced_deployment, "shop", label_selector="tier=front",
                                    timeout_seconds=5) as stream:
        await apps.patch_namespaced_deployment("web", "shop", {"metadata": {"labels": {"tier": "front"}}})
        async for event in stream:
            types.append(event["type"])
            if event["type"] == "ADDED":
                await apps.patch_namespaced_deployment("web", "shop", {"metadata": {"labels": {"tier": None}}})
            if event["type"] == "DELETED":
                assert event["raw_object"]["metadata"]["labels"]["tier"] == "front"
                break
    assert types[0] == "ADDED" and types[-1] == "DELETED"


async def test_watch_sees_rollout_progress_in_order(apps: Any, fake_kube: FakeKube) -> None:
    """What `kubectl rollout status` relies on: intermediate states are observable."""
    fake_kube.cluster.apply(deployment(replicas=2))
    version = (await apps.read_namespaced_deployment("web", "shop")).metadata.resource_version
    await apps.patch_namespaced_deployment(
        "web", "shop", {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}})
    seen: list[tuple[bool, int, str]] = []
    async with watch.Watch().stream(apps.list_namespaced_deployment, "shop", field_selector="metadata.name=web",
                                    resource_version=version, timeout_seconds=5) as stream:
        async for event in stream:
            raw = event["raw_object"]
            status = raw.get("status", {})
            observed = status.get("observedGeneration", 0) >= raw["metadata"]["generation"]
            progressing = {c["type"]: c["reason"] for c in status.get("conditions", [])}.get("Progressing", "")
            seen.append((observed, status.get("updatedReplicas", 0), progressing))
            if progressing == "NewReplicaSetAvailable" and observed:
                break
    assert seen[0] == (False, 2, "NewReplicaSetAvailable")  # the spec change, not yet observed
    assert (False, 2, "NewReplicaSetCreated") in seen  # the new RS is announced before the status catches up
    updated = [u for observed, u, _ in seen if observed]
    assert updated[0] == 0 and updated[-1] == 2 and updated == sorted(updated)
    assert "ReplicaSetUpdated" in {p for _, _, p in seen}


async def test_stopping_the_server_ends_open_watches(kube_cluster: FakeCluster) -> None:
    async with (
        running_fake_kube(kube_cluster, watch_timeout=60) as fk,
        aiohttp.ClientSession() as http,
        http.get(f"{fk.url}/apis/apps/v1/deployments", params={"watch": "True"}) as resp,
    ):
        assert resp.status == 200
        reader = asyncio.ensure_future(resp.read())
        await asyncio.sleep(0)
        started = time.monotonic()
        await fk.server.stop()
        assert await asyncio.wait_for(reader, timeout=5) == b""  # ended as if it had timed out
        assert time.monotonic() - started < 5


async def test_a_client_that_goes_away_releases_its_watch(fake_kube: FakeKube) -> None:
    fake_kube.server.disconnect_poll = 0.05
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{fake_kube.url}/api/v1/pods", params={"watch": "1", "timeoutSeconds": "60"})
        assert resp.status == 200
        assert fake_kube.cluster.store.open_watches == 1
        resp.close()
    for _ in range(200):  # bounded: the server notices within a few polls
        if fake_kube.cluster.store.open_watches == 0:
            break
        await asyncio.sleep(0.01)
    assert fake_kube.cluster.store.open_watches == 0


async def test_send_initial_events_ends_with_a_bookmark() -> None:
    async with running_fake_kube(watch_timeout=0.2) as fk, aiohttp.ClientSession() as http:
        fk.cluster.apply(deployment(replicas=0))
        query = {"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true",
                 "resourceVersionMatch": "NotOlderThan"}
        async with http.get(f"{fk.url}/apis/apps/v1/namespaces/shop/deployments", params=query) as resp:
            events = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    marker = events[1]["object"]["metadata"]
    assert marker["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert marker["resourceVersion"] == fk.cluster.resource_version
