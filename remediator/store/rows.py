"""Stored rows as the JSON the read API hands out, one mapping for both stores.

The HTTP API returns these documents unchanged whichever store is configured, so
the embedded store and PostgreSQL must produce them byte for byte alike.  Each store
only runs its own SQL; what a row becomes is decided here, once.  The one difference
between the backends that reaches this module is how a time is kept: SQLite holds
the API's own text (or epoch seconds, for claim and park times), PostgreSQL a
``timestamptz``; :func:`timestamp` makes them the same string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from remediator.core.alerts import format_time
from remediator.core.decisions import Decision, DecisionKind, decision_from_json
from remediator.ports import AWAITING_APPROVAL, StepResult, split_journal

#: How much of a parked alert's error is kept.
PARK_ERROR_CHARS = 2000


class Row(Protocol):
    """A result row by column name: ``sqlite3.Row`` and ``asyncpg.Record`` both are."""

    def __getitem__(self, key: str, /) -> Any: ...


def without_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL: such (hostile) strings are kept escaped, in both stores alike."""
    return value.replace("\x00", "\\u0000")


def resolve_key(fingerprint: str, starts_at: datetime) -> str:
    """The alert key (``dedup_key``) a firing episode's resolve is recorded under."""
    return f"{fingerprint}|{format_time(starts_at)}|resolved"


def resolve_keys(episodes: Iterable[tuple[str, datetime]]) -> dict[str, tuple[str, datetime]]:
    """``BatchLookups.look_up``'s episodes by the key of their resolve."""
    return {resolve_key(fingerprint, starts): (fingerprint, starts) for fingerprint, starts in episodes}


def looked_up(rows: Iterable[Row], keys: Mapping[str, tuple[str, datetime]]
              ) -> tuple[dict[str, Decision], set[tuple[str, datetime]]]:
    """``look_up``'s answer from its rows (``id, body``): a decision's, or a resolve's key with no body."""
    rows = list(rows)
    found = {r["id"]: decision_from_json(json.loads(r["body"])) for r in rows if r["body"] is not None}
    return found, {keys[r["id"]] for r in rows if r["body"] is None}


def park_error(error: str) -> str:
    """The error text a parked alert keeps: bounded, and free of NUL."""
    return without_nul(error[:PARK_ERROR_CHARS])


def timestamp(value: str | float | datetime | None) -> str | None:
    """A stored time as the API shows it (:func:`format_time`): SQLite's text is already that, but
    for the columns kept fixed-width (an alert's ``received_at``: a zero fraction written, which
    format_time leaves out); its REAL columns are epoch seconds, PostgreSQL's are datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        return value[:-8] + "Z" if value.endswith(".000000Z") else value
    if isinstance(value, datetime):
        return format_time(value)
    return format_time(datetime.fromtimestamp(value, UTC))


def target_columns(decision: Decision) -> tuple[str | None, str | None, str | None]:
    """The decision's target as its own columns (kind, namespace, name), for the decisions API's
    filters; NUL-free, as PostgreSQL text must be (an invalid name is recorded as rendered)."""
    t = decision.target
    return (without_nul(t.kind), without_nul(t.namespace), without_nul(t.name)) if t else (None, None, None)


def execution_status(decision: Decision) -> str | None:
    """The status a decision's execution is recorded with: ``pending`` when admitted (the execution
    queue runs it), ``awaiting_approval`` when it waits for a human, None when there is none."""
    return {DecisionKind.EXECUTED: "pending", DecisionKind.AWAITING_APPROVAL: AWAITING_APPROVAL}.get(decision.kind)


def execution_summary(row: Row) -> dict[str, Any]:
    """A decision row (``id, body, exec_status, finished_at``) as a listing item: the recorded
    decision with its execution's id, status and end."""
    body: dict[str, Any] = json.loads(row["body"])
    body["id"] = row["id"]
    body["status"] = row["exec_status"]
    body["finished_at"] = timestamp(row["finished_at"])
    return body


def execution_listing(row: Row) -> dict[str, Any]:
    """An item of the executions listing (``id, body, exec_status, finished_at,
    approval_deadline``): its summary and, for one that waited for approval (or waits), its
    deadline, as its document gives it, so a listing of what waits needs no read per item."""
    out = execution_summary(row)
    if row["approval_deadline"] is not None:
        out["approval_deadline"] = timestamp(row["approval_deadline"])
    return out


