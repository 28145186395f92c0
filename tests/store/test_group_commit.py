"""PostgreSQL intake group commit, on a real server.

Deliveries that arrive while a commit is in flight share the next one.  What must hold:
each caller is answered only after the commit that holds its alerts, its count of new
alerts is exact (as if the deliveries had committed one after another), a failed commit
fails exactly its callers and writes none of their rows, and a caller that goes away
(cancelled) takes nobody else's alerts with it.

Commits are counted on the server: rows inserted by one transaction share its ``xmin``.
To hold a commit in flight at a known point, the store gets its pool through
:class:`GatedPool`, which wraps a real asyncpg pool and holds the first ``acquire`` until
the test opens the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import asyncpg
import pytest

from remediator.clock import VirtualClock
from remediator.core.errors import StoreUnavailable
from remediator.ports import ReceivedAlert
from remediator.store.postgres import PostgresStore
from tests.store.conftest import Schema
from tests.store.test_contract import alerts, firing

T = TypeVar("T")
HANG_GUARD = 30.0  # only so that a regression fails instead of hanging; never a speed check

# Refuses, from inside the INSERT, the rows of two apps: one as an outage (disk full, the
# store answers StoreUnavailable), one as a value the database will not take.
REFUSE = """
CREATE FUNCTION rt_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.alert::json -> 'labels' ->> 'app' = 'poison-outage' THEN
    RAISE EXCEPTION 'disk full (test)' USING ERRCODE = '53100';
  END IF;
  IF NEW.alert::json -> 'labels' ->> 'app' = 'poison-value' THEN
    RAISE EXCEPTION 'value refused (test)' USING ERRCODE = '22000';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER rt_refuse BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION rt_refuse();
"""


class GatedPool:
    """A real asyncpg pool (by composition) whose connections are handed out only once the
    gate is open; ``reached`` tells that a commit is waiting at it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    def acquire(self, *, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._acquire(timeout)

    @contextlib.asynccontextmanager
    async def _acquire(self, limit: float | None) -> AsyncIterator[Any]:
        self.reached.set()
        await self.gate.wait()
        async with self._pool.acquire(timeout=limit) as conn:
            yield conn

    async def close(self) -> None:
        await self._pool.close()

    def terminate(self) -> None:
        self._pool.terminate()


@pytest.fixture
async def gated(pg_schema: Schema, vclock: VirtualClock) -> AsyncIterator[tuple[PostgresStore, GatedPool]]:
    migrated = await PostgresStore.open(pg_schema.dsn, vclock)
    await migrated.close()
    pool = GatedPool(await asyncpg.create_pool(pg_schema.dsn, min_size=1, max_size=4))
    store = PostgresStore(pool, vclock)
    try:
        yield store, pool
    finally:
        await store.close()


@pytest.fixture
async def refusing(
    gated: tuple[PostgresStore, GatedPool], pg_schema: Schema
) -> tuple[PostgresStore, GatedPool]:
    """The gated store, over a table that refuses the rows of the ``poison-*`` apps (see REFUSE)."""
    await pg_schema.conn.execute(REFUSE)
    return gated


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD)


async def commits(schema: Schema) -> int:
    """How many transactions wrote the recorded alerts."""
    return await schema.count("SELECT count(DISTINCT xmin::text) FROM alerts")


async def hold_first_commit(store: PostgresStore, pool: GatedPool, app: str = "first") -> asyncio.Task[int]:
    """Start a delivery whose commit then waits at the gate: later deliveries queue behind it."""
    first = asyncio.create_task(store.record_alerts(alerts(firing(app))))
    await within(pool.reached.wait())
    return first


async def queued(store: PostgresStore, deliveries: list[list[ReceivedAlert]]) -> list[asyncio.Task[int]]:
    tasks = [asyncio.create_task(store.record_alerts(d)) for d in deliveries]
    # A task runs up to its first suspension on the loop's next turn, which queues its rows:
    # one yield is that turn (the tasks were scheduled before it), not a wait for time.
    await asyncio.sleep(0)
    return tasks


async def behind_a_commit(
    store: PostgresStore, pool: GatedPool, deliveries: list[list[ReceivedAlert]]
) -> list[asyncio.Task[int]]:
    """``deliveries`` queued while one other commit is in flight: they go together in the next one."""
    first = await hold_first_commit(store, pool)
    waiting = await queued(store, deliveries)
    pool.gate.set()
    assert await within(first) == 1  # its own commit, before theirs: kept whatever becomes of theirs
    return waiting


