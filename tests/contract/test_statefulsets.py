"""The StatefulSet half of the executor: restart, scale, rollback (from ControllerRevisions) and wait_healthy,
live and in server-side dry-run, on both backends.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediator.core import rollout
from remediator.core.alerts import Alert
from remediator.core.decisions import PlannedStep, ResolvedTarget
from remediator.executors.kube import RESTARTED_AT
from remediator.ports import StepContext, StepResult
from tests.contract.conftest import Backend, Raw
from tests.contract.test_requests import SMP, status
from tests.kube_fake.helpers import statefulset
from tests.real_kube.helpers import executor, run_step


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


DB = {"name": "db", "kind": "StatefulSet"}


async def test_an_on_delete_statefulset_is_not_healthy_until_its_pods_are_deleted_and_rolled(backend: Backend) -> None:
    """OnDelete: the controller updates a pod only when someone deletes it, and kubectl refuses such a rollout.
    After a template change (a new image; the restart step refuses such a set, see below) nothing will roll
    db-0 and db-1: wait_healthy fails at once and says why (it called the set healthy, every pod still on the
    old revision).  Once they are deleted and recreated, it is healthy."""
    manifest = statefulset("db", backend.namespace, replicas=2)
    manifest["spec"]["updateStrategy"] = {"type": "OnDelete"}
    await backend.apps.create_namespaced_stateful_set(backend.namespace, manifest)
    await settled_db(backend)
    kube = executor(backend.api, server_dry_run=False)
    image = {"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "registry.example/db:2.0"}]}}}}
    await backend.apps.patch_namespaced_stateful_set("db", backend.namespace, image)

    waited = await run_step(kube, backend.namespace, "wait_healthy", {"timeout": 30}, **DB)

    update = (await read_db(backend))["status"]["updateRevision"]
    assert (waited.status, waited.message) == ("failed", (
        f'wait_healthy on StatefulSet/{backend.namespace}/db: statefulset "db" replaces a pod only when it is '
        f"deleted (updateStrategy OnDelete): db-0, db-1 still run an earlier revision than {update}, and nothing "
        "will replace them (delete them, e.g. with delete_pod, to roll them)"))
    assert all(p["metadata"]["labels"]["controller-revision-hash"] != update for p in await backend.pods("app=db"))

    for pod in ("db-0", "db-1"):
        assert (await run_step(kube, backend.namespace, "delete_pod", {"pod": pod}, **DB)).status == "ok"
    healthy = await run_step(kube, backend.namespace, "wait_healthy", {"timeout": 30}, **DB)
    assert (healthy.status, healthy.message) == ("ok", "statefulset rolled out (updateStrategy OnDelete: every pod "
                                                       "updated)")
    pods = await backend.pods("app=db")
    assert [p["metadata"]["labels"]["controller-revision-hash"] for p in pods] == [update, update]


async def restart_db(backend: Backend, *, dry_run: bool) -> StepResult:
    """The restart step on db, whatever its outcome."""
    return await run_step(executor(backend.api, server_dry_run=dry_run), backend.namespace, "restart", {}, **DB)


async def create_db(backend: Backend, replicas: int, strategy: dict[str, Any] | None) -> dict[str, Any]:
    manifest = statefulset("db", backend.namespace, replicas=replicas)
    if strategy is not None:
        manifest["spec"]["updateStrategy"] = strategy
    await backend.apps.create_namespaced_stateful_set(backend.namespace, manifest)
    return await settled_db(backend)


def restart_stamp(sts: dict[str, Any]) -> str | None:
    return ((sts["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT))


DELETE_INSTEAD = "delete its pods instead (delete_pod steps, one at a time)"


@pytest.mark.parametrize(("strategy", "why"), [
    ({"type": "OnDelete"},
     "its updateStrategy is OnDelete, so its controller replaces a pod only when the pod is deleted and would "
     f"restart none; {DELETE_INSTEAD}, or change its updateStrategy to RollingUpdate"),
    ({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
     "its updateStrategy.rollingUpdate.partition (2) is not below its replicas (2), so its controller would "
     f"restart none of its pods; lower the partition (0 restarts every pod), or {DELETE_INSTEAD}"),
    ({"type": "RollingUpdate", "rollingUpdate": {"partition": 5}},
     "its updateStrategy.rollingUpdate.partition (5) is not below its replicas (2), so its controller would "
     f"restart none of its pods; lower the partition (0 restarts every pod), or {DELETE_INSTEAD}"),
], ids=["OnDelete", "partition-equals-replicas", "partition-above-replicas"])
async def test_a_restart_that_would_replace_no_pod_is_refused_before_anything_is_written(
    backend: Backend, strategy: dict[str, Any], why: str,
) -> None:
    """The restart changes the pod template; on an OnDelete set, or one partitioned at or above its replicas,
    the controller then replaces no pod, and "restarted" would be a lie (wait_healthy found out only later).
    It is refused, in server-side dry-run too, and the set is left as it was: no restartedAt, nothing written."""
    await create_db(backend, 2, strategy)
    quiet = await backend.snapshot()

    planned = await restart_db(backend, dry_run=True)
    done = await restart_db(backend, dry_run=False)

    expected = f'restart on StatefulSet/{backend.namespace}/db: can\'t restart statefulset "db": {why}'
    assert (planned.status, planned.message) == ("failed", expected)
    assert (done.status, done.message) == ("failed", expected)
    assert done.details.get("wrote") is not True
    assert restart_stamp(await read_db(backend)) is None
    assert await backend.snapshot() == quiet  # not the set, nor a revision, nor a pod


async def test_a_partitioned_statefulset_is_restarted_from_its_partition_up_and_the_result_says_so(
    backend: Backend,
) -> None:
    """A partition between 0 and replicas is an operator's canary: the restart is done (ok) and its message
    names the pods it leaves alone; the controller replaces db-1 and db-2 and keeps db-0."""
    await create_db(backend, 3, {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}})
    partial = "only pods with ordinal >= 1 are replaced (partition 1): db-0 not restarted"

    planned = await restart_db(backend, dry_run=True)
    assert restart_stamp(await read_db(backend)) is None
    done = await restart_db(backend, dry_run=False)

    key, stamp = f"StatefulSet/{backend.namespace}/db", done.details["restartedAt"]
    assert (planned.status, planned.message) == (
        "planned", f"dry-run (server-side): would have restarted {key} (restartedAt {planned.details['restartedAt']})"
                   f"; {partial}")
    assert (done.status, done.message) == ("ok", f"restarted {key} (restartedAt {stamp}); {partial}")
    assert done.details["partition"] == 1
    waited = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, "wait_healthy",
                            {"timeout": 30}, **DB)
    assert (waited.status, waited.message) == ("ok", "partitioned roll out complete")
    sts = await settled_db(backend)
    assert restart_stamp(sts) == stamp
    update = sts["status"]["updateRevision"]
    revs = {p["metadata"]["name"]: p["metadata"]["labels"]["controller-revision-hash"]
            for p in await backend.pods("app=db")}
    assert revs["db-0"] != update and revs["db-1"] == revs["db-2"] == update


@pytest.mark.parametrize("strategy", [
    None,  # the apiserver's default: RollingUpdate, partition 0
    {"type": "RollingUpdate"},  # stored without rollingUpdate by the apiserver: partition 0 all the same
    {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
], ids=["default", "type-only", "partition-0"])
async def test_a_rolling_update_statefulset_is_restarted_whole(backend: Backend, strategy: dict[str, Any] | None
                                                               ) -> None:
    await create_db(backend, 2, strategy)

    done = await restart_db(backend, dry_run=False)

    stamp = done.details["restartedAt"]
    assert (done.status, done.message) == ("ok", f"restarted StatefulSet/{backend.namespace}/db (restartedAt {stamp})")
    assert "partition" not in done.details
    sts = await settled_db(backend)
    assert restart_stamp(sts) == stamp
    assert [p["metadata"]["labels"]["controller-revision-hash"] for p in await backend.pods("app=db")] == [
        sts["status"]["updateRevision"]] * 2


FINALIZER = "contract.remediator.test/stuck"


async def test_a_statefulset_rolled_beside_a_pod_stuck_terminating_outside_its_range_is_healthy(
    backend: Backend,
) -> None:
    """A Parallel set scaled down from 3 with db-2 stuck Terminating (its node gone: a finalizer on the real
    apiserver, a kubelet that never finishes on the fake), then restarted: db-0 and db-1 roll and are Ready.
    The controller never moves currentRevision (status.replicas counts db-2), so the rule on it waited for
    ever; kubectl ("partitioned roll out complete") and the pods say done."""
    manifest = statefulset("db", backend.namespace, replicas=3)
    manifest["spec"]["podManagementPolicy"] = "Parallel"
    await backend.apps.create_namespaced_stateful_set(backend.namespace, manifest)
    await settled_db(backend)
    if backend.fake is not None:
        backend.fake.termination_delay = float("inf")  # its own controllers' deletes still finish at once
    else:
        await backend.core.patch_namespaced_pod("db-2", backend.namespace, {"metadata": {"finalizers": [FINALIZER]}})
    try:
        await backend.core.delete_namespaced_pod("db-2", backend.namespace)
        await backend.apps.patch_namespaced_stateful_set_scale("db", backend.namespace, {"spec": {"replicas": 2}})
        await step(backend, "restart", {}, dry_run=False)

        waited = await run_step(executor(backend.api, server_dry_run=False), backend.namespace, "wait_healthy",
                                {"timeout": 30}, **DB)

        assert (waited.status, waited.message) == ("ok", "statefulset rolling update complete")
        sts = await read_db(backend)
        status = sts["status"]
        assert (status["replicas"], status["updatedReplicas"]) == (3, 2)  # db-2 counted, never updated
        assert status["currentRevision"] != status["updateRevision"]
        pods = {p["metadata"]["name"]: p for p in await backend.pods("app=db")}
        assert pods["db-2"]["metadata"]["deletionTimestamp"]
        assert [pods[n]["metadata"]["labels"]["controller-revision-hash"] for n in ("db-0", "db-1")] == [
            status["updateRevision"]] * 2
    finally:
        if backend.fake is None:
            await backend.core.patch_namespaced_pod("db-2", backend.namespace, {"metadata": {"finalizers": None}})


# -- What the apiserver stores and refuses of an updateStrategy (the restart step reads it) -------------------

MERGE = "application/merge-patch+json"
ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}


async def create_raw(backend: Backend, name: str, strategy: Any, *, replicas: int = 1) -> Raw:
    """POST StatefulSet ``name`` with exactly this ``updateStrategy`` (the key left out when ``...``)."""
    manifest = statefulset(name, backend.namespace, replicas=replicas)
    if strategy is not ...:
        manifest["spec"]["updateStrategy"] = strategy
    return await backend.raw("POST", backend.path("statefulsets"), manifest)


@pytest.mark.parametrize(("sent", "stored"), [
    (..., ROLLING),
    (None, ROLLING),
    ({"type": ""}, ROLLING),
    ({"type": "RollingUpdate"}, {"type": "RollingUpdate"}),
    ({"type": "RollingUpdate", "rollingUpdate": None}, {"type": "RollingUpdate"}),
    ({"type": "RollingUpdate", "rollingUpdate": {}}, ROLLING),
    ({"type": "RollingUpdate", "rollingUpdate": {"partition": None}}, ROLLING),
    ({"rollingUpdate": {"partition": 2}}, {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
    ({"type": "OnDelete"}, {"type": "OnDelete"}),
    ({"type": "OnDelete", "rollingUpdate": None}, {"type": "OnDelete"}),
], ids=["absent", "null", "empty-type", "type-only", "null-rollingUpdate", "empty-rollingUpdate", "null-partition",
        "no-type", "OnDelete", "OnDelete-null-rollingUpdate"])
async def test_an_update_strategy_is_defaulted_as_the_apiserver_does(backend: Backend, sent: Any, stored: Any) -> None:
    """SetDefaults_StatefulSet: an empty type is RollingUpdate from partition 0, ``rollingUpdate`` included;
    a partition is defaulted only inside a ``rollingUpdate`` that is there: given the type alone, none is added.
    A null is an absent field."""
    created = await create_raw(backend, "db", sent)

    assert created.status == 201, created.text
    assert created.json["spec"]["updateStrategy"] == stored
    assert (await read_db(backend))["spec"]["updateStrategy"] == stored


@pytest.mark.parametrize("content_type", [SMP, MERGE], ids=["strategic", "merge"])
async def test_a_patch_from_on_delete_to_rolling_update_alone_stores_no_rolling_update(
    backend: Backend, content_type: str,
) -> None:
    """The type alone, patched onto an OnDelete set, is stored as sent (no partition added), and the restart
    step then restarts the whole set (partition 0 where none is given)."""
    await create_db(backend, 2, {"type": "OnDelete"})

    patched = await backend.raw("PATCH", backend.path("statefulsets", "db"),
                                {"spec": {"updateStrategy": {"type": "RollingUpdate"}}}, content_type=content_type)

    assert patched.status == 200, patched.text
    assert patched.json["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    assert (await read_db(backend))["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    done = await restart_db(backend, dry_run=False)
    assert (done.status, done.message) == (
        "ok", f"restarted StatefulSet/{backend.namespace}/db (restartedAt {done.details['restartedAt']})")
    assert "partition" not in done.details


def on_delete_only(partition: int) -> tuple[str, str]:
    """The cause of a ``rollingUpdate`` under OnDelete: the internal struct it decoded into (MaxUnavailable is
    dropped, its feature gate off in v1.36), JSON with Go's field names."""
    return ("spec.updateStrategy.rollingUpdate", f'Invalid value: {{"Partition":{partition},"MaxUnavailable":null}}: '
                                                 "only allowed for updateStrategy 'RollingUpdate'")


