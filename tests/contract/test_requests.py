"""The executor's requests one by one, as raw HTTP: status codes, Status bodies and what the server stored.

Every expected body here is what kube-apiserver answered; the executor classifies
failures by status code and reports the Status ``message`` verbatim, so both are
contract, and so is the ``details.kind`` a client would key on.
"""

from __future__ import annotations

from typing import Any

from tests.contract.conftest import Backend

SMP = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


async def test_error_bodies_are_compact_json_statuses(backend: Backend) -> None:
    answer = await backend.raw("GET", backend.path("deployments", "nothere"))
    assert answer.status == 404 and answer.headers["Content-Type"] == "application/json"
    assert answer.text == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps \\"nothere\\" '
        'not found","reason":"NotFound","details":{"name":"nothere","group":"apps","kind":"deployments"},"code":404}\n'
    )


async def test_missing_namespace(backend: Backend) -> None:
    create = await backend.raw("POST", "/apis/apps/v1/namespaces/no-such-ns/deployments",
                               {"metadata": {"name": "x"}, "spec": {}})
    assert (create.status, create.json) == (404, status(404, "NotFound", 'namespaces "no-such-ns" not found',
                                                        {"name": "no-such-ns", "kind": "namespaces"}))
    read = await backend.raw("GET", "/apis/apps/v1/namespaces/no-such-ns/deployments/x")
    assert read.json["details"] == {"name": "x", "group": "apps", "kind": "deployments"}
    listed = await backend.raw("GET", "/apis/apps/v1/namespaces/no-such-ns/deployments")
    assert listed.status == 200 and listed.json["items"] == []


async def test_a_dry_run_other_than_all_is_422_for_every_verb(backend: Backend) -> None:
    await backend.web(replicas=1)
    bogus = {"dryRun": "Bogus"}
    for method, path, body, options in (
        ("POST", backend.path("deployments"), {"metadata": {"name": "x"}}, "CreateOptions"),
        ("PATCH", backend.path("deployments", "web"), {}, "PatchOptions"),
        ("PUT", backend.path("deployments", "web") + "/scale", {"spec": {"replicas": 1}}, "UpdateOptions"),
        ("DELETE", backend.path("pods", "p", group=""), None, "DeleteOptions"),
    ):
        answer = await backend.raw(method, path, body, content_type=SMP if method == "PATCH" else "application/json",
                                   query=bogus)
        message = 'Unsupported value: ["Bogus"]: supported values: "All"'
        assert (answer.status, answer.json) == (422, status(
            422, "Invalid", f'{options}.meta.k8s.io "" is invalid: dryRun: {message}',
            {"group": "meta.k8s.io", "kind": options,
             "causes": [{"reason": "FieldValueNotSupported", "message": message, "field": "dryRun"}]})), method


async def test_a_stale_resource_version_is_a_409_on_patch_and_on_the_scale_subresource(backend: Backend) -> None:
    """resize_pool's patch and scale's PUT carry the resourceVersion they read: a stale one is refused."""
    await backend.web(replicas=1)
    conflict = status(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "web": {MODIFIED}',
                      {"name": "web", "group": "apps", "kind": "deployments"})
    patch = await backend.raw("PATCH", backend.path("deployments", "web"),
                              {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}}, content_type=SMP)
    assert (patch.status, patch.json) == (409, conflict)
    scale = (await backend.raw("GET", backend.path("deployments", "web") + "/scale")).json
    scale["metadata"]["resourceVersion"] = "1"
    scale["spec"] = {"replicas": 2}
    put = await backend.raw("PUT", backend.path("deployments", "web") + "/scale", scale)
    assert (put.status, put.json) == (409, conflict)
    assert (await backend.read())["spec"]["replicas"] == 1


