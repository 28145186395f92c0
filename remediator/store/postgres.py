"""Production store on PostgreSQL, shared by every replica of the daemon.

Why these choices:

- Intake is one ``INSERT .. SELECT FROM unnest(..) ON CONFLICT DO NOTHING`` per
  group commit: webhooks arriving while one commit is in flight share the next (one
  round trip, one transaction), each answered after the commit holding its alerts
  (so before its 2xx), and duplicates from retries or an HA pair are absorbed by the
  unique dedup key.  Rows keep their delivery order (ids are the processing order).
- Work is claimed with ``FOR UPDATE SKIP LOCKED`` and a lease (``claimed_until``), for
  alerts and for executions alike: replicas never wait on each other, and whatever a
  dead replica held becomes claimable when its lease runs out.  "Now" is the injected
  clock's, as in the embedded store, so virtual clocks drive leases in tests.
- Every connection, timeout or server-going-away error becomes
  :class:`StoreUnavailable` (the webhook answers 503, readiness fails); the asyncpg
  pool replaces broken connections on the next acquire, so the daemon recovers when
  the database does, without a restart.

The JSON documents returned here are built by :mod:`remediator.store.rows`, as the
embedded store's are: the HTTP API hands them out unchanged whichever store is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec
import structlog

from remediator.core.alerts import Alert, format_time
from remediator.core.decisions import Decision, PlannedStep, decision_from_json, execution_id
from remediator.core.errors import ConfigError, StoreUnavailable
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
from remediator.store.migrations import migrate
from remediator.store.shared_tx import complete as _complete

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect, acquire or command timeout
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection closed underneath us, pool closed
    asyncpg.exceptions.OperatorInterventionError,  # statement_timeout, admin shutdown, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # deadlock or serialization failure: retry later
    # Takes no writes (a failover to a standby, default_transaction_read_only during maintenance): the
    # database's state, not the alert's fault, and intake must answer 503 (Alertmanager retries), not 500.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,  # the server ended the session
    # "cannot switch to state 12; another operation (2) is in progress": asyncpg's protocol out of
    # step with a connection the server has just terminated (pg_terminate_backend, a restart or a
    # failover); seen in about 1 % of statements while backends are being terminated.  See _conn.
    asyncpg.exceptions.InternalClientError,
)

_UNFINISHED = "('pending', 'running')"
_STEP_COLUMNS = "(execution_id, phase, idx, action, params, result, started_at, finished_at)"
_STEP_UPSERT = ("ON CONFLICT (execution_id, phase, idx) DO UPDATE SET action = excluded.action,"
                " params = excluded.params, result = excluded.result, started_at = excluded.started_at,"
                " finished_at = excluded.finished_at")
# Options read from the DSN's query string that are ours, not PostgreSQL settings.
_POOL_OPTIONS = ("pool_min_size", "pool_max_size", "connect_timeout", "acquire_timeout")


#: PostgreSQL text cannot hold NUL; such (hostile) strings are kept storable instead of failing intake.
_text = json_rows.without_nul


def _split_dsn(dsn: str) -> tuple[str, dict[str, str], set[str]]:
    """(DSN without our pool options, those options, the server settings the DSN sets itself)."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    ours = {k: query.pop(k) for k in _POOL_OPTIONS if k in query}
    return urlunsplit(parts._replace(query=urlencode(query))), ours, set(query)


def _received(row: Mapping[str, Any]) -> StoredAlert:
    return StoredAlert(
        row["id"],
        ReceivedAlert(
            Alert.from_json_text(row["alert"]),
            row["received_at"],
            row["receiver"],
            row["group_key"],
            row["external_url"],
        ),
        row.get("attempts", 0),
    )


#: Deliveries with more alerts than this are serialised for the database on a worker thread.
ROWS_IN_LOOP = 200


class _IntakeRow(msgspec.Struct):
    """One alert as the intake statement reads it (``json_to_recordset``'s column names)."""

    k: str  # dedup key
    f: str  # fingerprint
    s: str  # status
    t: str  # startsAt, RFC 3339 (PostgreSQL parses it into starts_at)
    a: str  # the alert's JSON text, stored as it is
    r: str  # receiver
    g: str  # group key
    e: str  # external URL
    w: str  # received at, RFC 3339


_ROWS = msgspec.json.Encoder()


@dataclass(frozen=True)
class _Delivery:
    """A delivery ready for the intake statement: its distinct keys in delivery order, and its rows
    as the elements of a JSON array (the text between the brackets)."""

    keys: list[str]
    rows: bytes