def invalid_db(*causes: tuple[str, str]) -> dict[str, Any]:
    """The 422 Status of an invalid StatefulSet ``db``: its causes (field, message), all FieldValueInvalid."""
    shown = [f"{field}: {message}" for field, message in causes]
    text = shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
    return status(422, "Invalid", f'StatefulSet.apps "db" is invalid: {text}', {
        "name": "db", "group": "apps", "kind": "StatefulSet",
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field} for field, message in causes]})


@pytest.mark.parametrize(("sent", "replicas", "causes"), [
    ({"type": "OnDelete", "rollingUpdate": {"partition": 1}}, 1, [on_delete_only(1)]),
    ({"type": "OnDelete", "rollingUpdate": {}}, 1, [on_delete_only(0)]),
    # the partition is not checked under OnDelete; the strategy is, before the replicas
    ({"type": "OnDelete", "rollingUpdate": {"partition": -1}}, -1, [
        on_delete_only(-1),
        ("spec.replicas", "Invalid value: -1: must be greater than or equal to 0")]),
    ({"type": "RollingUpdate", "rollingUpdate": {"partition": -2}}, 1, [
        ("spec.updateStrategy.rollingUpdate.partition", "Invalid value: -2: must be greater than or equal to 0")]),
    ({"type": "Bogus"}, 1, [
        ("spec.updateStrategy",
         'Invalid value: {"Type":"Bogus","RollingUpdate":null}: must be \'RollingUpdate\' or \'OnDelete\'')]),
    ({"type": "Bogus", "rollingUpdate": {"partition": 1}}, 1, [
        ("spec.updateStrategy", 'Invalid value: {"Type":"Bogus","RollingUpdate":{"Partition":1,"MaxUnavailable":null}}'
                                ": must be 'RollingUpdate' or 'OnDelete'")]),
], ids=["OnDelete-partition", "OnDelete-empty", "OnDelete-negative-partition-and-replicas",
        "negative-partition", "unknown-type", "unknown-type-rollingUpdate"])