async def test_a_json_patch_replacing_the_resource_version_with_a_stale_one_is_a_409(backend: Backend) -> None:
    """rollback's JSON patch (and the undo of one) carries the resourceVersion read as a ``replace`` op:
    the patched object's version is the update's precondition, so a change since is refused, not overwritten."""
    await backend.web(replicas=1)
    conflict = status(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "web": {MODIFIED}',
                      {"name": "web", "group": "apps", "kind": "deployments"})
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 2},
           {"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}]
    stale = await backend.raw("PATCH", backend.path("deployments", "web"), ops, content_type=JSON_PATCH)
    assert (stale.status, stale.json) == (409, conflict)
    assert (await backend.read())["spec"]["replicas"] == 1
    ops[1]["value"] = (await backend.read())["metadata"]["resourceVersion"]
    fresh = await backend.raw("PATCH", backend.path("deployments", "web"), ops, content_type=JSON_PATCH)
    assert fresh.status == 200 and (await backend.read())["spec"]["replicas"] == 2


async def test_a_controllers_status_write_makes_a_resource_version_stale(backend: Backend) -> None:
    """Right after a spec change the deployment controller writes status: the version a patch read is gone."""
    await backend.web(replicas=1)
    answer = await backend.raw("PATCH", backend.path("deployments", "web"), {"spec": {"replicas": 2}},
                               content_type=SMP)
    seen = answer.json["metadata"]["resourceVersion"]
    assert answer.json["status"].get("observedGeneration", 0) < answer.json["metadata"]["generation"]

    async def rewritten() -> str | None:
        now = (await backend.read())["metadata"]["resourceVersion"]
        return now if now != seen else None

    await backend.until(rewritten, "the deployment controller's status write")
    stale = await backend.raw("PATCH", backend.path("deployments", "web"),
                              {"metadata": {"resourceVersion": seen}, "spec": {"replicas": 3}}, content_type=SMP)
    assert stale.status == 409 and stale.json["reason"] == "Conflict"


async def test_invalid_values_are_422_with_the_field_named(backend: Backend) -> None:
    await backend.web(replicas=1)
    cause = {"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
             "field": "spec.replicas"}
    patch = await backend.raw("PATCH", backend.path("deployments", "web"), {"spec": {"replicas": -1}},
                              content_type=SMP)
    assert (patch.status, patch.json) == (422, status(
        422, "Invalid", 'Deployment.apps "web" is invalid: spec.replicas: ' + cause["message"],
        {"name": "web", "group": "apps", "kind": "Deployment", "causes": [cause]}))
    scale = (await backend.raw("GET", backend.path("deployments", "web") + "/scale")).json
    scale["spec"] = {"replicas": -1}
    put = await backend.raw("PUT", backend.path("deployments", "web") + "/scale", scale)
    assert (put.status, put.json) == (422, status(
        422, "Invalid", 'Scale.autoscaling "web" is invalid: spec.replicas: ' + cause["message"],
        {"name": "web", "group": "autoscaling", "kind": "Scale", "causes": [cause]}))


async def test_json_patch_replace_of_a_missing_key_adds_it(backend: Backend) -> None:
    """rollout undo's patch ``add``s the annotations; a ``replace`` of a key the map lacks works all the same."""
    await backend.web(replicas=1)
    ops = [{"op": "replace", "path": "/metadata/labels/extra", "value": "x"},
           {"op": "replace", "path": "/spec/template/metadata/annotations", "value": {"a": "b"}}]
    answer = await backend.raw("PATCH", backend.path("deployments", "web"), ops, content_type=JSON_PATCH)
    assert answer.status == 200
    assert answer.json["metadata"]["labels"] == {"app": "web", "extra": "x"}
    assert answer.json["spec"]["template"]["metadata"]["annotations"] == {"a": "b"}


async def test_json_patch_that_does_not_apply_is_a_bare_422(backend: Backend) -> None:
    await backend.web(replicas=1)
    rejected = status(422, "Invalid", "the server rejected our request due to an error in our request", {})
    for ops in ([{"op": "test", "path": "/spec/replicas", "value": 5}],
                [{"op": "replace", "path": "/spec/nothing/deeper", "value": 1}],
                [{"op": "remove", "path": "/metadata/labels/zz"}]):
        answer = await backend.raw("PATCH", backend.path("deployments", "web"), ops, content_type=JSON_PATCH)
        assert (answer.status, answer.json) == (422, rejected), ops


async def test_malformed_patches_are_400(backend: Backend) -> None:
    await backend.web(replicas=1)
    for body, content_type, message in (
        ({"op": "x"}, JSON_PATCH,
         "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"),
        ([1], "application/merge-patch+json",
         "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"),
        ([1], SMP, "json: cannot unmarshal array into Go value of type map[string]interface {}"),
    ):
        answer = await backend.raw("PATCH", backend.path("deployments", "web"), body, content_type=content_type)
        assert (answer.status, answer.json) == (400, status(400, "BadRequest", message)), content_type


async def test_unknown_fields_are_dropped_with_a_warning(backend: Backend) -> None:
    await backend.web(replicas=1)
    patch = {"metadata": {"zzz": 1}, "spec": {"foo": 1, "template": {"spec": {"containers": [
        {"name": "app", "bar": 2}]}}}}
    answer = await backend.raw("PATCH", backend.path("deployments", "web"), patch, content_type=SMP)
    assert answer.status == 200
    assert answer.headers.getall("Warning") == [
        '299 - "unknown field \\"metadata.zzz\\""',
        '299 - "unknown field \\"spec.foo\\""',
        '299 - "unknown field \\"spec.template.spec.containers[0].bar\\""',
    ]
    stored = await backend.read()
    assert "foo" not in stored["spec"] and "bar" not in stored["spec"]["template"]["spec"]["containers"][0]
    assert stored["metadata"]["generation"] == 1  # nothing that stayed changed


async def test_a_stale_uid_precondition_on_delete_is_a_409_naming_the_kind(backend: Backend) -> None:
    await backend.web(replicas=1)
    [pod] = await backend.pods()
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    answer = await backend.raw("DELETE", backend.path("pods", name, group=""), {"preconditions": {"uid": "0000"}})
    assert (answer.status, answer.json) == (409, status(
        409, "Conflict",
        f'Operation cannot be fulfilled on Pod "{name}": the UID in the precondition (0000) does not match the UID '
        f"in record ({uid}). The object might have been deleted and then recreated",
        {"name": name, "kind": "Pod"}))
    gone = await backend.raw("DELETE", backend.path("pods", "nothere", group=""), {"preconditions": {"uid": uid}})
    assert (gone.status, gone.json["details"]) == (404, {"name": "nothere", "kind": "pods"})


async def test_delete_options_come_from_the_body_when_there_is_one(backend: Backend) -> None:
    """The executor's dry-run delete: ``dryRun`` in the body is honoured; in the query beside a body it is not."""
    await backend.web(replicas=2)
    [first, second] = await backend.pods()
    quiet = await backend.snapshot()
    dry = await backend.raw("DELETE", backend.path("pods", first["metadata"]["name"], group=""),
                            {"dryRun": ["All"], "preconditions": {"uid": first["metadata"]["uid"]}},
                            query={"dryRun": "All"})
    assert dry.status == 200 and dry.json["metadata"]["deletionTimestamp"]
    assert dry.json["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert await backend.snapshot() == quiet

    real = await backend.raw("DELETE", backend.path("pods", second["metadata"]["name"], group=""),
                             {"preconditions": {"uid": second["metadata"]["uid"]}}, query={"dryRun": "All"})
    assert real.status == 200 and real.json["metadata"]["deletionTimestamp"]

    async def gone() -> bool | None:
        return True if second["metadata"]["name"] not in [p["metadata"]["name"] for p in await backend.pods()] else None

    await backend.until(gone, "the pod deleted by a 'dry run' in the query to go")
