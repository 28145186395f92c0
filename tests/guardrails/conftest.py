"""Guardrail fixtures: both adapters behind one parameter, on real Redis, on a virtual clock.

Each Redis test gets its own key prefix and deletes its keys afterwards, so parallel
and repeated runs on the shared server never see each other's state.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from remediator.clock import VirtualClock
from remediator.core.guardrails import Policy
from remediator.guardstate.memory import MemoryGuardrails
from remediator.guardstate.redis import RedisGuardrails
from remediator.ports import GuardrailStore
from remediator.store.sqlite import SQLiteStore
from tests.payloads import T0

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADAPTERS = ("memory", "redis")

GuardFactory = Callable[[Policy], Awaitable[GuardrailStore]]


def prefixed(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


async def delete_prefix(prefix: str, url: str = REDIS_URL) -> None:
    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"test-guard-{secrets.token_hex(6)}:"
    yield prefix
    await delete_prefix(prefix)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture(params=(*ADAPTERS, "memory-in-store"))
async def make_guard(
    request: pytest.FixtureRequest, clock: VirtualClock, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[GuardFactory]:
    """Build guardrail state of the parametrized kind; every one built shares the same state."""
    opened: list[GuardrailStore] = []
    stores: list[SQLiteStore] = []

    async def make(policy: Policy) -> GuardrailStore:
        guard: GuardrailStore
        if request.param == "memory":
            assert not opened, "the embedded state is single-process: one instance per test"
            guard = MemoryGuardrails(policy, clock, tmp_path / "guardrails.json")
        elif request.param == "memory-in-store":  # the daemon's default: rows of the embedded store
            assert not opened, "the embedded state is single-process: one instance per test"
            store = await SQLiteStore.open(tmp_path / "remediator.db", clock)
            stores.append(store)
            guard = await MemoryGuardrails.open_in(store, policy, clock, tmp_path / "guardrails.json")
        else:
            guard = await RedisGuardrails.open(prefixed(REDIS_URL, redis_prefix), policy, clock)
        opened.append(guard)
        return guard

    yield make
    for guard in opened:
        await guard.close()
    for store in stores:
        await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own, so it can be stopped and started again on one port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a real process: poll until it accepts, bounded
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
