"""The StatefulSet half of the executor: restart, scale, rollback (from ControllerRevisions) and wait_healthy,
live and in server-side dry-run, on both backends.
"""

from __future__ import annotations

from typing import Any

from remediator.core import rollout
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.executors.kube import RESTARTED_AT
from remediator.ports import StepContext, StepResult
from tests.contract.conftest import Backend
from tests.kube_fake.helpers import statefulset
from tests.real_kube.helpers import executor


async def step(backend: Backend, action: str, params: dict[str, Any], *, dry_run: bool) -> StepResult:
    kube = executor(backend.api, server_dry_run=dry_run)
    ctx = StepContext(
        execution_id=f"contract-sts-{action}",
        alert=Alert(fingerprint="contract", status="firing", labels={"alertname": "Contract"}),
        target=ResolvedTarget("StatefulSet", backend.namespace, "db"),
        dry_run=dry_run,
        clock=kube.clock,
    )
    result = await kube.run(PlannedStep(0, action, params), ctx)
    assert result.status == ("planned" if dry_run else "ok"), result.message
    return result


async def read_db(backend: Backend) -> dict[str, Any]:
    out: dict[str, Any] = backend.api.sanitize_for_serialization(
        await backend.apps.read_namespaced_stateful_set("db", backend.namespace))
    return out


async def settled_db(backend: Backend) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        sts = await read_db(backend)
        return sts if rollout.health("StatefulSet", sts).done else None

    await backend.until(done, "StatefulSet db to finish its rollout")
    await backend.quiet()
    return await read_db(backend)


async def revisions(backend: Backend) -> list[tuple[str, int]]:
    listed = backend.api.sanitize_for_serialization(
        await backend.apps.list_namespaced_controller_revision(backend.namespace))["items"]
    return sorted(((r["metadata"]["name"], int(r["revision"])) for r in listed), key=lambda r: r[1])


async def test_statefulset_restart_scale_and_rollback(backend: Backend) -> None:
    await backend.apps.create_namespaced_stateful_set(backend.namespace, statefulset("db", backend.namespace,
                                                                                    replicas=2))
    await settled_db(backend)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "registry.example/db:2.0"}]}}}}
    await backend.apps.patch_namespaced_stateful_set("db", backend.namespace, image)
    before = await settled_db(backend)
    history = await revisions(backend)
    assert [number for _, number in history] == [1, 2]
    (first, _), (second, _) = history
    quiet = await backend.snapshot()

    for action, params in (("restart", {}), ("scale", {"to": 3}), ("rollback", {})):
        planned = await step(backend, action, params, dry_run=True)
        assert planned.after is not None, action
    assert await backend.snapshot() == quiet  # nothing written by the dry runs

    await step(backend, "rollback", {}, dry_run=False)
    after = await settled_db(backend)
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/db:1.0"
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert await revisions(backend) == [(second, 2), (first, 3)]  # revision 1's data, renumbered

    done = await step(backend, "restart", {}, dry_run=False)
    await step(backend, "scale", {"to": 3}, dry_run=False)
    result = await step(backend, "wait_healthy", {"timeout": 30}, dry_run=False)
    assert result.message in ("statefulset rolling update complete", "partitioned roll out complete")
    final = await settled_db(backend)
    assert final["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == done.details["restartedAt"]
    assert (final["spec"]["replicas"], final["status"]["readyReplicas"]) == (3, 3)
