"""Supervised background tasks: one that dies stops the daemon instead of leaving it half-alive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.runtime import open_runtime
from remediator.worker import Worker


async def test_a_dead_decision_loop_fails_the_runtime(settings_factory: Callable[..., Any], vclock: VirtualClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def dies(self: Worker) -> None:
        raise RuntimeError("the decision loop broke")

    monkeypatch.setattr(Worker, "_decide_loop", dies)
    async with open_runtime(settings_factory(), clock=vclock, start_worker=True) as rt:
        async with asyncio.timeout(10):
            await rt.failed.wait()  # the worker's TaskGroup took the execution loop down with it
        [worker] = [t for t in rt.tasks if t.get_name() == "remediator-worker"]
        assert worker.done()


async def test_a_clean_shutdown_is_not_a_failure(settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    async with open_runtime(settings_factory(), clock=vclock, start_worker=True) as rt:
        await asyncio.sleep(0)
    assert not rt.failed.is_set()
    assert all(t.done() for t in rt.tasks)
