"""What only the PostgreSQL store has: migrations, connection settings, concurrent claimers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.core.errors import ConfigError, StoreUnavailable
from remediator.store.migrations import LATEST
from remediator.store.postgres import PostgresStore
from tests.payloads import PLAYBOOKS, ROOT, T0, db_pool_alert
from tests.store.conftest import Schema
from tests.store.test_contract import alerts, firing


async def test_replicas_starting_together_migrate_once(pg_schema: Schema, vclock: VirtualClock) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(pg_schema.dsn, vclock) for _ in range(5)))
    try:
        rows = await pg_schema.conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, LATEST + 1))
        assert await stores[0].migrate() == []
        tables = await pg_schema.conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", pg_schema.name
        )
        assert [t["table_name"] for t in tables] == [
            "alerts", "decisions", "kill_switch", "kill_switch_history", "notifications", "schema_migrations", "steps"]
    finally:
        for s in stores:
            await s.close()


async def test_connection_settings_come_from_the_dsn(pg_schema: Schema, vclock: VirtualClock) -> None:
    store = await PostgresStore.open(pg_schema.dsn + "&statement_timeout=150ms&pool_max_size=2", vclock)
    try:
        async with store._conn() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "150ms"
            assert await conn.fetchval("SHOW application_name") == "remediator"
        assert store._pool.get_max_size() == 2
        # a statement that outlives the timeout is "store unavailable" (503), not an internal error
        with pytest.raises(StoreUnavailable, match="QueryCanceled"):
            await store._execute("SELECT pg_sleep(1)")
        await store.ping()  # the pool is still healthy afterwards
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="pool option"):
        await PostgresStore.open(pg_schema.dsn + "&pool_max_size=many", vclock)


async def test_unreachable_server_is_store_unavailable(vclock: VirtualClock) -> None:
    with pytest.raises(StoreUnavailable):
        await PostgresStore.open("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2", vclock)


async def test_concurrent_claimers_never_share_an_alert(pg_schema: Schema, vclock: VirtualClock) -> None:
    stores = [await PostgresStore.open(pg_schema.dsn, vclock) for _ in range(4)]
    try:
        await stores[0].record_alerts(alerts(*(firing(f"a{i}") for i in range(300))))

        async def claimer(store: PostgresStore, name: str) -> list[int]:
            got: list[int] = []
            while batch := await store.claim_alerts(name, 7, 60):
                got += [s.id for s in batch]
                for s in batch:
                    await store.mark_processed(s.id)
            return got

        results = await asyncio.gather(*(claimer(s, f"w{i}") for i, s in enumerate(stores)))
        claimed = [i for r in results for i in r]
        assert len(claimed) == len(set(claimed)) == 300
        assert sum(1 for r in results if r) >= 2  # they really ran side by side
    finally:
        for s in stores:
            await s.close()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remediator", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=60)


def test_migrate_and_export_commands(pg_schema_sync: str, tmp_path: Path) -> None:
    first = run_cli("migrate", "--database-url", pg_schema_sync, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"applied migrations: {', '.join(map(str, range(1, LATEST + 1)))}"
    again = run_cli("migrate", "--database-url", pg_schema_sync, cwd=tmp_path)
    assert (again.returncode, again.stdout.strip()) == (0, "schema up to date")

    async def fill() -> None:
        store = await PostgresStore.open(pg_schema_sync, VirtualClock(T0))
        try:
            for i in range(4):
                await store.record_alerts(alerts(db_pool_alert(deployment=f"svc-{i}"), at=T0 + timedelta(hours=i)))
        finally:
            await store.close()

    asyncio.run(fill())
    out = tmp_path / "export.jsonl"
    exported = run_cli("export", "--database-url", pg_schema_sync, "--since", "2026-11-22T11:00:00Z",
                       "--until", "2026-11-22T13:00:00Z", "-o", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["received_at"] for line in lines] == ["2026-11-22T11:00:00Z", "2026-11-22T12:00:00Z"]
    [alert] = validate_payload(lines[0]["payload"]).alerts
    assert alert.labels["deployment"] == "svc-1"
    # the export is replay input: replay decides each alert as the daemon's playbooks would
    replayed = run_cli("replay", str(out), "--playbooks", str(PLAYBOOKS), "--format", "json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    decisions: list[dict[str, Any]] = json.loads(replayed.stdout)["decisions"]
    assert [(d["playbook"], d["decision"]) for d in decisions] == [("db-pool-exhaustion", "executed")] * 2
    unreachable = run_cli("export", "--database-url", "postgresql://postgres@127.0.0.1:1/test", cwd=tmp_path)
    assert unreachable.returncode == 1 and "store unavailable" in unreachable.stderr


def test_export_from_the_embedded_store(tmp_path: Path) -> None:
    from remediator.store.sqlite import SQLiteStore

    async def fill() -> None:
        store = await SQLiteStore.open(tmp_path / "data" / "remediator.db", VirtualClock(T0))
        try:
            await store.record_alerts(alerts(db_pool_alert(), at=T0))
        finally:
            await store.close()

    asyncio.run(fill())
    exported = run_cli("export", "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    [line] = [json.loads(x) for x in exported.stdout.splitlines()]
    assert line["received_at"] == "2026-11-22T10:00:00Z" and line["payload"]["version"] == "4"
    missing = run_cli("export", "--data-dir", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 2 and "no embedded store" in missing.stderr

