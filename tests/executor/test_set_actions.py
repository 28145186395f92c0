"""set_image, set_env and set_resources, live on the fake apiserver, as kubectl would send them.

Assertions are on the fake's stored objects and on the request it received (one
strategic-merge PATCH of one container, carrying the resourceVersion it was planned
from), not on what the executor says it did.  Bounds: ``only_if_current``, ``max``
(never exceeded, never used to lower a value), requests never above limits.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, db, playbook, steps_of, web

SMP = "application/strategic-merge-patch+json"
ROLLBACK = "- action: rollback\n"


def sized(resources: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """``web`` whose app container has these requests/limits."""
    manifest = web(**kw)
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"] = copy.deepcopy(resources)
    return manifest


def app(h: Any) -> dict[str, Any]:
    container: dict[str, Any] = h.get()["spec"]["template"]["spec"]["containers"][0]
    return container


def patch_of(h: Any) -> Any:
    [patch] = h.cluster.requests.matching("PATCH", f"/namespaces/{NS}/deployments/web$")
    assert patch.content_type == SMP
    return patch


# -- set_image --------------------------------------------------------------------------------

SET_IMAGE = '- action: set_image\n  container: app\n  image: "registry.example/web:{{ labels.version }}"\n'


async def test_set_image_patches_one_containers_image(harness: OpenHarness) -> None:
    async with harness({"fix": playbook(SET_IMAGE)}) as h:
        h.cluster.apply(web(image="registry.example/web:2.0"))
        before = h.get()
        ex = await h.fire(version="1.9")
        after = h.get()

    assert steps_of(ex) == [("main", "set_image", "ok")]
    new_app, sidecar = after["spec"]["template"]["spec"]["containers"]
    assert new_app["image"] == "registry.example/web:1.9"
    assert sidecar == before["spec"]["template"]["spec"]["containers"][1]
    assert patch_of(h).body == {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:1.9"}]}}},
    }
    details = ex["results"][0]["details"]
    assert (details["from"], details["to"]) == ("registry.example/web:2.0", "registry.example/web:1.9")
    assert {"path": "/spec/template/spec/containers/0/image", "op": "replace", "before": "registry.example/web:2.0",
            "after": "registry.example/web:1.9"} in details["diff"]
    assert len(h.cluster.replicasets_of(NS, "web")) == 2  # the controller rolled it out


async def test_set_image_to_the_running_image_writes_nothing(harness: OpenHarness) -> None:
    async with harness({"fix": playbook(SET_IMAGE)}) as h:
        h.cluster.apply(web(image="registry.example/web:1.9"))
        ex = await h.fire(version="1.9")
    assert steps_of(ex) == [("main", "set_image", "ok")]
    assert h.cluster.requests.writes() == []
    assert ex["results"][0]["message"] == "container app already runs registry.example/web:1.9"


ONLY_IF = SET_IMAGE + '  only_if_current: "registry\\\\.example/web:2\\\\..*"\n'


@pytest.mark.parametrize(("running", "changed"), [("registry.example/web:2.3", True),
                                                  ("registry.example/web:3.0", False),
                                                  ("registry.example/web:2.3-debug/x", True)])
async def test_set_image_only_if_the_current_image_matches(harness: OpenHarness, running: str, changed: bool) -> None:
    """A mismatch is refused with the reason: no write, no on_failure, the breaker is not fed."""
    async with harness({"fix": playbook(ONLY_IF, on_failure=ROLLBACK)}) as h:
        h.cluster.apply(web(image="registry.example/web:1.0"))
        h.cluster.apply(web(image=running))
        ex = await h.fire(version="1.9")
        breakers = (await h.rt.guardrails.status()).breakers
    if changed:
        assert steps_of(ex) == [("main", "set_image", "ok")] and app(h)["image"] == "registry.example/web:1.9"
        return
    assert h.cluster.requests.writes() == [] and app(h)["image"] == running
    assert steps_of(ex) == [("main", "set_image", "failed")]  # on_failure (the rollback) not run
    result = ex["results"][0]
    assert "runs registry.example/web:3.0, which does not match only_if_current" in result["message"]
    assert result["details"]["refused_input"] is True and result["details"]["current"] == running
    assert "fix" not in breakers or breakers["fix"].failures == 0


async def test_set_image_on_a_container_the_workload_lacks_is_refused(harness: OpenHarness) -> None:
    steps = SET_IMAGE.replace("container: app", "container: worker")
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(web())
        ex = await h.fire(version="1.9")
    assert h.cluster.requests.writes() == []
    assert "container 'worker' not found in Deployment/shop/web (containers: app, sidecar)" in (
        ex["results"][0]["message"])


# -- set_env ----------------------------------------------------------------------------------

SET_ENV = '- action: set_env\n  container: app\n  name: JAVA_OPTS\n  value: "-Xms2g -Xmx{{ labels.heap }}"\n'


async def test_set_env_patches_one_variable_and_keeps_the_others(harness: OpenHarness) -> None:
    env = [{"name": "LOG_LEVEL", "value": "info"}, {"name": "JAVA_OPTS", "value": "-Xmx1g"},
           {"name": "DB_PASSWORD", "value": "hunter2"}]
    async with harness({"fix": playbook(SET_ENV)}) as h:
        h.cluster.apply(web(env=env))
        before = h.get()
        ex = await h.fire(heap="4g")

    assert steps_of(ex) == [("main", "set_env", "ok")]
    assert app(h)["env"] == [{"name": "LOG_LEVEL", "value": "info"}, {"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"},
                             {"name": "DB_PASSWORD", "value": "hunter2"}]
    assert patch_of(h).body == {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"}]}]}}},
    }
    result = ex["results"][0]
    assert (result["details"]["from"], result["details"]["to"]) == ({"value": "-Xmx1g"}, {"value": "-Xms2g -Xmx4g"})
    assert "hunter2" not in str(result)  # the audit shows this variable, no other


async def test_set_env_adds_a_missing_variable_and_replaces_a_reference(harness: OpenHarness) -> None:
    ref = {"configMapKeyRef": {"name": "jvm", "key": "opts"}}
    pbs = {"a": playbook(SET_ENV, name="a", alertname="A"), "b": playbook(SET_ENV, name="b", alertname="B")}
    async with harness(pbs) as h:
        h.cluster.apply(web("api", env=[{"name": "LOG_LEVEL", "value": "info"}]))
        h.cluster.apply(web("cart", env=[{"name": "JAVA_OPTS", "valueFrom": ref}]))
        await h.record("api", alertname="A", heap="4g")
        await h.record("cart", alertname="B", heap="4g")
        await h.until_done(h.rt.worker.drain())
        executions = {e["playbook"]: await h.rt.store.get_execution(e["id"])
                      for e in await h.rt.store.list_executions()}
        api, cart = (h.get(n)["spec"]["template"]["spec"]["containers"][0]["env"] for n in ("api", "cart"))
        [cart_patch] = h.cluster.requests.matching("PATCH", "/deployments/cart$")
    assert api == [{"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"}, {"name": "LOG_LEVEL", "value": "info"}]
    assert cart == [{"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"}]
    assert cart_patch.body["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g", "valueFrom": None}]
    assert executions["a"]["results"][0]["details"]["from"] == {"absent": True}
    assert executions["b"]["results"][0]["details"]["from"] == {"valueFrom": ref}


async def test_set_env_to_the_value_it_holds_writes_nothing(harness: OpenHarness) -> None:
    async with harness({"fix": playbook(SET_ENV)}) as h:
        h.cluster.apply(web(env=[{"name": "JAVA_OPTS", "value": "-Xms2g -Xmx4g"}]))
        ex = await h.fire(heap="4g")
    assert steps_of(ex) == [("main", "set_env", "ok")] and h.cluster.requests.writes() == []


# -- set_resources ----------------------------------------------------------------------------

RAISE_MEMORY = ("- action: set_resources\n  container: app\n"
                "  limits: {memory: {factor: 1.5, max: 4Gi}}\n  requests: {memory: {factor: 1.5, max: 4Gi}}\n")


async def test_set_resources_raises_memory_by_a_factor(harness: OpenHarness) -> None:
    resources = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    async with harness({"fix": playbook(RAISE_MEMORY)}) as h:
        h.cluster.apply(sized(resources))
        before = h.get()
        ex = await h.fire()

    assert steps_of(ex) == [("main", "set_resources", "ok")]
    assert app(h)["resources"] == {"requests": {"cpu": "250m", "memory": "1536Mi"}, "limits": {"cpu": "1",
                                                                                               "memory": "3Gi"}}
    assert patch_of(h).body == {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "resources": {"requests": {"memory": "1536Mi"}, "limits": {"memory": "3Gi"}}}]}}},
    }
    result = ex["results"][0]
    assert result["details"]["from"] == {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    assert result["details"]["to"] == {"requests": {"memory": "1536Mi"}, "limits": {"memory": "3Gi"}}
    assert result["message"] == "set requests.memory 1Gi -> 1536Mi, limits.memory 2Gi -> 3Gi in container app"


@pytest.mark.parametrize(("limit", "after"), [
    ("2Gi", "3Gi"),            # x1.5
    ("3Gi", "4Gi"),            # 4.5Gi, bounded by max
    ("4Gi", "4Gi"),            # at max: unchanged, nothing written
    ("6Gi", "6Gi"),            # above max already: a raise never lowers it
    ("1000Mi", "1500Mi"),      # the binary form kept
    ("1G", "1500M"),           # the decimal form kept
    ("1", "2"),                # 1.5 bytes rounded up to a whole byte
])
async def test_set_resources_factor_is_bounded_by_max(harness: OpenHarness, limit: str, after: str) -> None:
    steps = "- action: set_resources\n  container: app\n  limits: {memory: {factor: 1.5, max: 4Gi}}\n"
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(sized({"limits": {"memory": limit}}))
        ex = await h.fire()
    assert steps_of(ex) == [("main", "set_resources", "ok")]
    assert app(h)["resources"]["limits"]["memory"] == after
    assert bool(h.cluster.requests.writes()) is (after != limit)


async def test_set_resources_to_a_quantity_within_max_and_cpu_in_millicores(harness: OpenHarness) -> None:
    steps = ("- action: set_resources\n  container: app\n"
             "  requests: {cpu: {factor: 1.5, max: 2}}\n"
             '  limits: {cpu: {to: 1.5}, memory: {to: "{{ labels.memory }}", max: 1Gi}}\n')
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(sized({"requests": {"cpu": "300m"}, "limits": {"cpu": "500m"}}))
        ex = await h.fire(memory="1.5Gi")  # a rendered `to` above max is bounded by it
    assert steps_of(ex) == [("main", "set_resources", "ok")], ex["results"]
    assert app(h)["resources"] == {"requests": {"cpu": "450m"}, "limits": {"cpu": "1500m", "memory": "1Gi"}}


@pytest.mark.parametrize(("limit", "to", "after"), [
    ("512Mi", "8Gi", "1Gi"),   # a raise, bounded by max
    ("6Gi", "8Gi", "6Gi"),     # a raise past max, from above it already: left as someone set it (was 1Gi)
    ("6Gi", "512Mi", "512Mi"),  # a lowering is a lowering
])
async def test_set_resources_to_above_max_never_turns_a_raise_into_a_lowering(
    harness: OpenHarness, limit: str, to: str, after: str
) -> None:
    steps = '- action: set_resources\n  container: app\n  limits: {memory: {to: "{{ labels.memory }}", max: 1Gi}}\n'
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(sized({"limits": {"memory": limit}}))
        ex = await h.fire(memory=to)
    assert steps_of(ex) == [("main", "set_resources", "ok")], ex["results"]
    assert app(h)["resources"]["limits"]["memory"] == after
    assert bool(h.cluster.requests.writes()) is (after != limit)


@pytest.mark.parametrize(("limit", "to", "after"), [
    ("1Gi", "0.0001m", "256Mi"),  # an alert's annotation asks for one byte: held at min
    ("1Gi", "0", "256Mi"),
    ("1Gi", "512Mi", "512Mi"),    # within the bounds: as asked
    ("128Mi", "64Mi", "128Mi"),   # a lowering from below min already: left as someone set it
    ("128Mi", "1Gi", "1Gi"),      # a raise is a raise
])
async def test_set_resources_to_rendered_from_the_alert_never_goes_below_min(
    harness: OpenHarness, limit: str, to: str, after: str
) -> None:
    """``max`` bounded a ``to`` rendered from an alert, nothing bounded it from below: an annotation
    ``0.0001m`` set a memory limit of one byte (the apiserver accepts it) and the new pods were unusable."""
    steps = ('- action: set_resources\n  container: app\n'
             '  limits: {memory: {to: "{{ labels.memory }}", min: 256Mi, max: 2Gi}}\n')
    async with harness({"fix": playbook(steps)}) as h:
        h.cluster.apply(sized({"limits": {"memory": limit}}))
        ex = await h.fire(memory=to)
    assert steps_of(ex) == [("main", "set_resources", "ok")], ex["results"]
    assert app(h)["resources"]["limits"]["memory"] == after
    assert bool(h.cluster.requests.writes()) is (after != limit)


@pytest.mark.parametrize(("resources", "steps", "why"), [
    ({"requests": {"memory": "3Gi"}, "limits": {"memory": "4Gi"}},
     "  requests: {memory: {factor: 1.5, max: 8Gi}}\n",
     "requests.memory 4608Mi would be above limits.memory 4Gi in container 'app': refused"),
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
     "  limits: {cpu: {to: 500m}}\n",
     "requests.cpu 1 would be above limits.cpu 500m in container 'app': refused"),
    ({"limits": {"memory": "1Gi"}},
     "  requests: {memory: {factor: 2, max: 1Gi}}\n",
     "requests.memory of container 'app' is not set: only `to:` can set it"),
])
async def test_set_resources_refusals_write_nothing(
    harness: OpenHarness, resources: dict[str, Any], steps: str, why: str
) -> None:
    async with harness({"fix": playbook("- action: set_resources\n  container: app\n" + steps,
                                        on_failure=ROLLBACK)}) as h:
        h.cluster.apply(sized(resources, image="registry.example/web:1.0"))
        h.cluster.apply(sized(resources, image="registry.example/web:2.0"))
        ex = await h.fire()
    assert h.cluster.requests.writes() == []  # neither the change nor a rollback
    assert steps_of(ex) == [("main", "set_resources", "failed")]
    assert why in ex["results"][0]["message"]
    assert app(h)["resources"] == resources


# -- a StatefulSet --------------------------------------------------------------------------------


async def test_the_set_actions_and_min_healthy_replicas_on_a_statefulset(harness: OpenHarness) -> None:
    steps = ("- action: set_image\n  container: db\n  image: registry.example/db:1.1\n"
             "- action: set_env\n  container: db\n  name: MAX_CONNECTIONS\n  value: '200'\n"
             "- action: set_resources\n  container: db\n  limits: {memory: {to: 2Gi}}\n"
             "- action: scale\n  to: 1\n  min_healthy_replicas: 2\n")
    async with harness({"fix": playbook(steps, kind="StatefulSet")}) as h:
        h.cluster.apply(db(replicas=3))
        await h.settle()
        ex = await h.fire("db")
        sts = h.get("db", "statefulsets")
        patches = h.cluster.requests.matching("PATCH", "/statefulsets/db$")
    assert steps_of(ex) == [("main", "set_image", "ok"), ("main", "set_env", "ok"), ("main", "set_resources", "ok"),
                            ("main", "scale", "failed")]
    [container] = sts["spec"]["template"]["spec"]["containers"]
    assert (container["image"], container["env"], container["resources"]) == (
        "registry.example/db:1.1", [{"name": "MAX_CONNECTIONS", "value": "200"}], {"limits": {"memory": "2Gi"}})
    assert len(patches) == 3 and all(p.content_type == SMP for p in patches)
    assert sts["spec"]["replicas"] == 3
    assert "fewer than min_healthy_replicas 2" in ex["results"][3]["message"]
