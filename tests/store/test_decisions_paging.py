"""Paging the decisions listing while decisions are being recorded at the same time (issue 16:
"pagination is stable under concurrent inserts"), on the embedded store, PostgreSQL and replay's.

A reader follows the keyset cursor, page by page, while a writer records decisions concurrently
(on PostgreSQL also from a second store, as another replica would): newer than everything, at
the very times of decisions already listed, and older than everything (a replica whose decision
lands late).  Whatever the interleaving, no decision is listed twice, none that was there before
the first page is skipped, none newer than the first page appears on a later one, and the pages
together stay in the listing's order (time, then the order they were recorded in).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import parse_time
from remediator.core.decisions import Decision, DecisionKind
from remediator.ports import DecisionQuery
from remediator.store.postgres import PostgresStore
from tests.payloads import T0
from tests.store.conftest import Schema
from tests.store.test_decisions_query import decide, record

COOLDOWN = DecisionKind.COOLDOWN
BEFORE = 30  # decisions recorded before paging starts, one a second from T0
PAGE = 4


async def one(store: Any, name: str, seconds: float) -> Decision:
    """Record one decision (for its own alert) at T0 + ``seconds``."""
    alert = await record(store, name)
    made = decide(alert, "restart", COOLDOWN, T0 + timedelta(seconds=seconds))
    assert await store.record_decision(made)
    return made


class Writer:
    """Decisions recorded while the reader pages, three at a time: newer than everything, at the
    time of an existing one (recorded later, so listed above it), older than everything.  Their ids
    go to ``order`` as recorded; ``newer`` keeps the newer ones'."""

    def __init__(self, store: Any, order: list[str], batches: int = 12) -> None:
        self.store, self.order, self.left, self.newer = store, order, batches, set[str]()

    async def batch(self) -> None:
        if not self.left:
            return
        self.left -= 1
        i = self.left
        for name, seconds in ((f"new{i}", 1000 + i), (f"tie{i}", BEFORE - 1 - 2 * i), (f"old{i}", -1 - i)):
            made = await one(self.store, name, seconds)
            self.order.append(made.execution_id or "")
            if name.startswith("new"):
                self.newer.add(made.execution_id or "")


async def read_pages(reader: Any, writer: Writer, first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Follow the cursor from ``first`` to the end of the listing, each page read while the writer
    records a batch: the read may or may not see it, which is the point."""
    seen, page = list(first), first
    while len(page) == PAGE:
        page, _ = await asyncio.gather(
            reader.query_decisions(DecisionQuery(limit=PAGE, before=page[-1]["id"])), writer.batch())
        seen += page
    return seen


async def check_paging_while_writing(reader: Any, writer: Any) -> None:
    order = [(await one(reader, f"pre{i}", i)).execution_id or "" for i in range(BEFORE)]
    existing = set(order)
    first = await reader.query_decisions(DecisionQuery(limit=PAGE))
    writes = Writer(writer, order)
    seen = await read_pages(reader, writes, first)
    newer = writes.newer
    ids = [d["id"] for d in seen]
    assert len(ids) == len(set(ids)), "a decision was listed twice"
    assert existing <= set(ids), f"skipped: {sorted(existing - set(ids))}"
    assert not newer & set(ids[PAGE:]), "a decision newer than the first page appeared on a later one"
    assert set(ids) - existing, "nothing recorded meanwhile was listed: the two did not interleave"
    rank = {i: n for n, i in enumerate(order)}  # the order they were recorded in
    keys = [(parse_time(d["at"]), rank[d["id"]]) for d in seen]
    assert keys == sorted(keys, reverse=True), "pages out of order (time, then the order recorded in)"


async def test_pages_are_stable_while_decisions_are_recorded(store: Any) -> None:
    await check_paging_while_writing(store, store)


async def test_pages_on_one_replica_are_stable_while_another_records(pg_schema: Schema, vclock: VirtualClock) -> None:
    reader = await PostgresStore.open(pg_schema.dsn, vclock)
    writer = await PostgresStore.open(pg_schema.dsn, vclock)
    try:
        await check_paging_while_writing(reader, writer)
    finally:
        await writer.close()
        await reader.close()
