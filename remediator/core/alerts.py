"""Alertmanager webhook payloads (version 4) and the alerts inside them.

Parsing is strict about structure (a JSON Schema, so the rules are declarative and
published) and explicit about limits, because the body comes from the network: every
failure is a :class:`PayloadError` whose message becomes the 400 reason.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import jsonschema
import msgspec

from remediator.core.errors import PayloadError
from remediator.core.frozen import fast_frozen

if TYPE_CHECKING:
    from remediator.core.payload_codec import PayloadDecoder

Status = Literal["firing", "resolved"]

# Generous limits: far above anything Alertmanager sends, far below what hurts.
MAX_LABELS = 128
MAX_LABEL_NAME = 256
MAX_LABEL_VALUE = 4096
MAX_ANNOTATION_VALUE = 65536
#: Alerts in one delivery (one Alertmanager group).  Set the receiver's ``max_alerts`` to it
#: (deploy/alertmanager/alertmanager.yml): Alertmanager then sends the first 10,000 of a larger
#: group and counts the rest in ``truncatedAlerts``, which the daemon records and reports, where
#: a group over it would be refused whole (a 400, never retried).  ``webhook.max_body_bytes``
#: (16 MiB) holds this many alerts of up to some 1.6 KiB each, over twice a typical Kubernetes
#: alert's 0.7 KiB, so a group Alertmanager cut to this count is not refused for its size.
#: Memory bounds both: one such delivery costs some 80 MiB (embedded store) to 190 MiB
#: (PostgreSQL) at its peak; docs/operations.md, "Large alert groups".
MAX_ALERTS = 10_000

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
                    "fingerprint": {"type": "string", "pattern": r"^[0-9a-zA-Z]{1,64}\Z"},
                },
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(WEBHOOK_SCHEMA)
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z")
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
# A \uD800-\uDFFF escape: only then can json.loads produce a string that is not valid Unicode.
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


# The shape Alertmanager sends (UTC, "T", "Z", any fraction), which datetime.fromisoformat reads
# as it is, fraction truncated to microseconds like below (Python 3.11+).
_UTC_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?Z\Z")


@functools.lru_cache(maxsize=4096)
def parse_time(text: str) -> datetime:
    """Parse RFC 3339 as Alertmanager writes it (Go: up to nanoseconds, any offset).

    Python keeps microseconds, so nanoseconds are truncated (never rounded: rounding
    could move an instant across a second or a day).

    Alertmanager's own shape (UTC, ``Z``) goes straight to ``fromisoformat``: this runs for
    every alert taken in and every alert the worker reads back, and rebuilding the text
    first was most of its cost.  Anything else, or a field out of range, takes the general
    path, which also words the reason.

    Kept for the texts that recur (a pure function of an immutable value): every firing
    alert's zero ``endsAt``, an alert's ``startsAt`` with each delivery of it, the times a
    history shares.  A text refused is not kept (lru_cache keeps no exception).
    """
    if _UTC_RFC3339.match(text):
        try:
            return datetime.fromisoformat(text)  # its tzinfo is UTC
        except ValueError:
            pass
    return _parse_rfc3339(text)


def _parse_rfc3339(text: str) -> datetime:
    """:func:`parse_time` for any offset and either case, and the reason a text is refused."""
    m = _RFC3339.match(text)
    if not m:
        raise PayloadError(f"invalid RFC 3339 timestamp {text[:80]!r}")
    frac = (m.group(7) or "")[:6].ljust(6, "0")
    tz = m.group(8)
    iso = f"{m.group(1)}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{m.group(6)}.{frac}"
    iso += "+00:00" if tz in ("Z", "z") else tz
    try:
        return datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError as exc:
        raise PayloadError(f"invalid timestamp {text!r}: {exc}") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before the first representable instant
        raise PayloadError(f"timestamp {text!r} is out of range") from None


@functools.lru_cache(maxsize=1024)
def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``.  Kept for the instants that recur (the clock's now, written into
    every decision made at it; an alert's times): a pure function, and writing it costs some
    2 µs where the cache's lookup is a tenth of that."""
    text = (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat()
    return text[:-6] + "Z"  # always "+00:00" once in UTC


# What format_time writes (UTC, "Z", microseconds only when there are any, always six digits):
# a timestamp sent that way (Alertmanager's, without nanoseconds) is kept as it came.
_AS_FORMATTED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.(?!000000)[0-9]{6})?Z\Z")


_ZERO_TEXT = format_time(ZERO_TIME)
# Encodes an alert's JSON for the stores (stateless and thread-safe, so one is shared).
_JSON = msgspec.json.Encoder()


