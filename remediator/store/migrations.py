"""Versioned schema migrations for the PostgreSQL store.

Migrations live in Python rather than ``.sql`` files so they ship inside the wheel
without package-data rules.  Each one runs once, in order, inside one transaction
that first takes an advisory lock: replicas starting together serialise here and
the later ones find the work done.  A migration is never edited once released;
changes come as a new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


# JSON is kept in ``text`` columns, not ``jsonb``: jsonb rejects the ``\u0000`` escape
# that a label value may legally carry, and a payload the store cannot hold would make
# the webhook fail forever on one poisoned alert.  Nothing queries inside the JSON.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "intake, decisions and steps",
        """
        CREATE TABLE alerts (
            id bigserial PRIMARY KEY,
            dedup_key text NOT NULL UNIQUE,
            fingerprint text NOT NULL,
            status text NOT NULL,
            starts_at timestamptz NOT NULL,
            alert text NOT NULL,
            receiver text NOT NULL,
            group_key text NOT NULL,
            external_url text NOT NULL DEFAULT '',
            received_at timestamptz NOT NULL,
            processed boolean NOT NULL DEFAULT false,
            claimed_by text,
            claimed_until timestamptz
        );
        CREATE INDEX alerts_pending ON alerts (id) WHERE NOT processed;
        CREATE INDEX alerts_episodes ON alerts (fingerprint, status, starts_at);
        CREATE INDEX alerts_received ON alerts (received_at, id);

        CREATE TABLE decisions (
            seq bigserial NOT NULL UNIQUE,
            id text PRIMARY KEY,
            alert_key text NOT NULL,
            fingerprint text NOT NULL,
            playbook text NOT NULL,
            kind text NOT NULL,
            at timestamptz NOT NULL,
            body text NOT NULL,
            exec_status text,
            finished_at timestamptz,
            claimed_by text,
            claimed_until timestamptz,
            UNIQUE (alert_key, playbook)
        );
        CREATE INDEX decisions_at ON decisions (at, seq);
        CREATE INDEX decisions_executions ON decisions (at, seq) WHERE exec_status IS NOT NULL;
        CREATE INDEX decisions_unfinished ON decisions (at) WHERE exec_status IN ('pending', 'running');

        CREATE TABLE steps (
            execution_id text NOT NULL,
            phase text NOT NULL,
            idx integer NOT NULL,
            action text NOT NULL,
            params text NOT NULL,
            result text NOT NULL,
            started_at timestamptz NOT NULL,
            finished_at timestamptz NOT NULL,
            PRIMARY KEY (execution_id, phase, idx)
        );
        """,
    ),
    Migration(
        2,
        "notification outcomes in the audit",
        """
        CREATE TABLE notifications (
            seq bigserial PRIMARY KEY,
            execution_id text NOT NULL,
            at timestamptz NOT NULL,
            body text NOT NULL
        );
        CREATE INDEX notifications_execution ON notifications (execution_id, seq);
        """,
    ),
    Migration(
        3,
        "attempts per alert; poison alerts parked",
        # A constant default: no table rewrite, so this is quick on a large table.
        """
        ALTER TABLE alerts
            ADD COLUMN attempts integer NOT NULL DEFAULT 0,
            ADD COLUMN parked_at timestamptz,
            ADD COLUMN error text;
        CREATE INDEX alerts_parked ON alerts (parked_at, id) WHERE parked_at IS NOT NULL;
        """,
    ),
    Migration(
        4,
        "the kill switch, durable",
        # One row: the last setting.  The guardrail state (Redis) is re-armed from it when a
        # restart without persistence lost the pause.
        """
        CREATE TABLE kill_switch (
            id integer PRIMARY KEY CHECK (id = 1),
            paused boolean NOT NULL,
            set_by text NOT NULL,
            set_at timestamptz NOT NULL
        );
        """,
    ),
    Migration(
        5,
        "decisions by target, playbook and alert, for the decisions API",
        # The target moves out of the JSON into columns the API filters on; existing rows get
        # theirs from the JSON.  A body holding an escaped NUL cannot be read as json (PostgreSQL
        # refuses to turn \u0000 into text): such a hostile decision keeps no target columns.
        """
        ALTER TABLE decisions
            ADD COLUMN target_kind text,
            ADD COLUMN target_namespace text,
            ADD COLUMN target_name text;
        UPDATE decisions SET target_kind = x.t ->> 'kind', target_namespace = x.t ->> 'namespace',
            target_name = x.t ->> 'name'
        FROM (SELECT id, body::json -> 'target' AS t FROM decisions WHERE strpos(body, '\\u0000') = 0) AS x
        WHERE decisions.id = x.id AND json_typeof(x.t) = 'object';
        CREATE INDEX decisions_fingerprint ON decisions (fingerprint, at, seq);
        CREATE INDEX decisions_playbook ON decisions (playbook, at, seq);
        CREATE INDEX decisions_namespace ON decisions (target_namespace, at, seq);
        """,
    ),
    Migration(
        6,
        "executions awaiting approval, with their deadline",
        # Nullable, no default: no table rewrite.  The partial index is what the sweeper that
        # expires overdue approvals reads on every round.
        """
        ALTER TABLE decisions ADD COLUMN approval_deadline timestamptz;
        CREATE INDEX decisions_awaiting ON decisions (approval_deadline) WHERE exec_status = 'awaiting_approval';
        """,
    ),
    Migration(
        7,
        "decisions by kind, for the decisions API and the timeline's filter",
        # Every filter of the listing has an index ending in its order (at, seq): without this one a
        # rare kind (circuit_open, paused) is found by reading every decision (decision_query.py).
        """
        CREATE INDEX decisions_kind ON decisions (kind, at, seq);
        """,
    ),
    Migration(
        8,
        "a decision's target columns filled from its body when its writer left them out",
        # During a rolling update the release before migration 5 still runs beside this one, and after
        # a roll back it runs alone: its INSERT names no target columns, and its decisions would be
        # missing from every target and namespace filter.  The trigger gives such a row the target
        # its body holds, as migration 5 did once; it fires only when all three columns are NULL (a
        # writer that sets them is left alone) and only on the columns it reads, so claims and status
        # updates never run it.  An unreadable body (an escaped NUL, see migration 5) keeps no target
        # columns rather than failing the write.  The trigger is created first: its lock holds back
        # inserts until this commits, so the UPDATE below (rows written since migration 5) misses none.
        """
        CREATE FUNCTION decisions_target_from_body() RETURNS trigger LANGUAGE plpgsql AS $fn$
        DECLARE
            t json;
        BEGIN
            IF strpos(NEW.body, '\\u0000') = 0 THEN
                BEGIN
                    t := NEW.body::json -> 'target';
                    IF json_typeof(t) = 'object' THEN
                        NEW.target_kind := t ->> 'kind';
                        NEW.target_namespace := t ->> 'namespace';
                        NEW.target_name := t ->> 'name';
                    END IF;
                EXCEPTION WHEN others THEN
                    NULL;  -- not JSON after all: the row is written without its target columns
                END;
            END IF;
            RETURN NEW;
        END
        $fn$;
        CREATE TRIGGER decisions_target BEFORE INSERT OR UPDATE OF body, target_kind, target_namespace, target_name
            ON decisions FOR EACH ROW
            WHEN (NEW.target_kind IS NULL AND NEW.target_namespace IS NULL AND NEW.target_name IS NULL)
            EXECUTE FUNCTION decisions_target_from_body();
        UPDATE decisions SET target_kind = x.t ->> 'kind', target_namespace = x.t ->> 'namespace',
            target_name = x.t ->> 'name'
        FROM (SELECT id, body::json -> 'target' AS t FROM decisions
              WHERE target_kind IS NULL AND target_namespace IS NULL AND target_name IS NULL
              AND strpos(body, '\\u0000') = 0) AS x
        WHERE decisions.id = x.id AND json_typeof(x.t) = 'object';
        """,
    ),
    Migration(
        9,
        "every setting of the kill switch, for the export's control lines",
        # Written by a trigger in the setting's own statement (so its transaction), whichever release
        # set it: during a rolling update the release before this one still serves pause and resume,
        # and after a roll back it serves them alone; its pauses belong in the history too.  The
        # trigger is created first: its lock holds back writes to kill_switch until this commits, so
        # the history's first row (the setting kept so far, the only one known) misses none.
        """
        CREATE TABLE kill_switch_history (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL,
            paused boolean NOT NULL,
            set_by text NOT NULL
        );
        CREATE INDEX kill_switch_history_at ON kill_switch_history (at, id);
        CREATE FUNCTION kill_switch_history_append() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            INSERT INTO kill_switch_history (at, paused, set_by) VALUES (NEW.set_at, NEW.paused, NEW.set_by);
            RETURN NULL;
        END
        $fn$;
        CREATE TRIGGER kill_switch_set AFTER INSERT OR UPDATE ON kill_switch
            FOR EACH ROW EXECUTE FUNCTION kill_switch_history_append();
        INSERT INTO kill_switch_history (at, paused, set_by) SELECT set_at, paused, set_by FROM kill_switch;
        """,
    ),
)

LATEST = MIGRATIONS[-1].version


def _newer_schema(version: int) -> None:
    """A database migrated by a later release: this one (an image rolled back) goes on, loudly.

    Refusing to start would not make the rollback safe and could break a rolling update: a
    replica of the older release that restarts meanwhile (a crash, a drained node) runs this
    too, while the newer release's replicas still serve.  What holds instead is the rule in
    docs/deploy.md: a release runs on the schema of the release after it, no further."""
    structlog.get_logger("remediator.store").error(
        "the database schema is newer than this release: it was migrated by a later release (rolled back?); "
        "this release runs on the schema of the next release only, see docs/deploy.md (rolling back)",
        schema_version=version, release_schema_version=LATEST,
    )


async def migrate(conn: Any) -> list[int]:
    """Apply pending migrations on an asyncpg connection; return the versions applied now."""
    applied_now: list[int] = []
    async with conn.transaction():
        # Per schema, so test runs (or tenants) in separate schemas do not wait on each other.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('remediator.migrate:' || current_schema()))")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if done and max(done) > LATEST:
            _newer_schema(max(done))
        for m in MIGRATIONS:
            if m.version in done:
                continue
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
            applied_now.append(m.version)
    return applied_now
