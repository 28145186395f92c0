"""The subset of apiserver validation that remediation mistakes can trip.

Each check reproduces a real field error (path, wording, cause type), because the
executor reports the apiserver's message verbatim and tests assert on it.  Validation
runs on defaulted objects, as in the apiserver.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from remediator.testing.kube import resources as r
from remediator.testing.kube.selectors import from_label_selector_object
from remediator.testing.kube.status import CauseType, FieldError

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_PERCENT = re.compile(r"^[0-9]+%$")
_PERCENT_MSG = (
    "a valid percent string must be a numeric string followed by an ending '%' "
    "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
)


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(CauseType.INVALID, path, detail, value)


def non_negative(value: Any, path: str) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool):
        return [_invalid(path, value, "must be an integer")]
    return [_invalid(path, value, "must be greater than or equal to 0")] if value < 0 else []


def metadata(obj: Mapping[str, Any]) -> list[FieldError]:
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        return [FieldError(CauseType.REQUIRED, "metadata.name", "name or generateName is required")]
    if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
        return [_invalid("metadata.name", name, _SUBDOMAIN_MSG)]
    return []


def pod_spec(spec: Any, path: str, *, restart_policies: tuple[str, ...] = ()) -> list[FieldError]:
    if not isinstance(spec, Mapping):
        return [FieldError(CauseType.REQUIRED, f"{path}.containers", "")]
    errs: list[FieldError] = []
    containers = spec.get("containers") or []
    if not containers:
        errs.append(FieldError(CauseType.REQUIRED, f"{path}.containers"))
    for key in ("initContainers", "containers"):
        seen: set[str] = set()
        for i, c in enumerate(spec.get(key) or []):
            errs += _container(c, f"{path}.{key}[{i}]", seen)
    policy = spec.get("restartPolicy")
    if restart_policies and policy not in restart_policies:
        errs.append(FieldError(CauseType.NOT_SUPPORTED, f"{path}.restartPolicy", value=policy,
                               supported=restart_policies))
    return errs


def _container(c: Any, path: str, seen: set[str]) -> list[FieldError]:
    if not isinstance(c, Mapping):
        return [_invalid(path, c, "must be an object")]
    errs: list[FieldError] = []
    name = c.get("name")
    if not name:
        errs.append(FieldError(CauseType.REQUIRED, f"{path}.name"))
    elif name in seen:
        errs.append(FieldError(CauseType.DUPLICATE, f"{path}.name", value=name))
    else:
        seen.add(name)
    if not c.get("image"):
        errs.append(FieldError(CauseType.REQUIRED, f"{path}.image"))
    for j, env in enumerate(c.get("env") or []):
        env_path = f"{path}.env[{j}]"
        if not isinstance(env, Mapping) or not env.get("name"):
            errs.append(FieldError(CauseType.REQUIRED, f"{env_path}.name"))
            continue
        if env.get("value") and env.get("valueFrom") is not None:
            errs.append(_invalid(f"{env_path}.valueFrom", "", "may not be specified when `value` is not empty"))
    for j, port in enumerate(c.get("ports") or []):
        number = (port or {}).get("containerPort")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            errs.append(_invalid(f"{path}.ports[{j}].containerPort", number, "must be between 1 and 65535, inclusive"))
    return errs


def _selector_and_template(spec: Mapping[str, Any], kind: str, restart: tuple[str, ...]) -> list[FieldError]:
    errs: list[FieldError] = []
    selector = spec.get("selector")
    template = spec.get("template")
    if not isinstance(selector, Mapping):
        errs.append(FieldError(CauseType.REQUIRED, "spec.selector"))
    elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errs.append(_invalid("spec.selector", selector, f"empty selector is invalid for {kind}"))
    if not isinstance(template, Mapping):
        errs.append(FieldError(CauseType.REQUIRED, "spec.template"))
        return errs
    labels = (template.get("metadata") or {}).get("labels") or {}
    if isinstance(selector, Mapping) and not errs and not from_label_selector_object(selector).matches(labels):
        errs.append(_invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    errs += pod_spec(template.get("spec"), "spec.template.spec", restart_policies=restart)
    return errs


def _int_or_percent(value: Any, path: str) -> tuple[list[FieldError], int | None, bool]:
    """Errors, the number, and whether it is a percentage."""
    if value is None:
        return [], None, False
    if isinstance(value, bool):
        return [_invalid(path, value, "must be an integer or percentage")], None, False
    if isinstance(value, int):
        return non_negative(value, path), value, False
    if isinstance(value, str) and _PERCENT.match(value):
        return [], int(value[:-1]), True
    return [_invalid(path, value, _PERCENT_MSG)], None, False


def deployment(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = metadata(obj)
    errs += non_negative(spec.get("replicas"), "spec.replicas")
    errs += _selector_and_template(spec, "deployment", ("Always",))
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type")
    if kind not in ("RollingUpdate", "Recreate"):
        errs.append(FieldError(CauseType.NOT_SUPPORTED, "spec.strategy.type", value=kind,
                               supported=("Recreate", "RollingUpdate")))
    elif kind == "Recreate" and strategy.get("rollingUpdate") is not None:
        errs.append(FieldError(CauseType.FORBIDDEN, "spec.strategy.rollingUpdate",
                               "may not be specified when strategy `type` is 'Recreate'"))
    else:
        rolling = strategy.get("rollingUpdate") or {}
        base = "spec.strategy.rollingUpdate"
        e1, unavailable, unavailable_pct = _int_or_percent(rolling.get("maxUnavailable"), f"{base}.maxUnavailable")
        e2, surge, _ = _int_or_percent(rolling.get("maxSurge"), f"{base}.maxSurge")
        errs += e1 + e2
        if unavailable_pct and unavailable is not None and unavailable > 100:
            errs.append(
                _invalid(f"{base}.maxUnavailable", rolling.get("maxUnavailable"), "must not be greater than 100%")
            )
        if unavailable == 0 and surge == 0 and not e1 and not e2:
            errs.append(_invalid(f"{base}.maxUnavailable", rolling.get("maxUnavailable"),
                                 "may not be 0 when `maxSurge` is 0"))
    errs += non_negative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    errs += non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= int(spec.get("minReadySeconds") or 0):
        errs.append(_invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds"))
    if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        errs.append(_invalid("spec.selector", spec.get("selector"), "field is immutable"))
    return errs


_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds")


def _go_struct(fields: Mapping[str, str]) -> str:
    """A Go struct as a field error shows it: its JSON, fields in declaration order under their Go names
    (:func:`.status.go_value` would sort them); ``fields`` are rendered already.  The error carries it in its
    detail (``Invalid value: <struct>: <why>``), its value left unset."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}"


