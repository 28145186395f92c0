"""THE safety proof: what a server-side dry-run DELETE of a pod really does on kube-apiserver.

The executor once sent ``DELETE .../pods/NAME?dryRun=All`` with a DeleteOptions body that
carried only the uid precondition.  The apiserver decodes DeleteOptions from the body when
there is one and then ignores the query's dryRun: that "dry run" deleted the pod.  Only
``dryRun: ["All"]`` inside the body (or no body at all) keeps it a dry run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

POD = "victim"


async def bare_pod(api: Any, namespace: str) -> Any:
    """A pod with no controller (nothing recreates it), unbound as every pod here is."""
    body = {"metadata": {"name": POD, "labels": {"app": "victim"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}]}}
    return await client.CoreV1Api(api).create_namespaced_pod(namespace, body)


async def read_or_none(api: Any, namespace: str) -> Any:
    try:
        return await client.CoreV1Api(api).read_namespaced_pod(POD, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def test_dry_run_in_the_query_with_a_delete_options_body_really_deletes_the_pod(
    kube_admin: Any, namespace: str
) -> None:
    pod = await bare_pod(kube_admin, namespace)
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=pod.metadata.uid))
    await client.CoreV1Api(kube_admin).delete_namespaced_pod(POD, namespace, body=options, dry_run="All")
    # Not a dry run at all; and an unbound pod has no kubelet to wait for, so it is gone at once.
    assert await read_or_none(kube_admin, namespace) is None


async def test_dry_run_inside_the_delete_options_body_leaves_the_pod_untouched(
    kube_admin: Any, namespace: str
) -> None:
    pod = await bare_pod(kube_admin, namespace)
    options = client.V1DeleteOptions(dry_run=["All"], preconditions=client.V1Preconditions(uid=pod.metadata.uid))
    returned = await client.CoreV1Api(kube_admin).delete_namespaced_pod(POD, namespace, body=options, dry_run="All")
    assert returned.kind == "Pod" and returned.metadata.uid == pod.metadata.uid  # the would-be deleted object

    after = await read_or_none(kube_admin, namespace)
    assert after is not None, "a dry-run DELETE deleted the pod"
    assert after.metadata.resource_version == pod.metadata.resource_version
    assert after.metadata.deletion_timestamp is None


async def test_dry_run_in_the_query_without_a_body_is_honoured(kube_admin: Any, namespace: str) -> None:
    pod = await bare_pod(kube_admin, namespace)
    await client.CoreV1Api(kube_admin).delete_namespaced_pod(POD, namespace, dry_run="All")
    after = await read_or_none(kube_admin, namespace)
    assert after is not None and after.metadata.resource_version == pod.metadata.resource_version


async def test_a_stale_uid_precondition_is_a_409_conflict_and_deletes_nothing(kube_admin: Any, namespace: str) -> None:
    pod = await bare_pod(kube_admin, namespace)
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000"))
    with pytest.raises(ApiException) as conflict:
        await client.CoreV1Api(kube_admin).delete_namespaced_pod(POD, namespace, body=options)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body)["reason"] == "Conflict"
    after = await read_or_none(kube_admin, namespace)
    assert after is not None and after.metadata.resource_version == pod.metadata.resource_version
