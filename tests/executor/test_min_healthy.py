"""``min_healthy_replicas``: delete_pod and a scale down never leave fewer ready replicas than that.

A refused step writes nothing; the audit says how many were ready and how many would
be left; ``on_failure`` does not run (nothing changed) and the breaker is not fed.
Scaling to zero and back is two steps, and only the first one takes capacity away.
"""

from __future__ import annotations

import pytest

from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, playbook, steps_of, web

ROLLBACK = "- action: rollback\n"


def delete(floor: int) -> str:
    return f'- action: delete_pod\n  pod: "{{{{ labels.pod }}}}"\n  min_healthy_replicas: {floor}\n'


@pytest.mark.parametrize(("floor", "deleted"), [(2, True), (3, False)])
async def test_delete_pod_keeps_min_healthy_replicas_ready(harness: OpenHarness, floor: int, deleted: bool) -> None:
    async with harness({"fix": playbook(delete(floor), on_failure=ROLLBACK)}) as h:
        h.cluster.apply(web(image="registry.example/web:1.0"))
        h.cluster.apply(web(image="registry.example/web:2.0"))
        await h.settle()
        victim = sorted(p["metadata"]["name"] for p in h.cluster.pods_of(NS, "web"))[0]
        assert h.get()["status"]["readyReplicas"] == 3
        ex = await h.fire(pod=victim)
        breakers = (await h.rt.guardrails.status()).breakers
    gone = h.cluster.get("pods", NS, victim) is None
    assert gone is deleted
    if deleted:
        assert steps_of(ex) == [("main", "delete_pod", "ok")]
        return
    assert h.cluster.requests.matching("DELETE") == [] and h.cluster.requests.writes() == []
    assert steps_of(ex) == [("main", "delete_pod", "failed")]  # no rollback
    result = ex["results"][0]
    assert (f"deleting pod {victim} would leave 2 ready replica(s) of Deployment/shop/web (3 ready now), fewer "
            "than min_healthy_replicas 3: refused") in result["message"]
    details = result["details"]
    assert {k: details[k] for k in ("guard", "ready", "left", "min_healthy_replicas", "refused_input")} == {
        "guard": "min_healthy_replicas", "ready": 3, "left": 2, "min_healthy_replicas": 3, "refused_input": True}
    assert "fix" not in breakers or breakers["fix"].failures == 0


async def test_deleting_a_pod_that_is_not_ready_takes_no_ready_capacity(harness: OpenHarness) -> None:
    async with harness({"fix": playbook(delete(2))}) as h:
        h.cluster.apply(web(replicas=2))
        await h.settle()
        h.cluster.faults.never_ready(NS, "web")
        h.cluster.apply(web(replicas=3))  # the third pod never becomes ready
        await h.settle()
        ready = {p["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p["status"].get("conditions", []))
                 for p in h.cluster.pods_of(NS, "web")}
        [unready] = [name for name, ok in ready.items() if not ok]
        [a_ready_one, *_] = [name for name, ok in ready.items() if ok]
        refused = await h.fire(pod=a_ready_one)
        ok = await h.fire(pod=unready, instance="2")
    assert steps_of(refused) == [("main", "delete_pod", "failed")]
    assert steps_of(ok) == [("main", "delete_pod", "ok")]
    assert h.cluster.get("pods", NS, unready) is None and h.cluster.get("pods", NS, a_ready_one) is not None


@pytest.mark.parametrize(("steps", "replicas", "status"), [
    ("- action: scale\n  to: 1\n  min_healthy_replicas: 2\n", 3, "failed"),
    ("- action: scale\n  by: -1\n  min_healthy_replicas: 2\n", 2, "ok"),
    ("- action: scale\n  factor: 0.5\n  min_healthy_replicas: 2\n", 3, "failed"),
    ("- action: scale\n  to: 5\n  min_healthy_replicas: 9\n", 5, "ok"),  # a scale up takes nothing away
])
async def test_a_scale_down_keeps_min_healthy_replicas_ready(
    harness: OpenHarness, steps: str, replicas: int, status: str
) -> None:
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(web(replicas=3))
        await h.settle()
        ex = await h.fire()
    assert steps_of(ex) == [("main", "scale", status)]
    assert h.get()["spec"]["replicas"] == replicas
    if status == "failed":
        assert h.cluster.requests.matching("PUT") == []
        assert "fewer than min_healthy_replicas 2: refused" in ex["results"][0]["message"]


BOUNCE = """\
- action: scale
  to: 0
  description: stop every pod (the runbook's "scale to 0 and back")
- action: scale
  to: 2
- action: wait_healthy
  timeout: 5m
"""


async def test_scale_to_zero_and_back_is_two_steps(harness: OpenHarness) -> None:
    async with harness({"fix": playbook(BOUNCE)}) as h:
        h.cluster.apply(web(replicas=3))
        await h.settle()
        before = {p["metadata"]["uid"] for p in h.cluster.pods_of(NS, "web")}
        ex = await h.fire()
        after = {p["metadata"]["uid"] for p in h.cluster.pods_of(NS, "web")}
    assert steps_of(ex) == [("main", "scale", "ok"), ("main", "scale", "ok"), ("main", "wait_healthy", "ok")]
    assert [(r["details"]["from"], r["details"]["to"]) for r in ex["results"][:2]] == [(3, 0), (0, 2)]
    assert h.get()["status"]["readyReplicas"] == 2
    assert len(after) == 2 and not after & before  # every pod is new


async def test_a_floor_on_the_stop_refuses_it_and_one_on_the_start_never_does(harness: OpenHarness) -> None:
    floored_stop = BOUNCE.replace("  to: 0\n", "  to: 0\n  min_healthy_replicas: 1\n", 1)
    floored_start = BOUNCE.replace("  to: 2\n", "  to: 2\n  min_healthy_replicas: 3\n")
    async with harness({"a": playbook(floored_stop, name="a", alertname="A"),
                        "b": playbook(floored_start, name="b", alertname="B")}) as h:
        h.cluster.apply(web("api", replicas=3))
        h.cluster.apply(web("cart", replicas=3))
        await h.settle()
        await h.record("api", alertname="A")
        await h.record("cart", alertname="B")
        await h.until_done(h.rt.worker.drain())
        executions = {e["playbook"]: await h.rt.store.get_execution(e["id"])
                      for e in await h.rt.store.list_executions()}
        replicas = {name: h.get(name)["spec"]["replicas"] for name in ("api", "cart")}
    assert steps_of(executions["a"]) == [("main", "scale", "failed")]  # stopped before scaling to 0
    assert replicas == {"api": 3, "cart": 2}
    assert executions["b"]["status"] == "succeeded"  # scaling 0 -> 2 takes nothing away
