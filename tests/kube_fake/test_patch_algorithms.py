"""The patch algorithms on their own: RFC 6902, RFC 7386 and strategic merge, as pure functions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from remediator.testing.kube.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    json_equal,
)

# -- RFC 6902 ---------------------------------------------------------------------------------


def test_json_patch_operations_follow_rfc_6902() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x", "d~e": 1, "f/g": 2}
    ops = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 4},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "replace", "path": "/c", "value": "y"},
        {"op": "move", "from": "/d~0e", "path": "/moved"},
        {"op": "copy", "from": "/f~1g", "path": "/a/copied"},
        {"op": "test", "path": "/a/b", "value": [9, 2, 3, 4]},
        {"op": "add", "path": "/new", "value": {"k": None}},
    ]
    assert apply_json_patch(doc, ops) == {
        "a": {"b": [9, 2, 3, 4], "copied": 2}, "c": "y", "moved": 1, "f/g": 2, "new": {"k": None},
    }


def test_json_patch_does_not_touch_its_input_and_is_all_or_nothing() -> None:
    doc = {"a": 1, "b": [1]}
    before = copy.deepcopy(doc)
    with pytest.raises(PatchError):
        apply_json_patch(doc, [{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/zz"}])
    assert doc == before


@pytest.mark.parametrize(
    "op",
    [
        {"op": "test", "path": "/a", "value": 2},
        {"op": "test", "path": "/a", "value": True},  # JSON true is not 1
        {"op": "test", "path": "/missing", "value": 1},
        {"op": "replace", "path": "/missing/deeper", "value": 1},
        {"op": "replace", "path": "/b/5", "value": 1},
        {"op": "remove", "path": "/b/5"},
        {"op": "add", "path": "/x/y", "value": 1},
        {"op": "add", "path": "/b/01", "value": 1},
        {"op": "move", "from": "/b", "path": "/b/0"},
        {"op": "frobnicate", "path": "/a"},
        {"op": "add", "path": "/a"},
    ],
)
def test_json_patch_failures_are_inapplicable_not_malformed(op: dict[str, Any]) -> None:
    with pytest.raises(PatchError) as err:
        apply_json_patch({"a": 1, "b": [1]}, [op])
    assert not err.value.malformed


def test_replace_of_a_missing_key_sets_it_as_the_apiserver_does() -> None:
    """json-patch v4 (kube-apiserver's): ``replace`` into an existing object needs no existing key."""
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}]) == {"a": 1, "b": 2}


def test_failed_test_operation_names_the_path() -> None:
    with pytest.raises(PatchError, match=r"testing value /metadata/resourceVersion failed: test failed"):
        apply_json_patch({"metadata": {"resourceVersion": "7"}},
                         [{"op": "test", "path": "/metadata/resourceVersion", "value": "6"}])


@pytest.mark.parametrize("patch", [{"op": "add"}, "nope", [1]])
def test_json_patch_that_is_not_a_list_of_objects_is_malformed(patch: Any) -> None:
    with pytest.raises(PatchError) as err:
        apply_json_patch({}, patch)
    assert err.value.malformed


def test_json_patch_can_replace_the_root() -> None:
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == {"b": 2}


def test_json_equal_is_json_not_python_equality() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal({"a": [0]}, {"a": [False]})
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})


# -- RFC 7386 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    assert apply_merge_patch(target, patch) == result


def test_merge_patch_replaces_lists_wholesale() -> None:
    doc = {"spec": {"containers": [{"name": "app", "image": "a"}, {"name": "side", "image": "s"}]}}
    assert apply_merge_patch(doc, {"spec": {"containers": [{"name": "app", "image": "b"}]}}) == {
        "spec": {"containers": [{"name": "app", "image": "b"}]}
    }


# -- strategic merge ----------------------------------------------------------------------------


def pod_spec(**extra: Any) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "web:1",
                    "args": ["--a", "--b"],
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "POOL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "pool"}}},
                        {"name": "C", "value": "3"},
                    ],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
                },
                {"name": "sidecar", "image": "proxy:1"},
            ],
            **extra,
        }
    }


def containers(doc: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c for c in doc["spec"]["containers"]}


def test_smp_merges_containers_and_env_by_name_and_null_deletes_a_key() -> None:
    patch = {"spec": {"containers": [{"name": "app", "env": [{"name": "POOL", "value": "50", "valueFrom": None}]}]}}
    out = apply_strategic_merge_patch(pod_spec(), patch)
    app = containers(out)["app"]
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "POOL", "value": "50"}, {"name": "C", "value": "3"}]
    assert app["image"] == "web:1" and containers(out)["sidecar"] == {"name": "sidecar", "image": "proxy:1"}


