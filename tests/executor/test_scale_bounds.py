"""A step's bounds limit what it does, they never turn it around (planning.desired_amount).

A scale up (or pool up) whose target someone already took above the ceiling during the
incident leaves it there: ``ok``, nothing written, no ``on_failure``.  A scale down of a
workload already below its floor leaves it there too.  Assertions are on the fake
cluster's objects and the requests it received.
"""

from __future__ import annotations

from tests.executor.conftest import OpenHarness
from tests.executor.harness import playbook, steps_of, web

# if it ran, on_failure would write (a restart patches the Deployment)
RESTART = "- action: restart\n"


async def test_a_scale_up_leaves_a_deployment_already_above_max_replicas_as_it_is(harness: OpenHarness) -> None:
    steps = "- action: scale\n  by: 2\n"
    async with harness({"fix": playbook(steps, guardrails="max_replicas: 10\n", on_failure=RESTART)}) as h:
        h.cluster.apply(web(replicas=12))  # scaled by hand during the incident
        ex = await h.fire()
        replicas = h.get()["spec"]["replicas"]
        writes = h.cluster.requests.writes()
    assert replicas == 12
    assert writes == []
    assert ex["status"] == "succeeded" and steps_of(ex) == [("main", "scale", "ok")]
    result = ex["results"][0]
    assert result["message"].endswith("Deployment/shop/web already has 12 replicas")
    assert (result["details"]["from"], result["details"]["to"]) == (12, 12)


async def test_a_scale_up_still_stops_at_max_replicas_from_below(harness: OpenHarness) -> None:
    steps = "- action: scale\n  by: 5\n"
    async with harness({"fix": playbook(steps, guardrails="max_replicas: 10\n")}) as h:
        h.cluster.apply(web(replicas=8))
        ex = await h.fire()
        assert h.get()["spec"]["replicas"] == 10
    assert (ex["results"][0]["details"]["from"], ex["results"][0]["details"]["to"]) == (8, 10)


async def test_a_pool_up_leaves_a_pool_already_above_max_as_it_is(harness: OpenHarness) -> None:
    steps = "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n  max: 50\n"
    async with harness({"fix": playbook(steps, on_failure=RESTART)}) as h:
        h.cluster.apply(web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "80"}]))
        ex = await h.fire()
        env = h.get()["spec"]["template"]["spec"]["containers"][0]["env"]
        writes = h.cluster.requests.writes()
    assert env == [{"name": "DB_POOL_MAX_SIZE", "value": "80"}]
    assert writes == []
    assert ex["status"] == "succeeded" and steps_of(ex) == [("main", "resize_pool", "ok")]
    result = ex["results"][0]
    assert result["message"].endswith("DB_POOL_MAX_SIZE is already 80")
    assert (result["details"]["from"], result["details"]["to"]) == (80, 80)


async def test_a_scale_down_leaves_a_deployment_already_below_min_as_it_is(harness: OpenHarness) -> None:
    steps = "- action: scale\n  by: -1\n  min: 3\n"
    async with harness({"fix": playbook(steps, on_failure=RESTART)}) as h:
        h.cluster.apply(web(replicas=1))
        ex = await h.fire()
        replicas = h.get()["spec"]["replicas"]
        writes = h.cluster.requests.writes()
    assert replicas == 1
    assert writes == []
    assert ex["status"] == "succeeded" and steps_of(ex) == [("main", "scale", "ok")]
    assert (ex["results"][0]["details"]["from"], ex["results"][0]["details"]["to"]) == (1, 1)
