"""Watches as wait_healthy uses them: from the resourceVersion of a read, one Deployment by field selector.

A 410 Expired cannot be provoked on the real apiserver in a test: watches are served by
its watch cache, whose window is a matter of time and capacity (compacting etcd does not
touch it: tried).  So that row runs on the fake only, where ``compact_history()`` plays
the cache moving on; its answer has the real one's form (an ERROR event carrying a
Status 410 ``Expired``, which the client raises as ApiException 410).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.core import rollout
from tests.contract.conftest import Backend
from tests.kube_fake.helpers import deployment


async def events_until_healthy(backend: Backend, version: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with watch.Watch().stream(
        backend.apps.list_namespaced_deployment, backend.namespace, field_selector="metadata.name=web",
        resource_version=version, timeout_seconds=15, _request_timeout=20,
    ) as stream:
        async for event in stream:
            seen.append({"type": event["type"], "object": event["raw_object"]})
            if rollout.health("Deployment", event["raw_object"]).done:
                break
    return seen


async def test_a_watch_from_a_read_sees_the_rollout_through_in_order(backend: Backend) -> None:
    before = await backend.web(replicas=1)
    await backend.apps.create_namespaced_deployment(backend.namespace, deployment("other", backend.namespace))
    version = before["metadata"]["resourceVersion"]
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, {"spec": {"replicas": 2}})

    seen = await events_until_healthy(backend, version)
    assert {e["type"] for e in seen} == {"MODIFIED"}
    assert {e["object"]["metadata"]["name"] for e in seen} == {"web"}  # the field selector holds
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
    assert versions == sorted(versions) and versions[0] > int(version)
    assert seen[0]["object"]["spec"]["replicas"] == 2  # the first change after the read is the patch itself
    last = seen[-1]["object"]
    assert last["status"]["observedGeneration"] == last["metadata"]["generation"] == 2
    assert last["status"]["availableReplicas"] == 2


async def test_a_watch_from_an_expired_version_is_a_410_the_client_raises(backend: Backend) -> None:
    """What wait_healthy catches to re-read and watch again (tests/executor covers that it does)."""
    if backend.fake is None:
        pytest.skip("the real watch cache cannot be made to expire a version in a test (see the module docstring)")
    before = await backend.web(replicas=1)
    await backend.apps.patch_namespaced_deployment("web", backend.namespace, {"metadata": {"labels": {"x": "1"}}})
    backend.fake.compact_history()  # the history holds nothing older than that patch any more
    with pytest.raises(ApiException) as expired:
        await events_until_healthy(backend, before["metadata"]["resourceVersion"])
    assert expired.value.status == 410
    assert str(expired.value.reason).startswith("Expired: too old resource version: ")


async def test_a_watch_from_a_malformed_version_is_a_500_without_a_reason(backend: Backend) -> None:
    answer = await backend.raw("GET", backend.path("deployments"),
                               query={"watch": "1", "resourceVersion": "abc", "timeoutSeconds": "1"})
    assert (answer.status, answer.json) == (500, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'resourceVersion: Invalid value: "abc": strconv.ParseUint: parsing "abc": invalid syntax',
        "code": 500})