def test_smp_puts_new_keyed_elements_first_and_replaces_unkeyed_lists() -> None:
    """A new keyed element goes before the server's own (kube-apiserver's mergeSortedSlice; see tests/contract)."""
    patch = {"spec": {"containers": [{"name": "app", "args": ["--c"], "env": [{"name": "D", "value": "4"}]}]}}
    app = containers(apply_strategic_merge_patch(pod_spec(), patch))["app"]
    assert app["args"] == ["--c"]
    assert [e["name"] for e in app["env"]] == ["D", "A", "POOL", "C"]


def test_smp_keeps_the_servers_order_for_elements_it_knows() -> None:
    patch = {"spec": {"containers": [{"name": "app", "env": [{"name": "C", "value": "9"}, {"name": "A", "value": "8"},
                                                             {"name": "E", "value": "5"}]}]}}
    app = containers(apply_strategic_merge_patch(pod_spec(), patch))["app"]
    # the patch's order among its own (C, A, E); POOL, placed before C by the server, stays ahead of it
    assert [e["name"] for e in app["env"]] == ["POOL", "C", "A", "E"]


def test_smp_merges_ports_by_container_port_and_mounts_by_mount_path() -> None:
    patch = {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 9090, "name": "prom"}],
                                      "volumeMounts": [{"mountPath": "/tmp", "readOnly": True}]}]}}
    app = containers(apply_strategic_merge_patch(pod_spec(), patch))["app"]
    assert app["ports"][1] == {"containerPort": 9090, "name": "prom"}
    assert app["volumeMounts"][1] == {"name": "tmp", "mountPath": "/tmp", "readOnly": True}


def test_smp_patch_delete_removes_a_keyed_element_and_a_map() -> None:
    patch = {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"},
                                     {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}],
                      "securityContext": {"$patch": "delete"}}}
    out = apply_strategic_merge_patch(pod_spec(securityContext={"runAsUser": 1}), patch)
    assert list(containers(out)) == ["app"]
    assert [e["name"] for e in containers(out)["app"]["env"]] == ["POOL", "C"]
    assert "securityContext" not in out["spec"]


def test_smp_patch_replace_on_a_list_and_on_a_map() -> None:
    patch = {"spec": {"containers": [{"name": "only", "image": "x:1"}, {"$patch": "replace"}]}}
    assert apply_strategic_merge_patch(pod_spec(), patch)["spec"]["containers"] == [{"name": "only", "image": "x:1"}]
    template = {"spec": {"template": {"metadata": {"labels": {"a": "1"}, "annotations": {"x": "y"}},
                                      "spec": {"containers": [{"name": "c", "image": "old"}]}}}}
    rollback = {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"a": "1"}},
                                      "spec": {"containers": [{"name": "c", "image": "new"}]}}}}
    replaced = {"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "new"}]}}
    assert apply_strategic_merge_patch(template, rollback) == {"spec": {"template": replaced}}


def test_smp_set_element_order_reorders_the_merged_list() -> None:
    patch = {"spec": {"containers": [{"name": "app", "$setElementOrder/env": [{"name": "C"}, {"name": "A"},
                                                                                {"name": "POOL"}]}]}}
    app = containers(apply_strategic_merge_patch(pod_spec(), patch))["app"]
    assert [e["name"] for e in app["env"]] == ["C", "A", "POOL"]


def test_smp_retain_keys_drops_unlisted_fields() -> None:
    doc = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert apply_strategic_merge_patch(doc, patch) == {"spec": {"strategy": {"type": "Recreate"}}}


def test_smp_primitive_lists_delete_from_and_finalizers_union() -> None:
    doc = {"metadata": {"finalizers": ["a", "b"]}, "spec": {"args": ["x", "y", "z"]}}
    patch = {"metadata": {"finalizers": ["b", "c"]}, "spec": {"$deleteFromPrimitiveList/args": ["y"]}}
    assert apply_strategic_merge_patch(doc, patch) == {"metadata": {"finalizers": ["a", "b", "c"]},
                                                       "spec": {"args": ["x", "z"]}}


def test_smp_new_keys_drop_nulls_and_input_is_untouched() -> None:
    doc = pod_spec()
    before = copy.deepcopy(doc)
    out = apply_strategic_merge_patch(doc, {"metadata": {"annotations": {"a": "1", "b": None}}})
    assert out["metadata"] == {"annotations": {"a": "1"}}
    assert doc == before


def test_smp_errors() -> None:
    with pytest.raises(PatchError, match="merge key"):
        apply_strategic_merge_patch(pod_spec(), {"spec": {"containers": [{"image": "x"}]}})
    with pytest.raises(PatchError) as err:
        apply_strategic_merge_patch(pod_spec(), [{"op": "add"}])
    assert err.value.malformed
    with pytest.raises(PatchError):
        apply_strategic_merge_patch(pod_spec(), {"spec": {"$patch": "explode"}})