def decision_entry(row: Row) -> dict[str, Any]:
    """A decision row joined with its alert (``id, body, exec_status, finished_at, alert``) as an
    item of the decisions listing: the recorded decision, its alert's ``alertname`` (None once
    retention removed the alert) and its execution's id, status and end.

    Every decision is recorded under the id its execution would have; ``execution_id`` is
    shown only when an execution exists (an admitted decision), so a refusal never points at
    an execution that was never created."""
    out = execution_summary(row)
    alert = json.loads(row["alert"]) if row["alert"] else None
    out["alertname"] = (alert.get("labels") or {}).get("alertname") if alert else None
    out["execution_id"] = row["id"] if row["exec_status"] is not None else None
    return out


def delivery(row: Row) -> dict[str, Any]:
    """An alert row (``id, status, alert, receiver, received_at``) as one delivery of its episode."""
    alert = json.loads(row["alert"])
    return {
        "id": row["id"],
        "status": row["status"],
        "startsAt": alert.get("startsAt"),
        "endsAt": alert.get("endsAt"),
        "received_at": timestamp(row["received_at"]),
        "receiver": row["receiver"],
        "labels": alert.get("labels") or {},
    }


def alert_episode(
    fingerprint: str, deliveries: list[dict[str, Any]], decisions: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the read API shows of one alert (``/api/v1/alerts/<fingerprint>``): its labels (one
    fingerprint, one label set), its deliveries, its decisions and the executions among them,
    each list newest first."""
    labels = deliveries[0]["labels"] if deliveries else {}
    return {
        "fingerprint": fingerprint,
        "alertname": labels.get("alertname") or next((d["alertname"] for d in decisions if d["alertname"]), None),
        "labels": labels,
        "deliveries": [{k: v for k, v in d.items() if k != "labels"} for d in deliveries],
        "decisions": decisions,
        "executions": [
            {"id": d["execution_id"], "status": d["status"], "playbook": d["playbook"],
             "playbook_version": d["playbook_version"], "target": d["target"], "dry_run": d["dry_run"],
             "at": d["at"], "finished_at": d["finished_at"]}
            for d in decisions
            if d["execution_id"] is not None
        ],
    }


def step_entry(row: Row) -> dict[str, Any]:
    """A step row (``phase, idx, action, params, result, started_at, finished_at``) as an audit result."""
    return {
        "phase": row["phase"],
        "index": row["idx"],
        "action": row["action"],
        "params": json.loads(row["params"]),
        **json.loads(row["result"]),
        "started_at": timestamp(row["started_at"]),
        "finished_at": timestamp(row["finished_at"]),
    }


def execution_document(
    decision: Row, alert: str | None, steps: Iterable[Row], journal: Iterable[str]
) -> dict[str, Any]:
    """One execution's whole audit: its summary, the deadline of its wait for approval (only if it
    had one), the alert it acted on (None once retention removed it), its steps (main phase
    first) and, in the order recorded, its journal (``events``) and notification outcomes
    (``notifications``)."""
    out = execution_listing(decision)
    out["alert_payload"] = json.loads(alert) if alert else None
    out["results"] = [step_entry(s) for s in steps]
    out["events"], out["notifications"] = split_journal([json.loads(body) for body in journal])
    return out


def started_result(intent: Mapping[str, Any]) -> StepResult:
    """The write-ahead record of a step about to run (``begin_step``): status ``started``, and
    the absolute values it will apply, which a resumed step re-applies instead of recomputing."""
    return StepResult("started", "interrupted before it finished", details={"intent": dict(intent)})


def results_of(rows: Iterable[Row]) -> dict[tuple[str, int], StepResult]:
    """Step rows (``phase, idx, result``) as the results an execution resumes from."""
    out = {}
    for row in rows:
        r = json.loads(row["result"])
        out[(row["phase"], row["idx"])] = StepResult(
            r["status"], r.get("message", ""), r.get("before"), r.get("after"), r.get("details") or {}
        )
    return out


def parked_alert(row: Row) -> dict[str, Any]:
    """A parked alert row (``id, alert, receiver, received_at, attempts, parked_at, error``)."""
    return {
        "id": row["id"],
        "alert": json.loads(row["alert"]),
        "receiver": row["receiver"],
        "received_at": timestamp(row["received_at"]),
        "attempts": row["attempts"],
        "parked_at": timestamp(row["parked_at"]),
        "error": row["error"],
    }
