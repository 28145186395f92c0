"""Alert labels never steer the API: every name rendered from alert content is checked first.

An alert label is input from anyone who can shape a metric's labels.  Rendered into a
pod or container name it is held to Kubernetes' own name rules before any request is
sent: a bad value is a ``not_allowed`` decision with the reason, so nothing runs, no
``on_failure`` rolls the workload back, and the circuit breaker is not fed.  A well-formed
name of something that does not exist fails only the step that looked it up, changes
nothing, and likewise triggers neither.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, Harness, open_harness, playbook, steps_of, web

ROLLBACK = "- action: rollback\n"
POOL = {"fix": playbook('- action: resize_pool\n  container: "{{ labels.container }}"\n'
                        "  env: DB_POOL_MAX_SIZE\n  by: 10\n", on_failure=ROLLBACK)}
DELETE = {"fix": playbook('- action: delete_pod\n  pod: "{{ labels.pod }}"\n', on_failure=ROLLBACK)}

HOSTILE_PODS = {
    "dot": ".",
    "dot-dot": "..",
    "slash": "a/b",
    "leading-space": " shop",
    "trailing-newline": "web-1\n",
    "uppercase": "Web-1",
    "254-characters": "a" * 254,
}


def two_releases(kube: FakeKube) -> None:
    """A Deployment with a previous release, so a wrongly run on_failure would have something to undo."""
    kube.cluster.apply(web(image="registry.example/web:1.0", env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
    kube.cluster.apply(web(image="registry.example/web:2.0", env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))


async def decisions(h: Harness) -> list[dict[str, Any]]:
    store: Any = h.rt.store
    return [dict(d) for d in await store.list_decisions()]


HOSTILE = [(DELETE, "pod", v, "is not a valid pod name") for v in HOSTILE_PODS.values()] + [
    (POOL, "container", v, "is not a valid container name") for v in ("App", "a/b", "..", " app", "a" * 64)
]


@pytest.mark.parametrize(("books", "label", "value", "why"), HOSTILE,
                         ids=[f"pod-{k}" for k in HOSTILE_PODS] + ["container-uppercase", "container-slash",
                                                                   "container-dot-dot", "container-space",
                                                                   "container-64-characters"])
async def test_a_hostile_label_is_refused_before_any_api_call(
    books: dict[str, str], label: str, value: str, why: str,
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    two_releases(kube)
    seen = len(kube.cluster.requests)
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        await h.until_done(h.start(**{label: value}))
        [decision] = await decisions(h)
        executions = await h.rt.store.list_executions()
    assert len(kube.cluster.requests) == seen  # not one request reached the apiserver
    assert decision["decision"] == "not_allowed"
    assert f".{label} " in decision["reason"] and why in decision["reason"]
    assert executions == []
    assert h.get()["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:2.0"


async def test_a_missing_container_label_is_refused_before_any_api_call(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    two_releases(kube)
    seen = len(kube.cluster.requests)
    async with open_harness(tmp_path, settings_factory, vclock, kube, POOL) as h:
        await h.until_done(h.start())  # no `container` label at all
        [decision] = await decisions(h)
    assert len(kube.cluster.requests) == seen
    assert decision["decision"] == "not_allowed" and "the alert has no 'container'" in decision["reason"]


async def test_a_container_that_does_not_exist_rolls_nothing_back_and_never_opens_the_breaker(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The shipped db-pool-exhaustion case: image 2 must stay image 2, however many such alerts come."""
    two_releases(kube)
    writes = len(kube.cluster.requests.writes())
    async with open_harness(tmp_path, settings_factory, vclock, kube, POOL) as h:
        for i in range(4):  # the breaker opens after 3 consecutive failures
            await h.until_done(h.start(container="worker", instance=f"i{i}"))
        executions = await h.rt.store.list_executions(limit=10)
        audits = [await h.rt.store.get_execution(e["id"]) for e in executions]
        breakers = (await h.rt.guardrails.status()).breakers
        assert len(kube.cluster.requests.writes()) == writes  # nothing written: no resize, no rollback
        await h.until_done(h.start(container="app", instance="good"))  # a well-formed alert still runs
        good = await h.execution()
    assert [e["status"] for e in executions] == ["failed"] * 4
    for full in audits:
        assert steps_of(full) == [("main", "resize_pool", "failed")]  # on_failure not run
        assert full["results"][0]["details"]["refused_input"] is True
        assert "container 'worker' not found in Deployment/shop/web" in full["results"][0]["message"]
    assert "fix" not in breakers or breakers["fix"].failures == 0
    assert h.get()["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:2.0"
    assert good["status"] == "succeeded"


async def test_a_pod_that_is_not_the_targets_is_refused_without_a_rollback(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    two_releases(kube)
    kube.cluster.apply(web("other"))
    [stranger] = kube.cluster.pods_of(NS, "other")[:1]
    writes = len(kube.cluster.requests.writes())
    async with open_harness(tmp_path, settings_factory, vclock, kube, DELETE) as h:
        full = await h.fire(pod=stranger["metadata"]["name"])
        missing = await h.fire(pod="web-does-not-exist", instance="2")
        breakers = (await h.rt.guardrails.status()).breakers
    assert len(kube.cluster.requests.writes()) == writes
    assert steps_of(full) == [("main", "delete_pod", "failed")]
    assert "does not belong to Deployment/shop/web" in full["results"][0]["message"]
    assert steps_of(missing) == [("main", "delete_pod", "failed")]
    assert "not found" in missing["results"][0]["message"]
    assert "fix" not in breakers or breakers["fix"].failures == 0
