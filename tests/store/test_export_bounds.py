"""The export's window (``remediator export --since/--until``) bounds by time, whole seconds included.

RFC 3339 leaves a zero fraction out ("03:00:00Z"), and as text that sorts after "03:00:00.250000Z":
the embedded store keeps an alert's ``received_at`` as text, so it keeps it fixed-width (as a
decision's ``at``), and brings the rows of an older file to that shape when it opens it.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.store.sqlite import DATA_VERSION, SQLiteStore
from tests.payloads import T0
from tests.store.test_contract import alerts, firing
from tests.store.test_upgrade import released_sqlite_file

HOUR = timedelta(hours=1)
#: When each alert was received: the window is [T0, T0 + 1h).
RECEIVED = {
    "at-since": T0,
    "in-250ms": T0 + timedelta(milliseconds=250),
    "in-750ms": T0 + timedelta(milliseconds=750),
    "in-1s": T0 + timedelta(seconds=1),
    "before": T0 - timedelta(milliseconds=500),
    "at-until": T0 + HOUR,
    "after": T0 + HOUR + timedelta(milliseconds=500),
}
IN_WINDOW = ["at-since", "in-250ms", "in-750ms", "in-1s"]


async def exported(store: Any, *, batch: int = 500) -> list[str]:
    return [s.received.alert.labels["app"] async for s in store.alerts_between(T0, T0 + HOUR, batch=batch)]


async def test_whole_second_bounds_and_times_order_as_times(store: Any) -> None:
    for app in ("in-1s", "after", "in-750ms", "at-until", "at-since", "before", "in-250ms"):
        await store.record_alerts(alerts(firing(app), at=RECEIVED[app]))
    assert await exported(store) == IN_WINDOW
    assert await exported(store, batch=1) == IN_WINDOW  # the pages' keyset too
    # the recorded times read back as they were received (the API shows a whole second without a fraction)
    claimed = {s.received.alert.labels["app"]: s.received for s in await store.claim_alerts("w", 10, 30)}
    assert {app: r.received_at for app, r in claimed.items()} == RECEIVED
    shown = {app: [d["received_at"] for d in await store.deliveries(claimed[app].alert.fingerprint)]
             for app in ("at-since", "in-250ms")}
    assert shown == {"at-since": ["2026-11-22T10:00:00Z"], "in-250ms": ["2026-11-22T10:00:00.250000Z"]}


def old_alert_rows() -> list[tuple[Any, ...]]:
    """The alerts as an older release wrote them: received_at as format_time has it."""
    rows = []
    for app, at in RECEIVED.items():
        [r] = alerts(firing(app), at=at)
        text = at.isoformat().replace("+00:00", "Z")  # format_time: no fraction for a whole second
        rows.append((r.alert.dedup_key, r.alert.fingerprint, r.alert.status, r.alert.json_text(), text))
    return rows


def insert_old_alerts(path: Path, *, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany("INSERT INTO alerts (dedup_key, fingerprint, status, alert, receiver, group_key, received_at)"
                     " VALUES (?, ?, ?, ?, 'remediator', 'g', ?)", old_alert_rows())
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


async def test_a_file_written_before_fixed_width_receipt_times_is_upgraded(
    tmp_path: Path, vclock: VirtualClock
) -> None:
    """Files of the released schema (version 0) and of the release with fixed-width decision times
    (version 1) alike: their alerts' receipt times are rewritten once, and bound the export as times."""
    released = tmp_path / "released.db"
    released_sqlite_file(released)
    current = tmp_path / "v1.db"
    store = await SQLiteStore.open(current, vclock)
    await store.close()
    for path, version in ((released, 0), (current, 1)):
        insert_old_alerts(path, version=version)
        store = await SQLiteStore.open(path, vclock)
        try:
            assert [a for a in await exported(store) if a in RECEIVED] == IN_WINDOW
        finally:
            await store.close()
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == DATA_VERSION
        assert conn.execute("SELECT count(*) FROM alerts WHERE length(received_at) <> 27").fetchone()[0] == 0
        conn.close()
