"""Snapshot redaction: no env value and no last-applied-configuration leaves the audit,
except the value a step changed."""

from __future__ import annotations

import copy
import json
from typing import Any

from remediator.core.redact import (
    LAST_APPLIED,
    REDACTED,
    changed_env,
    redact_execution,
    redact_snapshot,
    redact_step,
    snapshot_pair,
)
from remediator.core.rollout import diff

SECRET = "hunter2-xyz"


def workload(pool: str = "20", **extra_meta: Any) -> dict[str, Any]:
    manifest = {"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
        {"name": "SECRET_TOKEN", "value": SECRET}, {"name": "DB_POOL_MAX_SIZE", "value": pool}]}]}}}}
    return {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                     "annotations": {LAST_APPLIED: json.dumps(manifest), "deployment.kubernetes.io/revision": "3"},
                     **extra_meta},
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "initContainers": [{"name": "migrate", "env": [{"name": "DB_PASSWORD", "value": "init-pw"}]}],
                    "containers": [
                        {"name": "app", "image": "web:1", "env": [
                            {"name": "SECRET_TOKEN", "value": SECRET},
                            {"name": "DB_POOL_MAX_SIZE", "value": pool},
                            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}},
                        ], "envFrom": [{"secretRef": {"name": "app-secrets"}}]},
                        {"name": "sidecar", "image": "proxy:2"},  # no env at all
                    ],
                    "ephemeralContainers": [{"name": "debug", "env": [{"name": "DEBUG_TOKEN", "value": "dbg"}]}],
                },
            },
        },
    }


def env_of(obj: dict[str, Any], field: str = "containers", index: int = 0) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = obj["spec"]["template"]["spec"][field][index]["env"]
    return env


