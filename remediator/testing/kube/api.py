"""API semantics between HTTP and storage: what the apiserver's generic registry does per verb.

Preconditions (resourceVersion, uid), defaulting, validation, generation bumps, status
preservation, dry-run and the scale subresource all live here, independent of HTTP, so
the same rules apply whether a request arrives over the wire or a test seeds state
directly.  Every method raises :class:`~.status.ApiError` exactly where the apiserver
would answer with an error Status.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remediator.testing.kube import defaults, schema, validation
from remediator.testing.kube import resources as r
from remediator.testing.kube import status as st
from remediator.testing.kube.clock import Clock, rfc3339
from remediator.testing.kube.objects import (
    Object,
    clone,
    meta,
    name_of,
    namespace_of,
    random_suffix,
    spec_of,
    strip_for_list,
    uid_of,
)
from remediator.testing.kube.patch import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    go_json_type,
)
from remediator.testing.kube.selectors import (
    SelectorError,
    format_label_selector,
    parse_field_selector,
    parse_label_selector,
)
from remediator.testing.kube.store import Store

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

#: Scale is not served as a resource of its own, but its errors name it (``Scale.autoscaling``).
SCALE = r.Resource("scale", "scale", "Scale", "autoscaling", "v1", frozenset())

_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")


def _initial_status(res: r.Resource) -> dict[str, Any] | None:
    """What PrepareForCreate leaves in ``status`` (fields without omitempty stay as zeros)."""
    if res is r.STATEFULSETS:
        return {"replicas": 0, "availableReplicas": 0}
    if res is r.REPLICASETS:
        return {"replicas": 0}
    if res is r.PODS:
        return {"phase": "Pending", "qosClass": "BestEffort"}
    if res is r.HPAS:
        return {"desiredReplicas": 0}
    if res is r.NAMESPACES:
        return {"phase": "Active"}
    return {} if res.has_status else None


@dataclass
class FieldValidation:
    """``fieldValidation`` of one request (Strict, Warn, Ignore) and the warnings it produced."""

    mode: str = "Warn"
    warnings: list[str] = field(default_factory=list)


class ObjectAPI:
    def __init__(self, store: Store, clock: Clock, rng: random.Random) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- reads ----------------------------------------------------------------------------

    def read(self, res: r.Resource, namespace: str, name: str) -> Object:
        obj = self.store.get(res.plural, namespace, name)
        if obj is None:
            raise st.not_found(res, name)
        return obj

    def list(
        self,
        res: r.Resource,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Object:
        try:
            labels = parse_label_selector(label_selector)
            fields = parse_field_selector(field_selector, res.plural)
        except SelectorError as exc:
            raise st.bad_request(str(exc)) from None
        items = [
            o for o in self.store.iter(res.plural, namespace)
            if labels.matches(meta(o).get("labels")) and fields.matches(o)
        ]
        list_meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if continue_token:
            start = _decode_continue(continue_token)
            items = [o for o in items if (meta(o).get("namespace", ""), name_of(o)) > start]
        if limit and limit > 0 and len(items) > limit:
            last = items[limit - 1]
            list_meta["continue"] = _encode_continue(meta(last).get("namespace", ""), name_of(last))
            list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": res.list_kind,
            "apiVersion": res.api_version,
            "metadata": list_meta,
            "items": [strip_for_list(o) for o in items],
        }

    # -- writes ---------------------------------------------------------------------------

    def create(
        self, res: r.Resource, namespace: str, body: Any, *, dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Object:
        obj = self._known_fields(res, self._check_body(res, body, namespace), fields)
        m = obj.setdefault("metadata", {})
        if not m.get("name") and m.get("generateName"):
            m["name"] = str(m["generateName"]) + random_suffix(self.rng)
        if m.get("resourceVersion"):
            raise st.bad_request("resourceVersion should not be set on objects to be created")
        name = str(m.get("name") or "")
        existing = self.store.peek(res.plural, namespace, name) if name else None
        if existing is not None:
            raise st.already_exists(res, name, being_deleted=bool(meta(existing).get("deletionTimestamp")))
        for key in (*_SYSTEM_META, "managedFields"):
            m.pop(key, None)
        if res.namespaced:
            m["namespace"] = namespace
        else:
            m.pop("namespace", None)
        m["uid"] = self.new_uid()
        m["creationTimestamp"] = rfc3339(self.clock())
        if res.generation is not r.GenerationRule.NONE:
            m["generation"] = 1
        initial = _initial_status(res)
        if initial is not None:
            obj["status"] = initial
        obj = defaults.for_resource(res)(obj)
        if res.namespaced:  # admission (NamespaceLifecycle) runs before validation
            self._check_namespace(namespace)
        errors = validation.validate(res, obj)
        if errors:
            raise st.invalid(res, name, errors)
        if dry_run:
            return obj
        return self.store.insert(res.plural, obj)

    def _check_namespace(self, namespace: str) -> None:
        """The NamespaceLifecycle admission plugin: no new content in a missing namespace.

        (A terminating one is emptied and removed in the reconcile that follows its DELETE,
        so the real plugin's 403 for it has no moment to happen here.)
        """
        if self.store.peek(r.NAMESPACES.plural, "", namespace) is None:
            raise st.not_found(r.NAMESPACES, namespace)

    def ensure_namespace(self, name: str) -> None:
        """Create namespace ``name`` unless it exists (seeding: as an admin would before applying)."""
        if self.store.peek(r.NAMESPACES.plural, "", name) is None:
            self.create(r.NAMESPACES, "", {"metadata": {"name": name}})

    def finalize_namespace(self, name: str) -> None:
        """The namespace controller's work: delete everything in a terminating namespace, then the namespace."""
        ns = self.store.peek(r.NAMESPACES.plural, "", name)
        if ns is None or not meta(ns).get("deletionTimestamp"):
            return
        for res in r.RESOURCES:
            if res.namespaced:
                for obj in list(self.store.iter(res.plural, name)):
                    self.store.delete(res.plural, name, name_of(obj))
        self.store.delete(r.NAMESPACES.plural, "", name)

    def replace(
        self, res: r.Resource, namespace: str, name: str, body: Any, *, dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Object:
        current = self.read(res, namespace, name)
        obj = self._known_fields(res, self._check_body(res, body, namespace), fields)
        body_name = meta(obj).get("name")
        if body_name != name:
            raise st.bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        return self._update(res, current, obj, dry_run=dry_run)

    def patch(
        self, res: r.Resource, namespace: str, name: str, patch_type: str, patch: Any, *, dry_run: bool = False,
        fields: FieldValidation | None = None,
    ) -> Object:
        current = self.read(res, namespace, name)
        patched = self._known_fields(res, apply_patch(current, patch_type, patch), fields)
        if name_of(patched) != name or meta(patched).get("namespace", namespace) != namespace:
            raise st.bad_request(
                f"the name of the object ({name_of(patched)}) does not match the name on the URL ({name})"
            )
        return self._update(res, current, patched, dry_run=dry_run)

    def delete(
        self,
        res: r.Resource,
        namespace: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
        grace_period: int | None = None,
    ) -> Object:
        """Pods and namespaces come back as the deleted object; everything else as a Status Success."""
        current = self.read(res, namespace, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        uid, rv = uid_of(current), meta(current).get("resourceVersion")
        if pre.get("uid") and pre["uid"] != uid:
            raise st.precondition_failed(
                res, name, f"the UID in the precondition ({pre['uid']}) does not match the UID in record ({uid}). "
                "The object might have been deleted and then recreated")
        if pre.get("resourceVersion") and pre["resourceVersion"] != rv:
            raise st.precondition_failed(
                res, name, f"the ResourceVersion in the precondition ({pre['resourceVersion']}) does not match the "
                f"ResourceVersion in record ({rv}). The object might have been modified")
        if grace_period is None and isinstance(options.get("gracePeriodSeconds"), int):
            grace_period = options["gracePeriodSeconds"]
        if res is r.PODS:
            return self._delete_pod(current, grace_period, dry_run=dry_run)
        if res is r.NAMESPACES:
            if dry_run or meta(current).get("deletionTimestamp"):
                return current
            current["metadata"]["deletionTimestamp"] = rfc3339(self.clock())
            current.setdefault("status", {})["phase"] = "Terminating"
            return self.store.update(res.plural, current)
        if not dry_run:
            self.store.delete(res.plural, namespace, name)
            if options.get("propagationPolicy") == "Orphan":
                self._orphan_dependents(namespace, uid)
        return st.success_body(res, name, uid)

    def _delete_pod(self, pod: Object, grace_period: int | None, *, dry_run: bool) -> Object:
        """rest.BeforeDelete with the pod strategy: graceful only for a pod a kubelet may be running.

        A pod never bound to a node (or already finished) has nothing to stop: its grace
        period becomes 0 and it is deleted at once.  A bound pod gets ``deletionTimestamp``
        = now + grace and stays (Terminating) until its kubelet finishes it.  Deleting a
        terminating pod again only ever shortens its grace period.  The answer is the pod
        as deleted (dry-run: as it would be, with its resourceVersion unchanged).
        """
        m = pod["metadata"]
        namespace, name = namespace_of(pod), name_of(pod)
        if m.get("deletionTimestamp"):
            current = m.get("deletionGracePeriodSeconds")
            if grace_period is None or (isinstance(current, int) and grace_period >= current):
                return pod
            m["deletionTimestamp"] = rfc3339(self.clock() + grace_period)
            m["deletionGracePeriodSeconds"] = grace_period
        else:
            if grace_period is None:
                grace_period = int(spec_of(pod).get("terminationGracePeriodSeconds") or 30)
            if not spec_of(pod).get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                grace_period = 0
            m["deletionTimestamp"] = rfc3339(self.clock() + grace_period)
            m["deletionGracePeriodSeconds"] = grace_period
            if m.get("generation"):
                m["generation"] = int(m["generation"]) + 1
        if dry_run:
            return pod
        if grace_period > 0:
            return self.store.update(r.PODS.plural, pod)
        gone = self.store.delete(r.PODS.plural, namespace, name) or pod
        m["resourceVersion"] = meta(gone).get("resourceVersion")
        return pod

    def _orphan_dependents(self, namespace: str, uid: str) -> None:
        for res in r.RESOURCES:
            for obj in self.store.list(res.plural, namespace):
                refs = meta(obj).get("ownerReferences") or []
                kept = [ref for ref in refs if ref.get("uid") != uid]
                if len(kept) != len(refs):
                    obj["metadata"]["ownerReferences"] = kept
                    self.store.update(res.plural, obj)

    # -- scale subresource ----------------------------------------------------------------

    def read_scale(self, res: r.Resource, namespace: str, name: str) -> Object:
        return scale_of(self.read(res, namespace, name))

    def replace_scale(self, res: r.Resource, namespace: str, name: str, body: Any, *, dry_run: bool = False) -> Object:
        current = self.read(res, namespace, name)
        if not isinstance(body, dict):
            raise st.bad_request("the body of a Scale update must be a JSON object")
        body_meta = meta(body)
        if body_meta.get("name") not in (None, name):
            raise st.bad_request(
                f"the name of the object ({body_meta.get('name')}) does not match the name on the URL ({name})"
            )
        replicas = (body.get("spec") or {}).get("replicas", 0)
        errors = validation.non_negative(replicas, "spec.replicas")
        if errors:
            raise st.invalid(SCALE, name, errors)
        rv = body_meta.get("resourceVersion")
        if rv and rv != meta(current).get("resourceVersion"):
            raise st.conflict(res, name)
        if body_meta.get("uid") and body_meta["uid"] != uid_of(current):
            raise st.conflict(res, name, f"Precondition failed: UID in precondition: {body_meta['uid']}, "
                                         f"UID in object meta: {uid_of(current)}")
        updated = clone(current)
        updated["spec"]["replicas"] = replicas
        return scale_of(self._update(res, current, updated, dry_run=dry_run))

    def patch_scale(
        self, res: r.Resource, namespace: str, name: str, patch_type: str, patch: Any, *, dry_run: bool = False
    ) -> Object:
        scale = self.read_scale(res, namespace, name)
        return self.replace_scale(res, namespace, name, apply_patch(scale, patch_type, patch), dry_run=dry_run)

    # -- controller writes ----------------------------------------------------------------

    def system_create(self, res: r.Resource, obj: Object) -> Object:
        """A controller's create: metadata filled in, no validation (controllers build valid objects)."""
        obj = clone(obj)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        m = obj.setdefault("metadata", {})
        m["uid"] = self.new_uid()
        m["creationTimestamp"] = rfc3339(self.clock())
        if res.generation is not r.GenerationRule.NONE:
            m["generation"] = 1
        return self.store.insert(res.plural, obj)

    def system_update(self, res: r.Resource, obj: Object) -> Object:
        """A controller's write (status, annotations, replica counts): no generation rule applies."""
        return self.store.update(res.plural, obj)

    def system_delete(self, res: r.Resource, namespace: str, name: str) -> None:
        self.store.delete(res.plural, namespace, name)

    # -- shared ---------------------------------------------------------------------------

    def _known_fields(self, res: r.Resource, obj: Object, fields: FieldValidation | None) -> Object:
        """Drop the fields the type does not have: warn (default), refuse (Strict) or say nothing (Ignore)."""
        pruned, unknown = schema.unknown_fields(res, obj)
        if not unknown:
            return obj
        mode = fields.mode if fields is not None else "Warn"
        if mode == "Strict":
            listed = ", ".join(f'unknown field "{path}"' for path in unknown)
            details = {"name": name_of(obj), **({"group": res.group} if res.group else {}), "kind": res.kind}
            raise st.ApiError(422, f'{res.qualified_kind} "{name_of(obj)}" is invalid: strict decoding error: {listed}',
                              details=details)
        if mode == "Warn" and fields is not None:
            fields.warnings.extend(schema.warning(path) for path in unknown)
        return pruned

    def _check_body(self, res: r.Resource, body: Any, namespace: str) -> Object:
        if not isinstance(body, dict):
            raise st.bad_request(f"the object provided is unrecognized (must be of type {res.kind})")
        obj = clone(body)
        if obj.get("apiVersion") not in (None, res.api_version):
            raise st.bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API version "
                f"({res.api_version})"
            )
        if obj.get("kind") not in (None, res.kind):
            raise st.bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({res.kind})")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        if not isinstance(obj.get("metadata", {}), dict):
            raise st.bad_request("metadata must be an object")
        body_ns = meta(obj).get("namespace")
        if body_ns and body_ns != namespace:
            raise st.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return obj

    def _update(self, res: r.Resource, current: Object, new: Object, *, dry_run: bool) -> Object:
        name = name_of(current)
        m = new.setdefault("metadata", {})
        rv = m.get("resourceVersion")
        if rv and rv != meta(current).get("resourceVersion"):
            raise st.conflict(res, name)
        if m.get("uid") and m["uid"] != uid_of(current):
            raise st.conflict(res, name, f"Precondition failed: UID in precondition: {m['uid']}, "
                                         f"UID in object meta: {uid_of(current)}")
        old_meta = meta(current)
        for key in _SYSTEM_META:
            if key in old_meta:
                m[key] = old_meta[key]
            else:
                m.pop(key, None)
        m["name"] = name
        if res.namespaced:
            m["namespace"] = old_meta.get("namespace")
        else:
            m.pop("namespace", None)
        m["resourceVersion"] = old_meta.get("resourceVersion")
        new["kind"], new["apiVersion"] = res.kind, res.api_version
        if res.has_status:
            if "status" in current:
                new["status"] = clone(current["status"])
            else:
                new.pop("status", None)
        new = defaults.for_resource(res)(new)
        errors = validation.validate(res, new, current)
        if errors:
            raise st.invalid(res, name, errors)
        if _generation_changes(res, current, new):
            new["metadata"]["generation"] = int(old_meta.get("generation") or 0) + 1
        if dry_run:
            return new
        return self.store.update(res.plural, new)


def _generation_changes(res: r.Resource, old: Object, new: Object) -> bool:
    if res.generation is r.GenerationRule.NONE:
        return False
    if old.get("spec") != new.get("spec"):
        return True
    return res.generation is r.GenerationRule.SPEC_AND_ANNOTATIONS and (
        meta(old).get("annotations") or {}
    ) != (meta(new).get("annotations") or {})


def apply_patch(current: Object, patch_type: str, patch: Any) -> Object:
    """Apply a decoded patch body; malformed patches are 400, inapplicable ones 422."""
    try:
        if patch_type == JSON_PATCH:
            result = apply_json_patch(current, patch)
        elif patch_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise PatchError(f"error decoding patch: json: cannot unmarshal {go_json_type(patch)} into Go value "
                                 "of type map[string]interface {}", malformed=True)
            result = apply_merge_patch(current, patch)
        elif patch_type == STRATEGIC_MERGE_PATCH:
            result = apply_strategic_merge_patch(current, patch)
        else:
            raise st.unsupported_media_type(patch_type, PATCH_TYPES)
    except PatchError as exc:
        if exc.malformed:
            raise st.bad_request(str(exc)) from None
        raise st.patch_failed(str(exc)) from None
    if not isinstance(result, dict):
        raise st.patch_failed("the patched document is not a JSON object")
    return result


def scale_of(obj: Mapping[str, Any]) -> Object:
    """The autoscaling/v1 Scale view of a workload; its resourceVersion is the workload's."""
    m = meta(obj)
    replicas = spec_of(obj).get("replicas", 0)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m},
        "spec": {"replicas": replicas} if replicas else {},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": format_label_selector(spec_of(obj).get("selector")),
        },
    }


def _encode_continue(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([namespace, name]).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(namespace), str(name)
    except (ValueError, TypeError):
        raise st.bad_request(f"continue key is not valid: {token!r}") from None
