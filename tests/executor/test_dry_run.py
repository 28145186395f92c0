"""Server-side dry-run: every mutation goes to the apiserver with dryRun=All, the fake's state
does not change, and the audit records the same diff a live run would have made.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import running_fake_kube
from tests.executor.harness import NS, Harness, open_harness, playbook, steps_of, web
from tests.payloads import T0


def seed_pool(c: FakeCluster) -> dict[str, str]:
    c.apply(web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
    return {}


def seed_two_revisions(c: FakeCluster) -> dict[str, str]:
    c.apply(web())
    c.apply(web(image="registry.example/web:2.0"))
    return {}


def seed_pods(c: FakeCluster) -> dict[str, str]:
    c.apply(web(replicas=2))
    first = sorted(p["metadata"]["name"] for p in c.pods_of(NS, "web"))[0]
    return {"pod": first}


def seed_web(c: FakeCluster) -> dict[str, str]:
    c.apply(web())
    return {}


CASES: dict[str, tuple[str, Callable[[FakeCluster], dict[str, str]]]] = {
    "restart": ("- action: restart\n", seed_web),
    "scale": ("- action: scale\n  factor: 1.5\n", seed_web),
    "resize_pool": ("- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n", seed_pool),
    "rollback": ("- action: rollback\n", seed_two_revisions),
    "delete_pod": ('- action: delete_pod\n  pod: "{{ labels.pod }}"\n', seed_pods),
}


def state(c: FakeCluster) -> dict[str, Any]:
    kinds = ("deployments", "replicasets", "pods")
    return {"rv": c.resource_version, **{k: copy.deepcopy(c.objects(k)) for k in kinds}}


def comparable(diff: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A dry run leaves resourceVersion as it is (spec §6); everything else must match the live change."""
    return [d for d in diff if d["path"] != "/metadata/resourceVersion"]


async def run_once(
    tmp_path: Path, settings_factory: Callable[..., Any], steps: str,
    seed: Callable[[FakeCluster], dict[str, str]], *, dry_run: bool,
) -> tuple[dict[str, Any], FakeCluster, dict[str, Any], dict[str, Any]]:
    clock = VirtualClock(T0)
    cluster = FakeCluster(clock=lambda: clock.now().timestamp())
    labels = seed(cluster)
    async with running_fake_kube(cluster) as kube:
        before = state(cluster)
        async with open_harness(tmp_path, settings_factory, clock, kube, {"fix": playbook(steps)},
                                dry_run=dry_run) as h:
            ex = await Harness.fire(h, **labels)
        return ex, cluster, before, state(cluster)


@pytest.mark.parametrize("action", sorted(CASES))
async def test_server_side_dry_run_changes_nothing_and_records_the_live_diff(
    action: str, tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    steps, seed = CASES[action]
    dry, cluster, before, after = await run_once(tmp_path / "dry", settings_factory, steps, seed, dry_run=True)

    assert steps_of(dry) == [("main", action, "planned")]
    assert dry["status"] == "dry_run"
    assert after == before  # not one object, not one resourceVersion changed
    writes = cluster.requests.writes()
    assert writes and all(w.query.get("dryRun") == "All" for w in writes)
    result = dry["results"][0]
    assert result["details"]["server_side"] is True
    assert result["message"].startswith("dry-run (server-side): would have ")

    live, _, _, live_after = await run_once(tmp_path / "live", settings_factory, steps, seed, dry_run=False)
    assert steps_of(live) == [("main", action, "ok")]
    assert live_after != before
    if action == "delete_pod":  # live, the pod is gone; dry-run shows the object the apiserver would delete
        assert result["before"]["metadata"]["name"] == live["results"][0]["before"]["metadata"]["name"]
        assert result["after"]["metadata"]["uid"] == result["before"]["metadata"]["uid"]
    else:
        assert comparable(result["details"]["diff"]) == comparable(live["results"][0]["details"]["diff"])
        assert comparable(result["details"]["diff"])  # and it is not empty


async def test_dry_run_delete_pod_carries_dry_run_in_the_body(
    tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    """A DELETE with a body takes every option from the body: a dryRun only in the query is ignored
    by kube-apiserver, and the pod would really be deleted while the audit says "would have"."""
    steps, seed = CASES["delete_pod"]
    dry, cluster, _, _ = await run_once(tmp_path / "dry", settings_factory, steps, seed, dry_run=True)
    assert steps_of(dry) == [("main", "delete_pod", "planned")]
    victim = dry["results"][0]["before"]["metadata"]
    kept = cluster.get("pods", NS, victim["name"])
    assert kept is not None and kept["metadata"]["uid"] == victim["uid"]
    [delete] = cluster.requests.matching("DELETE", "/pods/")
    assert delete.status == 200
    assert delete.body == {"dryRun": ["All"], "preconditions": {"uid": victim["uid"]}}

    live, cluster, _, _ = await run_once(tmp_path / "live", settings_factory, steps, seed, dry_run=False)
    [delete] = cluster.requests.matching("DELETE", "/pods/")
    assert "dryRun" not in delete.body and "dryRun" not in delete.query
    assert cluster.get("pods", NS, live["results"][0]["before"]["metadata"]["name"]) is None


async def test_dry_run_diffs_name_the_change(tmp_path: Path, settings_factory: Callable[..., Any]) -> None:
    dry, *_ = await run_once(tmp_path, settings_factory, CASES["resize_pool"][0], seed_pool, dry_run=True)
    diff = dry["results"][0]["details"]["diff"]
    assert {"path": "/spec/template/spec/containers/0/env/0/value", "op": "replace", "before": "20",
            "after": "30"} in diff
    assert dry["results"][0]["message"] == (
        "dry-run (server-side): would have set DB_POOL_MAX_SIZE from 20 to 30 in container app")


async def test_dry_run_wait_healthy_reports_current_health_without_waiting(
    tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    steps = "- action: restart\n- action: wait_healthy\n  timeout: 10m\n"
    dry, cluster, before, after = await run_once(tmp_path, settings_factory, steps, seed_web, dry_run=True)
    assert steps_of(dry) == [("main", "restart", "planned"), ("main", "wait_healthy", "planned")]
    assert dry["results"][1]["message"] == (
        'dry-run: would wait up to 600s for a healthy rollout; now: deployment "web" successfully rolled out')
    assert not [r for r in cluster.requests if r.watch]
    assert after == before