async def test_deliveries_arriving_during_a_commit_share_the_next_one(
    gated: tuple[PostgresStore, GatedPool], pg_schema: Schema
) -> None:
    store, pool = gated
    first = await hold_first_commit(store, pool)
    waiting = await queued(store, [alerts(firing(f"app-{i}"), firing(f"other-{i}")) for i in range(10)])
    assert not any(t.done() for t in [first, *waiting])  # nobody is answered before its commit
    assert await commits(pg_schema) == 0
    pool.gate.set()
    assert await within(first) == 1
    assert await within(asyncio.gather(*waiting)) == [2] * 10
    assert await pg_schema.count("SELECT count(*) FROM alerts") == 21
    assert await commits(pg_schema) == 2  # the one in flight, then one for all ten that waited


async def test_each_caller_counts_exactly_its_new_alerts_with_duplicates_across_callers(
    gated: tuple[PostgresStore, GatedPool], pg_schema: Schema
) -> None:
    store, pool = gated
    deliveries = [
        alerts(firing("first"), firing("b"), firing("c")),  # first: recorded already; b, c: new
        alerts(firing("c"), firing("d"), firing("d")),  # c: the delivery before has it; d: new once
        alerts(firing("b"), firing("first")),  # all seen
        alerts(firing("e"), firing("b"), firing("f")),  # e, f: new
    ]
    waiting = await behind_a_commit(store, pool, deliveries)
    assert await within(asyncio.gather(*waiting)) == [2, 1, 0, 2]
    assert await pg_schema.count("SELECT count(*) FROM alerts") == 6
    assert await commits(pg_schema) == 2
    # the same deliveries again, together: every alert is a duplicate now
    assert await within(asyncio.gather(*(store.record_alerts(d) for d in deliveries))) == [0, 0, 0, 0]


async def test_a_failed_commit_fails_exactly_its_callers_and_writes_none_of_their_rows(
    refusing: tuple[PostgresStore, GatedPool], pg_schema: Schema
) -> None:
    store, pool = refusing
    good, poisoned, other = await behind_a_commit(
        store, pool, [alerts(firing("x")), alerts(firing("y"), firing("poison-outage")), alerts(firing("z"))]
    )
    for task in (good, poisoned, other):
        with pytest.raises(StoreUnavailable, match="disk full"):
            await within(task)
    # "x", "y" and "z" were in the failed statement before or after the refused row: none of them stays
    assert await pg_schema.count("SELECT count(*) FROM alerts") == 1
    # the callers retry (Alertmanager does, on the 503), and a commit without the refused row goes through
    retried = [store.record_alerts(alerts(firing(app))) for app in ("x", "z")]
    assert await within(asyncio.gather(*retried)) == [1, 1]


async def test_a_value_the_database_refuses_fails_only_the_delivery_that_carries_it(
    refusing: tuple[PostgresStore, GatedPool], pg_schema: Schema
) -> None:
    store, pool = refusing
    good, refused, other = await behind_a_commit(
        store, pool,
        [alerts(firing("x"), firing("y")), alerts(firing("poison-value")), alerts(firing("y"), firing("z"))],
    )
    assert await within(good) == 2
    with pytest.raises(asyncpg.DataError, match="value refused"):
        await within(refused)
    assert await within(other) == 1  # "y" was the first delivery's
    apps = await pg_schema.conn.fetch("SELECT alert::json -> 'labels' ->> 'app' AS app FROM alerts ORDER BY id")
    assert [r["app"] for r in apps] == ["first", "x", "y", "z"]


async def test_cancelled_callers_take_no_other_callers_alerts_with_them(
    gated: tuple[PostgresStore, GatedPool], pg_schema: Schema
) -> None:
    store, pool = gated
    first = await hold_first_commit(store, pool)
    waiting = await queued(store, [alerts(firing(f"app-{i}")) for i in range(4)])
    first.cancel()  # its commit is in flight
    waiting[1].cancel()  # its rows wait for the next commit
    pool.gate.set()
    for task in (first, waiting[1]):
        with pytest.raises(asyncio.CancelledError):
            await within(task)
    assert await within(asyncio.gather(*(waiting[i] for i in (0, 2, 3)))) == [1, 1, 1]
    # each commit went through whole: the cancelled callers' alerts too (Alertmanager's retry is then a duplicate)
    assert await pg_schema.count("SELECT count(*) FROM alerts") == 5
    assert await commits(pg_schema) == 2
    assert await within(store.record_alerts(alerts(firing("app-1"), firing("first")))) == 0
