"""The Kubernetes executor: each action done exactly as kubectl does it.

Semantics follow shared/spec/kubernetes.md (kubectl's own code paths): the restart
annotation patch, the scale subresource with optimistic concurrency, a strategic
merge patch of one container (its image, one env var, its requests/limits) carrying
resourceVersion, rollout-undo's JSON patch, pod deletion with a uid precondition, and
rollout-status rules over a watch.  Actions that take capacity away (delete_pod, a
scale down) first check ``min_healthy_replicas`` against the workload's ready replicas.

Every action reads the object first and records ``before``/``after`` and their
diff.  With ``server_dry_run`` every mutation carries ``dryRun=All``: the apiserver
validates it and returns the would-be object, and nothing changes.  Failures are
classified once (:func:`classify`): 409/429/5xx/timeouts are retried with tenacity
on the injectable clock (409 re-reads and re-applies, 429 honours Retry-After);
400/403/404/422 fail at once with the apiserver's own message.

Controllers run asynchronously on a real cluster, and the executor expects it: a 409
from a controller's status write between our read and our write, or a workload whose
revision history does not yet hold its latest spec (a rollback waits for it), is routine and
retried on a budget of its own (:data:`ROUTINE_ATTEMPTS`), apart from ``kubernetes.retries``
for faults.  A deleted pod may stay ``Terminating`` for its grace period; delete_pod does
not delete it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import operator
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from remediator.clock import within
from remediator.core import redact, rollout
from remediator.core.decisions import PlannedStep
from remediator.core.errors import ConfigError, PermanentError, TemporaryError
from remediator.core.planning import desired_amount
from remediator.core.quantities import UNITS, Quantity, QuantityError, format_quantity, is_binary, parse_quantity
from remediator.core.regex import compile_re2
from remediator.core.schema import RESOURCES
from remediator.metrics import Metrics
from remediator.ports import Clock, StepContext, StepResult
from remediator.settings import KubernetesSettings, Settings

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FIELD_MANAGER = "remediator"


class Rejected(TemporaryError):
    """The apiserver refused the request (409 Conflict, 429): it certainly was not applied."""


class Lagging(TemporaryError):
    """The workload's revision history does not yet describe its latest spec.

    Controllers run asynchronously: right after a write, what they derive from it (a
    Deployment's ReplicaSets and their revision numbers, a StatefulSet's
    ControllerRevisions) still describes the spec before, and an observed generation
    does not always mean the new revision exists (a Deployment write that also scales is
    observed before its ReplicaSet is made: :func:`rollout.deployment_history_lag`).  A
    rollback planned from that history would pick the wrong revision, so it waits for the
    controller to catch up.
    """


def _caught_up(kind: str, key: str, lag: str | None) -> None:
    """Raise :class:`Lagging` when the history read lags the workload read (``lag`` says how)."""
    if lag is not None:
        raise Lagging(f"the {kind} controller {lag}, for {key}: its revision history may be stale")


#: Attempts allowed for routine refusals (a 409 from a controller's status write landing between
#: our read and our write, a controller still catching up).  They are the normal traffic of a
#: cluster whose controllers run asynchronously, not faults: they have a budget of their own, so
#: ``kubernetes.retries`` (the budget for 5xx, 429 and timeouts) stays about faults, and a short
#: backoff (client-go's RetryOnConflict waits 10 ms).
ROUTINE_ATTEMPTS = 10


class Contended(TemporaryError):
    """A write of a step pinned once planned was refused (409: the object changed between the read
    and the write; 429: throttled): an undo's revert, a rollback.

    Refused like a :class:`Rejected` (it did not land), but its write-ahead intent must survive into
    the retry, which a refused write's intent does not: the retry re-reads and re-checks against it
    (the steps reverted so far; the revision chosen and the pod template it was planned from) rather
    than planning afresh, which for a rollback would roll back whatever release landed meanwhile."""


def _contended(exc: Rejected) -> Contended:
    return Contended(str(exc), delay=exc.delay, status=exc.status)


def _refused(exc: BaseException | None) -> bool:
    """The apiserver answered a request with a refusal: it certainly was not applied.

    409 and 429 (:class:`Rejected`), and the answers that are never retried: 400, 403 (RBAC, an
    admission webhook's denial), 404, 422 (invalid).  Not a timeout, a lost connection or a 5xx,
    after which a write may have landed, nor an error of no answer at all."""
    return isinstance(exc, Rejected | Contended) or (
        isinstance(exc, PermanentError) and exc.status in (400, 403, 404, 422))


@dataclass
class _Attempt:
    """One attempt of a step, as :meth:`KubeExecutor._call` sees it: whether the write announced by the
    attempt's latest intent is still unanswered (each intent is recorded just before its write, so the
    next call is that write), and whether a write of the attempt was answered with success."""

    unanswered: bool = False
    landed: bool = False


#: The attempt running in this task (set by :meth:`KubeExecutor.run`), so that a failure can be told
#: apart: the write itself refused (nothing landed), or a later call failing after the write landed
#: (undo reverts several steps, with reads between its writes).
_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("remediator_kube_attempt", default=None)


def _routine(exc: BaseException | None) -> bool:
    return isinstance(exc, Lagging) or (isinstance(exc, Rejected | Contended) and exc.status == 409)


class RefusedInput(PermanentError):
    """What the alert named does not exist on the target (a container, a pod of another owner),
    or the target is not in the state the step demands (``only_if_current``, ``min_healthy_replicas``).

    Nothing was written; the failure says nothing about the playbook's remediation working,
    so it neither runs ``on_failure`` nor feeds the circuit breaker (the pipeline reads
    ``details["refused_input"]``).  ``values`` go to the audit's details (what was found).
    """

    def __init__(self, message: str, **values: Any) -> None:
        super().__init__(message)
        self.values = values


class Superseded(PermanentError):
    """A write-ahead intent is stale: the object no longer holds the value the intent was
    planned from, nor the value it would set.  Someone changed it since (a later execution,
    a person); re-applying would revert their change, so nothing is written."""

    def __init__(self, message: str, **values: Any) -> None:
        super().__init__(message)
        self.values = values


#: What ``undo`` reverts (the verification and notify steps change nothing; an undo is not undone).
_UNDOABLE = frozenset({"restart", "scale", "resize_pool", "set_image", "set_env", "set_resources", "rollback",
                       "delete_pod"})
_CHANGED = "changed since; not undone"
_NOT_UNDONE_FAILED = "not undone"
#: Outcomes that fail the undo step (so it shows and notifies); "cannot be undone" (a deleted pod)
#: and "not reverted" (a restart) are recorded but expected.
_FAILED_OUTCOMES = frozenset({_CHANGED, _NOT_UNDONE_FAILED})


#: Where each action's write-ahead intent keeps the value it sets (beside ``from``, the value it found).
_INTENT_SETS = {"scale": "replicas", "resize_pool": "value", "set_image": "image", "set_env": "value",
                "set_resources": "resources"}


def _set_by_intent(action: str, intent: Any) -> dict[str, Any] | None:
    """``from``/``to`` of a step that failed after sending its write, as its result would have recorded them,
    from the intent it wrote ahead (None when the intent does not say both: nothing is known to revert).

    The write may have landed although the step failed (its answer lost, the retries used up): the
    value it set is the intent's, and undo reverts it only while the object still holds exactly that."""
    key = _INTENT_SETS.get(action)
    if key is None or not isinstance(intent, Mapping) or key not in intent or "from" not in intent:
        return None
    to = {"value": str(intent[key])} if action == "set_env" else intent[key]
    return {"from": intent["from"], "to": to, **({"uid": intent["uid"]} if intent.get("uid") else {})}


def _undo_line(entry: Mapping[str, Any]) -> str:
    """One step's line in the undo's message; a ``set_env`` value stays out of it (it may be a secret:
    the values are in the details, as in the step's own result)."""
    what = f"{entry['phase']} step {entry['index']} ({entry['action']}): {entry['outcome']}"
    if entry["action"] != "set_env" and "from" in entry and "current" in entry:
        was, now, set_to = (_shown(entry[k]) for k in ("from", "current", "to"))
        if entry["outcome"] == _CHANGED:
            what += f" (set {was} -> {set_to}, now {now})"
        elif entry["outcome"] == "undone":
            what += f" ({set_to} -> {was})"
    if entry.get("note"):
        what += f" [{entry['note']}]"
    return what + (f": {entry['reason']}" if entry.get("reason") else "")


def _shown(value: Any) -> str:
    """A recorded value as a message shows it: a pool size's env state as its number."""
    if isinstance(value, Mapping) and set(value) == {"value"}:
        return str(value["value"])
    return "unset" if isinstance(value, Mapping) and "absent" in value else str(value)


def classify(exc: BaseException) -> PermanentError | TemporaryError:
    """Map a client failure to what the executor should do next."""
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        if exc.body:
            try:
                message = json.loads(exc.body).get("message") or message
            except (ValueError, AttributeError):
                message = str(exc.body)[:500]
        text = f"{exc.status} {exc.reason}: {message}"
        if exc.status == 409:
            return Rejected(text, status=exc.status)
        if exc.status == 429:
            headers: Mapping[str, str] = exc.headers or {}
            retry_after = headers.get("Retry-After")
            try:
                delay = float(retry_after) if retry_after is not None else None
            except ValueError:
                delay = None
            return Rejected(text, delay=delay, status=exc.status)
        if exc.status is not None and (exc.status >= 500 or exc.status == 0):
            return TemporaryError(text, status=exc.status)
        return PermanentError(text, status=exc.status)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return TemporaryError("the Kubernetes API did not answer in time")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TemporaryError(f"cannot reach the Kubernetes API: {exc}")
    return PermanentError(f"{type(exc).__name__}: {exc}")


def _intent(ctx: StepContext) -> dict[str, Any]:
    """What an earlier attempt of this step (a retry, or the run before a crash) recorded it would apply."""
    intent = ctx.previous.details.get("intent") if ctx.previous else None
    return dict(intent) if intent else {}


def _wrote(result: StepResult, wrote: bool, intent: Mapping[str, Any] | None = None) -> StepResult:
    """Mark a result whose step sent a write (it may have landed even if the step failed).

    A failed step keeps the intent of its last write: what it may have set, which ``undo`` needs
    to revert it (the step's ``from``/``to`` are recorded only when it succeeds)."""
    if not wrote:
        return result
    kept = {"intent": dict(intent)} if intent and result.status == "failed" else {}
    return replace(result, details={**result.details, **kept, "wrote": True})