def _rolling_update_value(rolling: Any) -> str:
    """The internal ``RollingUpdateStatefulSetStrategy`` a ``rollingUpdate`` decodes into, as a field error
    shows it: an absent partition is 0, and ``MaxUnavailable`` is always null (v1.36 drops the field before
    validating: the MaxUnavailableStatefulSet feature is off)."""
    if rolling is None:
        return "null"
    partition = rolling.get("partition") if isinstance(rolling, Mapping) else None
    return _go_struct({"Partition": json.dumps(0 if partition is None else partition), "MaxUnavailable": "null"})


def _update_strategy(strategy: Mapping[str, Any]) -> list[FieldError]:
    """``ValidateStatefulSetSpec`` on the (defaulted, so typed) ``updateStrategy``: a ``rollingUpdate`` only
    with RollingUpdate, whose partition alone is checked; any other type is an Invalid strategy."""
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    path = "spec.updateStrategy"
    if kind == "RollingUpdate":
        return non_negative((rolling or {}).get("partition"), f"{path}.rollingUpdate.partition")
    if kind == "OnDelete":
        if rolling is None:
            return []
        return [FieldError(CauseType.INVALID, f"{path}.rollingUpdate",
                           f"{_rolling_update_value(rolling)}: only allowed for updateStrategy 'RollingUpdate'")]
    shown = _go_struct({"Type": json.dumps(kind), "RollingUpdate": _rolling_update_value(rolling)})
    return [FieldError(CauseType.INVALID, path, f"{shown}: must be 'RollingUpdate' or 'OnDelete'")]


def statefulset(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    """In the apiserver's order: metadata, podManagementPolicy, updateStrategy, replicas, selector, template."""
    spec = obj.get("spec") or {}
    errs = metadata(obj)
    policy = spec.get("podManagementPolicy")
    if policy not in ("OrderedReady", "Parallel"):
        errs.append(FieldError(CauseType.NOT_SUPPORTED, "spec.podManagementPolicy", value=policy,
                               supported=("OrderedReady", "Parallel")))
    errs += _update_strategy(spec.get("updateStrategy") or {})
    errs += non_negative(spec.get("replicas"), "spec.replicas")
    errs += _selector_and_template(spec, "statefulset", ("Always",))
    if old is not None:
        before = {k: v for k, v in (old.get("spec") or {}).items() if k not in _STS_MUTABLE}
        after = {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        if before != after:
            fields = ", ".join(f"'{f}'" for f in _STS_MUTABLE[:-1]) + f" and '{_STS_MUTABLE[-1]}'"
            errs.append(FieldError(CauseType.FORBIDDEN, "spec",
                                   f"updates to statefulset spec for fields other than {fields} are forbidden"))
    return errs


def pod(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    return metadata(obj) + pod_spec(obj.get("spec"), "spec",
                                    restart_policies=("Always", "OnFailure", "Never"))


def lease(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    duration = (obj.get("spec") or {}).get("leaseDurationSeconds")
    errs = metadata(obj)
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        errs.append(_invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    return errs


def hpa(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = metadata(obj)
    target = spec.get("scaleTargetRef") or {}
    for key in ("kind", "name"):
        if not target.get(key):
            errs.append(FieldError(CauseType.REQUIRED, f"spec.scaleTargetRef.{key}"))
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if not isinstance(high, int) or high < 1:
        errs.append(_invalid("spec.maxReplicas", high, "must be greater than or equal to 1"))
    elif not isinstance(low, int) or low < 1:
        errs.append(_invalid("spec.minReplicas", low, "must be greater than or equal to 1"))
    elif low > high:
        errs.append(_invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`"))
    return errs


def validate(res: r.Resource, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[FieldError]:
    check = {
        r.DEPLOYMENTS.plural: deployment,
        r.STATEFULSETS.plural: statefulset,
        r.PODS.plural: pod,
        r.LEASES.plural: lease,
        r.HPAS.plural: hpa,
    }.get(res.plural)
    return check(obj, old) if check else metadata(obj)
