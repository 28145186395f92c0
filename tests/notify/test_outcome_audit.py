"""Notification outcomes reach the execution's audit through one bounded queue and one writer.

In a storm a full channel queue drops one notice per ``notify``.  Each outcome used to
start its own background task to write its audit record, so with a store slower than
the storm the tasks (and their writes competing with the pipeline for the store) grew
without bound.  These tests run the real dispatcher, a local receiver and a store that
answers only when the test lets it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.notify.dispatcher import Dispatcher
from tests.notify.helpers import counted, sample_decision
from tests.notify.receivers import HANG, Receiver, settle
from tests.notify.test_delivery import hook


class SlowStore:
    """An audit store that answers only once ``release`` is set (locked, or at its timeout)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, execution: str, outcome: Mapping[str, Any]) -> None:
        await self.release.wait()
        for _ in range(20):  # a round trip to the store: the writer is suspended even once released
            await asyncio.sleep(0)
        self.records.append((execution, dict(outcome)))

    def results(self, result: str) -> list[dict[str, Any]]:
        return [o for _, o in self.records if o["result"] == result]


async def test_a_storm_against_a_slow_store_keeps_one_writer_and_merges_the_drops(vclock: VirtualClock) -> None:
    """A channel stuck on a hanging receiver, a full queue of 10 and 2,000 notices: no task
    per outcome, the drops become a few audit records that still count every one, and a
    graceful stop writes what was still queued."""
    store = SlowStore()
    async with Receiver(vclock, [HANG]) as rx, aiohttp.ClientSession() as session:
        d = Dispatcher({"h": hook("h", rx.url())}, session=session, clock=vclock, registry=CollectorRegistry(),
                       queue_size=10, on_outcome=store)
        d.start()
        tasks = len(asyncio.all_tasks())
        for _ in range(2000):
            await d.notify("started", sample_decision(), {"channels": ("h",)})
            await asyncio.sleep(0)  # not waiting for time: lets the delivery and writer tasks run
        # the HTTP exchange with the receiver runs a few tasks; a task per outcome would be ~2,000
        assert len(asyncio.all_tasks()) - tasks <= 10, "a task per outcome: the backlog has no bound"
        dropped = counted(d, "h", "dropped")
        assert dropped >= 2000 - 11  # all but the queue of 10 and the one stuck in delivery

        store.release.set()
        rx.gate.set()  # the hanging request is answered (503), retried, and everything goes out
        await settle(vclock, d)
        await d.notify("succeeded", sample_decision(), {"channels": ("h",)})
        await d.close(drain_timeout=5)  # delivers it and writes its outcome before stopping
    assert store.records[-1][1]["event"] == "succeeded" and store.records[-1][1]["result"] == "sent"
    drops = store.results("dropped")
    assert len(drops) <= 3, f"{len(drops)} audit writes for the drops of one execution on one channel"
    assert sum(o["count"] for o in drops) == dropped  # merged, not lost
    assert all(o["channel"] == "h" and o["event"] == "started" for o in drops)
    assert {e for e, _ in store.records} == {"ex-1"}
    assert len(store.results("sent")) == counted(d, "h", "sent") == 2001 - dropped


async def test_a_full_audit_queue_is_counted_and_logged_once_and_never_blocks_notify(vclock: VirtualClock) -> None:
    """Drops of 50 different executions against an audit queue of 3 and a store that does
    not answer: 3 records wait, the other 46 are counted in a metric, and the burst is
    logged once when it starts and once, with its count, when the writer catches up."""
    store = SlowStore()
    with capture_logs() as logs:
        async with Receiver(vclock) as rx, aiohttp.ClientSession() as session:
            d = Dispatcher({"h": hook("h", rx.url())}, session=session, clock=vclock, registry=CollectorRegistry(),
                           queue_size=1, on_outcome=store, outcome_queue_size=3)
            d.start()
            for i in range(50):  # no await yields here: a notify that waited for room would hang the test
                decision = dataclasses.replace(sample_decision(), execution_id=f"ex-{i}")
                await d.notify("started", decision, {"channels": ("h",)})
            assert counted(d, "h", "dropped") == 49
            unrecorded = d.metrics.registry.get_sample_value("remediator_notification_outcomes_unrecorded_total")
            assert unrecorded == 46
            store.release.set()
            await settle(vclock, d)
            await d.close(drain_timeout=5)
    assert [o["event"] for o in store.results("dropped")] == ["started"] * 3
    assert [(e, o["result"]) for e, o in store.records if o["result"] == "sent"] == [("ex-49", "sent")]
    full = [e for e in logs if e["event"] == "notification outcomes are not being recorded: the audit queue is full"]
    assert len(full) == 1
    summary = [e for e in logs if e["event"] == "notification outcomes were left out of the audit"]
    assert [e["count"] for e in summary] == [46]
