"""``min_healthy_replicas``: delete_pod and a scale down never leave fewer ready replicas than that.

A refused step writes nothing; the audit says how many were ready and how many would
be left; ``on_failure`` does not run (nothing changed) and the breaker is not fed.
Scaling to zero and back is two steps, and only the first one takes capacity away.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import parse_playbooks
from remediator.testing.kube.harness import FakeKube
from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, open_harness, playbook, steps_of, web
from tests.executor.test_resume import crash_while
from tests.payloads import alert_json

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


async def test_a_floor_on_the_start_never_refuses_it(harness: OpenHarness) -> None:
    floored_start = BOUNCE.replace("  to: 2\n", "  to: 2\n  min_healthy_replicas: 3\n")
    async with harness({"b": playbook(floored_start, name="b", alertname="B")}) as h:
        h.cluster.apply(web("cart", replicas=3))
        await h.settle()
        ex = await h.fire("cart", alertname="B")
    assert ex["status"] == "succeeded"  # scaling 0 -> 2 takes nothing away
    assert h.get("cart")["spec"]["replicas"] == 2


# -- the playbook-wide floor: guardrails.min_healthy_replicas -------------------------------------------

GUARDED = """\
min_healthy_replicas: 3
"""


@pytest.mark.parametrize(("steps", "pod_label", "refused"), [
    (delete(2).replace("  min_healthy_replicas: 2\n", ""), True, True),  # 3 ready, 2 left < 3
    ("- action: scale\n  by: -1\n", False, True),
    (delete(2), True, False),  # the step's own floor overrides the playbook's
    ("- action: scale\n  by: -1\n  min_healthy_replicas: 2\n", False, False),
    ("- action: scale\n  by: 2\n", False, False),  # a scale up takes nothing away
])
async def test_the_playbooks_floor_guards_every_step_that_takes_capacity_unless_the_step_sets_its_own(
    harness: OpenHarness, steps: str, pod_label: bool, refused: bool
) -> None:
    async with harness({"fix": playbook(steps, guardrails=GUARDED, on_failure=ROLLBACK)}) as h:
        h.cluster.apply(web(replicas=3))
        await h.settle()
        victim = sorted(p["metadata"]["name"] for p in h.cluster.pods_of(NS, "web"))[0]
        ex = await h.fire(**({"pod": victim} if pod_label else {}))
    [result] = ex["results"]
    assert (result["status"] == "failed") is refused, result["message"]
    if refused:
        assert h.cluster.requests.writes() == []
        assert (result["details"]["min_healthy_replicas"], result["details"]["ready"]) == (3, 3)
        assert "fewer than min_healthy_replicas 3: refused" in result["message"]


async def test_the_playbooks_floor_guards_on_failure_steps_too(harness: OpenHarness) -> None:
    """A scale up, then a step that fails; on_failure's scale down is refused by the playbook's floor."""
    fails = "- action: set_image\n  container: missing\n  image: registry.example/web:2.0\n"
    async with harness({"fix": playbook("- action: scale\n  to: 4\n" + fails, guardrails=GUARDED,
                                        on_failure="- action: scale\n  to: 1\n")}) as h:
        h.cluster.apply(web(replicas=3))
        await h.settle()
        ex = await h.fire()
    assert steps_of(ex) == [("main", "scale", "ok"), ("main", "set_image", "failed"),
                            ("on_failure", "scale", "failed")]
    assert ex["results"][2]["details"]["min_healthy_replicas"] == 3
    assert "fewer than min_healthy_replicas 3: refused" in ex["results"][2]["message"]
    assert h.get()["spec"]["replicas"] == 4


BOUNCE_GUARDED = """\
name: bounce
match: {alertname: Down}
target: {kind: Deployment, namespace: shop, name: web}
guardrails:
  namespaces: [shop]
  min_healthy_replicas: 2
steps:
  - {action: scale, to: 0, min_healthy_replicas: 0}
  - {action: scale, to: 2}
