"""Query-parameter and body parsing with the apiserver's rules (strconv.ParseBool, dryRun=All only,
DeleteOptions from the body or else the query)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from remediator.testing.kube import status as st
from remediator.testing.kube.api import FieldValidation

#: strconv.ParseBool, which the apiserver uses for boolean query parameters.
TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key)
    if value is None or value == "":
        return False
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise st.bad_request(f"invalid value {value!r} for boolean query parameter {key!r}")


def integer(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise st.bad_request(f"invalid value {value!r} for integer query parameter {key!r}") from None


def dry_run(request: web.Request, options: str) -> bool:
    """``dryRun`` from the query of a create, update or patch; "All" is the only value the apiserver knows.

    Anything else fails validation of the verb's options (``options``: CreateOptions,
    UpdateOptions, PatchOptions) with 422, as ValidateDryRun does.  Not for DELETE, whose
    options may come from a body instead: see :func:`delete_options`.
    """
    values = list(request.query.getall("dryRun", []))
    _validate_dry_run(values, options)
    return bool(values)


def _validate_dry_run(values: list[str], options: str) -> None:
    if all(v == "All" for v in values):
        return
    message = f'Unsupported value: {json.dumps(values, separators=(",", ":"))}: supported values: "All"'
    raise st.ApiError(
        422, f'{options}.meta.k8s.io "" is invalid: dryRun: {message}',
        details={"group": "meta.k8s.io", "kind": options,
                 "causes": [{"reason": "FieldValueNotSupported", "message": message, "field": "dryRun"}]},
    )


def field_validation(request: web.Request) -> FieldValidation:
    """``fieldValidation``: Strict refuses unknown fields, Ignore drops them silently, Warn (the default) warns."""
    mode = request.query.get("fieldValidation") or "Warn"
    return FieldValidation(mode if mode in ("Strict", "Warn", "Ignore") else "Warn")


def delete_options(request: web.Request, body: Any) -> dict[str, Any]:
    """The DeleteOptions of a DELETE, decoded the way the apiserver's handler decodes them.

    ``body`` is the decoded request body, or None when the request had no body at all.
    kube-apiserver (``handlers/delete.go``, DeleteResource) reads the options from the body
    when the body is non-empty and from the query parameters only when there is no body:
    the two are never merged.  So ``DELETE ...?dryRun=All`` with a body that lacks
    ``dryRun`` is a real deletion, and a body's ``gracePeriodSeconds`` (or its absence)
    wins over the query's.  The fake used to merge them, which hid exactly that bug: a
    "dry-run" pod deletion that really deleted the pod.  Note that ``{}`` is not an
    empty body: kubernetes_asyncio sends it for ``body=V1DeleteOptions()`` (and nothing
    at all for ``body=None``).  Either way the options are then validated
    (ValidateDeleteOptions): a dryRun other than "All" is a 422 Invalid DeleteOptions.
    """
    if body is None:
        options: dict[str, Any] = {}
        if "dryRun" in request.query:
            options["dryRun"] = list(request.query.getall("dryRun"))
        grace = integer(request, "gracePeriodSeconds")
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        if request.query.get("propagationPolicy"):
            options["propagationPolicy"] = request.query["propagationPolicy"]
        if "orphanDependents" in request.query:  # conversion.Convert_Slice_string_To_bool: only 0/false are false
            options["orphanDependents"] = request.query["orphanDependents"].lower() not in ("0", "false")
    elif isinstance(body, dict):
        options = dict(body)
    else:
        raise st.bad_request("the request body could not be decoded as DeleteOptions: it is not a JSON object")
    dry = options.get("dryRun")
    if dry is not None and not (isinstance(dry, list) and all(isinstance(v, str) for v in dry)):
        raise st.bad_request("the request body could not be decoded as DeleteOptions: dryRun must be a list of strings")
    grace = options.get("gracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int)):
        raise st.bad_request("the request body could not be decoded as DeleteOptions: "
                             "gracePeriodSeconds must be an integer")
    _validate_dry_run(list(dry or []), "DeleteOptions")
    return options


def decode(raw: bytes) -> Any:
    """A body as JSON when it is JSON, else as text (the request log keeps whatever was sent)."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
