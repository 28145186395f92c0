"""The kill switch's history, in every store, and the export's control lines made from it.

The store kept the last setting only, so ``remediator export`` (and the web UI's replay of the
daemon's own history) carried no pause: replayed, an alert the daemon had decided ``paused`` was
decided ``executed``.  Every setting is now kept (as long as the alerts), and the export writes
each as a control line among the alerts, in time order.
"""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import format_time
from remediator.ports import KillSwitchRecord
from remediator.replay_input import Event, parse_event
from remediator.store import migrations
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import DATA_VERSION, SQLiteStore
from remediator.store.tools import export_alerts
from tests.payloads import T0
from tests.store.conftest import Schema
from tests.store.test_contract import alerts, firing
from tests.store.test_mixed_versions import migrate_to

MINUTE = timedelta(minutes=1)


async def test_every_setting_is_kept_in_order_with_the_one_in_force_before_the_span(store: Any) -> None:
    assert await store.kill_switch_history(T0, T0 + 60 * MINUTE) == []  # never set
    await store.set_kill_switch(True, "alice", T0 + 10 * MINUTE)
    await store.set_kill_switch(False, "bob", T0 + 20 * MINUTE)
    await store.set_kill_switch(True, "b\x00b", T0 + 30 * MINUTE + timedelta(microseconds=250))
    await store.set_kill_switch(False, "carol", T0 + 40 * MINUTE)
    alice, bob, nul, carol = (
        KillSwitchRecord(True, "alice", T0 + 10 * MINUTE),
        KillSwitchRecord(False, "bob", T0 + 20 * MINUTE),
        KillSwitchRecord(True, "b\\u0000b", T0 + 30 * MINUTE + timedelta(microseconds=250)),
        KillSwitchRecord(False, "carol", T0 + 40 * MINUTE),
    )
    assert await store.kill_switch() == carol  # the last setting, as before
    assert await store.kill_switch_history(T0, T0 + 60 * MINUTE) == [alice, bob, nul, carol]
    # half-open: a setting at ``until`` is not in the span; the one in force at ``since`` comes first
    assert await store.kill_switch_history(T0 + 10 * MINUTE, T0 + 40 * MINUTE) == [alice, bob, nul]
    assert await store.kill_switch_history(T0 + 25 * MINUTE, T0 + 35 * MINUTE) == [bob, nul]
    assert await store.kill_switch_history(T0 + 31 * MINUTE, T0 + 35 * MINUTE) == [nul]
    assert await store.kill_switch_history(T0 + 50 * MINUTE, T0 + 60 * MINUTE) == [carol]


async def test_retention_prunes_the_history_but_never_the_setting_in_force_at_the_cutoff(
    store: Any, vclock: VirtualClock
) -> None:
    for day, paused in ((0, True), (1, False), (2, True)):
        await store.set_kill_switch(paused, f"day{day}", T0 + timedelta(days=day))
    await vclock.advance(40 * 86400)
    counts = await store.delete_older_than(30)
    assert counts["kill_switch"] == 2  # days 0 and 1; day 2's pause still holds
    kept = KillSwitchRecord(True, "day2", T0 + timedelta(days=2))
    assert await store.kill_switch_history(T0, vclock.now()) == [kept]
    assert await store.kill_switch() == kept
    assert (await store.delete_older_than(30))["kill_switch"] == 0  # the latest setting is never pruned
    assert await store.kill_switch_history(vclock.now(), vclock.now() + MINUTE) == [kept]
    await store.set_kill_switch(False, "day40", vclock.now())
    await vclock.advance(31 * 86400)
    assert (await store.delete_older_than(30))["kill_switch"] == 1
    assert await store.kill_switch_history(T0, vclock.now()) == [KillSwitchRecord(False, "day40", T0 + timedelta(
        days=40))]


