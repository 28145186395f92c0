"""Stores written by the previous release open, upgrade in place, and keep working.

The embedded file's schema is the released ``SCHEMA`` text, copied here verbatim (it must
not follow later edits of the module); PostgreSQL gets the released migrations only.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import format_time
from remediator.store import migrations
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0
from tests.store.conftest import Schema
from tests.store.test_contract import alerts, firing

# remediator/store/sqlite.py SCHEMA as released (before attempts and parking).
RELEASED_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    alert TEXT NOT NULL,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    external_url TEXT NOT NULL DEFAULT '',
    received_at TEXT NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claimed_until REAL
);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts (processed, id);
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    alert_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    playbook TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL,
    exec_status TEXT,
    finished_at TEXT,
    claimed_by TEXT,
    claimed_until REAL,
    UNIQUE (alert_key, playbook)
);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE TABLE IF NOT EXISTS steps (
    execution_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (execution_id, phase, idx)
);
CREATE TABLE IF NOT EXISTS notifications (
    execution_id TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_execution ON notifications (execution_id);
"""


def old_rows() -> list[tuple[Any, ...]]:
    """(dedup_key, fingerprint, status, alert, received_at, processed, claimed_by, claimed_until) as released."""
    rows = []
    for app, processed, claimed in (("done", 1, None), ("pending", 0, None), ("held", 0, "crashed-worker")):
        [r] = alerts(firing(app))
        rows.append((r.alert.dedup_key, r.alert.fingerprint, r.alert.status, json.dumps(r.alert.to_json()),
                     format_time(r.received_at), processed, claimed, T0.timestamp() + 300 if claimed else None))
    return rows


def released_sqlite_file(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(RELEASED_SQLITE_SCHEMA)
    conn.executemany(
        "INSERT INTO alerts (dedup_key, fingerprint, status, alert, receiver, group_key, received_at, processed,"
        " claimed_by, claimed_until) VALUES (?, ?, ?, ?, 'remediator', 'g', ?, ?, ?, ?)",
        old_rows(),
    )
    conn.close()


async def exercise(store: Any, vclock: VirtualClock) -> None:
    """The old rows work as before; attempts start from 0 and parking works on them; the
    kill switch, never recorded by the old release, is unset and can be set."""
    assert await store.kill_switch() is None
    await store.set_kill_switch(True, "ops", T0)
    assert (await store.kill_switch()).paused
    claimed = await store.claim_alerts("w", 10, 30)
    assert [(s.received.alert.labels["app"], s.attempts) for s in claimed] == [("pending", 1), ("held", 1)]
    await store.park_alert(claimed[0].id, "boom")
    await store.mark_processed(claimed[1].id)
    assert await store.record_alerts(alerts(firing("new"))) == 1
    [new] = await store.claim_alerts("w", 10, 30)
    assert (new.received.alert.labels["app"], new.attempts) == ("new", 1)
    [parked] = await store.parked_alerts()
    assert (parked["id"], parked["alert"]["labels"]["app"], parked["error"]) == (claimed[0].id, "pending", "boom")


async def test_a_file_from_the_released_schema_opens_and_works(tmp_path: Path, vclock: VirtualClock) -> None:
    path = tmp_path / "remediator.db"
    released_sqlite_file(path)
    store = await SQLiteStore.open(path, vclock)  # recover: the crashed worker's claim is released at once
    try:
        await exercise(store, vclock)
    finally:
        await store.close()
    again = await SQLiteStore.open(path, vclock)  # upgrading is done once; reopening changes nothing
    try:
        assert [p["error"] for p in await again.parked_alerts()] == ["boom"]
        assert await again.count_alerts() == 4
    finally:
        await again.close()
    conn = sqlite3.connect(path)
    assert "alerts_parked" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()


async def test_the_daemon_and_an_export_may_upgrade_the_same_file_at_once(
    tmp_path: Path, vclock: VirtualClock
) -> None:
    path = tmp_path / "remediator.db"
    released_sqlite_file(path)
    stores = await asyncio.gather(SQLiteStore.open(path, vclock), SQLiteStore.open(path, vclock, recover=False))
    for s in stores:
        await s.close()


async def test_a_postgres_schema_from_the_released_migrations_upgrades_and_works(
    pg_schema: Schema, vclock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = [m for m in migrations.MIGRATIONS if m.version <= 2]
    monkeypatch.setattr(migrations, "MIGRATIONS", tuple(released))
    old = await PostgresStore.open(pg_schema.dsn, vclock)
    await old.close()
    for key, fp, status, alert, _received, processed, _, _ in old_rows():
        await pg_schema.conn.execute(
            "INSERT INTO alerts (dedup_key, fingerprint, status, starts_at, alert, receiver, group_key, received_at,"
            " processed) VALUES ($1, $2, $3, $4, $5, 'remediator', 'g', $4, $6)",
            key, fp, status, T0, alert, bool(processed),
        )
    monkeypatch.undo()
    store = await PostgresStore.open(pg_schema.dsn, vclock)
    try:
        assert await store.migrate() == []
        rows = await pg_schema.conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, migrations.LATEST + 1))
        await exercise(store, vclock)
    finally:
        await store.close()