"""


@pytest.mark.parametrize(("text", "line", "message"), [
    (BOUNCE_GUARDED.replace("to: 0, min_healthy_replicas: 0", "to: 0"), 8,
     "steps.0: a scale to 0 under guardrails.min_healthy_replicas 2 would always be refused"),
    (BOUNCE_GUARDED.replace("min_healthy_replicas: 0", "min_healthy_replicas: 1"), 8,
     "steps.0: a scale to 0 under its min_healthy_replicas 1 would always be refused"),
    (BOUNCE_GUARDED.replace("{action: scale, to: 2}", "{action: scale, by: -1, max: 0}"), 9,
     "steps.1: a scale max 0 under guardrails.min_healthy_replicas 2 would always be refused"),
    (BOUNCE_GUARDED.replace("min_healthy_replicas: 2", "min_healthy_replicas: -1"), 6,
     "guardrails.min_healthy_replicas: -1 is less than the minimum of 0"),
    (BOUNCE_GUARDED.replace("min_healthy_replicas: 2", "min_healthy_replicas: two"), 6,
     "guardrails.min_healthy_replicas: 'two' is not of type 'integer'"),
])
def test_a_floor_that_contradicts_a_step_is_refused_at_load(text: str, line: int, message: str) -> None:
    books, problems = parse_playbooks(text, "bounce.yaml")
    assert books == [] and [(p.line, p.message) for p in problems] == [(line, message + (
        "" if "minimum" in message or "type" in message else
        " (it leaves no replica ready); to stop the workload on purpose (scale to 0 and back), give this step "
        "min_healthy_replicas: 0"))]


def test_the_floor_travels_with_each_planned_step_that_takes_capacity() -> None:
    text = BOUNCE_GUARDED + "on_failure:\n  - {action: delete_pod, pod: x}\n  - {action: restart}\n"
    [book], problems = parse_playbooks(text, "bounce.yaml")
    assert problems == [] and book.guardrails.min_healthy_replicas == 2
    plan = make_plan(book, Alert.from_json(alert_json({"alertname": "Down"})), global_dry_run=False)
    assert isinstance(plan, Plan)
    floors = [(s.action, s.params.get("min_healthy_replicas")) for s in plan.steps + plan.on_failure]
    assert floors == [("scale", 0), ("scale", 2), ("delete_pod", 2), ("restart", None)]


# -- the bounce: dry-run, and a crash on the way ----------------------------------------------------

#: as shipped (examples/runbooks): a floor of 1 for the playbook, lifted on the bounce's stop
BOUNCE_BOOKS = {"fix": playbook(BOUNCE.replace("  to: 0\n", "  to: 0\n  min_healthy_replicas: 0\n", 1),
                                guardrails="min_healthy_replicas: 1\n")}


async def test_a_dry_run_bounce_sends_both_scales_with_dry_run_and_moves_nothing(harness: OpenHarness) -> None:
    async with harness(BOUNCE_BOOKS, dry_run=True) as h:
        h.cluster.apply(web(replicas=3))
        await h.settle()
        pods = {p["metadata"]["uid"] for p in h.cluster.pods_of(NS, "web")}
        ex = await h.fire()
    assert steps_of(ex) == [("main", "scale", "planned"), ("main", "scale", "planned"),
                            ("main", "wait_healthy", "planned")]
    writes = h.cluster.requests.writes()
    assert [w.method for w in writes] == ["PUT", "PUT"] and all(w.query.get("dryRun") == "All" for w in writes)
    assert h.get()["spec"]["replicas"] == 3 and {p["metadata"]["uid"] for p in h.cluster.pods_of(NS, "web")} == pods


async def test_a_dry_run_bounce_plans_its_start_from_the_stop_it_would_have_made(harness: OpenHarness) -> None:
    """Dry-run changes nothing, so the start must not be planned from the cluster's 3 (a scale *down* to 2,
    which a playbook floor of 3 would refuse in dry-run only): it is planned from the stop's 0, as live."""
    books = {"fix": playbook(BOUNCE.replace("  to: 0\n", "  to: 0\n  min_healthy_replicas: 0\n", 1),
                             guardrails="min_healthy_replicas: 3\n")}
    async with harness(books, dry_run=True) as h:
        h.cluster.apply(web(replicas=3))
        await h.settle()
        ex = await h.fire()
    assert steps_of(ex) == [("main", "scale", "planned"), ("main", "scale", "planned"),
                            ("main", "wait_healthy", "planned")]
    stop, start = ex["results"][0], ex["results"][1]
    assert (stop["details"]["from"], stop["details"]["to"]) == (3, 0)
    assert (start["details"]["from"], start["details"]["to"]) == (0, 2)
    assert start["message"] == ("dry-run (server-side): would have scaled Deployment/shop/web from 0 (as this "
                                "execution's steps before leave it) to 2 replicas")
    writes = h.cluster.requests.writes()
    assert [(w.method, w.query.get("dryRun"), w.body["spec"]["replicas"]) for w in writes] == [
        ("PUT", "All", 0), ("PUT", "All", 2)]
    assert h.get()["spec"]["replicas"] == 3


async def test_a_crash_while_the_stop_is_at_the_apiserver_resumes_at_the_start(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """The stop's PUT lands, the daemon dies before recording it; the resumed execution finds 0 replicas
    (its own write: not sent again, not taken for someone else's change) and scales back to 2."""
    kube.cluster.apply(web(replicas=3))
    kube.cluster.faults.hang(method="PUT", path="/scale$")
    async with open_harness(tmp_path, settings_factory, vclock, kube, BOUNCE_BOOKS) as h:
        await crash_while(h, h.start(), "PUT", "/scale$")
        assert h.get()["spec"]["replicas"] == 0
    kube.cluster.faults.clear()
    await h.advance(601)  # the dead daemon's lease and lock lapse
    async with open_harness(tmp_path, settings_factory, vclock, kube, BOUNCE_BOOKS) as h2:
        before = len(kube.cluster.requests.writes())
        assert await h2.until_done(h2.rt.pipeline.resume_unfinished()) == 1
        full = await h2.execution()
        replicas = h2.get()["spec"]["replicas"]
    assert steps_of(full) == [("main", "scale", "ok"), ("main", "scale", "ok"), ("main", "wait_healthy", "ok")]
    assert full["results"][0]["message"].endswith("already has 0 replicas")
    assert [f"{r.method} {r.path}" for r in kube.cluster.requests.writes()[before:]] == [
        f"PUT /apis/apps/v1/namespaces/{NS}/deployments/web/scale"]  # only the start
    assert replicas == 2
