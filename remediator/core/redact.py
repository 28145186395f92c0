"""Redaction of Kubernetes object snapshots, for the audit trail and the read API.

A step's ``before``/``after`` snapshot of a workload carries its pod template, and so
every container's environment values (passwords and tokens are often set there as
plain ``value``s), plus ``kubectl.kubernetes.io/last-applied-configuration``, which
repeats the whole manifest, env values included.  None of that belongs in the audit.

What a redacted snapshot keeps:

- every env entry's ``name``, and its ``valueFrom``: that names a Secret or ConfigMap
  key (a reference, not the value), so it tells a reader where the value comes from
  without giving it away; likewise ``envFrom``;
- the ``value`` of an env var the step itself changed (:func:`snapshot_pair`: the
  variable ``resize_pool`` set, so the audit and its diff still show 20 -> 30);
  every other ``value`` becomes :data:`REDACTED`;
- every annotation but last-applied-configuration, whose value becomes :data:`REDACTED`.

Secret data never reaches a snapshot: the executor reads Deployments, StatefulSets,
their scale subresource and Pods, never a Secret, and an env var's ``valueFrom`` is
resolved by the kubelet, not stored in the object.  Container ``args``/``command``
are not redacted (they are not meant to hold secrets; see the README).

Pure functions over plain dicts (the JSON the store keeps); the inputs are not
modified, and ``None`` (an object that did not exist) passes through.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from remediator.core.rollout import diff

REDACTED = "<redacted>"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

#: (where the pod spec is, container list, container name, env var name)
EnvKey = tuple[str, str, str, str]


def _pod_specs(obj: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec in an object: a Pod's own spec, a workload's template, a CronJob's job template."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    yield "spec", spec
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        yield "spec.template.spec", template["spec"]
    job = spec.get("jobTemplate")
    job_spec = job.get("spec") if isinstance(job, dict) else None
    job_template = job_spec.get("template") if isinstance(job_spec, dict) else None
    if isinstance(job_template, dict) and isinstance(job_template.get("spec"), dict):
        yield "spec.jobTemplate.spec.template.spec", job_template["spec"]


def _env_entries(obj: Mapping[str, Any]) -> Iterator[tuple[EnvKey, dict[str, Any]]]:
    for where, pod_spec in _pod_specs(obj):
        for field in CONTAINER_LISTS:
            containers = pod_spec.get(field)
            if not isinstance(containers, list):
                continue
            for i, container in enumerate(containers):
                if not isinstance(container, dict) or not isinstance(container.get("env"), list):
                    continue
                cname = str(container.get("name", f"#{i}"))
                for entry in container["env"]:
                    if isinstance(entry, dict):
                        yield (where, field, cname, str(entry.get("name"))), entry


def _containers(obj: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (where, field, str(c.get("name", f"#{i}")))
        for where, pod_spec in _pod_specs(obj)
        for field in CONTAINER_LISTS
        if isinstance(pod_spec.get(field), list)
        for i, c in enumerate(pod_spec[field])
        if isinstance(c, dict)
    }


def _annotation_maps(obj: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        yield meta["annotations"]
    spec = obj.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    tmeta = template.get("metadata") if isinstance(template, dict) else None
    if isinstance(tmeta, dict) and isinstance(tmeta.get("annotations"), dict):
        yield tmeta["annotations"]


def _redact(obj: Any, keep: Collection[EnvKey] = (), keep_names: Collection[str] = ()) -> Any:
    if not isinstance(obj, Mapping):
        return obj  # None (no object), or nothing a snapshot would hold
    out = copy.deepcopy(dict(obj))
    for key, entry in _env_entries(out):
        if entry.get("value") is not None and key not in keep and key[3] not in keep_names:
            entry["value"] = REDACTED
    for notes in _annotation_maps(out):
        if LAST_APPLIED in notes:
            notes[LAST_APPLIED] = REDACTED
    return out


def redact_snapshot(snapshot: Mapping[str, Any] | None, keep_env: Collection[str] = ()) -> dict[str, Any] | None:
    """A copy of ``snapshot`` with every env ``value`` redacted, except those of the
    variables named in ``keep_env`` (in any container), and last-applied-configuration redacted."""
    out: dict[str, Any] | None = _redact(snapshot, keep_names=frozenset(keep_env))
    return out


def _values(obj: Mapping[str, Any]) -> dict[EnvKey, list[Any]]:
    """Each variable's plain values (a list: a name may repeat; the last one wins in Kubernetes)."""
    out: dict[EnvKey, list[Any]] = {}
    for key, entry in _env_entries(obj):
        if entry.get("value") is not None:
            out.setdefault(key, []).append(entry["value"])
    return out


def changed_env(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> set[EnvKey]:
    """The env vars whose ``value`` differs between two snapshots of one object.

    Only within a container present in both: a variable set, changed or unset there.
    When either side is missing (a deleted pod), or a whole container appears or goes,
    nothing counts as changed, so that nothing is kept.
    """
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return set()
    b, a = _values(before), _values(after)
    common = _containers(before) & _containers(after)
    return {key for key in set(b) | set(a) if key[:3] in common and b.get(key, []) != a.get(key, [])}


def snapshot_pair(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *, only: Collection[str] | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Redact a step's before/after together: an env value stays only where it changed between
    the two (same pod spec, container and variable), so the diff still shows the step's own change.

    ``only`` narrows that to the variables a step means to change (``resize_pool``'s ``env``):
    a ``rollback`` that changes other variables then shows none of their values either.
    """
    keep = {key for key in changed_env(before, after) if only is None or key[3] in only}
    return _redact(before, keep), _redact(after, keep)


def redact_step(result: Mapping[str, Any]) -> dict[str, Any]:
    """One audited step (a stored result: ``before``, ``after``, ``details``), redacted.

    Its ``details.diff`` is recomputed from the redacted pair (the executor computes it
    the same way), so a record written before redaction existed loses its secrets too.
    """
    out = dict(result)
    before, after = snapshot_pair(result.get("before"), result.get("after"))
    if "before" in out:
        out["before"] = before
    if "after" in out:
        out["after"] = after
    details = result.get("details")
    if isinstance(details, Mapping) and "diff" in details:
        out["details"] = {**details, "diff": diff(before, after)}
    return out


def redact_execution(execution: Mapping[str, Any]) -> dict[str, Any]:
    """An execution as the API shows it, with each of its step ``results`` redacted."""
    out = dict(execution)
    results = execution.get("results")
    if isinstance(results, list):
        out["results"] = [redact_step(r) if isinstance(r, Mapping) else r for r in results]
    return out
