"""The decisions listing (``/api/v1/decisions``) as SQL both stores share.

The filters, the order and the keyset cursor must mean the same in the embedded store
and PostgreSQL, or a listing would page differently depending on the deployment; so the
statement is written once, here.  What differs is passed in: how a parameter is marked
(``?`` or ``$n``), how a time is kept in the ``at`` column, and the column that orders
decisions recorded at the same time (SQLite's ``rowid``, PostgreSQL's ``seq``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from remediator.ports import DecisionQuery


class Params:
    """The statement's parameters as they are marked: ``mark(value)`` appends one and returns its
    placeholder (``?`` for SQLite, ``$1``, ``$2``… for PostgreSQL)."""

    def __init__(self, numbered: bool) -> None:
        self.values: list[Any] = []
        self._numbered = numbered

    def mark(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}" if self._numbered else "?"


def decisions_sql(query: DecisionQuery, params: Params, *, time: Callable[[datetime], Any], order: str) -> str:
    """SELECT the decisions ``query`` asks for, newest first, each with its alert (for the
    alertname), as :func:`remediator.store.rows.decision_entry` reads them.

    ``time`` turns a bound into what the ``at`` column holds; ``order`` is the column that
    breaks ties between decisions recorded at the same time, in the order they were recorded.

    Each filter has an index ending in the listing's order (``at`` then ``order``), so a page
    is read off one index, never sorted: with 100,000 decisions a rare kind (one in a thousand)
    would otherwise be found by reading every row.  Several kinds are several such reads, each
    limited to a page, merged: an ``IN`` over the kind index would sort every matching row.
    """
    kinds = list(dict.fromkeys(k.value for k in query.kinds))
    if len(kinds) <= 1:
        where = _conditions(query, params, time, order, kinds[0] if kinds else None)
        return (
            "SELECT d.id, d.body, d.exec_status, d.finished_at, a.alert FROM decisions d"
            " LEFT JOIN alerts a ON a.dedup_key = d.alert_key"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY d.at DESC, d.{order} DESC LIMIT {params.mark(query.limit)}"
        )
    each = " UNION ALL ".join(
        f"SELECT * FROM (SELECT d.id, d.body, d.exec_status, d.finished_at, d.alert_key, d.at, d.{order} AS ord"
        f" FROM decisions d WHERE {' AND '.join(_conditions(query, params, time, order, kind))}"
        f" ORDER BY d.at DESC, d.{order} DESC LIMIT {params.mark(query.limit)}) AS k{i}"
        for i, kind in enumerate(kinds)
    )
    return (
        f"SELECT u.id, u.body, u.exec_status, u.finished_at, a.alert FROM ({each}) AS u"
        " LEFT JOIN alerts a ON a.dedup_key = u.alert_key"
        f" ORDER BY u.at DESC, u.ord DESC LIMIT {params.mark(query.limit)}"
    )


def _conditions(query: DecisionQuery, params: Params, time: Callable[[datetime], Any], order: str,
                kind: str | None) -> list[str]:
    """The WHERE terms of ``query`` over ``decisions d``, with one ``kind`` (or any)."""
    equal = (
        ("d.playbook", query.playbook),
        ("d.target_namespace", query.namespace),
        ("d.target_kind", query.target_kind),
        ("d.target_name", query.target_name),
        ("d.fingerprint", query.fingerprint),
        ("d.kind", kind),
    )
    where = [f"{column} = {params.mark(value)}" for column, value in equal if value is not None]
    if query.since is not None:
        where.append(f"d.at >= {params.mark(time(query.since))}")
    if query.until is not None:
        where.append(f"d.at < {params.mark(time(query.until))}")
    if query.before is not None:
        where.append(f"(d.at, d.{order}) < (SELECT at, {order} FROM decisions WHERE id = {params.mark(query.before)})")
    return where


#: The deliveries of one alert, newest first (ids are the order alerts were recorded in).
DELIVERIES_SQL = (
    "SELECT id, status, alert, receiver, received_at FROM alerts WHERE fingerprint = {fingerprint}"
    " ORDER BY id DESC LIMIT {limit}"
)


def daily_counts_sql(params: Params, since: Any, *, day: str) -> str:
    """SELECT how many decisions each playbook made per UTC day and kind from ``since`` on: one
    grouped query for the playbooks page's bar charts, rather than a listing counted in Python.

    ``day`` is the expression that turns ``d.at`` into its UTC date as ``YYYY-MM-DD`` text
    (the stores keep ``at`` differently); ``since`` is already what the ``at`` column holds.
    Rows: ``playbook, day, kind, n``.
    """
    return (
        f"SELECT d.playbook, {day} AS day, d.kind, COUNT(*) AS n FROM decisions d"
        f" WHERE d.at >= {params.mark(since)} GROUP BY d.playbook, day, d.kind"
    )
