"""A restart judges the workload as it reads it; a change between that read and its write is a 409.

The restart's PATCH carried no resourceVersion (as ``kubectl rollout restart`` sends it), so a pause
of the Deployment (or a StatefulSet turned OnDelete) between the executor's read and its write went
through unnoticed: the restart was written onto a paused Deployment and reported ok.  The PATCH now
carries the version it read, like every other write: the change is a 409, and the retry reads the
workload again and refuses it as it would have from the start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.executors.kube import RESTARTED_AT
from remediator.ports import StepContext, StepResult
from tests.contract.conftest import Backend
from tests.contract.test_statefulsets import read_db, settled_db
from tests.executor.test_checks import drive
from tests.kube_fake.helpers import statefulset
from tests.real_kube.helpers import executor


async def restart_meanwhile(
    backend: Backend, change: Callable[[], Awaitable[Any]], kind: str, name: str
) -> StepResult:
    """The restart, with ``change`` made between its read and its write (once its intent is recorded, just
    before the write); its backoff after the 409 runs on a virtual clock."""
    clock = VirtualClock()
    changed: list[Mapping[str, Any]] = []

    async def record(intent: Mapping[str, Any]) -> None:
        if intent and not changed:
            changed.append(intent)
            await change()

    alert = Alert(fingerprint="contract", status="firing", labels={"alertname": "Contract"})
    ctx = StepContext("contract-restart", alert, ResolvedTarget(kind, backend.namespace, name), False, clock,
                      record_intent=record)
    result = await drive(clock, executor(backend.api, server_dry_run=False, clock=clock).run(
        PlannedStep(0, "restart", {}), ctx), within=1.0)
    assert changed, "the restart never got as far as its write"
    return result


def restarted_at(obj: dict[str, Any]) -> str | None:
    annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get(RESTARTED_AT)


async def test_a_deployment_paused_between_the_read_and_the_write_is_not_restarted(backend: Backend) -> None:
    generation = (await backend.web(replicas=1))["metadata"]["generation"]

    async def pause() -> None:
        await backend.apps.patch_namespaced_deployment("web", backend.namespace, {"spec": {"paused": True}})

    result = await restart_meanwhile(backend, pause, "Deployment", "web")

    assert (result.status, result.message) == (
        "failed", f"restart on Deployment/{backend.namespace}/web: can't restart paused deployment "
                  "(run rollout resume first)")
    assert not result.details.get("wrote")  # the write was refused (409); read again, refused before writing
    dep = await backend.read()
    assert dep["spec"]["paused"] is True and restarted_at(dep) is None
    assert dep["metadata"]["generation"] == generation + 1  # the pause, and nothing after it


async def test_a_statefulset_made_on_delete_between_the_read_and_the_write_is_not_restarted(
    backend: Backend
) -> None:
    await backend.apps.create_namespaced_stateful_set(backend.namespace, statefulset("db", backend.namespace,
                                                                                    replicas=1))
    generation = (await settled_db(backend))["metadata"]["generation"]

    async def on_delete() -> None:
        body = {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}}
        await backend.apps.patch_namespaced_stateful_set("db", backend.namespace, body)

    result = await restart_meanwhile(backend, on_delete, "StatefulSet", "db")

    assert result.status == "failed" and "its updateStrategy is OnDelete" in result.message, result.message
    assert not result.details.get("wrote")
    sts = await read_db(backend)
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"} and restarted_at(sts) is None
    assert sts["metadata"]["generation"] == generation + 1
