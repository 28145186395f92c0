"""The webhook's fast path: decode and validate a v4 payload in one compiled pass (msgspec).

Why: validating the decoded JSON with jsonschema cost about 110 µs per alert, a third to two
thirds of intake CPU (issue 17); msgspec checks the same constraints while it decodes.

Why it is only a fast path: the answer to a bad payload is its reason, in words tested
against a corpus (``tests/core/malformed.py``), and msgspec's messages are its own.  So this
module either returns a payload or says "let the validating path decide" (None): every
payload it rejects, for whatever reason, goes through :func:`remediator.core.alerts.
validate_payload` unchanged, which gives the answer and the reason it always gave.

What makes that safe is the other direction: nothing accepted here may be something the
validating path would refuse.  The Structs mirror ``WEBHOOK_SCHEMA`` constraint for
constraint, and what msgspec would let through but ``json.loads`` would not is sent to the
validating path before decoding: escapes of UTF-16 surrogates (a lone one is not Unicode)
and numbers longer than Python converts (msgspec skips them in fields it ignores).
``tests/core/test_payload_codec.py`` runs both paths over the corpus and over generated
payloads.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Annotated, Literal

import msgspec

from remediator.core.alerts import (
    MAX_ALERTS,
    MAX_ANNOTATION_VALUE,
    MAX_LABEL_NAME,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    Alert,
    WebhookPayload,
)
from remediator.core.errors import PayloadError

_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_NAME)]
_Labels = Annotated[
    dict[_Name, Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE)]], msgspec.Meta(max_length=MAX_LABELS)
]
_Annotations = Annotated[
    dict[_Name, Annotated[str, msgspec.Meta(max_length=MAX_ANNOTATION_VALUE)]], msgspec.Meta(max_length=MAX_LABELS)
]
_Time = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Status = Literal["firing", "resolved"]

# A surrogate escape (paired or not: the validating path tells them apart), or a number too
# long for int() (a run of as many digits): both go the validating way.  Two separate scans:
# one regular expression with both costs some 10 ns per byte, trying the digit run at every
# offset (a tenth of a 20-alert delivery's intake CPU); the surrogate's starts with a literal
# (a fast search), and the digit run is looked for once digits are mapped to "0" and the rest
# to "." (linear, about 1 ns per byte).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_DIGIT_RUN = b"0" * 4300  # sys.int_info.default_max_str_digits: json.loads refuses longer numbers
_DIGITS_AS_ZERO = bytes(b"0"[0] if b"0"[0] <= i <= b"9"[0] else b"."[0] for i in range(256))


def _needs_validating_path(body: bytes) -> bool:
    if _SURROGATE.search(body):
        return True
    return len(body) >= len(_DIGIT_RUN) and _DIGIT_RUN in body.translate(_DIGITS_AS_ZERO)


class _Alert(msgspec.Struct):
    status: _Status
    labels: _Labels
    startsAt: _Time  # Alertmanager's field names, as sent
    annotations: _Annotations = {}
    endsAt: _Time = ""  # a default is not validated: "" stands for "absent"
    generatorURL: Annotated[str, msgspec.Meta(max_length=8192)] = ""
    fingerprint: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-zA-Z]{1,64}\Z")] = ""


class _Payload(msgspec.Struct):
    version: Literal["4"]
    status: _Status
    alerts: Annotated[list[_Alert], msgspec.Meta(max_length=MAX_ALERTS)]
    groupKey: Annotated[str, msgspec.Meta(max_length=65536)] = ""
    truncatedAlerts: Annotated[int, msgspec.Meta(ge=0)] = 0
    receiver: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    groupLabels: _Labels = {}
    commonLabels: _Labels = {}
    commonAnnotations: _Annotations = {}
    externalURL: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class PayloadDecoder:
    """One compiled decoder, made once per process (decoders are immutable and thread-safe)."""

    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(_Payload)

    def decode(self, body: bytes) -> WebhookPayload | None:
        """The payload, or None when the validating path must decide (and explain) it: anything
        wrong, timestamps included, since that path may take a delivery's other alerts."""
        if _needs_validating_path(body):
            return None
        try:
            raw = self._decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return None  # RecursionError: nested too deeply (in a field it would ignore, even); worded there
        alerts = []
        for a in raw.alerts:
            try:  # the decoded dictionaries are fresh and typed: the alert takes them as they are
                alerts.append(Alert.of(
                    status=a.status, labels=a.labels, annotations=a.annotations, starts_at=a.startsAt,
                    ends_at=a.endsAt, generator_url=a.generatorURL, fingerprint=a.fingerprint,
                ))
            except PayloadError:
                return None
        return WebhookPayload(
            version=raw.version,
            status=raw.status,
            alerts=tuple(alerts),
            receiver=raw.receiver,
            group_key=raw.groupKey,
            truncated_alerts=raw.truncatedAlerts,
            group_labels=MappingProxyType(raw.groupLabels),
            common_labels=MappingProxyType(raw.commonLabels),
            common_annotations=MappingProxyType(raw.commonAnnotations),
            external_url=raw.externalURL,
        )