_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_U64 = (1 << 64) - 1


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """The fingerprint Alertmanager itself computes (Prometheus' FNV-1a over sorted labels).

    Used for alerts sent without one (older senders, hand-made payloads, replays), so
    the same alert dedups to the same record whether or not the sender included it.
    """
    return _fingerprint(tuple(labels.items()))


@functools.lru_cache(maxsize=16_384)
def _fingerprint(items: tuple[tuple[str, str], ...]) -> str:
    """FNV-1a byte by byte is some 15 µs in Python; an alert's labels recur with every delivery of
    it (firing, re-sent, resolved), so each set is hashed once while it recurs (a pure function).
    Keyed by the labels in the order they came (a sender keeps its order), sorted only here: the
    same set in another order is another entry with the same value."""
    h = _FNV_OFFSET
    for name, value in sorted(items):
        for byte in name.encode() + b"\xff" + value.encode() + b"\xff":
            h = ((h ^ byte) * _FNV_PRIME) & _U64
    return f"{h:016x}"


@fast_frozen
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

    # Derived texts are computed once per alert (its fields are frozen) and kept in its __dict__
    # (not part of its fields: equality, repr and replace() ignore them).  Not functools.
    # cached_property: on Python 3.11 its first read takes a lock shared by every alert, which
    # cost a twentieth of intake CPU.

    @property
    def starts_text(self) -> str:
        """``startsAt`` as written out: the dedup key and the stored JSON both need it."""
        text: str | None = self.__dict__.get("_starts")
        if text is None:
            text = self.__dict__["_starts"] = format_time(self.starts_at)
        return text

    @property
    def dedup_key(self) -> str:
        """Alertmanager redelivers the same (fingerprint, startsAt, status): one record.

        Asked by intake, the store and the worker, so kept once computed."""
        key: str | None = self.__dict__.get("_dedup_key")
        if key is None:
            key = self.__dict__["_dedup_key"] = f"{self.fingerprint}|{self.starts_text}|{self.status}"
        return key

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_text,
            "endsAt": format_time(self.ends_at) if self.ends_at else _ZERO_TEXT,
            "generatorURL": self.generator_url,
        }

    def json_text(self) -> str:
        """:meth:`to_json` as JSON text, for the stores' alert rows.

        Encoded by msgspec in 0.5 µs, where ``json.dumps`` took 4 to 5 µs, over a quarter of
        decoding, checking and serialising an alert.  The text is compact (no spaces after
        separators, non-ASCII as UTF-8), and reads back with ``json.loads`` to the same value.
        A string that is not Unicode (a lone surrogate, which the webhook refuses but a
        hand-made alert may hold) is escaped by ``json.dumps`` instead."""
        data = self.to_json()
        try:
            return _JSON.encode(data).decode()
        except UnicodeEncodeError:
            return json.dumps(data)

    @classmethod
    def from_json_text(cls, text: str | bytes) -> Alert:
        """``from_json(json.loads(text))`` for the stores' alert rows (:meth:`json_text`), decoded by
        msgspec straight into the fields: a third less CPU for each alert the worker reads back.
        Text of any other shape (a field missing, null or not a string) takes ``from_json``."""
        try:
            raw = _STORED.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return cls.from_json(json.loads(text))
        return cls.of(status=raw.status, labels=raw.labels, annotations=raw.annotations, starts_at=raw.startsAt,
                      ends_at=raw.endsAt, generator_url=raw.generatorURL, fingerprint=raw.fingerprint)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Alert:
        return cls.of(
            status=raw["status"],
            labels={str(k): str(v) for k, v in raw["labels"].items()},
            annotations={str(k): str(v) for k, v in (raw.get("annotations") or {}).items()},
            starts_at=raw["startsAt"],
            ends_at=raw.get("endsAt"),
            generator_url=raw.get("generatorURL") or "",
            fingerprint=raw.get("fingerprint") or "",
        )

    @classmethod
    def of(cls, *, status: Status, labels: dict[str, str], annotations: dict[str, str], starts_at: str,
           ends_at: str | None, generator_url: str, fingerprint: str) -> Alert:
        """An alert from its fields as sent, already of the right types (a compiled decoder's):
        times parsed, the fingerprint computed when absent.  ``labels`` and ``annotations``
        become the alert's own (read-only views of them): pass dictionaries nobody else holds."""
        ends = _field_time(ends_at, "endsAt") if ends_at else None
        if ends is not None and ends <= ZERO_TIME:
            ends = None  # Go's zero time: the alert has no known end
        alert = cls(
            fingerprint=fingerprint or labels_fingerprint(labels),
            status=status,
            labels=MappingProxyType(labels),
            annotations=MappingProxyType(annotations),
            starts_at=_field_time(starts_at, "startsAt"),
            ends_at=ends,
            generator_url=generator_url,
        )
        if _AS_FORMATTED.match(starts_at):  # the text format_time would write: kept, not written again
            alert.__dict__["_starts"] = starts_at
        return alert

    def with_status(self, status: Status) -> Alert:
        """This alert with another status (``dataclasses.replace`` costs three times as much, and the
        pipeline asks it for every resolved alert)."""
        return Alert(self.fingerprint, status, self.labels, self.annotations, self.starts_at, self.ends_at,
                     self.generator_url)

    @classmethod
    def restored(cls, fingerprint: str, status: Status, labels: dict[str, str], annotations: dict[str, str],
                 starts_at: datetime, ends_at: datetime | None, generator_url: str, starts_text: str | None) -> Alert:
        """An alert rebuilt from the fields of one already made and checked elsewhere (replay's
        reading process sends them): nothing is parsed or computed again.  ``starts_text`` is
        ``startsAt`` as it came, when it was kept (see :meth:`of`)."""
        alert = cls(fingerprint, status, MappingProxyType(labels), MappingProxyType(annotations), starts_at, ends_at,
                    generator_url)
        if starts_text is not None:
            alert.__dict__["_starts"] = starts_text
        return alert

    def restorable(self) -> Restorable:
        """What :meth:`restored` takes to make this alert again."""
        return (self.fingerprint, self.status, dict(self.labels), dict(self.annotations), self.starts_at,
                self.ends_at, self.generator_url, self.__dict__.get("_starts"))


