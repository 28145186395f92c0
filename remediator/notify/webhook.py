"""The generic JSON webhook: a stable, versioned body and an HMAC-SHA256 signature.

Request: ``POST <url>`` with ``Content-Type: application/json`` and the headers

* ``X-Remediator-Event``: the event (below).
* ``X-Remediator-Delivery``: the notice ``id``; the same on every retry of one notice.
* ``X-Remediator-Timestamp``: Unix seconds when this attempt was signed.
* ``X-Remediator-Signature``: ``v1=<hex>`` where ``<hex>`` is
  ``HMAC-SHA256(secret, f"{timestamp}.{raw body}")`` (only when the channel has a secret).

Receivers verify with :func:`verify_signature` (or the same three lines in any
language): recompute the HMAC over the timestamp, a dot and the raw body bytes,
compare in constant time, and reject timestamps older than a few minutes so a
captured request cannot be replayed later.

Body, schema version ``"1"`` (fields are only ever added within a version)::

    {
      "version": "1",
      "id": "nt-…",                  # stable per (execution, event[, notify step])
      "event": "started" | "succeeded" | "failed" | "skipped" | "dry_run" | "resolved" | "message"
               | "approval_requested" | "approval_denied" | "approval_expired" | "approval_refused",
      "at": "2026-11-22T10:00:00Z",  # when the event happened (RFC 3339, UTC)
      "channel": "ops-hook",         # the configured channel name
      "dry_run": false,              # true: nothing was changed in the cluster
      "text": "…",                   # the channel template's rendering
      "message": "…",                # a notify step's message, else ""
      "result": "succeeded",         # short outcome, e.g. "skipped (cooldown)"
      "execution": {"id": "ex-…", "url": "https://…/api/v1/executions/ex-…" | null,
                    "approval_url": "https://…/ui/executions/ex-…" | null,  # approval_* events
                    "decision": "executed", "reason": "…"},
      "playbook": {"name": "…", "version": "…"},
      "target": {"kind": "Deployment", "namespace": "…", "name": "…"} | null,
      "alert": {"fingerprint": "…", "status": "firing", "alertname": "…", "labels": {…},
                "annotations": {…}, "startsAt": "…", "generatorURL": "…"},
      "steps": [{"phase": "main", "index": 0, "action": "restart", "status": "ok", "message": "…"}]
    }

``steps`` lists the execution's steps with their status so far: ``pending`` (not run
yet), ``ok``, ``failed``, ``planned`` (dry run), ``skipped``; ``on_failure`` steps
appear once they ran.  It is ``[]`` for ``message`` events (a playbook's ``notify``
step, sent mid-execution).  ``target`` is null for a decision refused before a target
could be rendered.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from remediator.core.alerts import format_time
from remediator.notify.events import Notice

SCHEMA_VERSION = "1"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE = 300.0


def webhook_payload(notice: Notice, text: str, channel: str) -> dict[str, Any]:
    d = notice.decision
    a = notice.alert
    return {
        "version": SCHEMA_VERSION,
        "id": notice.id,
        "event": notice.event,
        "at": format_time(notice.at),
        "channel": channel,
        "dry_run": notice.dry_run,
        "text": text,
        "message": notice.message,
        "result": notice.result,
        "execution": {
            "id": d.execution_id,
            "url": notice.execution_url or None,
            "approval_url": notice.approval_url or None,
            "decision": d.kind.value,
            "reason": d.reason,
        },
        "playbook": {"name": d.playbook, "version": d.playbook_version},
        "target": d.target.to_json() if d.target else None,
        "alert": {
            "fingerprint": a.fingerprint,
            "status": a.status,
            "alertname": a.alertname,
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": format_time(a.starts_at),
            "generatorURL": a.generator_url,
        },
        "steps": [s.to_json() for s in notice.steps],
    }


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Remediator-Signature`` value for this body at this timestamp."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={mac.hexdigest()}"


def signature_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    headers = {"X-Remediator-Timestamp": str(timestamp)}
    if secret:
        headers["X-Remediator-Signature"] = sign(secret, timestamp, body)
    return headers


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``signature`` (one or more comma-separated ``v1=<hex>``) signs ``body`` at ``timestamp``.

    ``now`` is the receiver's Unix time; a timestamp more than ``tolerance`` seconds
    away from it is rejected even with a valid MAC, which bounds replays.
    """
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs(now - ts) > tolerance or not secret:
        return False
    expected = sign(secret, ts, body)
    candidates = [part.strip() for part in signature.split(",")]
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates if c)
