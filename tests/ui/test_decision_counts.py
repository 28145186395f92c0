"""The playbooks page's counts: decisions per playbook, UTC day and kind, in one grouped query
that means the same on the embedded store and on PostgreSQL (whatever the server's time zone)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import DecisionKind
from remediator.ports import DecisionCount
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0
from tests.store.conftest import fresh_schema, schema_dsn
from tests.store.test_decisions_query import decide, record

EXECUTED, COOLDOWN = DecisionKind.EXECUTED, DecisionKind.COOLDOWN


async def test_the_embedded_store_counts_per_playbook_utc_day_and_kind(tmp_path: Path, vclock: VirtualClock) -> None:
    s = await SQLiteStore.open(tmp_path / "store.db", vclock)
    try:
        await counted_per_utc_day(s)
    finally:
        await s.close()


async def test_postgres_counts_the_same_whatever_the_session_time_zone(vclock: VirtualClock) -> None:
    async with fresh_schema() as schema:
        # sessions twelve hours ahead of UTC: a day must still be a UTC day
        s = await PostgresStore.open(schema_dsn(schema.name, TimeZone="Pacific/Auckland"), vclock)
        try:
            await counted_per_utc_day(s)
        finally:
            await s.close()


async def counted_per_utc_day(store: Any) -> None:
    midnight = T0.replace(hour=0)  # 2026-11-22T00:00Z
    made = [
        ("restart", EXECUTED, midnight - timedelta(days=8)),  # before the window: not counted
        ("restart", EXECUTED, midnight - timedelta(microseconds=1)),  # the 21st's last instant
        ("restart", COOLDOWN, midnight - timedelta(hours=3)),
        ("restart", EXECUTED, midnight),  # the 22nd's first
        ("restart", EXECUTED, T0),
        ("restart", COOLDOWN, T0),
        ("scale", COOLDOWN, T0 + timedelta(hours=13)),  # still the 22nd in UTC, the 23rd in Auckland
    ]
    for i, (playbook, kind, at) in enumerate(made):
        alert = await record(store, f"app{i}")
        assert await store.record_decision(decide(alert, playbook, kind, at))
    got = await store.decision_counts(midnight - timedelta(days=6))
    assert sorted(got, key=lambda c: (c.playbook, c.day, c.kind)) == [
        DecisionCount("restart", "2026-11-21", "cooldown", 1),
        DecisionCount("restart", "2026-11-21", "executed", 1),
        DecisionCount("restart", "2026-11-22", "cooldown", 1),
        DecisionCount("restart", "2026-11-22", "executed", 2),
        DecisionCount("scale", "2026-11-22", "cooldown", 1),
    ]
    assert await store.decision_counts(T0 + timedelta(days=1)) == []