#: An alert's fields as :meth:`Alert.restorable` gives them and :meth:`Alert.restored` takes them.
Restorable = tuple[str, Status, dict[str, str], dict[str, str], datetime, datetime | None, str, str | None]


class _StoredAlert(msgspec.Struct):
    """An alert as :meth:`Alert.json_text` writes it (Alertmanager's field names)."""

    status: Status
    labels: dict[str, str]
    startsAt: str
    annotations: dict[str, str] = {}
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


_STORED = msgspec.json.Decoder(_StoredAlert)


def _field_time(text: str, key: str) -> datetime:
    try:
        return parse_time(text)
    except PayloadError as exc:
        raise PayloadError(f"{key}: {exc}") from None


@fast_frozen
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
    #: The delivery's alerts that could not be taken, each as the reason it would have had alone
    #: (``body.alerts[2].labels.path: ...``); ``alerts`` holds the rest (:func:`parse_webhook`).
    refused: tuple[str, ...] = ()

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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _reason(error: jsonschema.ValidationError) -> str:
    """The schema violation in words, never echoing a huge value back."""
    kind = error.validator
    limit: Any = error.validator_value
    value: Any = error.instance
    if kind == "type":
        expected = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer"}
        return f"expected {expected.get(str(limit), limit)}, got {_JSON_TYPES.get(type(value), type(value).__name__)}"
    if kind == "maxProperties":
        return f"too many entries ({len(value)}; at most {limit})"
    if kind == "maxItems":
        return f"too many items ({len(value)}; at most {limit})"
    if kind == "maxLength":
        return f"too long ({len(value)} characters; at most {limit})"
    if kind == "minLength":
        return "must not be empty"
    if kind == "const":
        return f"unsupported payload version {_short(value)}; only version {limit!r} is understood"
    if kind == "enum":
        return f"expected one of {', '.join(map(repr, limit))}, got {_short(value)}"
    if kind == "pattern":
        return f"{_short(value)} is not a valid fingerprint (1 to 64 letters or digits)"
    if kind == "minimum":
        return f"must be at least {limit}, got {_short(value)}"
    return error.message[:200]


def _schema_error(error: jsonschema.ValidationError) -> PayloadError:
    where = _where(error.absolute_path)
    if error.validator == "required":
        return PayloadError(f"{where}: {error.message}")
    if "propertyNames" in error.schema_path:
        return PayloadError(f"{where}: label name {_short(error.instance)}: {_reason(error)}")
    return PayloadError(f"{where}: {_reason(error)}")