def _unless_unchanged(key: str, intent: Mapping[str, Any], current: str, generation: int | None) -> None:
    """A resumed rollback re-applies only while the workload still runs the template it was
    planned from (intents written before this check existed carry no ``from``), and nothing
    changed its spec since (:func:`_unless_spec_unchanged`)."""
    values = {"from": intent.get("from"), "to": intent.get("revision"), "current": current}
    if "from" in intent and intent["from"] != current:
        raise Superseded(
            f"{key} runs another pod template than when this rollback was planned (a release or change "
            f"since): not rolling it back to revision {intent.get('revision')}",
            **values,
        )
    _unless_spec_unchanged(intent, generation, f"{key} runs the pod template this rollback was planned from",
                           values)


#: The key :meth:`KubeExecutor.run` adds to the intent it hands to the retry of a write the apiserver refused
#: (kept to pin the plan: a rollback's, an undo's) when no write of the step may still be landing.  Only in
#: memory: the stored intent is the one recorded before the write.
_REFUSED = "refused"


def _generation(obj: Mapping[str, Any]) -> int | None:
    """A workload's ``metadata.generation``: moved by every change of its spec (the scale subresource's too,
    and a Deployment's annotations), never by a status write."""
    value = (obj.get("metadata") or {}).get("generation")
    return None if value is None else int(value)


def _uid(obj: Mapping[str, Any] | None) -> str | None:
    """An object's ``metadata.uid`` (a workload's Scale carries the workload's): one object for its whole life,
    where a name is not (deleted and created again under the same name, it is another object, of a new uid)."""
    return ((obj or {}).get("metadata") or {}).get("uid") or None