async def test_an_invalid_update_strategy_is_422_as_the_apiserver_words_it(
    backend: Backend, sent: Any, replicas: int, causes: list[tuple[str, str]],
) -> None:
    created = await create_raw(backend, "db", sent, replicas=replicas)

    assert (created.status, created.json) == (422, invalid_db(*causes))


@pytest.mark.parametrize("content_type", [SMP, MERGE], ids=["strategic", "merge"])
async def test_a_patch_to_on_delete_that_keeps_the_rolling_update_is_422(backend: Backend, content_type: str) -> None:
    """A patch of the type alone merges into the stored ``rollingUpdate`` (no retainKeys on updateStrategy):
    the set would be OnDelete with a partition, which is refused; nothing is written.  The patch must null
    ``rollingUpdate`` too."""
    await create_db(backend, 2, {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}})
    quiet = await backend.snapshot()
    path = backend.path("statefulsets", "db")

    refused = await backend.raw("PATCH", path, {"spec": {"updateStrategy": {"type": "OnDelete"}}},
                                content_type=content_type)

    assert (refused.status, refused.json) == (422, invalid_db(on_delete_only(1)))
    assert await backend.snapshot() == quiet
    done = await backend.raw("PATCH", path, {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}},
                             content_type=content_type)
    assert done.status == 200, done.text
    assert (await read_db(backend))["spec"]["updateStrategy"] == {"type": "OnDelete"}
