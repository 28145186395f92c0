"""Keeping capacity, on both apiservers: the playbook-wide ``guardrails.min_healthy_replicas`` and the
runbook's scale to zero and back.

The steps are planned from a playbook as the daemon plans them (:func:`make_plan`: the
playbook's floor travels with each step that can take capacity away, unless the step
sets its own) and run by the executor against the fake and the real apiserver, whose
Deployment controller counts the ready replicas the floor is checked against.
"""

from __future__ import annotations

from typing import Any

from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import parse_playbooks
from remediator.ports import StepContext
from tests.contract.conftest import Backend
from tests.payloads import alert_json
from tests.real_kube.helpers import executor, run_step

GUARDED = """\
name: keep-two
match: {{alertname: Down}}
target: {{kind: Deployment, namespace: {namespace}, name: web}}
guardrails:
  namespaces: [{namespace}]
  min_healthy_replicas: 2
steps:
  - {{action: delete_pod, pod: "{{{{ labels.pod }}}}"}}
  - {{action: scale, by: -1}}
  - {{action: delete_pod, pod: "{{{{ labels.pod }}}}", min_healthy_replicas: 1}}
on_failure:
  - {{action: scale, to: 0, min_healthy_replicas: 0, description: "the bounce's stop opts out, visibly"}}
  - {{action: scale, to: 2}}
"""


def planned(namespace: str, **labels: str) -> Plan:
    [book], problems = parse_playbooks(GUARDED.format(namespace=namespace), "keep-two.yaml")
    assert problems == []
    plan = make_plan(book, Alert.from_json(alert_json({"alertname": "Down", **labels})), global_dry_run=False)
    assert isinstance(plan, Plan), plan
    return plan


async def run(backend: Backend, step: PlannedStep, *, dry_run: bool = False) -> Any:
    return await run_step(executor(backend.api, server_dry_run=dry_run), backend.namespace, step.action,
                          dict(step.params))


async def test_the_playbooks_floor_refuses_a_delete_and_a_scale_down_and_a_steps_own_floor_overrides_it(
    backend: Backend,
) -> None:
    await backend.web(replicas=2)
    pods = [p["metadata"]["name"] for p in await backend.pods()]
    plan = planned(backend.namespace, pod=pods[0])
    quiet = await backend.snapshot()

    for step in plan.steps[:2]:  # delete_pod and scale by -1, each would leave 1 ready of 2
        refused = await run(backend, step)
        assert refused.status == "failed", refused.message
        assert (refused.details["ready"], refused.details["left"], refused.details["min_healthy_replicas"]) == (
            2, 1, 2)
        assert refused.details["refused_input"] and not refused.details.get("wrote")
    assert await backend.snapshot() == quiet  # nothing was written

    allowed = await run(backend, plan.steps[2])  # its own floor of 1
    assert allowed.status == "ok", allowed.message


    async def gone() -> bool | None:
        return True if pods[0] not in [p["metadata"]["name"] for p in await backend.pods()] else None

    await backend.until(gone, f"pod {pods[0]} to be deleted")


async def test_scale_to_zero_and_back_dry_run_then_live(backend: Backend) -> None:
    await backend.web(replicas=2)
    stop, start = planned(backend.namespace, pod="unused").on_failure
    assert (stop.params["min_healthy_replicas"], start.params["min_healthy_replicas"]) == (0, 2)
    quiet = await backend.snapshot()

    dry = await run(backend, stop, dry_run=True)
    assert dry.status == "planned" and dry.details["to"] == 0, dry.message
    # The start, after the dry-run stop: planned from the 0 the stop would have left, and sent as a dry-run.
    kube = executor(backend.api, server_dry_run=True)
    ctx = StepContext("contract-bounce", Alert.from_json(alert_json({"alertname": "Down"})),
                      ResolvedTarget("Deployment", backend.namespace, "web"), True, kube.clock,
                      history=((stop, dry),))
    dry_start = await kube.run(start, ctx)
    assert dry_start.status == "planned", dry_start.message
    assert (dry_start.details["from"], dry_start.details["to"]) == (0, 2)
    assert dry_start.after["spec"]["replicas"] == 2  # the apiserver's answer to the dry-run PUT
    assert await backend.snapshot() == quiet  # a server-side dry-run moves nothing

    stopped = await run(backend, stop)
    assert stopped.status == "ok" and (stopped.details["from"], stopped.details["to"]) == (2, 0), stopped.message

    async def no_pods() -> bool | None:
        return True if not await backend.pods() else None

    await backend.until(no_pods, "the bounced Deployment's pods to go")
    started = await run(backend, start)  # scaling up takes nothing away: its floor never refuses it
    assert started.status == "ok" and (started.details["from"], started.details["to"]) == (0, 2), started.message
    dep = await backend.settled()
    assert (dep["spec"]["replicas"], dep["status"]["readyReplicas"]) == (2, 2)
