"""Two releases on one PostgreSQL schema: a rolling update (``maxUnavailable: 0``), or an image rolled back.

The release before the decisions API (migration 5) writes decisions with an INSERT that names no
target columns, here verbatim as it was released; its decisions, written after the new release
migrated the schema, must still be found by the decisions API's target and namespace filters.
And a release started on a schema migrated by a later one says so, naming both versions, and runs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import structlog

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import Decision, DecisionKind, execution_id
from remediator.ports import DecisionQuery
from remediator.store import migrations
from remediator.store.postgres import PostgresStore
from tests.payloads import T0, alert_json
from tests.store.conftest import Schema
from tests.store.test_contract import alerts
from tests.store.test_decisions_query import decide

# remediator/store/postgres.py record_decision as released before migration 5 (07c47ef~1), verbatim.
RELEASED_INSERT = (
    "INSERT INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body, exec_status)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
)


def web_down() -> Alert:
    [a] = [r.alert for r in alerts(alert_json({"alertname": "WebDown", "app": "web"}))]
    return a


async def record_as_released(schema: Schema, decision: Decision, body: dict[str, Any] | None = None) -> None:
    """What the released ``record_decision`` sent for this decision."""
    did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
    status = "pending" if decision.kind is DecisionKind.EXECUTED else None
    await schema.conn.execute(RELEASED_INSERT, did, decision.alert_key, decision.fingerprint, decision.playbook,
                              decision.kind.value, decision.at, json.dumps(body or decision.to_json()), status)


def playbooks(items: list[dict[str, Any]]) -> list[str]:
    return [i["playbook"] for i in items]


async def test_a_decision_the_released_insert_writes_after_the_migration_is_found_by_target(
    pg_schema: Schema, vclock: VirtualClock
) -> None:
    store = await PostgresStore.open(pg_schema.dsn, vclock)  # the new release migrates first
    try:
        a = web_down()
        await record_as_released(pg_schema, decide(a, "old", DecisionKind.EXECUTED, T0, "payments", "db"))
        await store.record_decision(decide(a, "new", DecisionKind.COOLDOWN, T0 + timedelta(seconds=1)))
        # neither a hostile body (an escaped NUL) nor a decision without a target fails the old insert
        hostile = decide(a, "hostile", DecisionKind.COOLDOWN, T0 + timedelta(seconds=2))
        await record_as_released(pg_schema, hostile, {**hostile.to_json(), "reason": "nul \x00 here"})
        await record_as_released(pg_schema, replace(decide(a, "none", DecisionKind.NO_MATCH, T0 + timedelta(
            seconds=3)), target=None))

        assert playbooks(await store.query_decisions(DecisionQuery(namespace="payments"))) == ["old"]
        assert playbooks(await store.query_decisions(DecisionQuery(target_kind="Deployment", target_name="db"))) == [
            "old"]
        assert playbooks(await store.query_decisions(DecisionQuery(namespace="shop"))) == ["new"]
        assert playbooks(await store.query_decisions(DecisionQuery())) == ["none", "hostile", "new", "old"]
        rows = {r["playbook"]: tuple(r)[1:] for r in await pg_schema.conn.fetch(
            "SELECT playbook, target_kind, target_namespace, target_name FROM decisions")}
        assert rows == {"old": ("Deployment", "payments", "db"), "new": ("Deployment", "shop", "web"),
                        "hostile": (None, None, None), "none": (None, None, None)}
        # the execution the old replica admitted runs on the new one: claims and status leave the target be
        did = decide(a, "old", DecisionKind.EXECUTED, T0).execution_id or ""
        assert await store.claim_execution(did, "new-replica", 60.0)
        assert playbooks(await store.query_decisions(DecisionQuery(namespace="payments"))) == ["old"]
    finally:
        await store.close()


async def migrate_to(schema: Schema, vclock: VirtualClock, version: int) -> None:
    """The schema as the release whose last migration is ``version`` leaves it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", tuple(m for m in migrations.MIGRATIONS if m.version <= version))
        patch.setattr(migrations, "LATEST", version)
        await (await PostgresStore.open(schema.dsn, vclock)).close()


async def found_in_payments(schema: Schema, vclock: VirtualClock) -> list[str]:
    """What a store opened now (migrating what it knows of) lists in namespace payments."""
    store = await PostgresStore.open(schema.dsn, vclock)
    try:
        return playbooks(await store.query_decisions(DecisionQuery(namespace="payments")))
    finally:
        await store.close()


async def test_decisions_left_without_target_columns_since_migration_5_get_them(
    pg_schema: Schema, vclock: VirtualClock
) -> None:
    """The rolling updates before this fix: rows the older release wrote after migration 5 ran."""
    await migrate_to(pg_schema, vclock, 7)
    await record_as_released(pg_schema, decide(web_down(), "old", DecisionKind.COOLDOWN, T0, "payments", "db"))
    assert await pg_schema.count("SELECT count(*) FROM decisions WHERE target_namespace IS NULL") == 1
    assert await found_in_payments(pg_schema, vclock) == ["old"]


async def test_a_schema_migrated_by_a_later_release_is_named_in_an_error_and_used(
    pg_schema: Schema, vclock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image rolled back one release: it starts (a replica of the older release restarting during
    a rolling update must), and says which schema it found and which it knows."""
    await migrate_to(pg_schema, vclock, migrations.LATEST)
    newest = migrations.LATEST
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:-1])
    monkeypatch.setattr(migrations, "LATEST", newest - 1)
    await record_as_released(pg_schema, decide(web_down(), "old", DecisionKind.COOLDOWN, T0, "payments", "db"))
    with structlog.testing.capture_logs() as logs:
        assert await found_in_payments(pg_schema, vclock) == ["old"]
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert "newer than this release" in error["event"]
    assert (error["schema_version"], error["release_schema_version"]) == (newest, newest - 1)
