"""Malformed webhook bodies, each with the reason it must be rejected for.

Shared by the parser tests and the HTTP tests: the same body must give the same
reason whether it is parsed directly or POSTed to the daemon.
"""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from remediator.core.alerts import MAX_ALERTS
from remediator.settings import WebhookSettings
from tests.payloads import alert_json, payload

Body = dict[str, Any]


def valid_body() -> Body:
    return payload(
        alert_json({"alertname": "ServiceDown", "severity": "critical", "namespace": "shop", "deployment": "api"},
                   fingerprint="0123456789abcdef"),
        alert_json({"alertname": "ServiceDown", "severity": "critical", "namespace": "shop", "deployment": "web"},
                   fingerprint="fedcba9876543210"),
    )


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes
    reason: str  # the exact start of the PayloadError message: where, then why

    def __str__(self) -> str:
        return self.id

    @property
    def one_alert(self) -> bool:
        """The problem is one alert's, in a delivery whose other alert is fine: that alert is refused
        with the reason, the other taken (Alertmanager does not retry a 4xx and re-sends the group)."""
        return self.reason.startswith("body.alerts[")


def refusal(body: bytes) -> tuple[str, int]:
    """(the reason, how many alerts were taken): a refused delivery's error, or the first refused alert's."""
    from remediator.core.alerts import parse_webhook
    from remediator.core.errors import PayloadError

    try:
        taken = parse_webhook(body)
    except PayloadError as exc:
        return str(exc), 0
    assert taken.refused, "nothing was refused"
    return taken.refused[0], len(taken.alerts)


def _edit(change: Callable[[Body], object]) -> bytes:
    body = copy.deepcopy(valid_body())
    change(body)
    return json.dumps(body).encode()


def _set(path: str, value: Any) -> Callable[[Body], object]:
    """``alerts.0.labels.severity`` -> body["alerts"][0]["labels"]["severity"] = value."""
    *parents, last = path.split(".")

    def change(body: Body) -> None:
        node: Any = body
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[Body], object]:
    *parents, last = path.split(".")

    def change(body: Body) -> None:
        node: Any = body
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return change


def _raw_labels(fragment: str) -> bytes:
    """A body whose first alert's labels are the raw JSON ``fragment`` (escapes stay as written)."""
    text = json.dumps(valid_body())
    old = json.dumps(valid_body()["alerts"][0]["labels"])
    return text.replace(old, fragment, 1).encode()


TINY_ALERT = {"status": "firing", "labels": {}, "startsAt": "2026-11-22T10:00:00Z"}

