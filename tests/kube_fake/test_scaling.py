"""The fake stays linear and its shared stored objects stay intact.

Controllers resync only what a change touches, and the store hands out its objects
without copying them (they are replaced on every write, never changed in place).  These
tests pin both: a write to one Deployment among many wakes nothing else, and no code
path changes an object after it was stored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from remediator.testing.kube import ApiError, FakeCluster
from remediator.testing.kube.store import Event
from tests.kube_fake.helpers import deployment, statefulset, with_image

MERGE = "application/merge-patch+json"


def key_of(event: Event) -> tuple[str, str, str]:
    meta = event.object["metadata"]
    return event.resource, str(meta.get("namespace") or ""), str(meta["name"])


def test_no_stored_object_changes_after_it_was_stored() -> None:
    """Every object is serialised when stored; when it is replaced, and at the end, it must serialise the same."""
    cluster = FakeCluster(ready_delay=2, termination_delay=1)
    as_stored: dict[tuple[str, str, str], str] = {}
    changed_before_replaced: list[tuple[str, str, str]] = []

    def remember(event: Event) -> None:
        key = key_of(event)
        stored_as = as_stored.get(key)
        if event.previous is not None and stored_as is not None and json.dumps(
                event.previous, sort_keys=True) != stored_as:
            changed_before_replaced.append(key)
        if event.type != "DELETED":
            as_stored[key] = json.dumps(event.object, sort_keys=True)

    cluster.store.subscribe(remember)
    cluster.apply(deployment("web", replicas=3))
    cluster.apply(statefulset("db", replicas=2))
    cluster.advance(5)
    cluster.apply(with_image(deployment("web", replicas=3), "registry.example/web:2.0"))
    cluster.apply(statefulset("db", replicas=2, image="registry.example/db:2.0"))
    cluster.patch("deployments", "shop", "web", MERGE, {"spec": {"replicas": 5}})
    [pod, *_] = cluster.pods_of("shop", "web")
    cluster.delete("pods", "shop", pod["metadata"]["name"])
    cluster.advance(30)
    cluster.apply(deployment("web", replicas=2))  # back to the first template: revision 1's ReplicaSet again
    cluster.advance(30)
    cluster.delete("deployments", "shop", "web")
    cluster.advance(5)

    stored: dict[tuple[str, str, str], Any] = {}
    for resource in {k[0] for k in as_stored}:
        for obj in cluster.store.iter(resource):
            stored[(resource, obj["metadata"].get("namespace") or "", obj["metadata"]["name"])] = obj
    assert stored, "the scenario left nothing to check"
    stored = {k: obj for k, obj in stored.items() if k in as_stored}  # not what existed before the listener
    changed = [k for k, obj in stored.items() if json.dumps(obj, sort_keys=True) != as_stored[k]]
    assert changed == [] and changed_before_replaced == []


def test_a_write_to_one_deployment_among_many_touches_only_its_own_objects() -> None:
    cluster = FakeCluster()
    for i in range(30):
        cluster.apply(deployment(f"web-{i}", replicas=2))
    touched: list[tuple[str, str, str]] = []
    cluster.store.subscribe(lambda event: touched.append(key_of(event)))

    cluster.patch("deployments", "shop", "web-7", MERGE, {"spec": {"replicas": 3}})

    owned = {("deployments", "shop", "web-7")}
    owned |= {("replicasets", "shop", rs["metadata"]["name"]) for rs in cluster.replicasets_of("shop", "web-7")}
    owned |= {("pods", "shop", p["metadata"]["name"]) for p in cluster.pods_of("shop", "web-7")}
    assert touched and set(touched) <= owned
    assert len(cluster.pods_of("shop", "web-7")) == 3


def test_a_deleted_namespace_is_emptied_and_removed() -> None:
    cluster = FakeCluster()
    cluster.apply(deployment("web", "gone", replicas=2))
    cluster.apply(deployment("web", "kept", replicas=1))
    deleted = cluster.delete("namespaces", "", "gone")
    assert deleted["status"]["phase"] == "Terminating" and deleted["metadata"]["deletionTimestamp"]
    assert cluster.get("namespaces", "", "gone") is None
    assert [kind for kind in ("deployments", "replicasets", "pods") if cluster.objects(kind, "gone")] == []
    assert len(cluster.objects("pods", "kept")) == 1


def test_controllers_that_run_in_their_own_time_show_what_a_real_client_sees() -> None:
    cluster = FakeCluster(sync_controllers=False)
    cluster.apply(deployment("web", replicas=2))  # seeding still settles
    read = cluster.get("deployments", "shop", "web")
    assert read is not None and read["status"]["observedGeneration"] == 1

    patched = cluster.patch("deployments", "shop", "web", MERGE, {"spec": {"replicas": 3}})
    now = cluster.get("deployments", "shop", "web")
    assert now is not None and now["metadata"]["generation"] == 2 and now["status"]["observedGeneration"] == 1
    assert len(cluster.pods_of("shop", "web")) == 2  # nobody has acted on it yet

    cluster.reconcile()  # the controllers' turn: status written, the version the client read is stale
    assert len(cluster.pods_of("shop", "web")) == 3
    stale = {"metadata": {"resourceVersion": patched["metadata"]["resourceVersion"]}, "spec": {"replicas": 4}}
    with pytest.raises(ApiError) as conflict:
        cluster.patch("deployments", "shop", "web", MERGE, stale)
    assert conflict.value.code == 409