def test_every_env_value_and_last_applied_are_redacted_references_stay() -> None:
    before = workload()
    original = copy.deepcopy(before)
    out = redact_snapshot(before)
    assert out is not None
    assert env_of(out) == [
        {"name": "SECRET_TOKEN", "value": REDACTED},
        {"name": "DB_POOL_MAX_SIZE", "value": REDACTED},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}},  # a reference: kept
    ]
    assert out["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "app-secrets"}}]
    assert env_of(out, "initContainers") == [{"name": "DB_PASSWORD", "value": REDACTED}]
    assert env_of(out, "ephemeralContainers") == [{"name": "DEBUG_TOKEN", "value": REDACTED}]
    assert out["spec"]["template"]["spec"]["containers"][1] == {"name": "sidecar", "image": "proxy:2"}
    assert out["metadata"]["annotations"] == {LAST_APPLIED: REDACTED, "deployment.kubernetes.io/revision": "3"}
    assert out["spec"]["replicas"] == 3 and out["metadata"]["resourceVersion"] == "7"
    text = json.dumps(out)
    assert SECRET not in text and "init-pw" not in text and "dbg" not in text
    assert before == original  # the input is not touched


def test_keep_env_keeps_only_the_named_variables() -> None:
    out = redact_snapshot(workload(), keep_env={"DB_POOL_MAX_SIZE"})
    assert out is not None
    assert [e.get("value") for e in env_of(out)] == [REDACTED, "20", None]


def test_none_and_objects_without_env_pass_through() -> None:
    assert redact_snapshot(None) is None
    assert snapshot_pair(None, None) == (None, None)
    scale = {"kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 3}}
    assert redact_snapshot(scale) == scale
    bare = {"kind": "Deployment", "metadata": {}, "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}}
    assert redact_snapshot(bare) == bare
    assert redact_snapshot({"kind": "Deployment"}) == {"kind": "Deployment"}


def test_a_pods_own_spec_is_redacted() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "web-1", "annotations": {LAST_APPLIED: "{...}"}},
           "spec": {"containers": [{"name": "app", "env": [{"name": "SECRET_TOKEN", "value": SECRET}]}],
                    "initContainers": [{"name": "init", "env": [{"name": "X", "value": "y"}]}]}}
    out = redact_snapshot(pod)
    assert out is not None
    assert out["spec"]["containers"][0]["env"] == [{"name": "SECRET_TOKEN", "value": REDACTED}]
    assert out["spec"]["initContainers"][0]["env"] == [{"name": "X", "value": REDACTED}]
    assert out["metadata"]["annotations"] == {LAST_APPLIED: REDACTED}
    # a deleted pod (after = None): nothing counts as changed, so nothing is kept
    b, a = snapshot_pair(pod, None)
    assert a is None and b is not None and SECRET not in json.dumps(b)


def test_a_pair_keeps_exactly_the_values_that_changed() -> None:
    before, after = workload("20"), workload("30")
    assert changed_env(before, after) == {("spec.template.spec", "containers", "app", "DB_POOL_MAX_SIZE")}
    b, a = snapshot_pair(before, after)
    assert b is not None and a is not None
    assert [e.get("value") for e in env_of(b)] == [REDACTED, "20", None]
    assert [e.get("value") for e in env_of(a)] == [REDACTED, "30", None]
    assert env_of(a, "initContainers") == [{"name": "DB_PASSWORD", "value": REDACTED}]
    assert a["metadata"]["annotations"][LAST_APPLIED] == REDACTED
    assert diff(b, a) == [{"path": "/spec/template/spec/containers/0/env/1/value", "op": "replace",
                           "before": "20", "after": "30"}]
    assert SECRET not in json.dumps([b, a])


def test_a_pair_keeps_a_variable_the_step_added_or_turned_from_a_reference_into_a_value() -> None:
    before = workload()
    after = copy.deepcopy(before)
    env_of(after).append({"name": "NEW_POOL", "value": "25"})
    env_of(after)[2] = {"name": "API_KEY", "value": "40"}
    b, a = snapshot_pair(before, after)
    assert b is not None and a is not None
    assert env_of(a)[2:] == [{"name": "API_KEY", "value": "40"}, {"name": "NEW_POOL", "value": "25"}]
    assert env_of(a)[0] == {"name": "SECRET_TOKEN", "value": REDACTED}
    assert SECRET not in json.dumps(diff(b, a))  # the env list changed length: the diff holds it whole


def test_only_narrows_the_kept_values_to_the_variables_a_step_means_to_change() -> None:
    before, after = workload("20"), workload("30")
    for obj, token in ((before, "old-secret"), (after, "new-secret")):  # e.g. a rollback across a rotation
        env_of(obj)[0]["value"] = token
    b, a = snapshot_pair(before, after)
    assert "new-secret" in json.dumps(a)  # every changed value is kept by default
    b, a = snapshot_pair(before, after, only={"DB_POOL_MAX_SIZE"})
    assert b is not None and a is not None
    assert [e.get("value") for e in env_of(a)] == [REDACTED, "30", None]
    text = json.dumps([b, a, diff(b, a)])
    assert "old-secret" not in text and "new-secret" not in text
    assert snapshot_pair(before, after, only=()) == (redact_snapshot(before), redact_snapshot(after))


def test_same_name_in_another_container_is_not_kept() -> None:
    before = workload()
    for c in before["spec"]["template"]["spec"]["containers"]:
        c["env"] = [{"name": "DB_POOL_MAX_SIZE", "value": "20"}]
    after = copy.deepcopy(before)
    env_of(after)[0]["value"] = "30"
    _, a = snapshot_pair(before, after)
    assert a is not None
    assert env_of(a) == [{"name": "DB_POOL_MAX_SIZE", "value": "30"}]
    assert env_of(a, index=1) == [{"name": "DB_POOL_MAX_SIZE", "value": REDACTED}]


def test_a_container_that_appears_keeps_nothing() -> None:
    before = workload()
    after = copy.deepcopy(before)
    after["spec"]["template"]["spec"]["containers"].append({"name": "new", "env": [{"name": "T", "value": "s3cret"}]})
    assert changed_env(before, after) == set()
    assert "s3cret" not in json.dumps(snapshot_pair(before, after))


def test_redacting_twice_changes_nothing() -> None:
    once = snapshot_pair(workload("20"), workload("30"))
    assert snapshot_pair(*once) == once


def test_a_stored_step_from_before_redaction_is_redacted_with_its_diff() -> None:
    before, after = workload("20"), workload("30")
    after["metadata"]["annotations"][LAST_APPLIED] = after["metadata"]["annotations"][LAST_APPLIED] + " "
    old_record = {"phase": "main", "index": 0, "action": "resize_pool", "status": "ok",
                  "message": "set DB_POOL_MAX_SIZE from 20 to 30 in container app",
                  "before": before, "after": after,
                  "details": {"from": 20, "to": 30, "diff": diff(before, after)}}
    assert SECRET in json.dumps(old_record)  # the annotation changed: the raw diff repeats the manifest
    out = redact_step(old_record)
    assert SECRET not in json.dumps(out)
    assert out["details"]["diff"] == [{"path": "/spec/template/spec/containers/0/env/1/value", "op": "replace",
                                       "before": "20", "after": "30"}]
    assert (out["details"]["from"], out["details"]["to"], out["message"]) == (20, 30, old_record["message"])
    execution = {"id": "ex-1", "results": [old_record, {"status": "planned", "message": "dry-run"}]}
    red = redact_execution(execution)
    assert SECRET not in json.dumps(red) and red["results"][1] == {"status": "planned", "message": "dry-run"}
    assert redact_execution({"id": "ex-2"}) == {"id": "ex-2"}  # a list item has no results
