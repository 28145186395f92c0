"""PostgreSQL that cannot take the write says so as StoreUnavailable, within the configured timeouts.

Intake answers 503 (Alertmanager retries) and the decider keeps the alert claimed, uncounted, only
on StoreUnavailable; anything else is a 500, or an alert blamed for the database's state (released,
then parked after max_tries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import asyncpg
import pytest

from remediator.clock import VirtualClock
from remediator.core.errors import StoreUnavailable
from remediator.store.postgres import PostgresStore, _keep_session
from tests.store.conftest import Schema, schema_dsn
from tests.store.test_contract import a_decision, alerts, firing

HANG_GUARD = 10.0  # seconds: far above the timeouts under test, only so that a regression fails, not hangs


async def _within_guard(call: Awaitable[object]) -> object:
    """``call``'s outcome, which must come before HANG_GUARD (it runs as its own task: a timeout around
    it here could be swallowed by the very cancellation-proof wait under test)."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=HANG_GUARD)
    assert done, "still waiting: nothing bounded the call"
    return task.result()


async def test_intake_gives_up_on_a_server_that_accepts_and_never_answers_after_connect_timeout() -> None:
    """A frozen server or a half-open failover: the connection's timeout must bound the webhook, whose
    first statement used to run asyncpg's connect (and its timeout) in the caller's task, so the
    timeout cancelled the caller instead and the delivery waited for ever, holding intake's lock."""
    silent: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{port}/test", min_size=0, max_size=2,
                                     timeout=0.2, reset=_keep_session)
    store = PostgresStore(pool, VirtualClock(), acquire_timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await _within_guard(store.record_alerts(alerts(firing("a"))))
        with pytest.raises(StoreUnavailable):  # and the next delivery is not stuck behind it
            await _within_guard(store.record_alerts(alerts(firing("b"))))
    finally:
        pool.terminate()
        for w in silent:
            w.close()
        server.close()


async def test_intake_gives_up_after_acquire_timeout_when_no_connection_frees_up(pg_schema: Schema) -> None:
    store = await PostgresStore.open(schema_dsn(pg_schema.name, pool_max_size="1", pool_min_size="1",
                                                acquire_timeout="0.2"), VirtualClock())
    release = asyncio.Event()
    held = asyncio.Event()

    async def hog() -> None:
        async with store._pool.acquire():
            held.set()
            await release.wait()

    hogging = asyncio.create_task(hog())
    try:
        await held.wait()
        with pytest.raises(StoreUnavailable):
            await _within_guard(store.record_alerts(alerts(firing("a"))))
        assert await pg_schema.conn.fetchval("SELECT count(*) FROM alerts") == 0  # answered 503: nothing kept
    finally:
        release.set()
        await hogging
        await store.close()


async def test_a_database_that_takes_no_writes_is_unavailable_not_an_error(pg_schema: Schema) -> None:
    """A failover to a standby, or default_transaction_read_only during maintenance."""
    clock = VirtualClock()
    rw = await PostgresStore.open(pg_schema.dsn, clock)
    ro = await PostgresStore.open(schema_dsn(pg_schema.name, default_transaction_read_only="on"), clock,
                                  migrate_schema=False)
    try:
        received = alerts(firing("a"))
        await rw.record_alerts(received)
        with pytest.raises(StoreUnavailable):
            await ro.record_alerts(alerts(firing("b")))
        with pytest.raises(StoreUnavailable):
            await ro.record_decision(a_decision(received[0].alert))
        with pytest.raises(StoreUnavailable):
            await ro.claim_alerts("w", 10, 30)
    finally:
        await ro.close()
        await rw.close()


async def test_backends_terminated_under_load_are_always_store_unavailable(pg_schema: Schema) -> None:
    """pg_terminate_backend (a restart, a failover, an operator) while deliveries and decisions run.

    asyncpg's protocol can be left out of step with a connection the server has just ended, and the
    next statement on it raises InternalClientError ("cannot switch to state 12; another operation
    (2) is in progress"), not a connection error: it used to reach intake as a 500 and the decider as
    an unexpected error.  Every failure must be StoreUnavailable, and the store must work once the
    terminations stop (the out-of-step connection is not handed out again).  Real time is the subject
    here: the server ends the connections while statements are in flight.
    """
    store = await PostgresStore.open(pg_schema.dsn, VirtualClock(), min_size=4, max_size=4)
    admin = await asyncpg.connect(pg_schema.dsn)
    await admin.execute("SET application_name = 'test-admin'")
    seen: dict[str, int] = {}
    stop = asyncio.Event()

    async def terminate() -> None:
        while not stop.is_set():
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                                "pg_backend_pid() AND application_name = 'remediator'")
            await asyncio.sleep(0.02)

    async def use(worker: int) -> None:
        for i in range(250):
            try:
                if i % 2:
                    await store.record_alerts(alerts(firing(f"w{worker}-{i}")))
                else:
                    await store.undecided()
            except StoreUnavailable:
                seen["StoreUnavailable"] = seen.get("StoreUnavailable", 0) + 1
            except Exception as exc:  # what is under test: nothing else may come out
                seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0)

    killer = asyncio.create_task(terminate())
    try:
        await asyncio.gather(*(use(w) for w in range(6)))
    finally:
        stop.set()
        await killer
        await admin.close()
    try:
        assert set(seen) == {"StoreUnavailable"}, seen  # terminations were seen, and as nothing else
        assert await store.record_alerts(alerts(firing("after"))) == 1
        assert await store.undecided() >= 1
    finally:
        await store.close()
