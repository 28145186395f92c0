"""The decisions listing and an alert's deliveries, on the embedded store and PostgreSQL alike.

Every filter of ``/api/v1/decisions`` narrows what both stores return in the same way, the
order is by decision time (sub-second times included) then insertion, and the keyset cursor
neither repeats nor skips a decision when others are recorded between two pages.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import Decision, DecisionKind, ResolvedTarget, execution_id
from remediator.ports import DecisionQuery
from remediator.store import migrations
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0, alert_json
from tests.store.conftest import Schema
from tests.store.test_contract import a_decision, alerts
from tests.store.test_upgrade import released_sqlite_file

EXECUTED, COOLDOWN, RATE_LIMITED = DecisionKind.EXECUTED, DecisionKind.COOLDOWN, DecisionKind.RATE_LIMITED


def decide(alert: Alert, playbook: str, kind: DecisionKind, at: datetime, namespace: str = "shop",
           name: str = "web") -> Decision:
    return replace(a_decision(alert, playbook, kind=kind, at=at), reason=f"{kind.value} because",
                   playbook_version="v1", target=ResolvedTarget("Deployment", namespace, name), steps=(),
                   on_failure=())


async def record(store: Any, app: str, starts: str = "2026-11-22T10:00:00Z") -> Alert:
    [r] = alerts(alert_json({"alertname": f"{app.title()}Down", "app": app}, starts_at=starts))
    await store.record_alerts([r])
    return r.alert


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


@pytest.fixture
async def recorded(store: Any) -> dict[str, Decision]:
    """Five decisions, one a second, on two alerts, two playbooks, two namespaces and targets."""
    a, b = await record(store, "web"), await record(store, "db")
    made = {
        "web-restart": decide(a, "restart", EXECUTED, T0),
        "web-scale": decide(a, "scale", COOLDOWN, T0 + timedelta(seconds=1)),
        "db-restart": decide(b, "restart", RATE_LIMITED, T0 + timedelta(seconds=2), "payments", "db"),
        "db-scale": decide(b, "scale", COOLDOWN, T0 + timedelta(seconds=3), "payments", "db"),
    }
    late = await record(store, "web", "2026-11-22T11:00:00Z")  # a second firing episode of web
    made["web-later"] = decide(late, "restart", EXECUTED, T0 + timedelta(seconds=4))
    for d in made.values():
        assert await store.record_decision(d)
    return made


def wanted(made: dict[str, Decision], *names: str) -> list[str]:
    return [made[n].execution_id or "" for n in names]


async def test_every_decision_newest_first_with_what_was_recorded(store: Any, recorded: dict[str, Decision]) -> None:
    items = await store.query_decisions(DecisionQuery())
    assert ids(items) == wanted(recorded, "web-later", "db-scale", "db-restart", "web-scale", "web-restart")
    refusal = items[2]
    assert refusal == {
        "id": recorded["db-restart"].execution_id,
        "fingerprint": recorded["db-restart"].fingerprint,
        "alert": recorded["db-restart"].alert_key,
        "alertname": "DbDown",
        "playbook": "restart",
        "playbook_version": "v1",
        "at": "2026-11-22T10:00:02Z",
        "decision": "rate_limited",
        "reason": "rate_limited because",
        "target": {"kind": "Deployment", "namespace": "payments", "name": "db"},
        "dry_run": False,
        "execution_id": None,  # a refusal has no execution
        "steps": [],
        "on_failure": [],
        "status": None,
        "finished_at": None,
    }
    executed = items[4]
    assert (executed["execution_id"], executed["status"]) == (recorded["web-restart"].execution_id, "pending")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (DecisionQuery(playbook="scale"), ("db-scale", "web-scale")),
        (DecisionQuery(kinds=(COOLDOWN,)), ("db-scale", "web-scale")),
        (DecisionQuery(kinds=(COOLDOWN, RATE_LIMITED)), ("db-scale", "db-restart", "web-scale")),
        (DecisionQuery(namespace="payments"), ("db-scale", "db-restart")),
        (DecisionQuery(target_name="web"), ("web-later", "web-scale", "web-restart")),
        (DecisionQuery(target_kind="StatefulSet", target_name="web"), ()),
        (DecisionQuery(namespace="shop", target_kind="Deployment", target_name="db"), ()),
        (DecisionQuery(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3)), ("db-restart", "web-scale")),
        (DecisionQuery(since=T0 + timedelta(seconds=4)), ("web-later",)),
        (DecisionQuery(until=T0 + timedelta(seconds=1)), ("web-restart",)),
        (DecisionQuery(playbook="restart", namespace="shop", kinds=(EXECUTED,)), ("web-later", "web-restart")),
        (DecisionQuery(playbook="nope"), ()),
    ],
    ids=lambda v: "" if isinstance(v, tuple) else None,
)
async def test_each_filter_narrows_the_listing(
    store: Any, recorded: dict[str, Decision], query: DecisionQuery, expected: tuple[str, ...]
) -> None:
    assert ids(await store.query_decisions(query)) == wanted(recorded, *expected)


async def test_fingerprint_filter_spans_the_alerts_episodes(store: Any, recorded: dict[str, Decision]) -> None:
    web = recorded["web-restart"].fingerprint
    items = await store.query_decisions(DecisionQuery(fingerprint=web))
    assert ids(items) == wanted(recorded, "web-later", "web-scale", "web-restart")
    assert {i["alertname"] for i in items} == {"WebDown"}


async def test_pages_neither_repeat_nor_skip_when_decisions_are_recorded_meanwhile(
    store: Any, recorded: dict[str, Decision]
) -> None:
    first = await store.query_decisions(DecisionQuery(limit=2))
    assert ids(first) == wanted(recorded, "web-later", "db-scale")
    # recorded between two pages: one newer than everything, one at the very time of the cursor
    extra = await record(store, "cache")
    for playbook, at in (("restart", T0 + timedelta(seconds=9)), ("scale", T0 + timedelta(seconds=3))):
        assert await store.record_decision(decide(extra, playbook, COOLDOWN, at))
    seen = ids(first)
    cursor = first[-1]["id"]
    while cursor is not None:
        page = await store.query_decisions(DecisionQuery(limit=2, before=cursor))
        seen += ids(page)
        cursor = page[-1]["id"] if len(page) == 2 else None
    older = wanted(recorded, "db-restart", "web-scale", "web-restart")
    assert seen == wanted(recorded, "web-later", "db-scale") + older  # what was there, each once, in order
    # the one recorded at the cursor's time comes after the cursor (inserted later): on no page
    # already read, and the newest one is at the head of a fresh listing
    assert ids(await store.query_decisions(DecisionQuery(limit=1))) == [execution_id(extra.dedup_key, "restart")]


async def test_sub_second_times_order_and_filter_as_times(store: Any) -> None:
    """A whole second is written without a fraction ("10:00:00Z"); as text it would sort after
    "10:00:00.5Z".  The listing orders and bounds by time all the same."""
    a = await record(store, "web")
    half, whole = T0 + timedelta(milliseconds=500), T0
    for playbook, at in (("later", half), ("earlier", whole)):
        assert await store.record_decision(decide(a, playbook, COOLDOWN, at))
    assert [i["playbook"] for i in await store.query_decisions(DecisionQuery())] == ["later", "earlier"]
    assert [i["playbook"] for i in await store.query_decisions(DecisionQuery(since=T0))] == ["later", "earlier"]
    assert [i["playbook"] for i in await store.query_decisions(DecisionQuery(until=half))] == ["earlier"]


async def test_deliveries_newest_first_with_their_times(store: Any, vclock: VirtualClock) -> None:
    labels = {"alertname": "WebDown", "app": "web"}
    firing = alerts(alert_json(labels))
    resolved = alerts(alert_json(labels, status="resolved", ends_at="2026-11-22T10:05:00Z"),
                      at=T0 + timedelta(minutes=5))
    await store.record_alerts(firing)
    await store.record_alerts(resolved)
    await store.record_alerts(alerts(alert_json({"alertname": "Other", "app": "db"})))
    got = await store.deliveries(firing[0].alert.fingerprint)
    assert [(d["status"], d["startsAt"], d["endsAt"], d["received_at"]) for d in got] == [
        ("resolved", "2026-11-22T10:00:00Z", "2026-11-22T10:05:00Z", "2026-11-22T10:05:00Z"),
        ("firing", "2026-11-22T10:00:00Z", "0001-01-01T00:00:00Z", "2026-11-22T10:00:00Z"),
    ]
    assert got[0]["labels"] == labels and got[0]["receiver"] == "remediator"
    assert len(await store.deliveries(firing[0].alert.fingerprint, limit=1)) == 1
    assert await store.deliveries("0000000000000000") == []


# -- stores written before the decisions API upgrade in place ----------------------------------------


def old_decision_row(alert: Alert, playbook: str, at: str, body: dict[str, Any]) -> tuple[Any, ...]:
    return (execution_id(alert.dedup_key, playbook), alert.dedup_key, alert.fingerprint, playbook, "cooldown", at,
            json.dumps(body))


async def test_an_older_sqlite_file_gets_target_columns_and_sortable_times(
    tmp_path: Path, vclock: VirtualClock
) -> None:
    path = tmp_path / "remediator.db"
    released_sqlite_file(path)
    [a] = [r.alert for r in alerts(alert_json({"alertname": "WebDown", "app": "web"}))]
    rows = [
        old_decision_row(a, "whole", "2026-11-22T10:00:00Z", decide(a, "whole", COOLDOWN, T0).to_json()),
        old_decision_row(a, "half", "2026-11-22T10:00:00.500000Z",
                         decide(a, "half", COOLDOWN, T0 + timedelta(milliseconds=500), "payments").to_json()),
    ]
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    store = await SQLiteStore.open(path, vclock)
    try:
        assert [i["playbook"] for i in await store.query_decisions(DecisionQuery())] == ["half", "whole"]
        assert [i["playbook"] for i in await store.query_decisions(DecisionQuery(namespace="payments"))] == ["half"]
        assert [i["playbook"] for i in await store.query_decisions(DecisionQuery(target_name="web"))] == ["half",
                                                                                                         "whole"]
    finally:
        await store.close()


async def test_a_postgres_schema_before_the_decisions_api_gets_its_target_columns(
    pg_schema: Schema, vclock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", tuple(m for m in migrations.MIGRATIONS if m.version <= 4))
    old = await PostgresStore.open(pg_schema.dsn, vclock)
    await old.close()
    [a] = [r.alert for r in alerts(alert_json({"alertname": "WebDown", "app": "web"}))]
    good = decide(a, "good", COOLDOWN, T0).to_json()
    hostile = {**decide(a, "hostile", COOLDOWN, T0 + timedelta(seconds=1)).to_json(), "reason": "nul \x00 here"}
    for playbook, body in (("good", good), ("hostile", hostile)):
        row = old_decision_row(a, playbook, "", body)
        await pg_schema.conn.execute(
            "INSERT INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body) VALUES ($1, $2, $3, $4, $5,"
            " $6, $7)", *row[:5], T0, row[6])
    monkeypatch.undo()
    store = await PostgresStore.open(pg_schema.dsn, vclock)  # migration 5 must not stumble on the escaped NUL
    try:
        assert [i["playbook"] for i in await store.query_decisions(DecisionQuery(namespace="shop"))] == ["good"]
        assert {i["playbook"] for i in await store.query_decisions(DecisionQuery())} == {"good", "hostile"}
    finally:
        await store.close()


async def test_one_alerts_decisions_of_a_kind_are_read_off_its_own_index_on_sqlite(
    tmp_path: Path, vclock: VirtualClock
) -> None:
    """Every resolve looks back through its alert's executions (``fingerprint`` + ``kind``).  SQLite has
    no statistics (no ANALYZE) and chose the kind index: each resolve read every executed decision
    and filtered them by fingerprint, so a storm of resolves grew with the square of the history."""
    from remediator.store.decision_query import Params, decisions_sql
    from remediator.store.sqlite import _at

    path = tmp_path / "remediator.db"
    store = await SQLiteStore.open(path, vclock)
    await store.close()
    params = Params(numbered=False)
    sql = decisions_sql(DecisionQuery(fingerprint="f", kinds=(EXECUTED,), limit=20), params, time=_at, order="rowid")
    conn = sqlite3.connect(path)
    try:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params.values))
    finally:
        conn.close()
    assert "USING INDEX decisions_fingerprint_kind (fingerprint=? AND kind=?)" in plan, plan
