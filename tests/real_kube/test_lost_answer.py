"""A write that lands on the real apiserver while its answer is lost: the step fails, and undo reverts it exactly.

tests/executor/test_undo_failed_steps.py shows this on the fake, which holds the answer
itself.  Here the apiserver is the real one and the answer is lost on the way back
(:class:`~tests.real_kube.lossy.LossyProxy`): the change is made and the client never
hears so.  The executor's request timeout runs on a virtual clock that the test moves
once the apiserver has answered, so the step fails exactly then.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from remediator.clock import SystemClock, VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.executors.kube import KubeExecutor
from remediator.ports import Clock, StepContext, StepResult
from remediator.settings import KubernetesSettings
from remediator.testing.control_plane import ControlPlane
from tests.real_kube.helpers import apply_web
from tests.real_kube.lossy import LossyProxy

TIMEOUT = 30.0
V1, V2, V3 = "registry.example/web:1.0", "registry.example/web:2.0", "registry.example/web:3.0"


@pytest.fixture
async def proxy(control_plane: ControlPlane) -> AsyncIterator[LossyProxy]:
    async with LossyProxy(control_plane).running() as running:
        yield running


def context(namespace: str, clock: Clock, history: tuple[tuple[PlannedStep, StepResult], ...] = ()
            ) -> StepContext:
    alert = Alert(fingerprint="lost-answer", status="firing", labels={"alertname": "RealKube"})
    return StepContext("ex-lost", alert, ResolvedTarget("Deployment", namespace, "web"), False, clock,
                       history=history)


async def image(api: Any, namespace: str) -> str:
    dep = await client.AppsV1Api(api).read_namespaced_deployment("web", namespace)
    return str(dep.spec.template.spec.containers[0].image)


async def set_image_answer_lost(proxy: LossyProxy, namespace: str) -> tuple[PlannedStep, StepResult]:
    """set_image to V2 through the proxy, its PATCH answered by the apiserver and the answer lost."""
    clock = VirtualClock()
    loss = proxy.lose("PATCH", f"/namespaces/{namespace}/deployments/web$")
    step = PlannedStep(0, "set_image", {"container": "app", "image": V2})
    async with proxy.api_client() as api:
        kube = KubeExecutor(api, clock, KubernetesSettings(mode="kubeconfig", request_timeout=TIMEOUT, retries=1))
        running = asyncio.create_task(kube.run(step, context(namespace, clock)))
        await asyncio.wait_for(loss.landed.wait(), 20)
        assert loss.status == 200  # the apiserver made the change
        await clock.advance(await clock.sleeping(lambda left: math.isclose(left, TIMEOUT)))
        result = await asyncio.wait_for(running, 20)
    assert result.status == "failed" and result.details["wrote"], result.message
    intent = dict(result.details["intent"])
    assert isinstance(intent.pop("generation"), int)  # as read before the write
    assert isinstance(intent.pop("uid"), str)  # the object written: undo reverts it on that object only
    assert intent == {"image": V2, "from": V1}
    return step, result


async def undo(api: Any, namespace: str, failed: tuple[PlannedStep, StepResult]) -> StepResult:
    """Undo on real time: the rollout the landed change started writes the Deployment meanwhile, and a
    revert that meets it gets a 409 and retries after a (real) backoff."""
    clock = SystemClock()
    kube = KubeExecutor(api, clock, KubernetesSettings(mode="kubeconfig", request_timeout=TIMEOUT))
    return await kube.run(PlannedStep(0, "undo", {}, "on_failure"), context(namespace, clock, (failed,)))


async def test_a_change_whose_answer_was_lost_is_undone_on_the_real_apiserver(
    kube_admin: Any, namespace: str, proxy: LossyProxy
) -> None:
    await apply_web(kube_admin, namespace)
    failed = await set_image_answer_lost(proxy, namespace)
    assert await image(kube_admin, namespace) == V2  # landed, although the step failed

    result = await undo(kube_admin, namespace, failed)

    assert result.status == "ok", result.message
    [entry] = result.details["steps"]
    assert (entry["outcome"], entry["from"], entry["to"]) == ("undone", V1, V2)
    assert entry["note"] == "the step failed after sending its write"
    assert await image(kube_admin, namespace) == V1


async def test_a_change_made_since_the_lost_answer_is_left_alone_on_the_real_apiserver(
    kube_admin: Any, namespace: str, proxy: LossyProxy
) -> None:
    await apply_web(kube_admin, namespace)
    failed = await set_image_answer_lost(proxy, namespace)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": V3}]}}}}
    await client.AppsV1Api(kube_admin).patch_namespaced_deployment("web", namespace, body)  # someone's release

    result = await undo(kube_admin, namespace, failed)

    assert result.status == "failed"
    [entry] = result.details["steps"]
    assert (entry["from"], entry["to"], entry["current"]) == (V1, V2, V3)
    assert await image(kube_admin, namespace) == V3