CASES: list[Case] = [
    # not JSON at all
    Case("bad-json", b'{"version": "4", "status": ', "body is not valid JSON: Expecting value at line 1 column 28"),
    Case("empty-body", b"", "body is not valid JSON: Expecting value at line 1 column 1"),
    Case("trailing-garbage", json.dumps(valid_body()).encode() + b" }", "body is not valid JSON: Extra data"),
    Case("nan", json.dumps(valid_body()).replace('"truncatedAlerts": 0', '"truncatedAlerts": NaN').encode(),
         "body is not valid JSON: NaN is not JSON"),
    Case("endless-number", json.dumps(valid_body()).replace('"truncatedAlerts": 0',
                                                            '"truncatedAlerts": 1' + "0" * 5000).encode(),
         "body is not valid JSON: a number has too many digits"),
    Case("non-utf8", json.dumps(valid_body()).replace("ServiceDown", "Service\udcffDown", 1)
         .encode("utf-8", "surrogateescape"), "body is not valid UTF-8 (byte "),
    Case("latin1", '{"version": "4", "status": "firing", "receiver": "café", "alerts": []}'.encode("latin-1"),
         "body is not valid UTF-8 (byte 53)"),
    Case("lone-surrogate", _raw_labels('{"alertname": "\\ud800"}'),
         "body.alerts[0].labels.alertname: a string holds an unpaired UTF-16 surrogate"),
    # wrong types
    Case("not-an-object", b"[]", "body: expected an object, got an array"),
    Case("null", b"null", "body: expected an object, got null"),
    # 2.5 KB, nested 1,000 deep in a field the daemon ignores: the fast decoder's RecursionError was a 500
    Case("nested-too-deeply", json.dumps(valid_body()).encode()[:-1] + b', "extra": ' + b"[" * 1000 + b"]" * 1000
         + b"}", "body is nested too deeply"),
    Case("labels-not-a-map", _edit(_set("alerts.0.labels", ["alertname", "ServiceDown"])),
         "body.alerts[0].labels: expected an object, got an array"),
    Case("label-value-number", _edit(_set("alerts.1.labels.severity", 5)),
         "body.alerts[1].labels.severity: expected a string, got a number"),
    Case("label-value-null", _edit(_set("alerts.0.labels.severity", None)),
         "body.alerts[0].labels.severity: expected a string, got null"),
    Case("annotation-value-object", _edit(_set("alerts.0.annotations.summary", {"a": "b"})),
         "body.alerts[0].annotations.summary: expected a string, got an object"),
    Case("status-broken", _edit(_set("status", "broken")),
         "body.status: expected one of 'firing', 'resolved', got 'broken'"),
    Case("alert-status-broken", _edit(_set("alerts.1.status", "pending")),
         "body.alerts[1].status: expected one of 'firing', 'resolved', got 'pending'"),
    Case("version-3", _edit(_set("version", "3")),
         "body.version: unsupported payload version '3'; only version '4' is understood"),
    Case("version-number", _edit(_set("version", 4)),
         "body.version: unsupported payload version 4; only version '4' is understood"),
    Case("alerts-not-a-list", _edit(_set("alerts", {"0": {}})), "body.alerts: expected an array, got an object"),
    Case("alert-not-an-object", _edit(_set("alerts.1", "ServiceDown")),
         "body.alerts[1]: expected an object, got a string"),
    Case("truncated-negative", _edit(_set("truncatedAlerts", -1)), "body.truncatedAlerts: must be at least 0, got -1"),
    Case("truncated-string", _edit(_set("truncatedAlerts", "3")),
         "body.truncatedAlerts: expected an integer, got a string"),
    Case("fingerprint-invalid", _edit(_set("alerts.0.fingerprint", "../../etc")),
         "body.alerts[0].fingerprint: '../../etc' is not a valid fingerprint"),
    Case("fingerprint-trailing-newline", _edit(_set("alerts.0.fingerprint", "abc\n")),
         "body.alerts[0].fingerprint: 'abc\\n' is not a valid fingerprint"),  # a pattern's $ matched before it
    Case("starts-at-number", _edit(_set("alerts.0.startsAt", 1700000000)),
         "body.alerts[0].startsAt: expected a string, got a number"),
    # missing fields
    Case("no-alerts", _edit(_drop("alerts")), "body: 'alerts' is a required property"),
    Case("no-status", _edit(_drop("status")), "body: 'status' is a required property"),
    Case("no-version", _edit(_drop("version")), "body: 'version' is a required property"),
    Case("alert-without-labels", _edit(_drop("alerts.1.labels")), "body.alerts[1]: 'labels' is a required property"),
    Case("starts-at-trailing-newline", _edit(_set("alerts.0.startsAt", "2026-11-22T10:00:00Z\n")),
         "body.alerts[0].startsAt: invalid RFC 3339 timestamp"),  # a regex's $ matched before the newline
    Case("alert-without-starts-at", _edit(_drop("alerts.0.startsAt")),
         "body.alerts[0]: 'startsAt' is a required property"),
    Case("alert-without-status", _edit(_drop("alerts.0.status")), "body.alerts[0]: 'status' is a required property"),
    # bad timestamps
    Case("starts-at-words", _edit(_set("alerts.0.startsAt", "yesterday")),
         "body.alerts[0].startsAt: invalid RFC 3339 timestamp 'yesterday'"),
    Case("starts-at-no-zone", _edit(_set("alerts.1.startsAt", "2026-11-22T10:00:00")),
         "body.alerts[1].startsAt: invalid RFC 3339 timestamp '2026-11-22T10:00:00'"),
    Case("starts-at-impossible", _edit(_set("alerts.0.startsAt", "2026-02-30T10:00:00Z")),
         "body.alerts[0].startsAt: invalid timestamp '2026-02-30T10:00:00Z': day is out of range for month"),
    Case("ends-at-garbage", _edit(_set("alerts.0.endsAt", "2026-11-22T25:00:00Z")),
         "body.alerts[0].endsAt: invalid timestamp '2026-11-22T25:00:00Z'"),
    Case("ends-at-before-time", _edit(_set("alerts.0.endsAt", "0001-01-01T00:00:00+01:00")),
         "body.alerts[0].endsAt: timestamp '0001-01-01T00:00:00+01:00' is out of range"),
    # huge
    Case("too-many-labels", _edit(_set("alerts.0.labels", {f"l{i}": "v" for i in range(200)})),
         "body.alerts[0].labels: too many entries (200; at most 128)"),
    Case("label-value-too-long", _edit(_set("alerts.0.labels.deployment", "x" * 5000)),
         "body.alerts[0].labels.deployment: too long (5000 characters; at most 4096)"),
    Case("label-name-too-long", _edit(_set("alerts.0.labels." + "n" * 300, "v")),
         "body.alerts[0].labels: label name 'nnnnnnnn"),
    Case("label-name-empty", _edit(_set("alerts.0.labels.", "v")),
         "body.alerts[0].labels: label name '': must not be empty"),
    Case("too-many-alerts", _edit(_set("alerts", [TINY_ALERT] * (MAX_ALERTS + 1))),  # small enough for the body limit
         f"body.alerts: too many items ({MAX_ALERTS + 1}; at most {MAX_ALERTS})"),
    # deep nesting
    Case("deep-nesting", b'{"version": "4", "alerts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         "body is nested too deeply"),
    Case("nested-label-value", _edit(_set("alerts.0.labels.severity", json.loads("[" * 500 + "]" * 500))),
         "body.alerts[0].labels.severity: expected a string, got an array"),
]


@dataclass(frozen=True)
class EncodedCase:
    """A body whose ``Content-Encoding`` does not match its bytes (or is one we do not speak)."""

    id: str
    body: bytes
    encoding: str
    status: int
    reason: str  # the start of the JSON error

    def __str__(self) -> str:
        return self.id


_GOOD = json.dumps(valid_body()).encode()
_GZIPPED = gzip.compress(_GOOD)
_MISMATCH = "body does not match its Content-Encoding"
_BAD_HEADER = "Error -3 while decompressing data: incorrect header check"

ENCODING_CASES: list[EncodedCase] = [
    EncodedCase("gzip-plain", _GOOD, "gzip", 400, f"{_MISMATCH} gzip: {_BAD_HEADER}"),
    EncodedCase("x-gzip-plain", _GOOD, "x-gzip", 400, f"{_MISMATCH} x-gzip: {_BAD_HEADER}"),
    EncodedCase("deflate-plain", _GOOD, "deflate", 400, f"{_MISMATCH} deflate: {_BAD_HEADER}"),
    EncodedCase("deflate-gzipped", _GZIPPED, "deflate", 400, f"{_MISMATCH} deflate: {_BAD_HEADER}"),
    EncodedCase("gzip-deflated", zlib.compress(_GOOD), "GZIP", 400, f"{_MISMATCH} gzip: {_BAD_HEADER}"),
    EncodedCase("gzip-no-trailer", _GZIPPED[:-4], "gzip", 400, f"{_MISMATCH} gzip: truncated"),
    EncodedCase("gzip-header-only", _GZIPPED[:10], "gzip", 400, f"{_MISMATCH} gzip: truncated"),
    EncodedCase("gzip-cut-midway", _GZIPPED[: len(_GZIPPED) // 2], "gzip", 400, f"{_MISMATCH} gzip: truncated"),
    EncodedCase("gzip-bad-crc", _GZIPPED[:-8] + b"\0\0\0\0" + _GZIPPED[-4:], "gzip", 400,
                f"{_MISMATCH} gzip: Error -3 while decompressing data: incorrect data check"),
    EncodedCase("gzip-then-junk", _GZIPPED + b"junk", "gzip", 400, f"{_MISMATCH} gzip: bytes after the end"),
    EncodedCase("gzip-twice-claimed", _GZIPPED, "gzip, gzip", 400, f"{_MISMATCH} gzip: {_BAD_HEADER}"),
    EncodedCase("gzip-empty", b"", "gzip", 400, f"{_MISMATCH} gzip: truncated"),
    EncodedCase("gzip-of-garbage", gzip.compress(b"\xff\xfe not json"), "gzip", 400, "body is not valid UTF-8"),
    EncodedCase("gzip-bomb", gzip.compress(b" " * (2 * WebhookSettings().max_body_bytes)), "gzip", 413,
                f"body larger than {WebhookSettings().max_body_bytes} bytes once decoded (gzip)"),
    EncodedCase("br", b"\x8b\x01\x80not brotli", "br", 415, "Content-Encoding 'br' is not supported"),
    EncodedCase("zstd", b"\x28\xb5\x2f\xfd garbage", "zstd", 415, "Content-Encoding 'zstd' is not supported"),
    EncodedCase("compress", _GOOD, "compress", 415, "Content-Encoding 'compress' is not supported"),
    EncodedCase("made-up", _GOOD, "gzip;q=1", 415, "Content-Encoding 'gzip;q=1' is not supported"),
]
