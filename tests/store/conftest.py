"""Store fixtures: a fresh PostgreSQL schema per test, and both stores behind one parameter.

Every PostgreSQL test gets its own schema (selected through ``search_path`` in the
DSN, exactly as an operator would) and drops it afterwards, so parallel and repeated
runs on the shared server never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from remediator.clock import VirtualClock

BASE_DSN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def schema_dsn(schema: str, base: str = BASE_DSN, **settings: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"search_path": schema, **settings}.items())
    return f"{base}{'&' if '?' in base else '?'}{query}"


class Schema:
    """A throw-away schema: its name, a DSN selecting it, and a direct connection for assertions."""

    def __init__(self, name: str, conn: Any) -> None:
        self.name = name
        self.dsn = schema_dsn(name)
        self.conn = conn

    async def count(self, sql: str, *args: Any) -> int:
        return int(await self.conn.fetchval(sql, *args))


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[Schema]:
    name = f"rt_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(BASE_DSN)
    await admin.execute(f"CREATE SCHEMA {name}")
    conn = await asyncpg.connect(schema_dsn(name))
    try:
        yield Schema(name, conn)
    finally:
        await conn.close()
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
        await admin.close()


@pytest.fixture
async def pg_schema() -> AsyncIterator[Schema]:
    async with fresh_schema() as schema:
        yield schema


@pytest.fixture
def pg_schema_sync() -> Iterator[str]:
    """For tests that drive the CLI (which runs its own event loop): just the schema's DSN."""
    import asyncio

    name = f"rt_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(BASE_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE SCHEMA {name}"))
    try:
        yield schema_dsn(name)
    finally:
        asyncio.run(admin(f"DROP SCHEMA {name} CASCADE"))


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, vclock: VirtualClock) -> AsyncIterator[Any]:
    """The store under the contract: the embedded default, the production one and replay's."""
    if request.param == "memory":
        from remediator.store.memory import MemoryStore

        yield MemoryStore(vclock)
        return
    if request.param == "sqlite":
        from remediator.store.sqlite import SQLiteStore

        s: Any = await SQLiteStore.open(tmp_path / "store.db", vclock)
        try:
            yield s
        finally:
            await s.close()
        return
    from remediator.store.postgres import PostgresStore

    async with fresh_schema() as schema:
        s = await PostgresStore.open(schema.dsn, vclock)
        try:
            yield s
        finally:
            await s.close()
