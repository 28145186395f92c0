"""The approval gate across real daemon processes on one PostgreSQL database: approvals posted
to both replicas at once over HTTP are answered by exactly one, and the step is applied once
(counted where it is applied, in the replicas' recording files); a restart of every replica
while an execution waits keeps it waiting, with its deadline, until it is approved.

The replicas are ``tests/store/harness.py`` processes (see ``test_replicas.py``), on the real
clock: a 15-minute deadline is far beyond the test."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import aiohttp

from tests.store import test_replicas
from tests.store.test_replicas import Cluster, Replica, applications, delivery

start_cluster = test_replicas.start_cluster  # the fixture: harness processes on the test's schema
#: The cluster's playbook, gated: the harness writes ``steps: <this>`` last, so ``approval`` follows it.
GATED_STEPS = "[{action: restart}]\napproval: {timeout: 15m}"
WEBHOOK = {"Authorization": "Bearer harness"}
ADMIN = {"Authorization": "Bearer harness-admin"}


async def status_of(cluster: Cluster) -> tuple[str, object] | None:
    row = await cluster.schema.conn.fetchrow("SELECT id, exec_status, approval_deadline FROM decisions")
    return (row["exec_status"], row["approval_deadline"]) if row else None


async def approve_everywhere(session: aiohttp.ClientSession, replicas: list[Replica], did: str) -> list[int]:
    async def one(r: Replica) -> int:
        async with session.post(f"http://127.0.0.1:{r.port}/api/v1/executions/{did}/approve", headers=ADMIN) as resp:
            body = await resp.json()
            assert "outcome" in body, body
            return resp.status

    return sorted(await asyncio.gather(*(one(r) for r in replicas)))


async def test_restart_while_waiting_then_simultaneous_approvals_apply_the_step_once(
    start_cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    cluster = await start_cluster(2, lease=10.0, steps=GATED_STEPS)
    async with aiohttp.ClientSession() as session:
        async with session.post(cluster.replicas[0].url, json=delivery(1), headers=WEBHOOK) as r:
            assert r.status == 200

        async def waiting() -> bool:
            return (await status_of(cluster) or ("",))[0] == "awaiting_approval"

        await cluster.wait_for("the execution awaiting approval", waiting)
        before = await status_of(cluster)
        did = await cluster.schema.conn.fetchval("SELECT id FROM decisions")
        for replica in cluster.replicas:  # every replica dies while it waits
            replica.proc.send_signal(signal.SIGKILL)
            await replica.proc.wait()
        again = await start_cluster(2, lease=10.0, steps=GATED_STEPS)
        alive = again.replicas[2:]
        assert await status_of(cluster) == before  # still waiting, with its original deadline
        assert applications(cluster.events()) == {}
        assert await approve_everywhere(session, alive, did) == [200, 409]

        async def done() -> bool:
            return (await status_of(cluster) or ("",))[0] == "succeeded"

        await cluster.wait_for("the approved execution", done)
        assert applications(cluster.events()) == {(did, "main", 0): 1}
        assert await approve_everywhere(session, alive, did) == [409, 409]
