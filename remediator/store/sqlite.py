"""Embedded single-node store on SQLite.

Why SQLite: it is in the standard library, durable (WAL + ``synchronous=FULL``
means a committed alert survives power loss), needs no server, and one file under
``--data-dir`` is easy to back up.  Statements run on the event loop's thread and what waits on
the disk (COMMIT's fsync) on the connection's own (remediator.store.sqlite_conn), so the loop
never waits for the disk.  One connection, one writer: that is all a single node needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog

from remediator.core.alerts import Alert, format_time, parse_time
from remediator.core.decisions import Decision, PlannedStep, decision_from_json, execution_id
from remediator.core.errors import StoreUnavailable
from remediator.ports import (
    AWAITING_APPROVAL,
    ApprovalState,
    Clock,
    DecisionCount,
    DecisionQuery,
    KillSwitchRecord,
    LeaseLost,
    ReceivedAlert,
    StepRecord,
    StepResult,
    StoredAlert,
    journal_entry,
)
from remediator.store import retention
from remediator.store import rows as json_rows
from remediator.store.decision_query import DELIVERIES_SQL, Params, daily_counts_sql, decisions_sql
from remediator.store.shared_tx import SharedTransaction
from remediator.store.shared_tx import complete as _complete
from remediator.store.sqlite_conn import Cursor, InlineConnection

SCHEMA = """
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
    claimed_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    parked_at REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts (processed, id);
CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts (fingerprint, id);
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
    target_kind TEXT,
    target_namespace TEXT,
    target_name TEXT,
    approval_deadline REAL,
    UNIQUE (alert_key, playbook)
);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE INDEX IF NOT EXISTS decisions_fingerprint ON decisions (fingerprint, at);
CREATE INDEX IF NOT EXISTS decisions_playbook ON decisions (playbook, at);
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
CREATE TABLE IF NOT EXISTS guard_state (
    map TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (map, key)
);
CREATE TABLE IF NOT EXISTS kill_switch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    paused INTEGER NOT NULL,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL
);
-- Every setting of the kill switch (KillSwitchHistory: the export's control lines), written by the
-- database itself in the setting's own statement, whichever release wrote it.  ``at`` fixed-width
-- (_at), as every time compared or ordered as text; an older release wrote set_at by format_time.
CREATE TABLE IF NOT EXISTS kill_switch_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    paused INTEGER NOT NULL,
    set_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kill_switch_history_at ON kill_switch_history (at, id);
CREATE TRIGGER IF NOT EXISTS kill_switch_set AFTER INSERT ON kill_switch BEGIN
    INSERT INTO kill_switch_history (at, paused, set_by) VALUES (CASE WHEN length(NEW.set_at) = 20
        THEN substr(NEW.set_at, 1, 19) || '.000000Z' ELSE NEW.set_at END, NEW.paused, NEW.set_by);
END;
CREATE TRIGGER IF NOT EXISTS kill_switch_changed AFTER UPDATE ON kill_switch BEGIN
    INSERT INTO kill_switch_history (at, paused, set_by) VALUES (CASE WHEN length(NEW.set_at) = 20
        THEN substr(NEW.set_at, 1, 19) || '.000000Z' ELSE NEW.set_at END, NEW.paused, NEW.set_by);
END;
"""

# Columns added since the first release, for files created before them: (table, column, type).
# The SCHEMA above has them all; a file from an older version gets them when opened.
_ADDED_COLUMNS = (
    ("decisions", "claimed_by", "TEXT"),  # execution leases
    ("decisions", "claimed_until", "REAL"),
    ("alerts", "attempts", "INTEGER NOT NULL DEFAULT 0"),  # poison alerts are parked
    ("alerts", "parked_at", "REAL"),
    ("alerts", "error", "TEXT"),
    ("decisions", "target_kind", "TEXT"),  # the decisions API filters by target
    ("decisions", "target_namespace", "TEXT"),
    ("decisions", "target_name", "TEXT"),
    ("decisions", "approval_deadline", "REAL"),  # executions awaiting approval expire
)
# Indexes on added columns: created once the columns exist (so not in SCHEMA).
_ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS alerts_parked ON alerts (parked_at) WHERE parked_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS decisions_namespace ON decisions (target_namespace, at)",
    "CREATE INDEX IF NOT EXISTS decisions_kind ON decisions (kind, at)",  # a rare kind without reading every row
    # One alert's decisions of a kind (an alert's resolve looks back through its executions, see
    # Pipeline._notify_resolved): SQLite has no statistics here (no ANALYZE), and with only the two
    # indexes above it read every decision of the kind and filtered them by fingerprint.
    "CREATE INDEX IF NOT EXISTS decisions_fingerprint_kind ON decisions (fingerprint, kind, at)",
    # claim_unfinished runs after every decision: without it, a scan of every finished one (a storm's O(n^2))
    "CREATE INDEX IF NOT EXISTS decisions_unfinished ON decisions (at) WHERE exec_status IN ('pending', 'running')",
    "CREATE INDEX IF NOT EXISTS decisions_awaiting ON decisions (approval_deadline)"
    " WHERE exec_status = 'awaiting_approval'",
)

#: A decisions query of at most this many rows of one alert is read on the event loop (query_decisions).
INLINE_ROWS = 50

#: ``PRAGMA user_version`` of a file whose rows are in the current shape.  Version 1: a
#: decision's ``at`` is fixed-width (:func:`_at`) and its target is in its own columns.
#: Version 2: an alert's ``received_at`` is fixed-width too.  Version 3: the kill switch's history
#: starts with the setting the file holds (older releases kept the last one only).
DATA_VERSION = 3
# What takes a file's existing rows from the version before each to it, run once (in the upgrade's
# transaction).  format_time leaves out a zero fraction, and "10:00:00Z" sorts after "10:00:00.5Z" as text.
_DATA_UPGRADES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        "UPDATE decisions SET at = substr(at, 1, 19) || '.000000Z' WHERE length(at) = 20",
        "UPDATE decisions SET target_kind = json_extract(body, '$.target.kind'),"
        " target_namespace = json_extract(body, '$.target.namespace'),"
        " target_name = json_extract(body, '$.target.name') WHERE json_extract(body, '$.target') IS NOT NULL",
    )),
    (2, ("UPDATE alerts SET received_at = substr(received_at, 1, 19) || '.000000Z' WHERE length(received_at) = 20",)),
    (3, ("INSERT INTO kill_switch_history (at, paused, set_by) SELECT CASE WHEN length(set_at) = 20"
         " THEN substr(set_at, 1, 19) || '.000000Z' ELSE set_at END, paused, set_by FROM kill_switch"
         " WHERE NOT EXISTS (SELECT 1 FROM kill_switch_history)",)),
)

T = TypeVar("T")


def _at(value: datetime) -> str:
    """A time as the columns compared or ordered by it keep it (a decision's ``at``, an alert's
    ``received_at``): fixed-width text (microseconds always written), so that comparing and
    ordering the text compares and orders the times."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


#: Deliveries with more alerts than this are serialised for the database on a worker thread.
ROWS_IN_LOOP = 200


def _rows(alerts: Sequence[ReceivedAlert]) -> list[tuple[str, ...]]:
    received: dict[datetime, str] = {}  # a delivery's alerts share their receipt time: formatted once
    return [
        (
            r.alert.dedup_key,
            r.alert.fingerprint,
            r.alert.status,
            r.alert.json_text(),
            r.receiver,
            r.group_key,
            r.external_url,
            received.get(r.received_at) or received.setdefault(r.received_at, _at(r.received_at)),
        )
        for r in alerts
    ]


def _step_row(
    execution: str, step: PlannedStep, result: StepResult, started: datetime, finished: datetime
) -> tuple[Any, ...]:
    return (execution, step.phase, step.index, step.action, json.dumps(step.params, default=str),
            json.dumps(result.to_json(), default=str), format_time(started), format_time(finished))


class _Batch:
    """A decision batch's writes that wait for its end: the alerts marked processed, and the
    plan-only executions whose decisions it looked up (:meth:`SQLiteStore.look_up`) and found
    unrecorded."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.ids: list[int] = []
        self.unrecorded: set[str] = set()
        self.planned: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = []  # (decision row, step rows)
        self.lost = False  # a transaction was rolled back under the batch: it writes none of this

    def lose(self) -> None:
        self.lost = True
        self.ids.clear()
        self.unrecorded.clear()
        self.planned.clear()


_DECISION_COLUMNS = ("id, alert_key, fingerprint, playbook, kind, at, body, exec_status, finished_at, target_kind,"
                     " target_namespace, target_name")
_PLANNED_INSERT = (f"INSERT OR IGNORE INTO decisions ({_DECISION_COLUMNS}) SELECT "
                   + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(12))
                   + " FROM json_each(?) RETURNING id")
_STEP_INSERT = ("INSERT OR REPLACE INTO steps (execution_id, phase, idx, action, params, result, started_at,"
                " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class SQLiteStore:
    def __init__(self, conn: InlineConnection, clock: Clock) -> None:
        self._db = conn
        self._clock = clock
        # One connection means one transaction at a time: concurrent webhook requests
        # must not interleave BEGIN/COMMIT on it.
        self._tx = asyncio.Lock()
        # Writes share transactions and commits (see remediator.store.shared_tx): concurrent
        # webhooks, executions and the decision loop cost one fsync per group, not one each.
        self._shared = SharedTransaction(conn, self._tx)
        # The decision batches open now (per task), with what each writes as it ends (_Batch).
        self._batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
            f"remediator-sqlite-batch-{id(self)}", default=None)
        self._open_batches: set[_Batch] = set()
        self._shared.on_rollback.append(self._unmark)

    @classmethod
    async def open(cls, path: str | Path, clock: Clock, *, recover: bool = True) -> SQLiteStore:
        """Open (creating or upgrading the schema).

        ``recover=False`` is for tools (``remediator export``) that read the file while the
        daemon may be running: they must not release the daemon's claims.
        """
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await InlineConnection.connect(str(path))
        try:
            await cls._prepare(conn, recover=recover)
        except BaseException:
            await conn.close()  # else its thread outlives the failure and the process cannot exit
            raise
        return cls(conn, clock)

    @classmethod
    async def _prepare(cls, conn: InlineConnection, *, recover: bool) -> None:
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.executescript(SCHEMA)
        await cls._upgrade(conn)
        if recover:
            # One process owns the embedded store: claims left by a previous (crashed) run
            # are released at once instead of waiting for their lease.
            await conn.execute(
                "UPDATE alerts SET claimed_by = NULL, claimed_until = NULL"
                " WHERE processed = 0 AND claimed_by IS NOT NULL"
            )
            await conn.execute(
                "UPDATE decisions SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by IS NOT NULL"
            )

    @staticmethod
    async def _upgrade(conn: InlineConnection) -> None:
        """Add the columns (and their indexes) a file from an older version lacks, and bring its
        rows to :data:`DATA_VERSION`, in one transaction: the daemon and ``remediator export``
        may open the same file at once."""
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for table in dict.fromkeys(t for t, _, _ in _ADDED_COLUMNS):
                cur = await conn.execute(f"PRAGMA table_info({table})")
                columns = {r["name"] for r in await cur.fetchall()}
                for column, kind in ((c, k) for t, c, k in _ADDED_COLUMNS if t == table and c not in columns):
                    await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            for index in _ADDED_INDEXES:
                await conn.execute(index)
            cur = await conn.execute("PRAGMA user_version")
            row = await cur.fetchone()
            if row is not None and row[0] < DATA_VERSION:
                for statement in (s for version, upgrade in _DATA_UPGRADES if version > row[0] for s in upgrade):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {DATA_VERSION}")
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await conn.execute("ROLLBACK")
            raise

    async def _run(self, sql: str, args: Sequence[Any] = (), *, report: bool = False) -> Cursor:
        """One statement: a read at once (it sees the open transaction's writes), a write in the
        shared transaction, answered once committed.  A ``report`` (a read for the API or the UI,
        over many rows) runs on the connection's thread so the loop keeps serving meanwhile."""
        if sql.startswith("SELECT"):
            try:
                async with self._tx:
                    return await self._db.execute(sql, args, off_loop=report or None)
            except (sqlite3.OperationalError, ValueError) as exc:  # disk full, closed, locked
                raise StoreUnavailable(f"embedded store: {exc}") from exc
        return await self._shared.write(lambda: self._db.execute(sql, args), single=True)

    @contextlib.asynccontextmanager
    async def decision_batch(self) -> AsyncIterator[None]:
        """Writes of the calling task inside are committed together when it leaves
        (``IntakeQueue``'s batch role; see remediator.store.shared_tx).

        The alerts it marks processed are marked in one statement as it ends, after their
        decisions; so are the plan-only executions it records (:meth:`record_planned`) whose
        decisions it looked up (:meth:`look_up`) and found unrecorded, written with their steps
        in one statement rather than two per alert.  A decision another decider recorded
        meanwhile (its claim lease having run out) stands, and ours is dropped, logged.

        A batch that ends in an error writes none of that, nor does one under which a transaction
        was rolled back (it took decisions with it, maybe of an alert half way through its unit):
        the batch's alerts are decided again, and find whatever decisions did survive.  Never the
        other way round: an alert is not marked processed without its decisions."""
        async with self._shared.deferred():
            batch = _Batch(asyncio.current_task())
            token = self._batch.set(batch)
            # Open until its final write has returned: that write may wait for the lock while a
            # transaction holding the batch's decisions is rolled back, and _unmark must reach it.
            self._open_batches.add(batch)
            try:
                try:
                    yield
                finally:
                    self._batch.reset(token)
                if not batch.lost and (batch.ids or batch.planned):
                    await self._shared.write(lambda: self._write_batch(batch))
            finally:
                self._open_batches.discard(batch)

    async def _write_batch(self, batch: _Batch) -> None:
        """The batch's plan-only decisions (one statement, which tells which were new), the steps of
        those, then its marks: in the batch's transaction, after everything else it wrote.

        Under the lock, so ``batch.lost`` is final here: a transaction rolled back while this write
        waited for the lock (a failed COMMIT, another writer's failed statement) may have taken the
        batch's decisions with it, and this write would be in a new one that a later commit keeps."""
        if batch.lost:
            return
        if batch.planned:
            cur = await self._db.execute(_PLANNED_INSERT, (json.dumps([row for row, _ in batch.planned]),))
            new = {r["id"] for r in await cur.fetchall()}
            steps = [step for row, rows in batch.planned if row[0] in new for step in rows]
            if steps:
                await self._db.executemany(_STEP_INSERT, steps)
            if theirs := len(batch.planned) - len(new):
                structlog.get_logger("remediator.store").warning(
                    "plan-only decisions recorded by another decider first (a claim lease ran out?): kept theirs",
                    count=theirs)
        if batch.ids:
            await self._db.execute("UPDATE alerts SET processed = 1, claimed_until = NULL"
                                   " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(batch.ids),))

    def _unmark(self) -> None:
        """A transaction was rolled back: the marks waiting in open batches may be of alerts
        whose decisions it took with it, and what the batches looked up no longer holds.  Not only
        the marks made so far: an alert half way through its unit (its decision written, its mark
        not yet) would be marked without the decision it lost, so the batch marks nothing more."""
        for batch in self._open_batches:
            batch.lose()

    def decision_unit(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One alert's writes inside a :meth:`decision_batch` land in one transaction."""
        return self._shared.together()

    async def record_alerts(self, alerts: Sequence[ReceivedAlert]) -> int:
        # Serialising is CPU work (some 40 ms for 2,500 alerts): a large delivery's is done
        # off the event loop, which meanwhile keeps serving other requests.
        rows = _rows(alerts) if len(alerts) <= ROWS_IN_LOOP else await asyncio.to_thread(_rows, alerts)
        # Group commit: requests that arrive while a commit is in flight share the next
        # one, so concurrent webhooks cost one fsync per batch rather than one each.
        [count] = await self._shared.write(lambda: self._insert_batches([rows]), group=True)
        return count

    async def _insert_batches(self, batches: list[list[tuple[str, ...]]]) -> list[int]:
        counts = []
        for rows in batches:
            before = self._db.total_changes
            await self._db.executemany(
                "INSERT OR IGNORE INTO alerts (dedup_key, fingerprint, status, alert, receiver, group_key,"
                " external_url, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
                off_loop=len(rows) > ROWS_IN_LOOP or None,
            )
            counts.append(self._db.total_changes - before)
        return counts

    async def claim_alerts(self, worker: str, limit: int, lease: float) -> list[StoredAlert]:
        now = self._clock.now().timestamp()
        # Every claim is an attempt, except taking back what this worker still holds (left
        # by a batch cut short, see IntakeQueue.claim_alerts): those were not tried meanwhile.
        cur = await self._run(
            "UPDATE alerts SET claimed_by = ?, claimed_until = ?, attempts = attempts + (claimed_by IS NOT ?)"
            " WHERE id IN (SELECT id FROM alerts WHERE processed = 0"
            " AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?) ORDER BY id LIMIT ?)"
            " RETURNING id, alert, receiver, group_key, external_url, received_at, attempts",
            (worker, now + lease, worker, now, worker, limit),
        )
        rows = list(await cur.fetchall())
        rows.sort(key=lambda r: r["id"])
        return [
            StoredAlert(
                r["id"],
                ReceivedAlert(
                    Alert.from_json_text(r["alert"]),
                    parse_time(r["received_at"]),
                    r["receiver"],
                    r["group_key"],
                    r["external_url"],
                ),
                r["attempts"],
            )
            for r in rows
        ]

    def _in_batch(self) -> _Batch | None:
        batch = self._batch.get()
        return batch if batch is not None and batch.task is asyncio.current_task() else None

    async def mark_processed(self, alert_id: int) -> None:
        batch = self._in_batch()
        if batch is not None:
            if not batch.lost:
                batch.ids.append(alert_id)  # with the batch's other marks, as it ends (decision_batch)
            return
        await self._run("UPDATE alerts SET processed = 1, claimed_until = NULL WHERE id = ?", (alert_id,))

    async def defer_alert(self, alert_id: int, until: datetime) -> None:
        # Deferring is an outcome, not a failure: its attempts start over, at one (IntakeQueue.defer_alert).
        await self._run(
            "UPDATE alerts SET claimed_by = NULL, claimed_until = ?, attempts = 1 WHERE id = ?",
            (until.timestamp(), alert_id),
        )

    async def release_alert(self, alert_id: int, retry_at: datetime) -> None:
        await self._run(
            "UPDATE alerts SET claimed_by = NULL, claimed_until = ? WHERE id = ? AND processed = 0",
            (retry_at.timestamp(), alert_id),
        )

    async def park_alert(self, alert_id: int, error: str) -> None:
        await self._run(
            "UPDATE alerts SET processed = 1, claimed_until = NULL, parked_at = ?, error = ? WHERE id = ?",
            (self._clock.now().timestamp(), json_rows.park_error(error), alert_id),
        )

    async def parked_alerts(self, *, limit: int = 50) -> list[dict[str, Any]]:
        cur = await self._run(
            "SELECT id, alert, receiver, received_at, attempts, parked_at, error FROM alerts"
            " WHERE parked_at IS NOT NULL ORDER BY parked_at DESC, id DESC LIMIT ?",
            (limit,),
            report=True,
        )
        return [json_rows.parked_alert(r) for r in await cur.fetchall()]

    async def resolved_for(self, fingerprint: str, starts_at: datetime) -> bool:
        key = json_rows.resolve_key(fingerprint, starts_at)
        cur = await self._run("SELECT 1 FROM alerts WHERE dedup_key = ?", (key,))
        return await cur.fetchone() is not None

    async def look_up(
        self, ids: Sequence[str], episodes: Sequence[tuple[str, datetime]]
    ) -> tuple[dict[str, Decision], set[tuple[str, datetime]]]:
        """A decision batch's questions (``BatchLookups``) in one statement: two per decided alert
        (``decision``, ``resolved_for``) cost a storm's batch more than the lookups themselves."""
        keys = json_rows.resolve_keys(episodes)
        cur = await self._run(
            "SELECT id, body FROM decisions WHERE id IN (SELECT value FROM json_each(?))"
            " UNION ALL SELECT dedup_key, NULL FROM alerts WHERE dedup_key IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)), json.dumps(list(keys))),
        )
        found, resolved = json_rows.looked_up(await cur.fetchall(), keys)
        batch = self._in_batch()
        if batch is not None:
            batch.unrecorded.update(i for i in ids if i not in found)
        return found, resolved

    async def firing_count(self, fingerprint: str, since: datetime) -> int:
        cur = await self._run("SELECT alert FROM alerts WHERE fingerprint = ? AND status = 'firing'", (fingerprint,))
        starts = {json.loads(r["alert"])["startsAt"] for r in await cur.fetchall()}
        return sum(1 for s in starts if parse_time(s) >= since)

    async def recorded_alert(self, alert_key: str) -> Alert | None:
        cur = await self._run("SELECT alert FROM alerts WHERE dedup_key = ?", (alert_key,))
        row = await cur.fetchone()
        return Alert.from_json_text(row["alert"]) if row else None

    async def undecided(self) -> int:
        cur = await self._run("SELECT count(*) FROM alerts WHERE processed = 0", report=True)  # a storm's is long
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def count_alerts(self) -> int:
        cur = await self._run("SELECT count(*) FROM alerts")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def record_decision(self, decision: Decision, *, approval_deadline: datetime | None = None) -> bool:
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        cur = await self._run(
            "INSERT OR IGNORE INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body, exec_status,"
            " target_kind, target_namespace, target_name, approval_deadline)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                did,
                decision.alert_key,
                decision.fingerprint,
                decision.playbook,
                decision.kind.value,
                _at(decision.at),
                json.dumps(decision.to_json()),
                json_rows.execution_status(decision),
                *json_rows.target_columns(decision),
                approval_deadline.timestamp() if approval_deadline else None,
            ),
        )
        return cur.rowcount == 1

    async def record_planned(
        self, decision: Decision, steps: Sequence[StepRecord], *, status: str, finished: datetime
    ) -> bool:
        # Inside a decision batch that looked it up and found it new, written with the batch's end
        # (one statement for all of them, see _write_batch); else at once, only if it is new.
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        row = (did, decision.alert_key, decision.fingerprint, decision.playbook, decision.kind.value,
               _at(decision.at), json.dumps(decision.to_json()), status, format_time(finished),
               *json_rows.target_columns(decision))
        step_rows = [_step_row(did, s.step, s.result, s.started, s.finished) for s in steps]
        batch = self._in_batch()
        if batch is not None and did in batch.unrecorded:
            batch.unrecorded.discard(did)
            batch.planned.append((row, step_rows))
            return True

        async def body() -> bool:
            cur = await self._db.execute(
                f"INSERT OR IGNORE INTO decisions ({_DECISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if cur.rowcount != 1:
                return False
            await self._db.executemany(_STEP_INSERT, step_rows)
            return True

        return await self._shared.write(body)

    async def decision(self, decision_id: str) -> Decision | None:
        cur = await self._run("SELECT body FROM decisions WHERE id = ?", (decision_id,))
        row = await cur.fetchone()
        return decision_from_json(json.loads(row["body"])) if row else None

    async def record_step(
        self, execution_id: str, step: PlannedStep, result: StepResult, *, started: datetime, finished: datetime,
        owner: str | None = None,
    ) -> None:
        row = _step_row(execution_id, step, result, started, finished)
        if owner is None:
            await self._run(_STEP_INSERT, row)
            await self._run(
                "UPDATE decisions SET exec_status = 'running' WHERE id = ? AND exec_status = 'pending'", (execution_id,)
            )
            return

        async def fenced() -> bool:
            # Fenced (ExecutionLedger.begin_step): the claim is checked and the step written in one
            # transaction, under the connection's lock, so no claim comes between the two.
            if not await self._still_claimed("exec_status = 'running'", (), execution_id, owner):
                return False
            await self._db.execute(_STEP_INSERT, row)
            return True

        if not await self._shared.write(fenced):  # not raised inside: that would roll back the others' writes
            raise LeaseLost(execution_id)

    async def _still_claimed(self, assign: str, values: tuple[Any, ...], execution_id: str, owner: str) -> bool:
        """Set ``assign`` on an unfinished execution that ``owner`` still claims (its claim not run out on
        the store's clock); whether it does.  Inside a shared write's body."""
        cur = await self._db.execute(
            f"UPDATE decisions SET {assign} WHERE id = ? AND exec_status IN ('pending', 'running')"
            " AND claimed_by = ? AND claimed_until > ?",
            (*values, execution_id, owner, self._clock.now().timestamp()),
        )
        return cur.rowcount == 1

    async def record_notification(self, execution_id: str, outcome: Mapping[str, Any]) -> None:
        await self._run(
            "INSERT INTO notifications (execution_id, at, body) VALUES (?, ?, ?)",
            (execution_id, format_time(self._clock.now()), json.dumps(dict(outcome), default=str)),
        )

    async def record_event(self, execution_id: str, event: str, at: datetime, **detail: Any) -> None:
        await self.record_notification(execution_id, journal_entry(event, format_time(at), **detail))

    async def begin_step(
        self, execution_id: str, step: PlannedStep, intent: Mapping[str, Any], *, started: datetime,
        owner: str | None = None,
    ) -> None:
        await self.record_step(execution_id, step, json_rows.started_result(intent), started=started, finished=started,
                               owner=owner)

    async def step_results(self, execution_id: str) -> dict[tuple[str, int], StepResult]:
        cur = await self._run("SELECT phase, idx, result FROM steps WHERE execution_id = ?", (execution_id,))
        return json_rows.results_of(await cur.fetchall())

    async def finish_execution(
        self, execution_id: str, status: str, finished: datetime, *, owner: str | None = None
    ) -> None:
        assign = "exec_status = ?, finished_at = ?, claimed_by = NULL, claimed_until = NULL"
        values = (status, format_time(finished))
        if owner is None:
            await self._run(f"UPDATE decisions SET {assign} WHERE id = ?", (*values, execution_id))
            return
        fenced = await self._shared.write(lambda: self._still_claimed(assign, values, execution_id, owner), single=True)
        if not fenced:
            raise LeaseLost(execution_id)

    async def unfinished(self, execution_id: str) -> bool:
        cur = await self._run(
            "SELECT 1 FROM decisions WHERE id = ? AND exec_status IN ('pending', 'running')", (execution_id,)
        )
        return await cur.fetchone() is not None

    async def unfinished_executions(self) -> list[str]:
        cur = await self._run("SELECT id FROM decisions WHERE exec_status IN ('pending', 'running') ORDER BY at")
        return [r["id"] for r in await cur.fetchall()]

    async def approval(self, execution_id: str) -> ApprovalState | None:
        cur = await self._run(
            "SELECT exec_status, approval_deadline, claimed_by, claimed_until FROM decisions"
            " WHERE id = ? AND exec_status IS NOT NULL",
            (execution_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        deadline = row["approval_deadline"]
        return ApprovalState(
            row["exec_status"],
            datetime.fromtimestamp(deadline, UTC) if deadline is not None else None,
            row["exec_status"] == AWAITING_APPROVAL and row["claimed_by"] is not None
            and (row["claimed_until"] or 0) > self._clock.now().timestamp(),
        )

    async def claim_approval(self, execution_id: str, worker: str, lease: float) -> bool:
        now = self._clock.now().timestamp()
        cur = await self._run(
            "UPDATE decisions SET claimed_by = ?, claimed_until = ? WHERE id = ? AND exec_status = ?"
            " AND approval_deadline > ? AND (claimed_by IS NULL OR claimed_until IS NULL OR claimed_until <= ?)",
            (worker, now + lease, execution_id, AWAITING_APPROVAL, now, now),
        )
        return cur.rowcount == 1

    async def settle_approval(self, execution_id: str, worker: str, status: str, at: datetime) -> bool:
        cur = await self._run(
            "UPDATE decisions SET exec_status = ?, finished_at = ?, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = ? AND exec_status = ? AND claimed_by = ?",
            (status, None if status == "pending" else format_time(at), execution_id, AWAITING_APPROVAL, worker),
        )
        return cur.rowcount == 1

    async def await_approval(self, execution_id: str, worker: str, deadline: datetime | None) -> bool:
        cur = await self._run(
            "UPDATE decisions SET exec_status = ?, approval_deadline = ?, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = ? AND exec_status IN ('pending', 'running') AND claimed_by = ?",
            (AWAITING_APPROVAL, deadline.timestamp() if deadline is not None else None, execution_id, worker),
        )
        return cur.rowcount == 1

    async def expire_approvals(self, now: datetime, *, limit: int = 100) -> list[str]:
        stamp = now.timestamp()
        cur = await self._run(
            "UPDATE decisions SET exec_status = 'expired', finished_at = ?, claimed_by = NULL, claimed_until = NULL"
            " WHERE id IN (SELECT id FROM decisions WHERE exec_status = ? AND approval_deadline <= ?"
            " AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY approval_deadline LIMIT ?) RETURNING id",
            (format_time(now), AWAITING_APPROVAL, stamp, stamp, limit),
        )
        return [r["id"] for r in await cur.fetchall()]

    async def claim_execution(self, execution_id: str, worker: str, lease: float) -> bool:
        """Take or renew the lease on an unfinished execution; False if another live owner holds it."""
        now = self._clock.now().timestamp()
        cur = await self._run(
            "UPDATE decisions SET claimed_by = ?, claimed_until = ?"
            " WHERE id = ? AND exec_status IN ('pending', 'running')"
            " AND (claimed_by IS NULL OR claimed_by = ? OR claimed_until IS NULL OR claimed_until <= ?)",
            (worker, now + lease, execution_id, worker, now),
        )
        return cur.rowcount == 1

    async def release_execution(self, execution_id: str, worker: str) -> None:
        await self._run(
            "UPDATE decisions SET claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ?",
            (execution_id, worker),
        )

    async def claim_unfinished(self, worker: str, lease: float, *, limit: int = 20) -> list[str]:
        """Claim unfinished executions nobody holds (or that this worker left behind), oldest first."""
        now = self._clock.now().timestamp()
        cur = await self._run(
            "UPDATE decisions SET claimed_by = ?, claimed_until = ? WHERE id IN ("
            " SELECT id FROM decisions WHERE exec_status IN ('pending', 'running')"
            " AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?) ORDER BY at, rowid LIMIT ?)"
            " RETURNING id, at, rowid",
            (worker, now + lease, now, worker, limit),
        )
        rows = sorted(await cur.fetchall(), key=lambda r: (r["at"], r["rowid"]))
        return [r["id"] for r in rows]

    async def list_executions(
        self, *, playbook: str | None = None, status: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        sql = ("SELECT id, body, exec_status, finished_at, approval_deadline FROM decisions"
               " WHERE exec_status IS NOT NULL")
        args: list[Any] = []
        if playbook:
            sql += " AND playbook = ?"
            args.append(playbook)
        if status:
            sql += " AND exec_status = ?"
            args.append(status)
        if before:
            sql += " AND (at, rowid) < (SELECT at, rowid FROM decisions WHERE id = ?)"
            args.append(before)
        sql += " ORDER BY at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        cur = await self._run(sql, args, report=True)
        return [json_rows.execution_listing(r) for r in await cur.fetchall()]

    async def query_decisions(self, query: DecisionQuery) -> list[dict[str, Any]]:
        params = Params(numbered=False)
        # A page for the API or the UI is a report (on the connection's thread); a lookup of a few rows
        # on an index (an alert's latest executions, looked back through by every resolve) reads on the
        # loop: the hop to the thread and back cost several times the read, once per resolved alert.
        report = query.limit > INLINE_ROWS or query.fingerprint is None
        cur = await self._run(decisions_sql(query, params, time=_at, order="rowid"), params.values, report=report)
        return [json_rows.decision_entry(r) for r in await cur.fetchall()]

    async def decision_counts(self, since: datetime) -> list[DecisionCount]:
        params = Params(numbered=False)
        sql = daily_counts_sql(params, _at(since), day="substr(d.at, 1, 10)")
        cur = await self._run(sql, params.values, report=True)
        return [DecisionCount(r[0], r[1], r[2], int(r[3])) for r in await cur.fetchall()]

    async def deliveries(self, fingerprint: str, *, limit: int = 100) -> list[dict[str, Any]]:
        cur = await self._run(DELIVERIES_SQL.format(fingerprint="?", limit="?"), (fingerprint, limit), report=True)
        return [json_rows.delivery(r) for r in await cur.fetchall()]

    async def list_decisions(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        cur = await self._run(
            "SELECT id, body, exec_status, finished_at FROM decisions ORDER BY at, rowid LIMIT ?", (limit,), report=True
        )
        return [json_rows.execution_summary(r) for r in await cur.fetchall()]

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        cur = await self._run(
            "SELECT id, body, exec_status, finished_at, alert_key, approval_deadline FROM decisions WHERE id = ?",
            (execution_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await self._run("SELECT alert FROM alerts WHERE dedup_key = ?", (row["alert_key"],))
        alert = await cur.fetchone()
        cur = await self._run(
            "SELECT phase, idx, action, params, result, started_at, finished_at FROM steps"
            " WHERE execution_id = ? ORDER BY phase = 'on_failure', idx",
            (execution_id,),
        )
        steps = await cur.fetchall()
        cur = await self._run("SELECT body FROM notifications WHERE execution_id = ? ORDER BY rowid", (execution_id,))
        journal = [n["body"] for n in await cur.fetchall()]
        return json_rows.execution_document(row, alert["alert"] if alert else None, steps, journal)

    async def alerts_between(self, since: datetime, until: datetime, *, batch: int = 500) -> AsyncIterator[StoredAlert]:
        """Recorded alerts with ``since <= received_at < until``, oldest first, paged by keyset."""
        last: tuple[str, int] = (_at(since), -1)
        while True:
            cur = await self._run(
                "SELECT id, alert, receiver, group_key, external_url, received_at FROM alerts"
                " WHERE (received_at, id) > (?, ?) AND received_at < ? ORDER BY received_at, id LIMIT ?",
                (*last, _at(until), batch),
                report=True,
            )
            rows = list(await cur.fetchall())
            for r in rows:
                yield StoredAlert(
                    r["id"],
                    ReceivedAlert(
                        Alert.from_json_text(r["alert"]),
                        parse_time(r["received_at"]),
                        r["receiver"],
                        r["group_key"],
                        r["external_url"],
                    ),
                )
            if len(rows) < batch:
                return
            last = (rows[-1]["received_at"], rows[-1]["id"])

    async def delete_older_than(self, days: float, *, batch: int = 1000) -> dict[str, int]:
        """Delete finished decisions (with their steps) and processed alerts older than ``days``
        whose firing episode has ended (see :data:`~remediator.store.retention.EPISODE_CLOSED`).

        In batches, each its own short transaction, so webhooks are not held up behind
        one long delete.  Unfinished executions and unprocessed alerts are kept.
        """
        cutoff = _at(self._clock.now() - timedelta(days=days))
        counts = {"decisions": 0, "steps": 0, "notifications": 0, "alerts": 0}
        # The kill switch's history: one short statement (a setting is an operator's act, rows are few).
        counts["kill_switch"] = await _complete(self._shared.write(lambda: self._prune_switches(cutoff)), eager=True)
        alerts_round = (
            "SELECT a.id FROM alerts a WHERE a.processed = 1 AND a.received_at < ? AND {} AND NOT EXISTS ("
            " SELECT 1 FROM decisions d WHERE d.alert_key = a.dedup_key"
            f" AND d.exec_status IN {retention.KEPT}) LIMIT ?"
        )
        delete_alerts = (("alerts", "DELETE FROM alerts WHERE id IN ({})"),)
        rounds = (
            (
                "SELECT id FROM decisions WHERE at < ? AND (exec_status IS NULL"
                f" OR exec_status NOT IN {retention.KEPT}) AND {retention.closed('alert_key')} LIMIT ?",
                (("steps", "DELETE FROM steps WHERE execution_id IN ({})"),
                 ("notifications", "DELETE FROM notifications WHERE execution_id IN ({})"),
                 ("decisions", "DELETE FROM decisions WHERE id IN ({})")),
            ),
            (alerts_round.format(retention.FIRING_ENDED), delete_alerts),
            (alerts_round.format(retention.RESOLVED_ALONE), delete_alerts),
        )
        for select, deletes in rounds:
            while True:
                # Each batch whole, even if retention is cancelled (shutdown) half way.
                ids, deleted = await _complete(self._delete_round(select, deletes, cutoff, batch), eager=True)
                for name, n in deleted.items():
                    counts[name] += n
                if len(ids) < batch:
                    break
        return counts

    async def _delete_round(
        self, select: str, deletes: Sequence[tuple[str, str]], cutoff: str, batch: int
    ) -> tuple[list[Any], dict[str, int]]:
        async def body() -> tuple[list[Any], dict[str, int]]:
            ids = [r[0] for r in await (await self._db.execute(select, (cutoff, batch))).fetchall()]
            marks = ",".join("?" * len(ids))
            deleted = {}
            for name, sql in deletes:
                cur = await self._db.execute(sql.format(marks), ids)
                deleted[name] = cur.rowcount
            return ids, deleted

        return await self._shared.write(body)

    async def kill_switch(self) -> KillSwitchRecord | None:
        cur = await self._run("SELECT paused, set_by, set_at FROM kill_switch WHERE id = 1")
        row = await cur.fetchone()
        return KillSwitchRecord(bool(row["paused"]), row["set_by"], parse_time(row["set_at"])) if row else None

    async def set_kill_switch(self, paused: bool, by: str, at: datetime) -> None:
        await self._run(
            "INSERT INTO kill_switch (id, paused, set_by, set_at) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE"
            " SET paused = excluded.paused, set_by = excluded.set_by, set_at = excluded.set_at",
            (int(paused), json_rows.without_nul(by), format_time(at)),
        )

    async def kill_switch_history(self, since: datetime, until: datetime) -> list[KillSwitchRecord]:
        cur = await self._run(
            "SELECT * FROM (SELECT id, paused, set_by, at FROM kill_switch_history WHERE at < ?"
            " ORDER BY at DESC, id DESC LIMIT 1) UNION ALL SELECT id, paused, set_by, at"
            " FROM kill_switch_history WHERE at >= ? AND at < ? ORDER BY at, id",
            (_at(since), _at(since), _at(until)),
        )
        return [KillSwitchRecord(bool(r["paused"]), r["set_by"], parse_time(r["at"])) for r in await cur.fetchall()]

    async def _prune_switches(self, cutoff: str) -> int:
        """The settings older than ``cutoff`` but the last of them: it is the one in force at the cutoff."""
        cur = await self._db.execute(
            "DELETE FROM kill_switch_history WHERE at < ? AND id <> (SELECT id FROM kill_switch_history"
            " WHERE at < ? ORDER BY at DESC, id DESC LIMIT 1)",
            (cutoff, cutoff),
        )
        return cur.rowcount

    async def guard_rows(self) -> list[tuple[str, str, str]]:
        """The embedded guardrail state (remediator.guardstate.memory.GuardStateRows)."""
        cur = await self._run("SELECT map, key, value FROM guard_state")
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def write_guard_rows(
        self, upserts: Sequence[tuple[str, str, str]], deletes: Sequence[tuple[str, str]]
    ) -> None:
        """In the shared transaction: with the decision that made the change, in a decision batch."""
        if not upserts and not deletes:
            return

        async def body() -> None:
            if upserts:
                await self._db.executemany("INSERT OR REPLACE INTO guard_state (map, key, value) VALUES (?, ?, ?)",
                                           upserts)
            if deletes:
                await self._db.executemany("DELETE FROM guard_state WHERE map = ? AND key = ?", deletes)

        await self._shared.write(body)

    def on_rollback(self, callback: Callable[[], None]) -> None:
        self._shared.on_rollback.append(callback)

    async def settled(self) -> None:
        await self._shared.settled()

    async def ping(self) -> None:
        await self._run("SELECT 1")

    async def close(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._shared.flush()
        await self._db.close()
