"""Alertmanager webhook payloads (version 4) and the alerts inside them.

Parsing is strict about structure (a JSON Schema, so the rules are declarative and
published) and explicit about limits, because the body comes from the network: every
failure is a :class:`PayloadError` whose message becomes the 400 reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import jsonschema

from remediator.core.errors import PayloadError

Status = Literal["firing", "resolved"]

# Generous limits: far above anything Alertmanager sends, far below what hurts.
MAX_LABELS = 128
MAX_LABEL_NAME = 256
MAX_LABEL_VALUE = 4096
MAX_ANNOTATION_VALUE = 65536
MAX_ALERTS = 5000

_labels_schema: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_LABEL_NAME},
    "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE},
}
_annotations_schema: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_LABEL_NAME},
    "additionalProperties": {"type": "string", "maxLength": MAX_ANNOTATION_VALUE},
}
_time = {"type": "string", "minLength": 1, "maxLength": 64}

WEBHOOK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Alertmanager webhook payload, version 4",
    "type": "object",
    "required": ["version", "status", "alerts"],
    "properties": {
        "version": {"const": "4"},
        "groupKey": {"type": "string", "maxLength": 65536},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "status": {"enum": ["firing", "resolved"]},
        "receiver": {"type": "string", "maxLength": 1024},
        "groupLabels": _labels_schema,
        "commonLabels": _labels_schema,
        "commonAnnotations": _annotations_schema,
        "externalURL": {"type": "string", "maxLength": 4096},
        "alerts": {
            "type": "array",
            "maxItems": MAX_ALERTS,
            "items": {
                "type": "object",
                "required": ["status", "labels", "startsAt"],
                "properties": {
                    "status": {"enum": ["firing", "resolved"]},
                    "labels": _labels_schema,
                    "annotations": _annotations_schema,
                    "startsAt": _time,
                    "endsAt": _time,
                    "generatorURL": {"type": "string", "maxLength": 8192},
                    "fingerprint": {"type": "string", "pattern": "^[0-9a-zA-Z]{1,64}$"},
                },
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(WEBHOOK_SCHEMA)
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 as Alertmanager writes it (Go: up to nanoseconds, any offset)."""
    m = _RFC3339.match(text)
    if not m:
        raise PayloadError(f"invalid RFC 3339 timestamp {text!r}")
    frac = (m.group(7) or "")[:6].ljust(6, "0")
    tz = m.group(8)
    iso = f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{m.group(6)}.{frac}"
    iso += "+00:00" if tz in ("Z", "z") else tz
    try:
        return datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError as exc:
        raise PayloadError(f"invalid timestamp {text!r}: {exc}") from None


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """Stable fingerprint for alerts sent without one (older senders, hand-made payloads)."""
    digest = hashlib.sha256()
    for k in sorted(labels):
        digest.update(k.encode() + b"\xff" + labels[k].encode() + b"\xff")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager describes it; immutable so it can be shared freely."""

    fingerprint: str
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    starts_at: datetime = ZERO_TIME
    ends_at: datetime | None = None
    generator_url: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def dedup_key(self) -> str:
        """Alertmanager redelivers the same (fingerprint, startsAt, status): one record."""
        return f"{self.fingerprint}|{format_time(self.starts_at)}|{self.status}"

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at) if self.ends_at else format_time(ZERO_TIME),
            "generatorURL": self.generator_url,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Alert:
        labels = {str(k): str(v) for k, v in raw["labels"].items()}
        ends = parse_time(raw["endsAt"]) if raw.get("endsAt") else None
        if ends is not None and ends <= ZERO_TIME:
            ends = None
        return cls(
            fingerprint=raw.get("fingerprint") or labels_fingerprint(labels),
            status=raw["status"],
            labels=MappingProxyType(labels),
            annotations=MappingProxyType({str(k): str(v) for k, v in (raw.get("annotations") or {}).items()}),
            starts_at=parse_time(raw["startsAt"]),
            ends_at=ends,
            generator_url=raw.get("generatorURL") or "",
        )


@dataclass(frozen=True)
class WebhookPayload:
    version: str
    status: Status
    alerts: tuple[Alert, ...]
    receiver: str = ""
    group_key: str = ""
    truncated_alerts: int = 0
    group_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    common_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    common_annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    external_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "groupKey": self.group_key,
            "truncatedAlerts": self.truncated_alerts,
            "status": self.status,
            "receiver": self.receiver,
            "groupLabels": dict(self.group_labels),
            "commonLabels": dict(self.common_labels),
            "commonAnnotations": dict(self.common_annotations),
            "externalURL": self.external_url,
            "alerts": [a.to_json() for a in self.alerts],
        }


def _where(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "body" + "".join(parts)


def validate_payload(data: Any) -> WebhookPayload:
    """Turn decoded JSON into a payload, or raise PayloadError naming the first problem."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        raise PayloadError(f"{_where(error.absolute_path)}: {error.message[:300]}")
    try:
        alerts = tuple(Alert.from_json(a) for a in data["alerts"])
    except PayloadError as exc:
        raise PayloadError(f"body.alerts: {exc}") from None
    return WebhookPayload(
        version=data["version"],
        status=data["status"],
        alerts=alerts,
        receiver=data.get("receiver", ""),
        group_key=data.get("groupKey", ""),
        truncated_alerts=data.get("truncatedAlerts", 0),
        group_labels=MappingProxyType(dict(data.get("groupLabels") or {})),
        common_labels=MappingProxyType(dict(data.get("commonLabels") or {})),
        common_annotations=MappingProxyType(dict(data.get("commonAnnotations") or {})),
        external_url=data.get("externalURL", ""),
    )


def parse_webhook(body: bytes) -> WebhookPayload:
    """Decode and validate a raw webhook body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    return validate_payload(data)