def _bad_unicode(data: Any) -> str | None:
    """Where a string holds a lone UTF-16 surrogate (valid JSON, not valid Unicode)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if not _encodable(k):
                    return _where(path)
                stack.append((v, (*path, k)))
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
        elif isinstance(value, str) and not _encodable(value):
            return _where(path)
    return None


def refuse_bad_unicode(data: Any) -> None:
    """PayloadError where a string in ``data`` (decoded JSON) holds a lone UTF-16 surrogate: valid
    JSON, but not Unicode, so no store, fingerprint or encoder could take it.  Checked before
    the schema, which would let it through."""
    where = _bad_unicode(data)
    if where is not None:
        raise PayloadError(f"{where}: a string holds an unpaired UTF-16 surrogate, which is not valid Unicode")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_payload(data: Any) -> WebhookPayload:
    """Turn decoded JSON into a payload, or raise PayloadError naming the first problem."""
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        raise _schema_error(error)
    alerts = []
    for i, raw in enumerate(data["alerts"]):
        try:
            alerts.append(Alert.from_json(raw))
        except PayloadError as exc:
            raise PayloadError(f"body.alerts[{i}].{exc}") from None
    return WebhookPayload(
        version=data["version"],
        status=data["status"],
        alerts=tuple(alerts),
        receiver=data.get("receiver", ""),
        group_key=data.get("groupKey", ""),
        truncated_alerts=int(data.get("truncatedAlerts", 0)),
        group_labels=MappingProxyType(dict(data.get("groupLabels") or {})),
        common_labels=MappingProxyType(dict(data.get("commonLabels") or {})),
        common_annotations=MappingProxyType(dict(data.get("commonAnnotations") or {})),
        external_url=data.get("externalURL", ""),
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_webhook(body: bytes) -> WebhookPayload:
    """Decode and validate a raw webhook body.

    A valid body takes the compiled path (:mod:`remediator.core.payload_codec`); anything it
    does not accept is decided, and explained, by :func:`parse_webhook_validating`, which takes
    the alerts of a delivery that can be taken and refuses the others (``refused``).
    """
    fast = _fast_decoder().decode(body)
    return fast if fast is not None else parse_webhook_validating(body)


@functools.cache
def _fast_decoder() -> PayloadDecoder:
    from remediator.core.payload_codec import PayloadDecoder  # built on this module's types

    return PayloadDecoder()


def parse_webhook_validating(body: bytes) -> WebhookPayload:
    """Decode with ``json`` and validate against ``WEBHOOK_SCHEMA``: slower, and the source of every reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, or an integer with more digits than Python converts
        reason = "a number has too many digits" if "digits" in str(exc) else str(exc)[:120]
        raise PayloadError(f"body is not valid JSON: {reason}") from None
    return _taking_what_can_be_taken(data, unicode=bool(_LONE_SURROGATE.search(text)))


def _checked(data: Any, *, unicode: bool) -> WebhookPayload:
    if unicode:
        refuse_bad_unicode(data)
    return validate_payload(data)


def _taking_what_can_be_taken(data: Any, *, unicode: bool) -> WebhookPayload:
    """The payload; when some of its alerts are wrong and others are not, the others, with the
    reasons of the refused ones in ``refused``.

    Why: Alertmanager does not retry a 4xx, and sends the same group again at every group
    interval.  One alert with a label past the limits (anyone who can push a metric label can
    make one) refused the whole delivery, so every other alert grouped with it (``group_by:
    [alertname]``: every deployment's) was never remediated, again and again.  A delivery whose
    envelope is wrong, or none of whose alerts can be taken, is still refused whole, with the
    reason it always had.  Each alert is judged as a delivery of that alert alone would be, so
    an alert is taken here exactly when it would have been taken alone.
    """
    try:
        return _checked(data, unicode=unicode)
    except PayloadError as whole:
        alerts = data.get("alerts") if isinstance(data, dict) else None
        if not isinstance(alerts, list) or not 2 <= len(alerts) <= MAX_ALERTS:
            raise
        try:
            envelope = _checked({**data, "alerts": []}, unicode=unicode)
        except PayloadError:
            raise whole from None
        kept: list[Alert] = []
        refused: list[str] = []
        for i, alert in enumerate(alerts):
            try:
                kept += _checked({**data, "alerts": [alert]}, unicode=unicode).alerts
            except PayloadError as exc:
                reason = str(exc)
                alone = "body.alerts[0]"
                refused.append(f"body.alerts[{i}]{reason[len(alone):]}" if reason.startswith(alone) else reason)
        if not kept:
            raise whole from None
        return WebhookPayload(
            version=envelope.version, status=envelope.status, alerts=tuple(kept), receiver=envelope.receiver,
            group_key=envelope.group_key, truncated_alerts=envelope.truncated_alerts,
            group_labels=envelope.group_labels, common_labels=envelope.common_labels,
            common_annotations=envelope.common_annotations, external_url=envelope.external_url,
            refused=tuple(refused),
        )
