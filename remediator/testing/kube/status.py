"""metav1.Status error bodies, built the way apimachinery's ``pkg/api/errors`` builds them.

Clients parse these bodies (kubernetes_asyncio's leader election reads
``json.loads(e.body)["code"]``; the executor reads ``message``), so their shape and
wording are part of the fake's contract, not decoration.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from remediator.testing.kube.resources import Resource

MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"

REASONS: Mapping[int, str] = MappingProxyType(
    {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
)


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = dict(details)
    body["code"] = code
    return body


def success_body(res: Resource, name: str, uid: str) -> dict[str, Any]:
    """What DELETE returns for resources that do not return the deleted object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": _details(res, name, uid=uid),
    }


def _details(res: Resource, name: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.plural
    details.update(extra)
    return details


class ApiError(Exception):
    """A failed API call: the HTTP layer turns it into ``code`` + a Status body."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = REASONS.get(code, "Unknown") if reason is None else reason
        self.details = dict(details or {})
        self.empty_details = details is not None  # some answers carry "details": {} (a failed JSON patch)
        self.headers = dict(headers or {})

    @property
    def body(self) -> dict[str, Any]:
        shown = self.details if self.details or self.empty_details else None
        return status_body(self.code, self.reason, self.message, shown)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, f'{res.qualified} "{name}" not found', details=_details(res, name))


def already_exists(res: Resource, name: str, *, being_deleted: bool = False) -> ApiError:
    prefix = "object is being deleted: " if being_deleted else ""
    return ApiError(409, f'{prefix}{res.qualified} "{name}" already exists', reason="AlreadyExists",
                    details=_details(res, name))


def conflict(res: Resource, name: str, why: str = MODIFIED) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
                    details=_details(res, name))


def precondition_failed(res: Resource, name: str, why: str) -> ApiError:
    """A DELETE whose uid/resourceVersion precondition does not hold (the registry names the kind, not the
    resource: ``Pod "web-1"``, ``Deployment.apps "web"``)."""
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.kind
    return ApiError(409, f'Operation cannot be fulfilled on {res.qualified_kind} "{name}": {why}', details=details)


def forbidden(res: Resource, name: str, why: str) -> ApiError:
    subject = f'{res.qualified} "{name}"' if name else res.qualified
    return ApiError(403, f"{subject} is forbidden: {why}", details=_details(res, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource")


def not_found_path() -> ApiError:
    return ApiError(404, "the server could not find the requested resource")


def unsupported_media_type(content_type: str, accepted: Sequence[str]) -> ApiError:
    return ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
    )


def unsupported_patch_type() -> ApiError:
    """A PATCH whose Content-Type is no patch type the resource accepts (the apiserver's own wording)."""
    return ApiError(415, "415: Unsupported Media Type", details={})


def patch_failed(message: str) -> ApiError:
    """A JSON patch that decodes but cannot be applied (failed ``test``, missing path): 422, not 409.

    The apiserver says no more than this (``details`` is empty): what failed is not in the answer.
    """
    return ApiError(422, "the server rejected our request due to an error in our request", details={})


def expired(message: str) -> dict[str, Any]:
    return status_body(410, "Expired", message)


def generic(code: int, message: str | None = None, *, retry_after: int | None = None) -> ApiError:
    """Any status code with the reason and wording apimachinery would use for it."""
    reason = REASONS.get(code, "Unknown")
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if code == 500:
        text = message or "fake fault injected"
        details["causes"] = [{"message": text}]
        text = f"Internal error occurred: {text}"
    elif code == 504:
        text = f"Timeout: {message or 'request did not complete within the allotted timeout'}"
    else:
        text = message or {
            401: "Unauthorized",
            429: "Too many requests, please try again later.",
            503: "the server is currently unable to handle the request",
        }.get(code, f"fake fault: HTTP {code}")
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    return ApiError(code, text, reason=reason, details=details, headers=headers)


class CauseType(Enum):
    INVALID = "FieldValueInvalid"
    REQUIRED = "FieldValueRequired"
    FORBIDDEN = "FieldValueForbidden"
    NOT_SUPPORTED = "FieldValueNotSupported"
    DUPLICATE = "FieldValueDuplicate"


_NO_VALUE = object()


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: rendered as ``<field>: <message>`` and as a Status cause."""

    type: CauseType
    field: str
    detail: str = ""
    value: Any = dataclasses.field(default=_NO_VALUE)
    supported: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        if self.type is CauseType.REQUIRED:
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.type is CauseType.FORBIDDEN:
            return f"Forbidden: {self.detail}"
        if self.type is CauseType.DUPLICATE:
            return f"Duplicate value: {go_value(self.value)}"
        if self.type is CauseType.NOT_SUPPORTED:
            allowed = ", ".join(json.dumps(s) for s in self.supported)
            return f"Unsupported value: {go_value(self.value)}: supported values: {allowed}"
        text = "Invalid value"
        if self.value is not _NO_VALUE:
            text += f": {go_value(self.value)}"
        return text + (f": {self.detail}" if self.detail else "")

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    @property
    def cause(self) -> dict[str, str]:
        return {"reason": self.type.value, "message": self.message, "field": self.field}


def go_value(value: Any) -> str:
    """Roughly Go's ``%#v`` as used in field errors: numbers bare, strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def invalid(res: Resource, name: str, errors: Sequence[FieldError]) -> ApiError:
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.kind
    details["causes"] = [e.cause for e in errors]
    return ApiError(422, f'{res.qualified_kind} "{name}" is invalid: {text}', details=details)