def _recreated(recorded: Mapping[str, Any], obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The undo outcome of a step whose target is no longer the object it changed (None: it is, or the step
    recorded no uid: a result from before uids were recorded is judged by value alone, as it was then).

    Deleted and created again under its name (a redeploy from manifests, say), the workload is another object,
    which this execution never changed: whatever it holds is someone else's doing, never reverted."""
    was, now = recorded.get("uid"), _uid(obj)
    if not was or was == now:
        return None
    return {"outcome": _CHANGED, "reason": f"{key} was deleted and created again since this step (uid {was} -> "
            f"{now}): another object than the one it changed, left as it is"}


def _unless_spec_unchanged(
    intent: Mapping[str, Any], generation: int | None, holds: str, values: Mapping[str, Any]
) -> None:
    """A resumed step that finds the value it planned from (``holds`` says so) re-applies it only if nothing
    changed the workload's spec since its write-ahead intent: the generation it recorded, read right before
    its write, has not moved.  The same value again is otherwise ambiguous: its write never landed, or it
    landed (the daemon dying before recording the result) and a person, a deploy or another execution put the
    old value back since, which re-applying would revert.  A moved generation is that, or something else in
    the spec changed meanwhile; either way the step is superseded and writes nothing.

    An intent recorded before generations were (none in it) keeps the value-only judgement of then; so does
    one whose write the apiserver refused (:data:`_REFUSED`): it certainly did not land."""
    if "generation" not in intent or intent.get(_REFUSED) or generation == intent["generation"]:
        return
    raise Superseded(
        f"{holds}, but its spec changed since this step's write-ahead intent (generation {intent['generation']} "
        f"-> {generation}): its write may have landed and been reverted since, by a person, a deploy or another "
        "execution: not re-applied (that would revert the later change)",
        **values, generation={"intent": intent["generation"], "now": generation},
    )


#: What a rollback's intent pins once chosen (the revision it rolls back to, the template it found).
_ROLLBACK_PINS = ("replicaset", "controllerrevision", "revision", "from")


def _pinned(intent: Mapping[str, Any]) -> dict[str, Any]:
    """A rollback's intent as it is recorded again before each write of a retry or a resume (empty: none).

    Recorded again, as every other action records its intent before each write: it is what tells
    :meth:`KubeExecutor.run` that the attempt sent a write, which may have landed (a rollback refused
    once, by a controller's write say, and made on its retry was otherwise recorded as having written
    nothing, and ``undo`` passed over it)."""
    return {k: intent[k] for k in _ROLLBACK_PINS if k in intent}


def _restart_reach(sts: Mapping[str, Any]) -> tuple[int, str]:
    """Which pods a restart of StatefulSet ``sts`` replaces: its partition (0: every pod) and, for a partial
    restart, a note naming the pods it keeps.  Refuses (:class:`PermanentError`) a set whose controller would
    replace none of them, which a restart reported ``ok`` would hide; it is called before anything is written.

    A restart only changes the pod template (``restartedAt``); what the controller does with that change
    follows ``spec.updateStrategy`` (the apiserver's defaults, RollingUpdate from partition 0, where a field
    is absent: given the type alone, it stores no ``rollingUpdate``):

    * OnDelete: a pod is replaced only when someone deletes it, so none is;
    * RollingUpdate: the pods from index ``partition`` up are replaced, highest ordinal first (ordinals count
      from ``spec.ordinals.start``), so none once ``partition`` >= ``replicas``.

    A partition between 0 and ``replicas`` is a partial restart, done and reported ``ok``, not refused: a
    partition is the operator's deliberate canary or staged rollout, the pods from it up are restarted as
    asked, and those below are kept as the operator chose, as ``kubectl rollout restart`` leaves them.  The
    message names the pods not restarted, so no one reads it as a restart of the whole set.  A set scaled to
    0 (no partition) is restarted, as a Deployment of 0 replicas is: its next pods start from the new template.
    """
    name = (sts.get("metadata") or {}).get("name", "")
    spec = sts.get("spec") or {}
    strategy = spec.get("updateStrategy") or {}
    if (strategy.get("type") or "RollingUpdate") == "OnDelete":
        raise PermanentError(
            f'can\'t restart statefulset "{name}": its updateStrategy is OnDelete, so its controller replaces a pod '
            "only when the pod is deleted and would restart none; delete its pods instead (delete_pod steps, one "
            "at a time), or change its updateStrategy to RollingUpdate"
        )
    partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
    if not partition:
        return 0, ""
    replicas = 1 if spec.get("replicas") is None else int(spec["replicas"])
    if partition >= replicas:
        raise PermanentError(
            f'can\'t restart statefulset "{name}": its updateStrategy.rollingUpdate.partition ({partition}) is not '
            f"below its replicas ({replicas}), so its controller would restart none of its pods; lower the "
            "partition (0 restarts every pod), or delete its pods instead (delete_pod steps, one at a time)"
        )
    start = int((spec.get("ordinals") or {}).get("start") or 0)
    first = start + partition
    kept = [f"{name}-{o}" for o in range(start, first)]
    shown = ", ".join(kept) if len(kept) <= 3 else f"{kept[0]} to {kept[-1]}"
    return partition, f"only pods with ordinal >= {first} are replaced (partition {partition}): {shown} not restarted"


def _template_change(origin: str | None, after: Mapping[str, Any] | None) -> dict[str, str]:
    """What ``undo`` needs of a rollback: the digests of the pod template it found and of the one it set
    (none when the template it found is not known: an intent recorded before digests were)."""
    if origin is None or after is None:
        return {}
    return {"template_from": origin, "template_to": rollout.template_digest(after["spec"].get("template"))}


def _revision_digest(data: Mapping[str, Any]) -> str:
    """The digest of the pod template a ControllerRevision's ``data`` holds: a strategic-merge patch
    whose template carries ``$patch: replace``, a directive and no part of the template."""
    template = dict((data.get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return rollout.template_digest(template)


def _revision_named(objects: list[dict[str, Any]], name: str, revision: Callable[[dict[str, Any]], int]) -> int:
    for obj in objects:
        if (obj.get("metadata") or {}).get("name") == name:
            return revision(obj)
    raise PermanentError(f"{name}, the revision this rollback was rolling back to, no longer exists")


def _container_of(obj: Mapping[str, Any], name: str, key: str) -> dict[str, Any]:
    """The named container of a workload's pod template; the alert may have named one it lacks."""
    containers = obj["spec"]["template"]["spec"].get("containers") or []
    container: dict[str, Any] | None = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        names = ", ".join(c.get("name", "?") for c in containers)
        raise RefusedInput(f"container {name!r} not found in {key} (containers: {names})")
    return container


class DefinedTwice(PermanentError):
    """A container defines the env var a step changes more than once (:func:`_env_entry`)."""


def _env_entry(container: Mapping[str, Any], env_name: str) -> dict[str, Any] | None:
    """The entry of env var ``env_name`` in ``container`` (None: it has none).

    A container may list a name twice: the apiserver accepts it (with a warning) and the container gets
    the last definition, while a strategic-merge patch by name reads and changes the first.  A step
    (or an undo) would report a change the container never sees, so such a container is refused
    (:class:`DefinedTwice`) before anything is written."""
    entries = [e for e in container.get("env") or [] if e.get("name") == env_name]
    if len(entries) > 1:
        raise DefinedTwice(
            f"env {env_name} is defined {len(entries)} times in container {container.get('name')!r}: "
            "the container gets the last definition, which a change by its name would not reach; nothing is "
            f"changed: fix the manifest so that {env_name} is defined once"
        )
    return entries[0] if entries else None


def _container_patch(before: Mapping[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of one container (merged by name: the others are untouched), carrying
    the resourceVersion it was planned from, so a change made meanwhile is a 409 and a fresh plan."""
    return {
        "metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def _env_patch(
    before: Mapping[str, Any], container: str, name: str, value: str, entry: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One env var of one container set to ``value``; a ``valueFrom`` it had is removed (``null``),
    since an entry may not hold both."""
    new_entry: dict[str, Any] = {"name": name, "value": value}
    if entry is not None and entry.get("valueFrom") is not None:
        new_entry["valueFrom"] = None
    return _container_patch(before, {"name": container, "env": [new_entry]})


async def _nothing() -> None:
    """The write of a revert that finds nothing to write (already undone, or changed since)."""


def _env_restore(
    before: Mapping[str, Any], container: str, name: str, state: Mapping[str, Any], entry: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The patch putting one env var back as :func:`_env_state` recorded it: a value, a reference
    (``valueFrom``, the value removed), or no entry at all (``$patch: delete`` by its name)."""
    if "absent" in state:
        return _container_patch(before, {"name": container, "env": [{"name": name, "$patch": "delete"}]})
    if "valueFrom" in state:
        return _container_patch(before, {"name": container, "env": [
            {"name": name, "valueFrom": state["valueFrom"], "value": None}]})
    return _env_patch(before, container, name, str(state.get("value", "")), entry)


def _dry_run_replicas(ctx: StepContext) -> int | None:
    """The replica count the execution's latest earlier dry-run ``scale`` planned, if any (see _do_scale)."""
    for step, result in reversed(ctx.history):
        if step.action == "scale" and result.status == "planned" and "to" in result.details:
            return int(result.details["to"])
    return None


def _keep_healthy(step: PlannedStep, what: str, key: str, ready: int, left: int) -> None:
    """Refuse an action that would leave fewer ready replicas than ``min_healthy_replicas`` (Falco
    Talon's guard): taking capacity from a workload already short of it turns an alert into an outage."""
    floor = step.params.get("min_healthy_replicas")
    if floor is not None and left < int(floor):
        raise RefusedInput(
            f"{what} would leave {left} ready replica(s) of {key} ({ready} ready now), fewer than "
            f"min_healthy_replicas {floor}: refused, nothing changed",
            guard="min_healthy_replicas", ready=ready, left=left, min_healthy_replicas=floor,
        )


def _env_state(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """What an env var holds, as a write-ahead intent records it: a value, a reference, or nothing."""
    if entry is None:
        return {"absent": True}
    if entry.get("valueFrom") is not None:
        return {"valueFrom": entry["valueFrom"]}
    return {"value": str(entry.get("value") or "")}


def _pool_size(planned: Any) -> int | None:
    """The number a resize_pool intent's ``from`` held (None: unset or a reference): the intent records
    :func:`_env_state`; one recorded before it did holds the number itself, or None."""
    if isinstance(planned, Mapping):
        try:
            return int(str(planned["value"]).strip()) if "value" in planned else None
        except ValueError:
            return None
    return None if planned is None else int(planned)


def _still_planned_from(planned: Any, entry: Mapping[str, Any] | None, current: int | None) -> bool:
    """Whether an env var still holds what a resumed resize_pool was planned from (its intent's ``from``).

    An intent records the var's :func:`_env_state`, compared whole: a reference set or changed since
    is a change.  One recorded before it did (``from`` a number, or None for both unset and any
    reference) is read as strictly as it allows: None matches only a var with no reference, since
    which reference (if any) it was planned from is not known, and overwriting one is not undone."""
    if isinstance(planned, Mapping):
        return _env_state(entry) == dict(planned)
    if planned is None:
        return current is None and (entry is None or entry.get("valueFrom") is None)
    return current == int(planned)


Resources = dict[str, dict[str, str | None]]  # section (requests, limits) -> resource -> quantity text


def _quantity(text: Any, where: str) -> Quantity:
    try:
        return parse_quantity(text)
    except QuantityError as exc:
        raise PermanentError(f"{where}: {exc}") from None


def _same_resources(a: Resources, b: Resources) -> bool:
    """Equal as quantities (the apiserver stores ``1.5Gi`` as ``1536Mi``), unset only where unset."""
    for section in set(a) | set(b):
        x, y = a.get(section) or {}, b.get(section) or {}
        for resource in set(x) | set(y):
            p, q = x.get(resource), y.get(resource)
            if (p is None) != (q is None) or (p is not None and _quantity(p, resource) != _quantity(q, resource)):
                return False
    return True


def _new_quantity(resource: str, current: str | None, change: Mapping[str, Any], where: str) -> str | None:
    """One resource's new value: ``to``, or ``factor`` times the current one, within ``min`` and ``max``.

    Rounded to the resource's unit (a millicore, a byte) away from the current value, and
    never past ``max`` nor below ``min``.  A raise (``factor`` >= 1, or ``to`` at or above the current
    value) never lowers a value already above ``max``: ``max`` bounds what the step sets, it does not
    take away what someone else gave (as ``scale`` with ``max_replicas``); likewise a lowering never
    raises a value already below ``min``.  ``min`` is what keeps a ``to`` rendered from an alert (an
    annotation saying ``0.0001m`` of memory: one byte, which the apiserver accepts) from making the
    new pods unusable.
    """
    unit = UNITS[resource]
    ceiling = _quantity(change["max"], f"{where}.max").rounded_down(unit) if "max" in change else None
    floor = _quantity(change["min"], f"{where}.min").rounded_up(unit) if "min" in change else None
    now = _quantity(current, where) if current is not None else None
    if "to" in change:
        value, binary = _quantity(change["to"], f"{where}.to").rounded_up(unit), is_binary(change["to"])
    elif now is None:
        raise PermanentError(f"{where} is not set: only `to:` can set it")
    else:
        factor = change["factor"]
        raw = now.times(factor)
        value, binary = (raw.rounded_up(unit) if factor >= 1 else raw.rounded_down(unit)), is_binary(current)
    raising = now is not None and (change["factor"] >= 1 if "factor" in change else value >= now)
    if ceiling is not None and value > ceiling:
        value = ceiling
    if floor is not None and value < floor:
        value = floor
    if raising and now is not None and value < now:
        value = now
    if not raising and now is not None and value > now:  # a lowering never raises what is below min
        value = now
    if now is not None and value == now:
        return current  # unchanged: keep its spelling
    return format_quantity(value, resource, binary=binary)


def _resources_restore(held: Mapping[str, Any], origin: Resources) -> dict[str, Any]:
    """The ``resources`` patch putting back what a step found: an unset quantity is removed (``null``),
    and a section (requests, limits) left with nothing is removed whole, as the step found it."""
    patch: dict[str, Any] = {}
    for section, values in origin.items():
        left = {r for r, q in (held.get(section) or {}).items() if q is not None and values.get(r, q) is not None}
        patch[section] = dict(values) if left or any(v is not None for v in values.values()) else None
    return patch


def _requests_within_limits(held: Mapping[str, Any], desired: Resources, container: str) -> None:
    """A request above its limit is invalid (the apiserver answers 422); refuse it here, with both values."""
    final = {s: {**(held.get(s) or {}), **(desired.get(s) or {})} for s in ("requests", "limits")}
    for resource in RESOURCES:
        request, limit = final["requests"].get(resource), final["limits"].get(resource)
        if request is not None and limit is not None and _quantity(request, resource) > _quantity(limit, resource):
            raise PermanentError(
                f"requests.{resource} {request} would be above limits.{resource} {limit} in container "
                f"{container!r}: refused (a request may not exceed its limit; change both in the step)"
            )


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return str(exc.status)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "unreachable" if isinstance(exc, aiohttp.ClientError | OSError) else "other"


def _snapshot(obj: Mapping[str, Any] | None, *, redacted: bool = True) -> dict[str, Any] | None:
    """The parts of an object worth keeping in the audit (not managedFields or status noise).

    Redacted (:mod:`remediator.core.redact`): no env ``value`` and no last-applied-configuration.
    ``redacted=False`` only for :meth:`KubeExecutor._done`, which redacts a before/after pair
    together so that the value a step changed stays visible.
    """
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {
        "kind": obj.get("kind"),
        "metadata": {
            k: meta.get(k)
            for k in ("name", "namespace", "uid", "resourceVersion", "generation", "annotations")
            if meta.get(k) is not None
        },
    }
    if "spec" in obj:
        out["spec"] = obj["spec"]
    return redact.redact_snapshot(out) if redacted else out


#: A watch that ends sooner than this (seconds) with no event is a "very short watch" (client-go's reflector).
SHORT_WATCH = 1.0
#: The pause before watching again after very short watches in a row: the first (seconds) and the most.
WATCH_BACKOFF = (1.0, 10.0)


@dataclass
class _Waited:
    """What a wait_healthy has learnt so far: the latest verdict, and API failures since, for a timeout's message."""

    last: rollout.Health | None = None
    error: str | None = None  # the latest API failure since ``last`` was judged
    errors: int = 0
    short_watches: int = 0  # watches in a row that ended at once with no event

    def saw(self, health: rollout.Health) -> rollout.Health:
        self.last, self.error, self.errors = health, None, 0
        return health

    def failed(self, exc: BaseException) -> None:
        self.error, self.errors = str(exc), self.errors + 1

    def why(self) -> str:
        """`` (last seen: ...)``, and the API's failures if it has failed since: a wait that ran out while the
        API kept failing, or its watches kept ending at once, says so, rather than leaving the blame on what it
        saw before."""
        said = [f"last seen: {self.last.message}"] if self.last is not None else []
        if self.short_watches > 1:
            said.append(f"its watch ended at once with no event {self.short_watches} times in a row")
        if self.error is not None:
            times = "once" if self.errors == 1 else f"{self.errors} times in a row"
            said.append(f"{'then ' if said else ''}the Kubernetes API failed {times}, last: {self.error}")
        return f" ({'; '.join(said)})" if said else ""


class KubeExecutor:
    #: How long one watch of wait_healthy lasts at most (the apiserver's ``timeoutSeconds``) before it
    #: re-reads the workload and its pods, and watches again.
    watch_seconds = 60

    def __init__(
        self,
        api: client.ApiClient,
        clock: Clock,
        settings: KubernetesSettings,
        *,
        server_dry_run: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.api = api
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.clock = clock
        self.settings = settings
        self.server_dry_run = server_dry_run
        self.metrics = metrics or Metrics()
        self._log = structlog.get_logger("remediator.executor.kube")

    # -- plumbing -----------------------------------------------------------------

    def _kw(self, mutating: bool = False) -> dict[str, Any]:
        kw: dict[str, Any] = {"_request_timeout": self.settings.request_timeout}
        if mutating:
            kw["field_manager"] = FIELD_MANAGER
            if self.server_dry_run:
                kw["dry_run"] = "All"
        return kw

    def _dict(self, model: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.api.sanitize_for_serialization(model)
        return out

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """One API call, bounded by ``request_timeout`` on the executor's clock.

        The bound is kept on the injected clock (as well as by aiohttp's own socket timeout)
        so that a hung apiserver ends in a retry or a recorded failure on virtual time too.
        """
        try:
            answer = await within(self.clock, fn(*args, **kwargs), self.settings.request_timeout)
        except (PermanentError, TemporaryError):
            raise
        except Exception as exc:
            self.metrics.kube_errors.labels(_error_code(exc)).inc()
            raise classify(exc) from exc
        attempt = _ATTEMPT.get()
        if attempt is not None and attempt.unanswered:  # the write the intent announced: it succeeded
            attempt.unanswered, attempt.landed = False, True
        return answer

    def _wait(self, state: RetryCallState, failures: int) -> float:
        """Retry-After when the apiserver gave one; else a jittered exponential backoff (shorter for routine 409s)."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TemporaryError) and exc.delay is not None:
            return min(exc.delay, 60.0)
        base, cap = (0.05, 1.0) if _routine(exc) else (0.2, 10.0)
        return float(min(base * 2 ** (failures - 1), cap) * (0.5 + random.random() / 2))

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        handler = getattr(self, f"_do_{step.action}", None)
        if handler is None:
            return StepResult("failed", f"the Kubernetes executor cannot run {step.action!r}")
        errors: list[str] = []
        # What an attempt records before its write is handed to the next attempt when that
        # write's outcome is unknown (a timeout, a 5xx: it may have landed although its
        # answer was lost), so the retry re-applies the same absolute change rather than
        # adding ``by: 2`` again.  A write the apiserver refused (409, 429) certainly did not
        # land: unless an earlier write is still uncertain, the retry plans afresh from the
        # object as it is now, on top of whatever change caused the conflict.
        recorded: dict[str, Any] = {}
        wrote = False  # this attempt recorded an intent (and so sent, or was about to send, a write)
        uncertain = bool(_intent(ctx))  # a write from before a crash may still be landing
        # Whether a write of this step (this run's, or one before a crash) may have landed: a failed
        # step whose every write was refused changed nothing, and the pipeline runs on_failure (a
        # rollback, say) and feeds the breaker only for an execution that changed something.  A
        # write counts once it succeeded or its outcome is unknown (a timeout, a 5xx, a lost
        # connection), not merely once it was sent: a refusal (:func:`_refused`) certainly did not land.
        maybe_landed = uncertain
        attempt = _Attempt()

        async def record(intent: Mapping[str, Any]) -> None:
            nonlocal wrote
            wrote = attempt.unanswered = True
            recorded.clear()
            recorded.update(intent)
            await ctx.record_intent(intent)

        def landed(exc: BaseException | None) -> bool:
            """Whether a write of the attempt that ended with ``exc`` may have landed: one answered with
            success, or the one it ended on unless the apiserver refused it."""
            return attempt.landed or (wrote and not (attempt.unanswered and _refused(exc)))

        async def retrying_after(state: RetryCallState) -> None:
            nonlocal wrote, uncertain, maybe_landed
            exc = state.outcome.exception() if state.outcome else None
            if landed(exc):
                uncertain = maybe_landed = True
            if not uncertain and not isinstance(exc, Contended) and not recorded.get(_REFUSED):
                # (Once pinned by a conflict, the plan stays pinned through later retries: a retry that
                # waits for the controller to catch up (Lagging) planned afresh, and rolled back the
                # release that had caused the conflict.)
                recorded.clear()
                if wrote:  # nor may a resume after a crash during the backoff apply the refused value
                    await ctx.record_intent({})
            elif not uncertain and recorded:
                # Kept to pin the plan, though its write was refused and so never landed: the retry judges
                # it by value, as a generation moved by the change that caused the 409 says nothing of ours.
                recorded[_REFUSED] = True
            wrote = False
            attempt.unanswered = attempt.landed = False
            errors.append(str(exc))
            self.metrics.kube_retries.labels(step.action).inc()
            self._log.warning("Kubernetes API call failed; retrying", action=step.action, target=ctx.target.key,
                              execution_id=ctx.execution_id, attempt=state.attempt_number, error=str(exc),
                              retry_in=round(state.upcoming_sleep, 3))

        failures = {"routine": 0, "fault": 0}
        tallied: dict[int, str] = {}

        def tally(state: RetryCallState) -> str:
            """Count each failed attempt once, as routine or fault (tenacity asks wait and stop, in either order)."""
            if state.attempt_number not in tallied:
                exc = state.outcome.exception() if state.outcome else None
                tallied[state.attempt_number] = "routine" if _routine(exc) else "fault"
                failures[tallied[state.attempt_number]] += 1
            return tallied[state.attempt_number]

        def stop(state: RetryCallState) -> bool:
            """Faults and routine refusals each have their own bound (see ROUTINE_ATTEMPTS)."""
            tally(state)
            return failures["routine"] >= ROUTINE_ATTEMPTS or failures["fault"] >= max(1, self.settings.retries)

        retrying = AsyncRetrying(
            stop=stop,
            wait=lambda state: self._wait(state, failures[tally(state)]),
            retry=retry_if_exception_type(TemporaryError),
            sleep=self.clock.sleep,
            before_sleep=retrying_after,
            reraise=True,
        )
        token = _ATTEMPT.set(attempt)
        try:
            async for each in retrying:
                with each:
                    previous = StepResult("started", details={"intent": dict(recorded)}) if recorded else ctx.previous
                    result: StepResult = await handler(step, replace(ctx, previous=previous, record_intent=record))
            if errors:  # the audit shows what it took: "ok after 2 conflicts"
                result = replace(result, details={**result.details, "attempts": len(errors) + 1, "retried": errors})
            return _wrote(result, maybe_landed or wrote)
        except (PermanentError, TemporaryError) as exc:
            # The last attempt's outcome, which before_sleep (retrying_after) never sees.
            if landed(exc):
                maybe_landed = True
            elif not uncertain:
                recorded.clear()  # its write was refused: the failed step keeps no intent of a value never set
            return self._failed(step, ctx, exc, maybe_landed, recorded or _intent(ctx), errors,
                                retrying.statistics.get("attempt_number", 1))
        finally:
            _ATTEMPT.reset(token)

    def _failed(
        self, step: PlannedStep, ctx: StepContext, exc: PermanentError | TemporaryError, landed: bool,
        intent: Mapping[str, Any], errors: list[str], attempts: int,
    ) -> StepResult:
        """The result of a step that did not succeed; ``landed``: a write of it may have landed."""
        if isinstance(exc, Superseded):
            return StepResult(
                "superseded", f"{step.action} on {ctx.target.key}: {exc}", details={**exc.values, "wrote": landed}
            )
        if isinstance(exc, RefusedInput):
            return _wrote(StepResult(
                "failed", f"{step.action} on {ctx.target.key}: {exc}", details={**exc.values, "refused_input": True}
            ), landed, intent)
        if isinstance(exc, PermanentError):
            return _wrote(StepResult("failed", f"{step.action} on {ctx.target.key}: {exc}"), landed, intent)
        return _wrote(StepResult(
            "failed", f"{step.action} on {ctx.target.key}: {exc} (gave up after {attempts} attempts)",
            details={"attempts": attempts, "retried": errors},
        ), landed, intent)

    def _done(
        self, message: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, **details: Any
    ) -> StepResult:
        b, a = redact.snapshot_pair(_snapshot(before, redacted=False), _snapshot(after, redacted=False))
        status: Any = "planned" if self.server_dry_run else "ok"
        prefix = "dry-run (server-side): would have " if self.server_dry_run else ""
        # The target's uid (not a deleted pod's): undo reverts a step only on the object it changed.
        uid = None if (before or after or {}).get("kind") == "Pod" else _uid(after) or _uid(before)
        return StepResult(status, prefix + message, b, a, {
            **details, **({"uid": uid} if uid else {}), "diff": rollout.diff(b, a), "server_side": self.server_dry_run})

    async def _read(self, ctx: StepContext) -> dict[str, Any]:
        t = ctx.target
        fn = self.apps.read_namespaced_deployment if t.kind == "Deployment" else self.apps.read_namespaced_stateful_set
        return self._dict(await self._call(fn, t.name, t.namespace, **self._kw()))

    async def _patch(self, ctx: StepContext, body: Any, **extra: Any) -> dict[str, Any]:
        t = ctx.target
        fn = (
            self.apps.patch_namespaced_deployment if t.kind == "Deployment" else self.apps.patch_namespaced_stateful_set
        )
        return self._dict(await self._call(fn, t.name, t.namespace, body, **self._kw(True), **extra))

    # -- actions ------------------------------------------------------------------

    async def _do_restart(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        before = await self._read(ctx)
        if ctx.target.kind == "Deployment" and (before.get("spec") or {}).get("paused"):
            raise PermanentError("can't restart paused deployment (run rollout resume first)")
        partition, kept = _restart_reach(before) if ctx.target.kind == "StatefulSet" else (0, "")
        note, partial = (f"; {kept}", {"partition": partition}) if partition else ("", {})
        intent = _intent(ctx)
        stamp = intent.get("restartedAt") or ctx.clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        current = ((before["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
        if current == stamp:
            return self._done(f"restart at {stamp} was already applied{note}", before, before, restartedAt=stamp,
                              **partial)
        if intent and "from" in intent and current != intent["from"]:
            raise Superseded(
                f"{ctx.target.key} was restarted again since (restartedAt {current}): not restarting it once more",
                **{"from": intent["from"], "to": stamp, "current": current},
            )
        await ctx.record_intent({"restartedAt": stamp, "from": current})
        # With the resourceVersion read, as every other write (kubectl sends none): the checks above (a pause,
        # a StatefulSet's strategy) hold for that version only, so a change since is a 409, read and judged again.
        body = {"metadata": {"resourceVersion": before["metadata"]["resourceVersion"]},
                "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        after = await self._patch(ctx, body)
        return self._done(f"restarted {ctx.target.key} (restartedAt {stamp}){note}", before, after, restartedAt=stamp,
                          **partial)

    async def _autoscaler_of(self, ctx: StepContext) -> dict[str, Any] | None:
        """The HorizontalPodAutoscaler that scales the target, if any (None where the API is not served)."""
        t = ctx.target
        try:
            found = await self._call(
                self.autoscaling.list_namespaced_horizontal_pod_autoscaler, t.namespace, **self._kw()
            )
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        for item in found.items:
            hpa = self._dict(item)
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == t.kind and ref.get("name") == t.name:
                return hpa
        return None

    async def _do_scale(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        t = ctx.target
        hpa = await self._autoscaler_of(ctx)
        if hpa is not None:
            spec = hpa["spec"]
            raise PermanentError(
                f"{t.key} is scaled by HorizontalPodAutoscaler {hpa['metadata']['name']} "
                f"(minReplicas {spec.get('minReplicas', 1)}, maxReplicas {spec.get('maxReplicas')}): a manual scale "
                "would be undone at its next sync; change the autoscaler's bounds instead"
            )
        if t.kind == "Deployment":
            read, replace = self.apps.read_namespaced_deployment_scale, self.apps.replace_namespaced_deployment_scale
        else:
            read, replace = (
                self.apps.read_namespaced_stateful_set_scale,
                self.apps.replace_namespaced_stateful_set_scale,
            )
        scale = self._dict(await self._call(read, t.name, t.namespace, **self._kw()))
        # The workload itself, for its generation (the Scale carries none).  Read after the Scale: if anything
        # wrote the workload in between, the write (with the Scale's resourceVersion) is refused, a 409.
        obj = await self._read(ctx)
        generation = _generation(obj)
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        # The count this step acts on: the cluster's, except in a server-side dry-run after an earlier
        # dry-run scale of this execution, which would have set a count that is not in the cluster
        # (dry-run changes nothing): the live run would act on that one.
        after_earlier = _dry_run_replicas(ctx) if self.server_dry_run else None
        acts_on = current if after_earlier is None else after_earlier
        intent = _intent(ctx)
        if "replicas" in intent:
            desired = int(intent["replicas"])
            origin = int(intent.get("from", current))
            values = {"from": origin, "to": desired, "current": current}
            if current not in (origin, desired):
                raise Superseded(
                    f"{t.key} has {current} replicas, changed since this step planned {origin} -> {desired}: "
                    "not re-applied (that would revert the later change)",
                    **values,
                )
            if current != desired:
                _unless_spec_unchanged(intent, generation, f"{t.key} has {current} replicas, as this step planned "
                                       f"{origin} -> {desired} from", values)
        else:
            desired = desired_amount(acts_on, step.params, ceiling=step.params.get("max_replicas"))
            origin = acts_on
        if desired == acts_on:
            return self._done(
                f"{t.key} already has {desired} replicas", scale, scale, **{"from": origin, "to": desired}
            )
        if desired < acts_on and step.params.get("min_healthy_replicas") is not None:
            # Counted from the pods, as for delete_pod (the status lags a delete); which of them a
            # scale down keeps depends on the kind (rollout.serving_after_scale_down).
            up = await self._serving(ctx, obj)
            _keep_healthy(step, f"scaling from {acts_on} to {desired}", t.key, min(len(up), acts_on),
                          rollout.serving_after_scale_down(t.kind, obj, up, desired))
        await ctx.record_intent({"replicas": desired, "from": origin, "generation": generation, "uid": _uid(scale)})
        body = {**scale, "spec": {"replicas": desired}}
        after = self._dict(await self._call(replace, t.name, t.namespace, body, **self._kw(True)))
        step_from = f"{origin}" if after_earlier is None else f"{origin} (as this execution's steps before leave it)"
        return self._done(
            f"scaled {t.key} from {step_from} to {desired} replicas", scale, after, **{"from": origin, "to": desired}
        )

    async def _do_resize_pool(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        name, env_name = step.params["container"], step.params["env"]
        before = await self._read(ctx)
        container = _container_of(before, name, ctx.target.key)
        entry = _env_entry(container, env_name)
        intent = _intent(ctx)
        current: int | None = None
        if entry is not None and entry.get("value") is not None:
            try:
                current = int(str(entry["value"]).strip())
            except ValueError:
                raise PermanentError(  # its value stays out of the audit: it may be a secret
                    f"env {env_name} in container {name!r} does not hold a whole number"
                ) from None
            if current < 0 and "value" not in intent:
                # Not a size: -1 is "unlimited" to many pools, and "growing" it by any rule gave 0 or 9.
                raise PermanentError(f"env {env_name} in container {name!r} is {current}, not a pool size "
                                     "(a negative value often means unlimited): nothing is changed")
        if "value" in intent:
            desired, planned = int(intent["value"]), intent.get("from")
            origin = _pool_size(planned)
            now = current if current is not None else ("a reference (valueFrom)" if entry is not None else "unset")
            values = {"from": origin, "to": desired, "current": current}
            if current != desired and not _still_planned_from(planned, entry, current):
                raise Superseded(
                    f"{env_name} in container {name} is {now}, changed since this step planned "
                    f"{origin} -> {desired}: not re-applied (that would revert the later change)",
                    **values,
                )
            if current != desired:
                _unless_spec_unchanged(intent, _generation(before), f"{env_name} in container {name} is {now}, as "
                                       f"this step planned {origin} -> {desired} from", values)
        else:
            if current is None and "to" not in step.params:
                why = "comes from valueFrom" if entry is not None else "is not set"
                raise PermanentError(f"env {env_name} in container {name!r} {why}: only `to:` can set it")
            desired = desired_amount(current or 0, step.params)
            origin = current
            # The whole state, not the number: unset and a valueFrom reference (any reference) are both
            # "no number", and a resume must tell them apart, or it overwrites a reference set since.
            planned = _env_state(entry)
        if current == desired:
            return self._done(f"{env_name} is already {desired}", before, before, **{"from": origin, "to": desired})
        await ctx.record_intent({"value": desired, "from": planned, "generation": _generation(before),
                                 "uid": _uid(before)})
        after = await self._patch(ctx, _env_patch(before, name, env_name, str(desired), entry))
        return self._done(
            f"set {env_name} from {origin} to {desired} in container {name}",
            before,
            after,
            **{"from": origin, "to": desired},
        )

    async def _do_set_image(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        """kubectl set image, for one container: its image to a tag or digest the playbook rendered."""
        name, image = step.params["container"], step.params["image"]
        key = ctx.target.key
        before = await self._read(ctx)
        current = _container_of(before, name, key).get("image")
        intent = _intent(ctx)
        if "image" in intent:
            desired, origin = intent["image"], intent.get("from")
            values = {"from": origin, "to": desired, "current": current}
            if current not in (origin, desired):
                raise Superseded(
                    f"container {name} runs {current}, changed since this step planned {origin} -> {desired}: "
                    "not re-applied (that would revert the later change)",
                    **values,
                )
            if current != desired:
                _unless_spec_unchanged(intent, _generation(before), f"container {name} runs {current}, as this "
                                       f"step planned {origin} -> {desired} from", values)
        else:
            desired, origin = image, current
            pattern = step.params.get("only_if_current")
            if pattern is not None and not compile_re2(pattern).fullmatch(current or ""):
                raise RefusedInput(
                    f"container {name} runs {current}, which does not match only_if_current {pattern!r}: "
                    f"not setting it to {desired}",
                    current=current, only_if_current=pattern,
                )
        if current == desired:
            return self._done(f"container {name} already runs {desired}", before, before,
                              **{"from": origin, "to": desired})
        await ctx.record_intent({"image": desired, "from": origin, "generation": _generation(before),
                                 "uid": _uid(before)})
        after = await self._patch(ctx, _container_patch(before, {"name": name, "image": desired}))
        return self._done(f"set the image of container {name} from {origin} to {desired}", before, after,
                          **{"from": origin, "to": desired})

    async def _do_set_env(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        """One env var of one container to a string (``kubectl set env``); a reference is replaced."""
        name, env_name, value = step.params["container"], step.params["name"], step.params["value"]
        before = await self._read(ctx)
        container = _container_of(before, name, ctx.target.key)
        entry = _env_entry(container, env_name)
        current = _env_state(entry)
        intent = _intent(ctx)
        if "value" in intent:
            desired, origin = str(intent["value"]), intent.get("from")
            values = {"from": origin, "to": {"value": desired}, "current": current}
            if current not in (origin, {"value": desired}):
                raise Superseded(
                    f"{env_name} in container {name} was changed since this step planned to set it: "
                    "not re-applied (that would revert the later change)",
                    **values,
                )
            if current != {"value": desired}:  # its value stays out of the message: it may be a secret
                _unless_spec_unchanged(intent, _generation(before), f"{env_name} in container {name} holds what "
                                       "this step planned to change", values)
        else:
            desired, origin = str(value), current
        if current == {"value": desired}:
            return self._done(f"{env_name} in container {name} already holds the value", before, before,
                              **{"from": origin, "to": {"value": desired}})
        await ctx.record_intent({"value": desired, "from": origin, "generation": _generation(before),
                                 "uid": _uid(before)})
        after = await self._patch(ctx, _env_patch(before, name, env_name, desired, entry))
        was = "unset" if "absent" in (origin or {}) else ("a reference" if "valueFrom" in (origin or {}) else "a value")
        return self._done(f"set {env_name} in container {name} (was {was})", before, after,
                          **{"from": origin, "to": {"value": desired}})

    async def _do_set_resources(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        """Requests and limits of one container: each resource ``to`` a quantity or ``factor`` times
        its value, within its ``max``; refused when a request would end above its limit."""
        name = step.params["container"]
        before = await self._read(ctx)
        held = _container_of(before, name, ctx.target.key).get("resources") or {}
        intent = _intent(ctx)
        changes: dict[str, Mapping[str, Any]] = {
            s: step.params[s] for s in ("requests", "limits") if step.params.get(s)
        }
        desired: Resources
        if "resources" in intent:
            desired, origin = intent["resources"], intent.get("from") or {}
        else:
            desired = {
                s: {r: _new_quantity(r, (held.get(s) or {}).get(r), change, f"{s}.{r} of container {name!r}")
                    for r, change in rs.items()}
                for s, rs in changes.items()
            }
        current: Resources = {s: {r: (held.get(s) or {}).get(r) for r in rs} for s, rs in desired.items()}
        if "resources" in intent:
            values = {"from": origin, "to": desired, "current": current}
            if not (_same_resources(current, origin) or _same_resources(current, desired)):
                raise Superseded(
                    f"the resources of container {name} are {current}, changed since this step planned "
                    f"{origin} -> {desired}: not re-applied (that would revert the later change)",
                    **values,
                )
            if not _same_resources(current, desired):
                _unless_spec_unchanged(intent, _generation(before), f"the resources of container {name} are "
                                       f"{current}, as this step planned {origin} -> {desired} from", values)
        else:
            origin = current
            _requests_within_limits(held, desired, name)
        if _same_resources(current, desired):
            return self._done(f"the resources of container {name} are already {desired}", before, before,
                              **{"from": origin, "to": desired})
        await ctx.record_intent({"resources": desired, "from": origin, "generation": _generation(before),
                                 "uid": _uid(before)})
        patch = {
            s: {r: v for r, v in rs.items() if not _same_resources({s: {r: current[s][r]}}, {s: {r: v}})}
            for s, rs in desired.items()
        }
        after = await self._patch(ctx, _container_patch(before, {"name": name, "resources": patch}))
        changed = ", ".join(
            f"{s}.{r} {current[s][r] or 'unset'} -> {v}" for s, rs in patch.items() for r, v in rs.items()
        )
        return self._done(f"set {changed} in container {name}", before, after, **{"from": origin, "to": desired})

    async def _do_rollback(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        """kubectl rollout undo, pinned once chosen.

        "The previous revision" moves once a rollback lands (the reused ReplicaSet becomes
        the newest), so a retry or a resumed step must not choose again: the first attempt
        records which ReplicaSet / ControllerRevision it rolls back to, by name.
        """
        t = ctx.target
        before = await self._read(ctx)
        to_revision = int(step.params.get("to_revision", 0))
        intent = _intent(ctx)
        selector = rollout.selector_text(before)
        try:
            if t.kind == "Deployment":
                rs_list = await self._call(
                    self.apps.list_namespaced_replica_set, t.namespace, label_selector=selector, **self._kw()
                )
                replicasets = [self._dict(rs) for rs in rs_list.items]
                _caught_up(t.kind, t.key, rollout.deployment_history_lag(before, replicasets))
                if intent.get("replicaset"):
                    to_revision = _revision_named(replicasets, intent["replicaset"], rollout.revision_of)
                plan = rollout.plan_deployment_rollback(before, replicasets, to_revision)
                if plan.patch is None and intent:
                    message = f"rolled back to revision {intent['revision']} (already applied)"
                    return self._done(message, before, before, revision=intent["revision"],
                                      **_template_change(intent.get("from"), before))
                if plan.patch is None:
                    return StepResult(
                        "skipped", plan.message, _snapshot(before), _snapshot(before), {"revision": plan.revision}
                    )
                current = rollout.template_digest(before["spec"].get("template"))
                if intent:
                    _unless_unchanged(t.key, intent, current, _generation(before))
                await ctx.record_intent({**(_pinned(intent) or {
                    "replicaset": plan.replicaset, "revision": plan.revision, "from": current}),
                    "generation": _generation(before), "uid": _uid(before)})
                # With the resourceVersion read, as every other write: a release landing between the read and
                # the write is a 409, and the retry re-checks the template against the intent's (superseded).
                version = {"op": "replace", "path": "/metadata/resourceVersion",
                           "value": before["metadata"]["resourceVersion"]}
                after = await self._pinned_write(ctx, [*plan.patch, version])
                revision = intent.get("revision", plan.revision)
                return self._done(f"rolled back to revision {revision}", before, after, revision=revision,
                                  **_template_change(intent.get("from") if intent else current, after))
            revs = await self._call(
                self.apps.list_namespaced_controller_revision, t.namespace, label_selector=selector, **self._kw()
            )
            revisions = [self._dict(r) for r in revs.items]
            _caught_up(t.kind, t.key, rollout.statefulset_history_lag(before, revisions))
            if intent.get("controllerrevision"):
                to_revision = _revision_named(revisions, intent["controllerrevision"], lambda r: int(r["revision"]))
            revision, data, name = rollout.plan_statefulset_rollback(before, revisions, to_revision)
            current = rollout.template_digest(before["spec"].get("template"))
            if intent:
                wanted = _revision_digest(data)
                if current == wanted and "from" in intent:
                    message = f"rolled back to revision {intent['revision']} (already applied)"
                    return self._done(message, before, before, revision=intent["revision"],
                                      **_template_change(intent.get("from"), before))
                _unless_unchanged(t.key, intent, current, _generation(before))
            await ctx.record_intent({**(_pinned(intent) or {
                "controllerrevision": name, "revision": revision, "from": current}), "generation": _generation(before),
                "uid": _uid(before)})
            # the revision's own data (applying it twice changes nothing), with the resourceVersion read
            body = {**data, "metadata": {**(data.get("metadata") or {}),
                                         "resourceVersion": before["metadata"]["resourceVersion"]}}
            after = await self._pinned_write(ctx, body)
            revision = intent.get("revision", revision)
            return self._done(f"rolled back to revision {revision}", before, after, revision=revision,
                              **_template_change(intent.get("from") if intent else current, after))
        except rollout.RollbackError as exc:
            raise PermanentError(str(exc)) from None

    async def _pinned_write(self, ctx: StepContext, body: Any) -> dict[str, Any]:
        """A rollback's write: refused, it is retried with its intent kept (:class:`Contended`)."""
        try:
            return await self._patch(ctx, body)
        except Rejected as exc:
            raise _contended(exc) from exc

    async def _do_delete_pod(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        t = ctx.target
        pod_name = step.params["pod"]
        owner = await self._read(ctx)
        intent = _intent(ctx)
        try:
            pod = self._dict(await self._call(self.core.read_namespaced_pod, pod_name, t.namespace, **self._kw()))
        except PermanentError as exc:
            if intent.get("uid") and exc.status == 404:
                return self._done(f"pod {pod_name} was already deleted", None, None, pod=pod_name)
            if exc.status == 404:  # the alert named a pod that is not there
                raise RefusedInput(f"pod {pod_name} not found in namespace {t.namespace}") from None
            raise
        if not await self._owns(ctx, owner, pod):
            raise RefusedInput(f"pod {pod_name} does not belong to {t.key}: refusing to delete it, nothing changed")
        uid = pod["metadata"]["uid"]
        if intent.get("uid") and intent["uid"] != uid:
            return self._done(f"pod {pod_name} was already deleted (now a new pod)", pod, None, pod=pod_name)
        if pod["metadata"].get("deletionTimestamp"):
            # Terminating: a delete (ours before a crash, or someone else's) is under way and its
            # grace period running.  Deleting again would change nothing but the audit's story.
            mine = intent.get("uid") == uid
            message = f"deleted pod {pod_name} (terminating)" if mine else f"pod {pod_name} is already terminating"
            return self._done(message, pod, pod, pod=pod_name, terminating=True)
        if step.params.get("min_healthy_replicas") is not None:
            # Counted from the pods, not from the owner's readyReplicas: a StatefulSet's counts a
            # Terminating pod as ready, and either kind's still counts a pod deleted a moment ago
            # (by the step before, for another alert) until its controller has seen the delete.
            up = await self._serving(ctx, owner)
            ready = len(up)
            _keep_healthy(step, f"deleting pod {pod_name}", t.key, ready,
                          ready - sum(1 for p in up if p["metadata"]["uid"] == uid))
        await ctx.record_intent({"uid": uid})
        # The apiserver takes DeleteOptions from the body when there is one, and then ignores
        # the query's dryRun (and gracePeriodSeconds, propagationPolicy): dryRun must be in
        # the body, or a "dry run" deletes the pod.  The query keeps it too; it is harmless.
        options = client.V1DeleteOptions(
            dry_run=["All"] if self.server_dry_run else None, preconditions=client.V1Preconditions(uid=uid)
        )
        kw = self._kw(True)
        kw.pop("field_manager")
        try:
            result = await self._call(self.core.delete_namespaced_pod, pod_name, t.namespace, body=options, **kw)
        except (Rejected, PermanentError) as exc:
            # 409: the uid precondition failed, 404: it is gone. Either way the pod we meant no longer
            # exists (someone else deleted it, and its controller may have made a new one of that name).
            if exc.status in (404, 409):
                return self._done(f"pod {pod_name} was already deleted (by someone else)", pod, None, pod=pod_name)
            raise
        return self._done(
            f"deleted pod {pod_name}", pod, self._dict(result) if self.server_dry_run else None, pod=pod_name
        )

    async def _do_undo(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        """Revert exactly what this execution's earlier steps changed, newest first.

        Each mutating step that wrote recorded the value it planned from and the value it set
        (``from``/``to``).  A step is reverted only while the object still holds the value it
        set; if it holds the earlier value the step is already undone, and anything else is a
        later change (someone else's): it is recorded "changed since; not undone" and left
        alone, and the undo fails so that it shows and notifies.  Every revert carries the
        resourceVersion it read, and is preceded by a write-ahead intent naming the steps
        already reverted and the one being reverted, so a retry or a resume after a crash
        neither reverts a step twice nor mistakes its own earlier revert for a later change.
        """
        intent = _intent(ctx)
        reverted: list[list[Any]] = [list(k) for k in intent.get("undone", [])]
        earlier = {
            tuple(k) for _, r in ctx.history for k in r.details.get("undone", []) if r.status in ("ok", "failed")
        }
        entries: list[dict[str, Any]] = []
        for planned, result in reversed(ctx.history):
            key = [planned.phase, planned.index]
            if planned.action not in _UNDOABLE or tuple(key) in earlier:
                continue
            wrote = bool(result.details.get("wrote"))
            if not wrote or result.status not in ("ok", "failed"):
                continue  # it sent nothing (already in place, failed before writing), or only planned (dry run)
            entry: dict[str, Any] = {"phase": planned.phase, "index": planned.index, "action": planned.action}
            if key in reverted:
                entries.append({**entry, "outcome": "undone", "note": "before an interruption"})
                continue
            note: dict[str, Any] = {}
            if result.status != "ok" and planned.action in _INTENT_SETS:
                # it failed after sending a write, which may have landed: its intent says what it set
                values = _set_by_intent(planned.action, result.details.get("intent"))
                if values is None:
                    entries.append({**entry, "outcome": _NOT_UNDONE_FAILED, "reason": (
                        "the step failed after sending a write, and its intent does not record the value it "
                        "may have set: check the target by hand")})
                    continue
                result = replace(result, details={**result.details, **values})
                note = {"note": "the step failed after sending its write"}
            elif result.status != "ok" and planned.action == "rollback":
                intent = result.details.get("intent") or {}
                to = intent.get("replicaset") or intent.get("controllerrevision")
                if not intent.get("from") or not to:
                    entries.append({**entry, "outcome": _NOT_UNDONE_FAILED, "reason": (
                        "the rollback failed after sending its write, and its intent does not record the pod "
                        "template it found: check the target by hand")})
                    continue
                result = replace(result, details={**result.details, "template_from": intent["from"],
                                                  "rolled_back_to": to,
                                                  **({"uid": intent["uid"]} if intent.get("uid") else {})})
                note = {"note": "the step failed after sending its write"}

            async def before_write(key: list[Any] = key) -> None:
                await ctx.record_intent({"undone": list(reverted), "undoing": key})

            outcome = {**note, **await self._undo_one(planned, result, ctx, before_write)}
            if outcome.get("outcome") in ("undone", "already undone"):
                reverted.append(key)
            entries.append({**entry, **outcome})
        failed = [e for e in entries if e["outcome"] in _FAILED_OUTCOMES]
        done = [e for e in entries if e["outcome"] == "undone"]
        details: dict[str, Any] = {"undone": reverted, "steps": entries, "server_side": self.server_dry_run}
        if not entries:
            return StepResult("planned" if self.server_dry_run else "ok",
                              "nothing to undo: no earlier step of this execution changed anything", details=details)
        summary = "; ".join(_undo_line(e) for e in entries)
        if failed:
            return StepResult("failed", f"undo on {ctx.target.key}: {len(failed)} step(s) not undone: {summary}",
                              details=details)
        prefix = "dry-run (server-side): would have " if self.server_dry_run else ""
        return StepResult("planned" if self.server_dry_run else "ok",
                          f"{prefix}undone {len(done)} step(s), newest first: {summary}", details=details)

    async def _undo_one(
        self, planned: PlannedStep, result: StepResult, ctx: StepContext, before_write: Callable[[], Awaitable[None]]
    ) -> dict[str, Any]:
        """One step's revert: its outcome for the audit (``undone``, ``already undone``, or why not)."""
        action, d, p, t = planned.action, result.details, planned.params, ctx.target
        if action == "delete_pod":
            return {"outcome": "cannot be undone", "reason": f"pod {d.get('pod') or p.get('pod')} was deleted; "
                    "its controller replaces it, and a deleted pod cannot be brought back"}
        if action == "restart":
            return {"outcome": "not reverted", "reason": "a restart replaced the pods; putting the previous "
                    "restartedAt back would only replace them all once more (there are no old pods to bring back)"}
        if action == "rollback":
            return await self._undo_rollback(d, ctx, before_write)
        if "from" not in d or "to" not in d:
            return {"outcome": _NOT_UNDONE_FAILED, "reason": "the step's result records no from/to values"}
        origin, set_to = d["from"], d["to"]
        try:
            if action == "scale":
                read, put = (
                    (self.apps.read_namespaced_deployment_scale, self.apps.replace_namespaced_deployment_scale)
                    if t.kind == "Deployment"
                    else (self.apps.read_namespaced_stateful_set_scale, self.apps.replace_namespaced_stateful_set_scale)
                )
                scale = self._dict(await self._call(read, t.name, t.namespace, **self._kw()))
                current: Any = int((scale.get("spec") or {}).get("replicas") or 0)
                values = {"from": origin, "to": set_to, "current": current}
                if (other := _recreated(d, scale, t.key)) is not None:
                    return {**other, **values}
                if current == set_to != origin and (hpa := await self._autoscaler_of(ctx)) is not None:
                    # As a fresh scale is refused: the autoscaler owns the count now, and would undo the revert
                    # at its next sync (or the revert would fight it, below its minReplicas).
                    return {"outcome": _NOT_UNDONE_FAILED, **values, "reason": (
                        f"{t.key} is scaled by HorizontalPodAutoscaler {hpa['metadata']['name']} since (minReplicas "
                        f"{hpa['spec'].get('minReplicas', 1)}, maxReplicas {hpa['spec'].get('maxReplicas')}): the "
                        "count is the autoscaler's; change its bounds instead")}

                async def write() -> None:  # the Scale read carries its resourceVersion: a change since is a 409
                    body = {**scale, "spec": {"replicas": int(origin)}}
                    await self._call(put, t.name, t.namespace, body, **self._kw(True))

                return await self._revert(current, origin, set_to, before_write, write, operator.eq)
            obj = await self._read(ctx)
            if (other := _recreated(d, obj, t.key)) is not None:
                return {**other, "from": origin, "to": set_to}
            container = _container_of(obj, p["container"], t.key)
            body: dict[str, Any]
            if action == "set_image":
                current = container.get("image")
                body = _container_patch(obj, {"name": p["container"], "image": origin})
            elif action == "set_resources":
                held = container.get("resources") or {}
                current = {s: {r: (held.get(s) or {}).get(r) for r in rs} for s, rs in set_to.items()}
                body = _container_patch(obj, {"name": p["container"], "resources": _resources_restore(held, origin)})
                return await self._revert(current, origin, set_to, before_write, lambda: self._patch(ctx, body),
                                          _same_resources)
            else:  # resize_pool, set_env: one env var
                env_name = p["env"] if action == "resize_pool" else p["name"]
                entry = _env_entry(container, env_name)
                current = _env_state(entry)
                if action == "resize_pool":
                    if isinstance(origin, Mapping):  # a failed step's intent: the state it found, exactly
                        origin, set_to = dict(origin), {"value": str(set_to)}
                    elif origin is None:
                        return {"outcome": _NOT_UNDONE_FAILED, "reason": f"{env_name} held no number before "
                                "(unset or a reference), which resize_pool does not record exactly"}
                    else:
                        origin, set_to = {"value": str(origin)}, {"value": str(set_to)}
                body = _env_restore(obj, p["container"], env_name, origin, entry)
        except RefusedInput as exc:  # the container is gone: that is a change since, not this undo's input
            return {"outcome": _CHANGED, "reason": str(exc), "from": origin, "to": set_to}
        except DefinedTwice as exc:  # which definition the step changed, and which one counts, are not known
            return {"outcome": _NOT_UNDONE_FAILED, "reason": str(exc), "from": origin, "to": set_to}
        return await self._revert(current, origin, set_to, before_write, lambda: self._patch(ctx, body), operator.eq)

    async def _undo_rollback(
        self, d: Mapping[str, Any], ctx: StepContext, before_write: Callable[[], Awaitable[None]]
    ) -> dict[str, Any]:
        """A rollback is undone by rolling forward to the revision that holds the pod template it found
        (by its digest: revision numbers move with every rollback), while the workload still runs the
        template the rollback set.  The write carries the resourceVersion read."""
        origin, set_to = d.get("template_from"), d.get("template_to")
        t = ctx.target
        failed = origin and not set_to and d.get("rolled_back_to")  # it failed after sending its write
        if not failed and (not origin or not set_to):
            return {"outcome": _NOT_UNDONE_FAILED, "reason": "the rollback recorded no pod template digests "
                    "(it ran before undo existed): roll forward by hand or with set_image"}
        obj = await self._read(ctx)
        current = rollout.template_digest(obj["spec"].get("template"))
        if (other := _recreated(d, obj, t.key)) is not None:
            return {**other, "from": origin, "to": set_to, "current": current}
        if failed:
            set_to = await self._revision_template(ctx, obj, str(d["rolled_back_to"]))
            if set_to is None:
                return {"outcome": _NOT_UNDONE_FAILED, "reason": f"{d['rolled_back_to']}, the revision the failed "
                        "rollback was rolling back to, no longer exists: check the target by hand"}
        if current != set_to or current == origin:
            return await self._revert(current, origin, set_to, before_write, _nothing, operator.eq)
        selector = rollout.selector_text(obj)
        uid = obj["metadata"]["uid"]
        version = obj["metadata"]["resourceVersion"]
        body: Any = None
        if t.kind == "Deployment":
            found = await self._call(
                self.apps.list_namespaced_replica_set, t.namespace, label_selector=selector, **self._kw()
            )
            replicasets = [self._dict(rs) for rs in found.items]
            held = [rs for rs in replicasets if rollout.owned_by(rs, uid)
                    and rollout.template_digest(rs["spec"].get("template")) == origin]
            if held:
                try:
                    plan = rollout.plan_deployment_rollback(obj, replicasets, rollout.revision_of(held[0]))
                except rollout.RollbackError as exc:
                    return {"outcome": _NOT_UNDONE_FAILED, "reason": str(exc)}
                if plan.patch is not None:
                    body = [*plan.patch, {"op": "replace", "path": "/metadata/resourceVersion", "value": version}]
        else:
            found = await self._call(
                self.apps.list_namespaced_controller_revision, t.namespace, label_selector=selector, **self._kw()
            )
            data = next((r.get("data") or {} for r in map(self._dict, found.items) if rollout.owned_by(r, uid)
                         and _revision_digest(r.get("data") or {}) == origin), None)
            if data is not None:
                body = {**data, "metadata": {"resourceVersion": version}}
        if body is None:
            return {"outcome": _NOT_UNDONE_FAILED, "from": origin, "to": set_to, "current": current,
                    "reason": "no revision in the workload's history holds the pod template the rollback found "
                    "any more (revisionHistoryLimit): roll forward by hand or with set_image"}
        return await self._revert(current, origin, set_to, before_write, lambda: self._patch(ctx, body), operator.eq)

    async def _revision_template(self, ctx: StepContext, obj: Mapping[str, Any], name: str) -> str | None:
        """The digest of the pod template the named ReplicaSet or ControllerRevision of the target holds
        (None when it is gone): what a rollback to it set."""
        t = ctx.target
        selector = rollout.selector_text(obj)
        if t.kind == "Deployment":
            found = await self._call(
                self.apps.list_namespaced_replica_set, t.namespace, label_selector=selector, **self._kw())
            return next((rollout.template_digest(rs["spec"].get("template")) for rs in map(self._dict, found.items)
                         if rs["metadata"]["name"] == name), None)
        found = await self._call(
            self.apps.list_namespaced_controller_revision, t.namespace, label_selector=selector, **self._kw())
        return next((_revision_digest(r.get("data") or {}) for r in map(self._dict, found.items)
                     if r["metadata"]["name"] == name), None)

    async def _revert(
        self, current: Any, origin: Any, set_to: Any, before_write: Callable[[], Awaitable[None]],
        write: Callable[[], Awaitable[Any]], same: Callable[[Any, Any], bool],
    ) -> dict[str, Any]:
        values = {"from": origin, "to": set_to, "current": current}
        if same(current, set_to) and not same(current, origin):
            await before_write()
            try:
                await write()
            except Rejected as exc:
                # Changed between the read and the write (409), or throttled (429): retried so that the
                # intent naming the steps reverted so far is kept (a refused write's intent is otherwise
                # dropped), and the retry re-reads and re-checks from it.
                raise _contended(exc) from exc
            return {"outcome": "undone", **values}
        if same(current, origin):
            return {"outcome": "already undone", **values}
        return {"outcome": _CHANGED, **values}

    async def _do_wait_healthy(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        timeout = float(step.params.get("timeout", 300.0))
        if self.server_dry_run:
            status = rollout.health(ctx.target.kind, await self._read(ctx))
            return StepResult(
                "planned",
                f"dry-run: would wait up to {timeout:g}s for a healthy rollout; now: {status.message}",
                details={"server_side": True},
            )
        waited = _Waited()
        try:
            final: rollout.Health = await within(ctx.clock, self._until_healthy(ctx, waited), timeout)
        except TimeoutError:
            raise PermanentError(f"{ctx.target.key} did not become healthy within {timeout:g}s{waited.why()}") from None
        if final.failed:
            raise PermanentError(final.message)
        return StepResult("ok", final.message, details={"waited": True})

    async def _until_healthy(self, ctx: StepContext, waited: _Waited) -> rollout.Health:
        """kubectl rollout status: read, then watch from that version until done or failed.

        A broken watch or a transient API error is not the rollout failing: it re-reads after
        a backoff and watches again, all inside the caller's one overall timeout.  Each error
        is logged and kept (``waited``): a wait that times out while the API kept failing says
        so, rather than blaming the rollout with what it saw before the API went away.
        """
        attempt = 0
        while True:
            try:
                obj = await self._read(ctx)
                status = waited.saw(await self._health(ctx, obj))
                if status.done or status.failed:
                    return status
                return await self._watch_until_healthy(ctx, obj, waited)
            except TemporaryError as exc:
                attempt += 1
                delay = min(0.5 * 2 ** (attempt - 1), 10.0)
                waited.failed(exc)
                self.metrics.kube_retries.labels("wait_healthy").inc()
                self._log.warning("Kubernetes API call failed while waiting for the rollout; reading again",
                                  action="wait_healthy", target=ctx.target.key, execution_id=ctx.execution_id,
                                  attempt=attempt, error=str(exc), retry_in=delay)
                await self.clock.sleep(delay)

    async def _health(self, ctx: StepContext, obj: dict[str, Any]) -> rollout.Health:
        """kubectl's rule on the workload's status, then, once that says done, the pods themselves.

        The status lags: right after ``delete_pod`` it still counts the deleted pod, and
        kubectl's rule alone would call the workload healthy before its controller has even
        seen the delete.  Its pods cannot lag that way (the delete is written on the pod), so
        done also needs ``spec.replicas`` of them serving (:func:`rollout.pods_health`).  While
        they do not, the wait goes on watching: the controller's own status write follows.
        A Deployment's ReplicaSets are read when the rule needs them (a progress deadline,
        which may be an earlier rollout's; a pause: :func:`rollout.deployment_health`), and an
        OnDelete StatefulSet's pods before its status says done (:func:`rollout.needs_pods`).
        """
        kind = ctx.target.kind
        replicasets: list[dict[str, Any]] | None = None
        if kind == "Deployment" and rollout.needs_replicasets(obj):
            try:
                replicasets = await self._replicasets(ctx, obj)
            except PermanentError as exc:
                if exc.status != 403:
                    raise
                self._log.warning("cannot list the target's replicasets (403): wait_healthy judges a progress "
                                  "deadline or a pause by the status alone, as kubectl does; grant list on "
                                  "replicasets (deploy/kubernetes/rbac.yaml)", target=ctx.target.key, error=str(exc))
        status = rollout.health(kind, obj, replicasets)
        if status.failed or not (status.done or rollout.needs_pods(kind, obj)):
            return status
        try:
            own = await self._own_pods(ctx, obj, replicasets)
        except PermanentError as exc:
            if exc.status != 403:
                raise
            # A role from before this check (deploy/kubernetes/rbac.yaml grants it): failing here would
            # run on_failure (a rollback, say) on a rollout kubectl calls done.  Judged as kubectl
            # judges it, and said loudly.
            self._log.warning("cannot list the target's pods (403): wait_healthy judges by the status alone, "
                              "as kubectl does; grant list on pods (deploy/kubernetes/rbac.yaml)",
                              target=ctx.target.key, error=str(exc))
            return status
        pods = rollout.pods_health(kind, obj, own)
        if not status.done:  # read early (OnDelete): only a failure of the pods is news
            return pods if pods.failed else status
        return status if pods.done else pods

    async def _serving(self, ctx: StepContext, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The target's pods that serve, for ``min_healthy_replicas``; refused (nothing changed, no
        ``on_failure``) when they cannot be listed: a floor that cannot be checked is not passed."""
        try:
            return rollout.serving(await self._own_pods(ctx, obj))
        except PermanentError as exc:
            if exc.status != 403:
                raise
            raise RefusedInput(
                f"cannot count the ready pods of {ctx.target.key} for min_healthy_replicas: listing pods is "
                f"forbidden (grant list on pods, deploy/kubernetes/rbac.yaml): refused, nothing changed",
                guard="min_healthy_replicas") from exc

    async def _owns(self, ctx: StepContext, owner: dict[str, Any], pod: dict[str, Any]) -> bool:
        """Whether the target controls ``pod``, by ownerReferences (:func:`rollout.own_pods`), not labels.

        The pod is named by an alert label, and labels do not prove ownership: another workload's
        selector may be a superset of the target's (web-canary {app: web, track: canary} beside web
        {app: web}), and a debug pod may carry app=web with no owner at all.  A Deployment owns its
        pods through the ReplicaSets that name its uid as their controller; a StatefulSet directly.
        An ownership that cannot be checked (listing ReplicaSets forbidden) is not assumed."""
        t = ctx.target
        replicasets: list[dict[str, Any]] = []
        if t.kind == "Deployment":
            try:
                listed = await self._call(self.apps.list_namespaced_replica_set, t.namespace,
                                          label_selector=rollout.selector_text(owner), **self._kw())
            except PermanentError as exc:
                if exc.status != 403:
                    raise
                raise RefusedInput(
                    f"cannot check that pod {pod['metadata'].get('name')} belongs to {t.key}: listing replicasets "
                    "is forbidden (grant list on replicasets, deploy/kubernetes/rbac.yaml): refused, nothing changed"
                ) from exc
            replicasets = [self._dict(rs) for rs in listed.items]
        return bool(rollout.own_pods(t.kind, owner, [pod], replicasets))

    async def _own_pods(
        self, ctx: StepContext, obj: dict[str, Any], replicasets: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The workload's pods, listed by its selector's labels and kept by ownership (:func:`rollout.own_pods`).

        ``replicasets``: a Deployment's, when already listed (after ``obj`` was read)."""
        t = ctx.target
        selector = rollout.selector_text(obj)
        found = await self._call(self.core.list_namespaced_pod, t.namespace, label_selector=selector, **self._kw())
        if t.kind == "Deployment" and replicasets is None:
            replicasets = await self._replicasets(ctx, obj)
        return rollout.own_pods(t.kind, obj, [self._dict(p) for p in found.items], replicasets or [])

    async def _replicasets(self, ctx: StepContext, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The ReplicaSets a Deployment's selector matches (ownership is the caller's to check)."""
        listed = await self._call(self.apps.list_namespaced_replica_set, ctx.target.namespace,
                                  label_selector=rollout.selector_text(obj), **self._kw())
        return [self._dict(rs) for rs in listed.items]

    async def _watch_until_healthy(self, ctx: StepContext, obj: dict[str, Any], waited: _Waited) -> rollout.Health:
        """Watch the workload from the version read until its rollout is done or failed.

        A watch the apiserver ends (its ``timeoutSeconds``, a 410 Expired) is followed by a fresh
        read and a new watch.  One that ends at once with nothing to show, again and again (a
        proxy cutting watches, a 410 on every try), would make that a tight loop of reads, lists
        and watches for the whole timeout: as client-go's reflector does for a "very short
        watch", the second one in a row and each after it wait first, doubling
        (:data:`WATCH_BACKOFF`), on the executor's clock.
        """
        t = ctx.target
        list_fn = (
            self.apps.list_namespaced_deployment if t.kind == "Deployment" else self.apps.list_namespaced_stateful_set
        )
        status = waited.last or rollout.Health(False, False, "")
        version = obj["metadata"]["resourceVersion"]
        while not (status.done or status.failed):
            w = watch.Watch()
            started, events = self.clock.monotonic(), 0
            try:
                async with w.stream(
                    list_fn,
                    t.namespace,
                    field_selector=f"metadata.name={t.name}",
                    resource_version=version,
                    timeout_seconds=self.watch_seconds,
                    _request_timeout=self.watch_seconds + 10,
                ) as stream:
                    async for event in stream:
                        events += 1
                        if event["type"] == "DELETED":
                            raise PermanentError(f"{t.key} was deleted while waiting for it")
                        raw = event["raw_object"]
                        version = raw["metadata"]["resourceVersion"]
                        status = waited.saw(await self._health(ctx, raw))
                        if status.done or status.failed:
                            break
            except ApiException as exc:
                if exc.status != 410:
                    raise classify(exc) from exc
                # history expired: re-list and watch from the fresh version
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise classify(exc) from exc
            if status.done or status.failed:
                break
            # The watch ended, the rollout still short: judged afresh from a read, the pods included.
            # A change to the pods alone, with no write to the workload, is one the watch cannot show.
            if events == 0 and self.clock.monotonic() - started < SHORT_WATCH:
                waited.short_watches += 1
                short = waited.short_watches
                if short > 1:
                    delay = min(WATCH_BACKOFF[0] * 2 ** (short - 2), WATCH_BACKOFF[1]) * (0.5 + random.random() / 2)
                    self._log.warning("the watch ended at once with nothing to show; watching again after a pause",
                                      action="wait_healthy", target=t.key, execution_id=ctx.execution_id,
                                      times=short, retry_in=round(delay, 3))
                    await self.clock.sleep(delay)
            else:
                waited.short_watches = 0
            obj = await self._read(ctx)
            version, status = obj["metadata"]["resourceVersion"], waited.saw(await self._health(ctx, obj))
        return status

    async def _do_notify(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        return StepResult("skipped", "notify steps are delivered by the notifier, not the cluster")


def _kubeconfig_files(k: KubernetesSettings) -> str:
    """The kubeconfig path(s) to load: the setting, else $KUBECONFIG (read now, not at import), else the default.

    A missing file is named here; the client would only say the (empty) config lacks a context.
    """
    paths = k.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if not any(os.path.isfile(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p):
        raise config.ConfigException(f"no kubeconfig file at {paths}")
    return paths


async def _load_kubeconfig(k: KubernetesSettings, configuration: client.Configuration) -> None:
    await config.load_kube_config(
        config_file=_kubeconfig_files(k), context=k.context or None, client_configuration=configuration
    )


@contextlib.asynccontextmanager
async def open_kube_executors(
    settings: Settings, clock: Clock, metrics: Metrics | None = None
) -> AsyncIterator[tuple[KubeExecutor, KubeExecutor]]:
    """(live, server-side dry-run) executors sharing one API client."""
    k = settings.kubernetes
    configuration = client.Configuration()
    try:
        if k.mode == "incluster":
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        elif k.mode == "kubeconfig":
            await _load_kubeconfig(k, configuration)
        else:  # auto: in-cluster service account, else KUBECONFIG / ~/.kube/config
            try:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                await _load_kubeconfig(k, configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"cannot load Kubernetes configuration ({k.mode}): {exc}") from None
    api = client.ApiClient(configuration)
    try:
        yield (KubeExecutor(api, clock, k, metrics=metrics),
               KubeExecutor(api, clock, k, server_dry_run=True, metrics=metrics))
    finally:
        await api.close()