# Intake hands the rows over as one JSON document, not as nine arrays: asyncpg encodes an
# array element by element, with up to two ``isinstance`` checks against abstract base
# classes each (a fifth of a 20-alert delivery's intake CPU, measured), where msgspec writes
# the whole delivery in one call; PostgreSQL parses the document in C.
_INTAKE_SQL = (
    "INSERT INTO alerts (dedup_key, fingerprint, status, starts_at, alert, receiver, group_key,"
    " external_url, received_at)"
    " SELECT k, f, s, t, a, r, g, e, w FROM ROWS FROM (json_to_recordset($1::json) AS (k text, f text,"
    " s text, t timestamptz, a text, r text, g text, e text, w timestamptz)) WITH ORDINALITY"
    " AS x(k, f, s, t, a, r, g, e, w, n) ORDER BY n"
    " ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key"
)


def _columns(alerts: Sequence[ReceivedAlert]) -> _Delivery:
    """A delivery's rows for the intake statement: one per distinct alert, in delivery order
    (the first of a key wins)."""
    rows: dict[str, _IntakeRow] = {}
    for r in alerts:
        a = r.alert
        if a.dedup_key not in rows:
            rows[a.dedup_key] = _IntakeRow(
                a.dedup_key, a.fingerprint, a.status, a.starts_text, a.json_text(), _text(r.receiver),
                _text(r.group_key), _text(r.external_url), format_time(r.received_at))
    return _Delivery(list(rows), _ROWS.encode(list(rows.values()))[1:-1])


def _merge(deliveries: Sequence[_Delivery]) -> tuple[str, dict[str, int]]:
    """The rows of a group commit (one JSON array), and which delivery each key counts as new for.

    A key is credited to the first delivery in the batch that carries it, so each caller's
    count of new alerts is what it would have been had the deliveries committed one after
    another in this order: a later delivery repeating the key counts it as a duplicate.  Its
    row is sent again, and the statement skips it as it skips any key already stored (``ON
    CONFLICT DO NOTHING`` within one statement keeps the first in the statement's order).
    """
    owner: dict[str, int] = {}
    for i, delivery in enumerate(deliveries):
        for key in delivery.keys:
            owner.setdefault(key, i)
    return f"[{b','.join(d.rows for d in deliveries).decode()}]", owner


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: nothing to undo.

    The store never changes session state (no SET, LISTEN or session advisory locks),
    so the default reset (``RESET ALL; UNLISTEN *; ...``) would only add a round trip to
    every query; an open transaction is still rolled back by asyncpg itself.
    """


def _count(status: str) -> int:
    """Rows affected, from a command tag such as ``INSERT 0 3`` or ``UPDATE 2``."""
    return int(status.rsplit(" ", 1)[-1])


class _Batch:
    """A task's open decision batch: what it will write when it ends."""

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.marks: list[int] = []  # alerts marked processed
        self.unrecorded: set[str] = set()  # decisions looked up and not recorded (look_up)
        self.planned: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = []  # (decision row, step rows)


def _decision_columns(did: str, decision: Decision) -> tuple[Any, ...]:
    """A decision row's first seven columns: id, alert_key, fingerprint, playbook, kind, at, body."""
    return (did, decision.alert_key, decision.fingerprint, decision.playbook, decision.kind.value, decision.at,
            json.dumps(decision.to_json()))


