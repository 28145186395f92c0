"""A resumed resize_pool never overwrites a valueFrom reference someone set after it was planned.

"No number" is two states: the variable unset, or taken from a reference (valueFrom a ConfigMap
or Secret key).  The write-ahead intent records which (the var's whole state, as set_env's does),
so a resume that finds a reference it was not planned from, or another reference than the one it
was, is ``superseded``: nothing is written.  An intent recorded by the previous version (``from``
a number, or None for both states) is still resumed, as strictly as what it says allows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.executors.kube import KubeExecutor
from remediator.ports import StepResult
from remediator.settings import KubernetesSettings
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, open_harness, playbook, web
from tests.executor.test_resume import crash_while
from tests.executor.test_superseded import writes_after
from tests.executor.test_undo import context

PATCH = f"/namespaces/{NS}/deployments/web$"
TO_20 = {"container": "app", "env": "DB_POOL", "to": 20}
BOOKS = {"fix": playbook("- action: resize_pool\n  container: app\n  env: DB_POOL\n  to: 20\n",
                         guardrails="lock_ttl: 10m\n", on_failure="- action: rollback\n")}
OLD_REF = {"name": "DB_POOL", "valueFrom": {"configMapKeyRef": {"name": "pool-old", "key": "size"}}}
NEW_REF = {"name": "DB_POOL", "valueFrom": {"secretKeyRef": {"name": "pool-new", "key": "size"}}}


def env(kube: FakeKube) -> list[dict[str, Any]]:
    obj = kube.cluster.get("deployments", NS, "web")
    assert obj is not None
    found: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"][0].get("env") or []
    return found


def executor(kube: FakeKube, clock: VirtualClock) -> KubeExecutor:
    """One attempt per step: a failed write is not retried (no backoff to wait out on the clock)."""
    return KubeExecutor(kube.api, clock, KubernetesSettings(mode="kubeconfig", request_timeout=30, retries=1))


async def resume(kube: FakeKube, clock: VirtualClock, intent: dict[str, Any]) -> StepResult:
    """The step run again with the intent an earlier run of it recorded (a resume after a crash)."""
    previous = StepResult("started", details={"intent": intent})
    return await executor(kube, clock).run(PlannedStep(0, "resize_pool", TO_20), context(clock, previous=previous))


async def test_a_reference_set_after_the_crash_is_not_overwritten(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    """DB_POOL unset; the step (to: 20) dies with its write in flight; an SRE then points DB_POOL at a
    ConfigMap key.  The resumed step must not replace that reference with 20."""
    kube.cluster.apply(web(env=[]))
    kube.cluster.faults.hang(method="PATCH", path=PATCH)
    async with open_harness(tmp_path, settings_factory, vclock, kube, BOOKS) as h:
        await crash_while(h, h.start(), "PATCH", PATCH)
    kube.cluster.faults.clear()
    await h.advance(601)  # the dead daemon's lock and lease lapse
    kube.cluster.apply(web(env=[OLD_REF]))
    async with open_harness(tmp_path, settings_factory, vclock, kube, BOOKS) as h:
        writes = len(kube.cluster.requests.writes())
        assert await h.until_done(h.rt.pipeline.resume_unfinished()) == 1
        full = await h.execution()
        assert writes_after(kube, writes) == []
    assert env(kube) == [OLD_REF]
    assert full["status"] == "superseded"
    [result] = full["results"]
    assert result["status"] == "superseded" and "a reference (valueFrom)" in result["message"]


async def test_a_reference_changed_since_the_intent_is_not_overwritten(kube: FakeKube, vclock: VirtualClock) -> None:
    """Planned from one reference; the write failed (500, outcome unknown); the var now names another."""
    kube.cluster.apply(web(env=[OLD_REF]))
    kube.cluster.faults.server_error(method="PATCH", path=PATCH)
    failed = await executor(kube, vclock).run(PlannedStep(0, "resize_pool", TO_20), context(vclock))
    assert failed.status == "failed" and failed.details["wrote"] is True
    intent = failed.details["intent"]
    generation = kube.cluster.get("deployments", NS, "web")["metadata"]["generation"]
    # which reference, not None; and the generation it was planned at
    uid = kube.cluster.get("deployments", NS, "web")["metadata"]["uid"]
    assert intent == {"value": 20, "from": {"valueFrom": OLD_REF["valueFrom"]}, "generation": generation, "uid": uid}
    kube.cluster.apply(web(env=[NEW_REF]))
    result = await resume(kube, vclock, intent)
    assert result.status == "superseded", result.message
    assert env(kube) == [NEW_REF]
    # the reference it was planned from put back: the spec changed since all the same (a write of this step
    # may have landed and been reverted), so nothing is written
    kube.cluster.apply(web(env=[OLD_REF]))
    result = await resume(kube, vclock, intent)
    assert result.status == "superseded" and result.details["generation"] == {"intent": generation,
                                                                                "now": generation + 2}
    assert env(kube) == [OLD_REF]
    # an intent recorded before generations were is judged by the value alone, as then: applied
    result = await resume(kube, vclock, {k: v for k, v in intent.items() if k != "generation"})
    assert result.status == "ok" and (result.details["from"], result.details["to"]) == (None, 20)
    assert env(kube) == [{"name": "DB_POOL", "value": "20"}]


async def test_an_intent_recorded_before_the_upgrade_is_resumed_as_strictly_as_it_allows(
    kube: FakeKube, vclock: VirtualClock
) -> None:
    """The previous version recorded ``from`` as the number, or None for both unset and any reference."""
    old_none, old_number = {"value": 20, "from": None}, {"value": 20, "from": 10}
    kube.cluster.apply(web(env=[OLD_REF]))  # None cannot say it was this reference: not overwritten
    assert (await resume(kube, vclock, old_none)).status == "superseded"
    assert env(kube) == [OLD_REF]
    kube.cluster.apply(web(env=[]))  # None, and still unset: applied
    assert (await resume(kube, vclock, old_none)).status == "ok"
    assert env(kube) == [{"name": "DB_POOL", "value": "20"}]
    kube.cluster.apply(web(env=[{"name": "DB_POOL", "value": "10"}]))  # the number it was planned from
    result = await resume(kube, vclock, old_number)
    assert result.status == "ok" and (result.details["from"], result.details["to"]) == (10, 20)
    kube.cluster.apply(web(env=[{"name": "DB_POOL", "value": "15"}]))  # another number since
    assert (await resume(kube, vclock, old_number)).status == "superseded"
    assert env(kube) == [{"name": "DB_POOL", "value": "15"}]