async def exported(store: Any, since: Any, until: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    count = await export_alerts(store, since, until, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert count == sum("payload" in x for x in lines)  # the count is of alerts
    return lines


def shown(lines: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(x["at"], f"{x['control']} by {x['by']}") if "control" in x
            else (x["received_at"], x["payload"]["alerts"][0]["labels"]["app"]) for x in lines]


async def test_the_export_carries_the_kill_switch_among_the_alerts_in_time_order(store: Any) -> None:
    def at(minutes: int) -> str:
        return format_time(T0 + minutes * MINUTE)

    for minute, app in ((1, "a1"), (10, "a10"), (15, "a15"), (30, "a30")):
        await store.record_alerts(alerts(firing(app), at=T0 + minute * MINUTE))
    await store.set_kill_switch(True, "alice", T0 + 5 * MINUTE)
    await store.set_kill_switch(False, "alice", T0 + 10 * MINUTE)  # the same instant as a10: the setting first
    await store.set_kill_switch(True, "bob", T0 + 20 * MINUTE)
    await store.set_kill_switch(False, "bob", T0 + 40 * MINUTE)  # after the last alert: still exported
    assert shown(await exported(store, T0, T0 + 60 * MINUTE)) == [
        (at(1), "a1"), (at(5), "pause by alice"), (at(10), "resume by alice"), (at(10), "a10"), (at(15), "a15"),
        (at(20), "pause by bob"), (at(30), "a30"), (at(40), "resume by bob")]
    # a span that starts while paused starts with a pause line, at its start
    assert shown(await exported(store, T0 + 25 * MINUTE, T0 + 35 * MINUTE)) == [
        (at(25), "pause by bob"), (at(30), "a30")]
    # one that starts while resumed says nothing of the resume before it
    assert shown(await exported(store, T0 + 12 * MINUTE, T0 + 16 * MINUTE)) == [(at(15), "a15")]
    # paused at the span's start and resumed at that very instant: both, in that order, as replay reads them
    lines = await exported(store, T0 + 40 * MINUTE, T0 + 41 * MINUTE)
    assert lines == [{"at": at(40), "control": "pause", "by": "bob"}, {"at": at(40), "control": "resume", "by": "bob"}]
    assert [parse_event(x, 1) for x in lines] == [Event(T0 + 40 * MINUTE, 1, control="pause"),
                                                 Event(T0 + 40 * MINUTE, 1, control="resume")]


def embedded_file_of_version_2(path: Path, paused_at: str) -> None:
    """A file as the release before the history left it: the last setting only (set_at by format_time)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER kill_switch_set")
    conn.execute("DROP TRIGGER kill_switch_changed")
    conn.execute("DROP TABLE kill_switch_history")
    conn.execute("INSERT INTO kill_switch (id, paused, set_by, set_at) VALUES (1, 1, 'alice', ?)", (paused_at,))
    conn.execute("PRAGMA user_version = 2")
    conn.close()


async def test_an_embedded_file_from_before_the_history_starts_it_with_its_setting(
    tmp_path: Path, vclock: VirtualClock
) -> None:
    path = tmp_path / "store.db"
    await (await SQLiteStore.open(path, vclock)).close()
    embedded_file_of_version_2(path, "2026-11-22T10:00:00Z")  # a whole second: no fraction written
    store = await SQLiteStore.open(path, vclock)
    try:
        paused = KillSwitchRecord(True, "alice", T0)
        assert await store.kill_switch_history(T0 + MINUTE, T0 + 2 * MINUTE) == [paused]
        await store.set_kill_switch(False, "bob", T0 + MINUTE)
        assert await store.kill_switch_history(T0, T0 + 2 * MINUTE) == [paused, KillSwitchRecord(
            False, "bob", T0 + MINUTE)]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == DATA_VERSION
    conn.close()
    store = await SQLiteStore.open(path, vclock)  # opened again: the history is not seeded twice
    try:
        assert len(await store.kill_switch_history(T0, T0 + 2 * MINUTE)) == 2
    finally:
        await store.close()


async def test_a_postgres_schema_from_before_the_history_starts_it_with_its_setting(
    pg_schema: Schema, vclock: VirtualClock
) -> None:
    await migrate_to(pg_schema, vclock, 8)
    await pg_schema.conn.execute(
        "INSERT INTO kill_switch (id, paused, set_by, set_at) VALUES (1, true, 'alice', $1)", T0)
    store = await PostgresStore.open(pg_schema.dsn, vclock)
    try:
        assert await store.kill_switch_history(T0 + MINUTE, T0 + 2 * MINUTE) == [KillSwitchRecord(True, "alice", T0)]
        # the release before this one, still serving during a rolling update (or alone after a roll
        # back), sets the switch with its own statement: the history has it all the same
        await pg_schema.conn.execute(
            "INSERT INTO kill_switch (id, paused, set_by, set_at) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE"
            " SET paused = excluded.paused, set_by = excluded.set_by, set_at = excluded.set_at",
            False, "old release", T0 + MINUTE)
        assert await store.kill_switch_history(T0, T0 + 2 * MINUTE) == [
            KillSwitchRecord(True, "alice", T0), KillSwitchRecord(False, "old release", T0 + MINUTE)]
    finally:
        await store.close()
    assert migrations.LATEST >= 9