class PostgresStore:
    def __init__(self, pool: Any, clock: Clock, *, acquire_timeout: float = 10.0) -> None:
        self._pool = pool
        self._clock = clock
        self._acquire_timeout = acquire_timeout
        # Intake's group commit: one batch in flight at a time; deliveries arriving meanwhile
        # queue here and go together in the next one (see record_alerts).
        self._intake = asyncio.Lock()
        self._pending: list[tuple[_Delivery, asyncio.Future[int]]] = []
        # The decision batch open in a task (decision_batch), per task, per store (not module state).
        self._batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
            f"remediator-pg-batch-{id(self)}", default=None)

    @classmethod
    async def open(
        cls,
        dsn: str,
        clock: Clock,
        *,
        migrate_schema: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout: float = 15.0,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 10.0,
    ) -> PostgresStore:
        """Connect, apply pending migrations, and return the store.

        Pool options may also come from the DSN (``?pool_max_size=20&connect_timeout=3``);
        any other query parameter is a PostgreSQL setting (``?statement_timeout=5s``,
        ``?search_path=tenant_a``) and wins over the defaults here.
        """
        url, options, in_dsn = _split_dsn(dsn)
        try:
            min_size = int(options.get("pool_min_size", min_size))
            max_size = int(options.get("pool_max_size", max_size))
            connect_timeout = float(options.get("connect_timeout", connect_timeout))
            acquire_timeout = float(options.get("acquire_timeout", acquire_timeout))
        except ValueError as exc:
            raise ConfigError(f"database_url: invalid pool option: {exc}") from None
        # asyncpg lets this argument override the DSN; the DSN's own settings must win instead.
        defaults = {"application_name": "remediator", "statement_timeout": str(int(statement_timeout * 1000))}
        server_settings = {k: v for k, v in defaults.items() if k not in in_dsn}
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min(min_size, max_size),
                max_size=max_size,
                timeout=connect_timeout,
                command_timeout=statement_timeout + 5.0,  # the server's timeout answers first
                server_settings=server_settings,
                reset=_keep_session,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgresql: cannot connect: {exc}") from exc
        except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
            raise ConfigError(f"database_url: {exc}") from exc
        store = cls(pool, clock, acquire_timeout=acquire_timeout)
        if migrate_schema:
            try:
                await store.migrate()
            except BaseException:
                await store.close()
                raise
        return store

    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied by this call."""
        async with self._conn() as conn:
            return await migrate(conn)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                try:
                    yield conn
                except asyncpg.exceptions.InternalClientError:
                    # Its protocol is out of step with the server: never handed out again.
                    conn.terminate()
                    raise
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgresql: {type(exc).__name__}: {exc}") from exc

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._conn() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._conn() as conn:
            return list(await conn.fetch(sql, *args))

    # --- intake ---------------------------------------------------------------

    async def record_alerts(self, alerts: Sequence[ReceivedAlert]) -> int:
        # Serialising is CPU work: a large delivery's is done off the event loop (as in the embedded store).
        rows = _columns(alerts) if len(alerts) <= ROWS_IN_LOOP else await asyncio.to_thread(_columns, alerts)
        if not rows.keys:
            return 0
        # Group commit, as in the embedded store: deliveries that arrive while a commit is in
        # flight share the next one (one statement, one transaction), so concurrent webhooks
        # cost one round trip and one WAL flush per batch rather than one each.
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, done))
        # Whole even if this request is cancelled: the batch may carry other requests' rows,
        # and each of them must hear the outcome of the commit that holds its alerts.
        try:
            await _complete(self._commit_pending(done))
        except asyncio.CancelledError:
            if done.done() and not done.cancelled():
                done.exception()  # this caller left; its outcome is not an unretrieved error
            raise
        return await done

    async def _commit_pending(self, done: asyncio.Future[int]) -> None:
        async with self._intake:
            if done.done():  # an earlier batch carried these rows
                return
            batch, self._pending = self._pending, []
            try:
                await self._commit_batch(batch)
            finally:
                # Only if this task itself was cancelled (the loop shutting down) half way:
                # no caller of the batch may wait forever for an answer.
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable("postgresql: intake stopped before its commit was known"))

    async def _commit_batch(self, batch: list[tuple[_Delivery, asyncio.Future[int]]]) -> None:
        try:
            counts = await self._insert([rows for rows, _ in batch])
        except StoreUnavailable as exc:
            # One statement, so atomic: nothing of the batch was written, and every caller in it hears so.
            for _, fut in batch:
                fut.set_exception(exc)
            return
        except Exception:  # a row the database refused: see below
            # Not an outage but something in one delivery (a value PostgreSQL will not take):
            # each delivery is committed on its own, so one bad payload fails only its own request.
            for rows, fut in batch:
                try:
                    fut.set_result((await self._insert([rows]))[0])
                except Exception as exc:  # handed to the caller it belongs to
                    fut.set_exception(exc)
            return
        for (_, fut), count in zip(batch, counts, strict=True):
            fut.set_result(count)

    async def _insert(self, deliveries: list[_Delivery]) -> list[int]:
        """Commit ``deliveries`` in one statement (one transaction); each one's count of new alerts."""
        rows, owner = _merge(deliveries)
        attempts = 0
        while True:
            try:
                inserted = await self._fetch(_INTAKE_SQL, rows)
                break
            except StoreUnavailable as exc:
                # Rows go in delivery order (ids are the processing order, as in the embedded
                # store), so two replicas inserting overlapping deliveries in different orders
                # can deadlock; the statement rolled back whole, so trying again is safe.
                attempts += 1
                if attempts == 3 or not isinstance(exc.__cause__, asyncpg.DeadlockDetectedError):
                    raise
        counts = [0] * len(deliveries)
        for r in inserted:
            counts[owner[r["dedup_key"]]] += 1
        return counts

    async def claim_alerts(self, worker: str, limit: int, lease: float) -> list[StoredAlert]:
        now = self._clock.now()
        # Every claim is an attempt, except taking back what this worker still holds (left
        # by a batch cut short, see IntakeQueue.claim_alerts): those were not tried meanwhile.
        rows = await self._fetch(
            "UPDATE alerts SET claimed_by = $1, claimed_until = $2,"
            " attempts = attempts + CASE WHEN claimed_by IS NOT DISTINCT FROM $1 THEN 0 ELSE 1 END"
            " WHERE id IN (SELECT id FROM alerts WHERE NOT processed AND (claimed_until IS NULL"
            " OR claimed_until <= $3 OR claimed_by = $1) ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, alert, receiver, group_key, external_url, received_at, attempts",
            worker,
            now + timedelta(seconds=lease),
            now,
            limit,
        )
        return [_received(r) for r in sorted(rows, key=lambda r: r["id"])]

    async def mark_processed(self, alert_id: int) -> None:
        batch = self._in_batch()
        if batch is not None:
            batch.marks.append(alert_id)  # marked when the batch ends (decision_batch)
            return
        await self._execute("UPDATE alerts SET processed = true, claimed_until = NULL WHERE id = $1", alert_id)

    def _in_batch(self) -> _Batch | None:
        batch = self._batch.get()
        return batch if batch is not None and batch.task is asyncio.current_task() else None

    @contextlib.asynccontextmanager
    async def decision_batch(self) -> AsyncIterator[None]:
        """The calling task's decision batch (``IntakeQueue``'s batch role): what it writes that can
        wait is written in one transaction when it leaves, one round trip set per batch rather
        than one per alert.

        What waits: alerts marked processed, and plan-only executions (:meth:`record_planned`)
        whose decision this batch looked up (:meth:`look_up`) and found unrecorded.  The
        alerts are claimed by this worker, so no other decider records those decisions meanwhile
        (if one did, its lease having run out, its decision stands and ours is dropped, logged).
        A decision that could be recorded already is written at once, as outside a batch.  If
        the batch's writes are lost (a crash, the database gone), its alerts are claimed again
        and decided again: nothing was admitted or run on the strength of them, but the dry
        runs' notifications (already queued) may be sent a second time, as with the embedded
        store's batch commit."""
        if self._in_batch() is not None:
            yield
            return
        batch = _Batch(asyncio.current_task())
        token = self._batch.set(batch)
        failed = True
        try:
            yield
            failed = False
        finally:
            self._batch.reset(token)
            with contextlib.suppress(StoreUnavailable) if failed else contextlib.nullcontext():
                await self._write_batch(batch)

    async def _write_batch(self, batch: _Batch) -> None:
        """One statement (one round trip, its own transaction): the plan-only decisions, their
        steps (only those of decisions recorded now) and the marks."""
        if not batch.planned:
            if batch.marks:
                await self._execute("UPDATE alerts SET processed = true, claimed_until = NULL"
                                    " WHERE id = ANY($1::bigint[])", batch.marks)
            return
        decisions = [row for row, _ in batch.planned]
        steps = [step for _, rows in batch.planned for step in rows]
        rows = await self._fetch(
            "WITH d AS (INSERT INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body,"
            " exec_status, finished_at, target_kind, target_namespace, target_name)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[],"
            " $12::text[]) ON CONFLICT DO NOTHING RETURNING id),"
            " s AS (INSERT INTO steps (execution_id, phase, idx, action, params, result, started_at,"
            " finished_at) SELECT * FROM unnest($13::text[], $14::text[], $15::int[], $16::text[],"
            " $17::text[], $18::text[], $19::timestamptz[], $20::timestamptz[])"
            " AS s (execution_id, phase, idx, action, params, result, started_at, finished_at)"
            " WHERE s.execution_id IN (SELECT id FROM d)),"
            " m AS (UPDATE alerts SET processed = true, claimed_until = NULL WHERE id = ANY($22::bigint[]))"
            " SELECT $21::int - count(*) AS lost FROM d",
            *map(list, zip(*decisions, strict=True)),
            *map(list, zip(*steps, strict=True)) if steps else ([],) * 8,
            len(decisions),
            batch.marks,
        )
        if rows[0]["lost"]:
            structlog.get_logger("remediator.store").warning(
                "plan-only decisions recorded by another decider first (a claim lease ran out?): kept theirs",
                count=rows[0]["lost"])

    def decision_unit(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Nothing to hold together: each write outside the batch's own commits on its own."""
        return contextlib.nullcontext()

    async def look_up(
        self, ids: Sequence[str], episodes: Sequence[tuple[str, datetime]]
    ) -> tuple[dict[str, Decision], set[tuple[str, datetime]]]:
        keys = json_rows.resolve_keys(episodes)
        rows = await self._fetch(
            "SELECT id, body FROM decisions WHERE id = ANY($1::text[])"
            " UNION ALL SELECT dedup_key, NULL FROM alerts WHERE dedup_key = ANY($2::text[])",
            list(ids), list(keys))
        found, resolved = json_rows.looked_up(rows, keys)
        batch = self._in_batch()
        if batch is not None:
            batch.unrecorded.update(i for i in ids if i not in found)
        return found, resolved

    async def defer_alert(self, alert_id: int, until: datetime) -> None:
        # Deferring is an outcome, not a failure: its attempts start over, at one (IntakeQueue.defer_alert).
        await self._execute(
            "UPDATE alerts SET claimed_by = NULL, claimed_until = $2, attempts = 1 WHERE id = $1", alert_id, until
        )

    async def release_alert(self, alert_id: int, retry_at: datetime) -> None:
        await self._execute(
            "UPDATE alerts SET claimed_by = NULL, claimed_until = $2 WHERE id = $1 AND NOT processed",
            alert_id,
            retry_at,
        )

    async def park_alert(self, alert_id: int, error: str) -> None:
        await self._execute(
            "UPDATE alerts SET processed = true, claimed_until = NULL, parked_at = $2, error = $3 WHERE id = $1",
            alert_id,
            self._clock.now(),
            json_rows.park_error(error),
        )

    async def parked_alerts(self, *, limit: int = 50) -> list[dict[str, Any]]:
        parked = await self._fetch(
            "SELECT id, alert, receiver, received_at, attempts, parked_at, error FROM alerts"
            " WHERE parked_at IS NOT NULL ORDER BY parked_at DESC, id DESC LIMIT $1",
            limit,
        )
        return [json_rows.parked_alert(r) for r in parked]

    async def resolved_for(self, fingerprint: str, starts_at: datetime) -> bool:
        key = json_rows.resolve_key(fingerprint, starts_at)
        return bool(await self._fetch("SELECT 1 FROM alerts WHERE dedup_key = $1", key))

    async def firing_count(self, fingerprint: str, since: datetime) -> int:
        rows = await self._fetch(
            "SELECT count(DISTINCT starts_at) AS n FROM alerts"
            " WHERE fingerprint = $1 AND status = 'firing' AND starts_at >= $2",
            fingerprint,
            since,
        )
        return int(rows[0]["n"])

    async def recorded_alert(self, alert_key: str) -> Alert | None:
        rows = await self._fetch("SELECT alert FROM alerts WHERE dedup_key = $1", alert_key)
        return Alert.from_json_text(rows[0]["alert"]) if rows else None

    async def undecided(self) -> int:
        rows = await self._fetch("SELECT count(*) AS n FROM alerts WHERE NOT processed")
        return int(rows[0]["n"])

    async def count_alerts(self) -> int:
        rows = await self._fetch("SELECT count(*) AS n FROM alerts")
        return int(rows[0]["n"])

    async def alerts_between(self, since: datetime, until: datetime, *, batch: int = 500) -> AsyncIterator[StoredAlert]:
        """Recorded alerts with ``since <= received_at < until``, oldest first, paged by keyset."""
        last: tuple[datetime, int] = (since, -1)
        while True:
            rows = await self._fetch(
                "SELECT id, alert, receiver, group_key, external_url, received_at FROM alerts"
                " WHERE (received_at, id) > ($1, $2) AND received_at < $3 ORDER BY received_at, id LIMIT $4",
                last[0],
                last[1],
                until,
                batch,
            )
            for row in rows:
                yield _received(row)
            if len(rows) < batch:
                return
            last = (rows[-1]["received_at"], rows[-1]["id"])

    # --- decisions and executions -----------------------------------------------

    async def record_decision(self, decision: Decision, *, approval_deadline: datetime | None = None) -> bool:
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        tag = await self._execute(
            "INSERT INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body, exec_status, target_kind,"
            " target_namespace, target_name, approval_deadline)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
            *_decision_columns(did, decision),
            json_rows.execution_status(decision),
            *json_rows.target_columns(decision),
            approval_deadline,
        )
        return _count(tag) == 1

    async def record_planned(
        self, decision: Decision, steps: Sequence[StepRecord], *, status: str, finished: datetime
    ) -> bool:
        # One statement, one round trip: the decision and its steps (only if the decision is new);
        # none inside a decision batch that knows it is new (written with the batch).
        did = decision.execution_id or execution_id(decision.alert_key, decision.playbook)
        batch = self._in_batch()
        if batch is not None and did in batch.unrecorded:
            batch.unrecorded.discard(did)
            row = (*_decision_columns(did, decision), status, finished, *json_rows.target_columns(decision))
            batch.planned.append((row, [(did, s.step.phase, s.step.index, s.step.action,
                                         json.dumps(s.step.params, default=str),
                                         json.dumps(s.result.to_json(), default=str), s.started, s.finished)
                                        for s in steps]))
            return True
        rows = await self._fetch(
            "WITH d AS (INSERT INTO decisions (id, alert_key, fingerprint, playbook, kind, at, body, exec_status,"
            " finished_at, target_kind, target_namespace, target_name)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING RETURNING id),"
            " s AS (INSERT INTO steps (execution_id, phase, idx, action, params, result, started_at, finished_at)"
            " SELECT d.id, s.* FROM d, unnest($13::text[], $14::int[], $15::text[], $16::text[], $17::text[],"
            " $18::timestamptz[], $19::timestamptz[]) AS s)"
            " SELECT count(*) AS n FROM d",
            *_decision_columns(did, decision),
            status,
            finished,
            *json_rows.target_columns(decision),
            [s.step.phase for s in steps],
            [s.step.index for s in steps],
            [s.step.action for s in steps],
            [json.dumps(s.step.params, default=str) for s in steps],
            [json.dumps(s.result.to_json(), default=str) for s in steps],
            [s.started for s in steps],
            [s.finished for s in steps],
        )
        return bool(rows[0]["n"])

    async def decision(self, decision_id: str) -> Decision | None:
        rows = await self._fetch("SELECT body FROM decisions WHERE id = $1", decision_id)
        return decision_from_json(json.loads(rows[0]["body"])) if rows else None

    async def approval(self, execution_id: str) -> ApprovalState | None:
        rows = await self._fetch(
            "SELECT exec_status, approval_deadline, claimed_by IS NOT NULL AND claimed_until > $2 AS deciding"
            " FROM decisions WHERE id = $1 AND exec_status IS NOT NULL",
            execution_id,
            self._clock.now(),
        )
        if not rows:
            return None
        r = rows[0]
        return ApprovalState(r["exec_status"], r["approval_deadline"],
                             r["exec_status"] == AWAITING_APPROVAL and bool(r["deciding"]))

    async def claim_approval(self, execution_id: str, worker: str, lease: float) -> bool:
        now = self._clock.now()
        tag = await self._execute(
            "UPDATE decisions SET claimed_by = $2, claimed_until = $3 WHERE id = $1 AND exec_status = $5"
            " AND approval_deadline > $4 AND (claimed_by IS NULL OR claimed_until IS NULL OR claimed_until <= $4)",
            execution_id,
            worker,
            now + timedelta(seconds=lease),
            now,
            AWAITING_APPROVAL,
        )
        return _count(tag) == 1

    async def settle_approval(self, execution_id: str, worker: str, status: str, at: datetime) -> bool:
        tag = await self._execute(
            "UPDATE decisions SET exec_status = $3, finished_at = $4, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $1 AND exec_status = $5 AND claimed_by = $2",
            execution_id,
            worker,
            status,
            None if status == "pending" else at,
            AWAITING_APPROVAL,
        )
        return _count(tag) == 1

    async def await_approval(self, execution_id: str, worker: str, deadline: datetime | None) -> bool:
        tag = await self._execute(
            "UPDATE decisions SET exec_status = $3, approval_deadline = $4, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $1 AND exec_status IN ('pending', 'running') AND claimed_by = $2",
            execution_id,
            worker,
            AWAITING_APPROVAL,
            deadline,
        )
        return _count(tag) == 1

    async def expire_approvals(self, now: datetime, *, limit: int = 100) -> list[str]:
        rows = await self._fetch(
            "UPDATE decisions SET exec_status = 'expired', finished_at = $1, claimed_by = NULL, claimed_until = NULL"
            " WHERE exec_status = $2 AND id IN (SELECT id FROM decisions WHERE exec_status = $2"
            " AND approval_deadline <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)"
            " ORDER BY approval_deadline LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
            now,
            AWAITING_APPROVAL,
            limit,
        )
        return [r["id"] for r in rows]

    async def claim_execution(self, execution_id: str, worker: str, lease: float) -> bool:
        """Take or renew the lease on an unfinished execution; False if another live owner holds it."""
        now = self._clock.now()
        rows = await self._fetch(
            "UPDATE decisions SET claimed_by = $2, claimed_until = $3"
            f" WHERE id = $1 AND exec_status IN {_UNFINISHED}"
            " AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_until IS NULL OR claimed_until <= $4)"
            " RETURNING id",
            execution_id,
            worker,
            now + timedelta(seconds=lease),
            now,
        )
        return bool(rows)

    async def release_execution(self, execution_id: str, worker: str) -> None:
        await self._execute(
            "UPDATE decisions SET claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND claimed_by = $2",
            execution_id,
            worker,
        )

    async def claim_unfinished(self, worker: str, lease: float, *, limit: int = 20) -> list[str]:
        """Claim unfinished executions nobody holds (or that this worker left behind), oldest first."""
        now = self._clock.now()
        rows = await self._fetch(
            "UPDATE decisions SET claimed_by = $1, claimed_until = $2 WHERE id IN ("
            f" SELECT id FROM decisions WHERE exec_status IN {_UNFINISHED}"
            " AND (claimed_until IS NULL OR claimed_until <= $3 OR claimed_by = $1)"
            " ORDER BY at, seq LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, at, seq",
            worker,
            now + timedelta(seconds=lease),
            now,
            limit,
        )
        return [r["id"] for r in sorted(rows, key=lambda r: (r["at"], r["seq"]))]

    async def record_step(
        self, execution_id: str, step: PlannedStep, result: StepResult, *, started: datetime, finished: datetime,
        owner: str | None = None,
    ) -> None:
        args = (execution_id, step.phase, step.index, step.action, json.dumps(step.params, default=str),
                json.dumps(result.to_json(), default=str), started, finished)
        if owner is None:
            # One statement: the step and the execution's "running" status commit together, in one round trip.
            await self._execute(
                f"WITH step AS (INSERT INTO steps {_STEP_COLUMNS} VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                f" {_STEP_UPSERT}) UPDATE decisions SET exec_status = 'running'"
                " WHERE id = $1 AND exec_status = 'pending'",
                *args,
            )
            return
        # Fenced (ExecutionLedger.begin_step): the step is written only if the claim is still ours, in the
        # statement that checks it.  The check is an UPDATE: it locks the execution's row, so that a claim
        # taking the execution over waits for this write and then finds it (or this write, once that claim
        # committed, finds the claim another replica's and writes nothing).
        rows = await self._fetch(
            f"WITH own AS (UPDATE decisions SET exec_status = 'running' WHERE id = $1 AND exec_status IN {_UNFINISHED}"
            " AND claimed_by = $9 AND claimed_until > $10 RETURNING id)"
            f" INSERT INTO steps {_STEP_COLUMNS} SELECT id, $2::text, $3::integer, $4::text, $5::text, $6::text,"
            f" $7::timestamptz, $8::timestamptz FROM own {_STEP_UPSERT} RETURNING 1",
            *args,
            owner,
            self._clock.now(),
        )
        if not rows:
            raise LeaseLost(execution_id)

    async def record_notification(self, execution_id: str, outcome: Mapping[str, Any]) -> None:
        await self._execute(
            "INSERT INTO notifications (execution_id, at, body) VALUES ($1, $2, $3)",
            execution_id,
            self._clock.now(),
            json.dumps(dict(outcome), default=str),
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
        return json_rows.results_of(
            await self._fetch("SELECT phase, idx, result FROM steps WHERE execution_id = $1", execution_id)
        )

    async def finish_execution(
        self, execution_id: str, status: str, finished: datetime, *, owner: str | None = None
    ) -> None:
        sql = "UPDATE decisions SET exec_status = $2, finished_at = $3, claimed_by = NULL, claimed_until = NULL"
        if owner is None:
            await self._execute(f"{sql} WHERE id = $1", execution_id, status, finished)
            return
        rows = await self._fetch(
            f"{sql} WHERE id = $1 AND exec_status IN {_UNFINISHED} AND claimed_by = $4 AND claimed_until > $5"
            " RETURNING id",
            execution_id, status, finished, owner, self._clock.now(),
        )
        if not rows:
            raise LeaseLost(execution_id)

    async def unfinished(self, execution_id: str) -> bool:
        return bool(await self._fetch(
            f"SELECT 1 FROM decisions WHERE id = $1 AND exec_status IN {_UNFINISHED}", execution_id
        ))

    async def unfinished_executions(self) -> list[str]:
        rows = await self._fetch(f"SELECT id FROM decisions WHERE exec_status IN {_UNFINISHED} ORDER BY at, seq")
        return [r["id"] for r in rows]

    async def list_executions(
        self, *, playbook: str | None = None, status: str | None = None, limit: int = 50, before: str | None = None
    ) -> list[dict[str, Any]]:
        sql = ("SELECT id, body, exec_status, finished_at, approval_deadline FROM decisions"
               " WHERE exec_status IS NOT NULL")
        args: list[Any] = []
        if playbook:
            args.append(playbook)
            sql += f" AND playbook = ${len(args)}"
        if status:
            args.append(status)
            sql += f" AND exec_status = ${len(args)}"
        if before:
            args.append(before)
            sql += f" AND (at, seq) < (SELECT at, seq FROM decisions WHERE id = ${len(args)})"
        args.append(limit)
        sql += f" ORDER BY at DESC, seq DESC LIMIT ${len(args)}"
        return [json_rows.execution_listing(r) for r in await self._fetch(sql, *args)]

    async def query_decisions(self, query: DecisionQuery) -> list[dict[str, Any]]:
        params = Params(numbered=True)
        sql = decisions_sql(query, params, time=lambda t: t, order="seq")
        return [json_rows.decision_entry(r) for r in await self._fetch(sql, *params.values)]

    async def decision_counts(self, since: datetime) -> list[DecisionCount]:
        params = Params(numbered=True)
        sql = daily_counts_sql(params, since, day="to_char(d.at AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        return [DecisionCount(r[0], r[1], r[2], int(r[3])) for r in await self._fetch(sql, *params.values)]

    async def deliveries(self, fingerprint: str, *, limit: int = 100) -> list[dict[str, Any]]:
        sql = DELIVERIES_SQL.format(fingerprint="$1", limit="$2")
        return [json_rows.delivery(r) for r in await self._fetch(sql, fingerprint, limit)]

    async def list_decisions(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        decisions = await self._fetch(
            "SELECT id, body, exec_status, finished_at FROM decisions ORDER BY at, seq LIMIT $1", limit
        )
        return [json_rows.execution_summary(r) for r in decisions]

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT id, body, exec_status, finished_at, alert_key, approval_deadline FROM decisions WHERE id = $1",
                execution_id,
            )
            if row is None:
                return None
            alert = await conn.fetchval("SELECT alert FROM alerts WHERE dedup_key = $1", row["alert_key"])
            steps = await conn.fetch(
                "SELECT phase, idx, action, params, result, started_at, finished_at FROM steps"
                " WHERE execution_id = $1 ORDER BY phase = 'on_failure', idx",
                execution_id,
            )
            notes = await conn.fetch("SELECT body FROM notifications WHERE execution_id = $1 ORDER BY seq",
                                     execution_id)
        return json_rows.execution_document(row, alert, steps, [n["body"] for n in notes])

    # --- retention ---------------------------------------------------------------

    async def delete_older_than(self, days: float, *, batch: int = 1000) -> dict[str, int]:
        """Delete finished decisions (with their steps) and processed alerts older than ``days``
        whose firing episode has ended (see :mod:`remediator.store.retention`).

        In batches, each its own short transaction, so retention never holds long locks
        or one huge transaction against the live intake.  Unfinished executions and
        unprocessed alerts are kept whatever their age.
        """
        cutoff = self._clock.now() - timedelta(days=days)
        counts = {"decisions": 0, "steps": 0, "notifications": 0, "alerts": 0}
        # The kill switch's history: one short statement (a setting is an operator's act, rows are few).
        counts["kill_switch"] = _count(await self._execute(
            "DELETE FROM kill_switch_history WHERE at < $1 AND id <> (SELECT id FROM kill_switch_history"
            " WHERE at < $1 ORDER BY at DESC, id DESC LIMIT 1)",
            cutoff,
        ))
        while True:
            async with self._conn() as conn, conn.transaction():
                ids = [
                    r["id"]
                    for r in await conn.fetch(
                        "SELECT id FROM decisions WHERE at < $1"
                        f" AND (exec_status IS NULL OR exec_status NOT IN {retention.KEPT})"
                        f" AND {retention.closed('alert_key')} LIMIT $2 FOR UPDATE SKIP LOCKED",
                        cutoff,
                        batch,
                    )
                ]
                counts["steps"] += _count(await conn.execute("DELETE FROM steps WHERE execution_id = ANY($1)", ids))
                counts["notifications"] += _count(
                    await conn.execute("DELETE FROM notifications WHERE execution_id = ANY($1)", ids)
                )
                counts["decisions"] += _count(await conn.execute("DELETE FROM decisions WHERE id = ANY($1)", ids))
            if len(ids) < batch:
                break
        for episode in (retention.FIRING_ENDED, retention.RESOLVED_ALONE):
            while True:
                tag = await self._execute(
                    "DELETE FROM alerts WHERE id IN (SELECT a.id FROM alerts a WHERE a.processed"
                    f" AND a.received_at < $1 AND {episode} AND NOT EXISTS (SELECT 1 FROM decisions d"
                    f" WHERE d.alert_key = a.dedup_key AND d.exec_status IN {retention.KEPT})"
                    " LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    cutoff,
                    batch,
                )
                counts["alerts"] += _count(tag)
                if _count(tag) < batch:
                    break
        return counts

    # --- the kill switch ------------------------------------------------------------

    async def kill_switch(self) -> KillSwitchRecord | None:
        rows = await self._fetch("SELECT paused, set_by, set_at FROM kill_switch WHERE id = 1")
        return KillSwitchRecord(rows[0]["paused"], rows[0]["set_by"], rows[0]["set_at"]) if rows else None

    async def set_kill_switch(self, paused: bool, by: str, at: datetime) -> None:
        await self._execute(
            "INSERT INTO kill_switch (id, paused, set_by, set_at) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE"
            " SET paused = excluded.paused, set_by = excluded.set_by, set_at = excluded.set_at",
            paused,
            _text(by),
            at,
        )

    async def kill_switch_history(self, since: datetime, until: datetime) -> list[KillSwitchRecord]:
        rows = await self._fetch(
            "(SELECT id, paused, set_by, at FROM kill_switch_history WHERE at < $1 ORDER BY at DESC, id DESC LIMIT 1)"
            " UNION ALL (SELECT id, paused, set_by, at FROM kill_switch_history WHERE at >= $1 AND at < $2)"
            " ORDER BY at, id",
            since,
            until,
        )
        return [KillSwitchRecord(r["paused"], r["set_by"], r["at"]) for r in rows]

    # --- lifecycle -----------------------------------------------------------------

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5.0)
        except _UNAVAILABLE:
            self._pool.terminate()
