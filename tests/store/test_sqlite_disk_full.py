"""The embedded store on a disk that fills up: a real filesystem (a tmpfs of 2 MiB), really full.

What must hold: while SQLite cannot write (ENOSPC, at an INSERT or at the COMMIT that several
webhooks share), every delivery in the lost transaction is answered 503 with a JSON reason (so
Alertmanager retries it), never 200 and never 500; what was acknowledged before stays; once
there is room again the retries are recorded, each alert once, and the daemon goes on.

Mounting needs root with CAP_SYS_ADMIN (CI here has it); elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.runtime import RUNTIME
from remediator.store.sqlite import SQLiteStore
from tests.payloads import alert_json, payload

AUTH = {"Authorization": "Bearer t1"}
URL = "/webhooks/alertmanager"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem refuses (ENOSPC): no room is left for anyone."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        chunk = b"\0" * 65536
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    return filler


def delivery(app: str, n: int = 20) -> dict[str, Any]:
    """``n`` alerts with a 2 KiB annotation each: pages SQLite must find room for."""
    alerts = [alert_json({"alertname": "DiskTest", "app": app, "i": str(i)}) for i in range(n)]
    for a in alerts:
        a["annotations"]["detail"] = "x" * 2048
    return payload(*alerts)


@contextlib.asynccontextmanager
async def daemon(settings: Any, clock: VirtualClock) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings, clock=clock, start_worker=False)
    async with TestClient(TestServer(app)) as client:
        yield client


async def recorded(data_dir: Path, clock: VirtualClock) -> list[str]:
    """The apps of every alert in the store file, read by a fresh connection (what survived)."""
    store = await SQLiteStore.open(data_dir / "remediator.db", clock, recover=False)
    try:
        since, until = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
        return sorted([f"{s.received.alert.labels['app']}/{s.received.alert.labels['i']}"
                       async for s in store.alerts_between(since, until)])
    finally:
        await store.close()


async def test_a_full_disk_is_a_503_for_every_delivery_it_loses_and_the_retries_land_once(
    small_disk: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    settings = settings_factory(data_dir=str(small_disk / "data"))
    async with daemon(settings, vclock) as client:
        first = await client.post(URL, json=delivery("before"), headers=AUTH)
        assert first.status == 200
        filler = fill(small_disk)

        answers = await asyncio.gather(*(client.post(URL, json=delivery(f"full{k}"), headers=AUTH)
                                         for k in range(4)))  # concurrent: they share a transaction
        for r in answers:
            body = await r.json()
            assert r.status == 503, body  # never 200 (not recorded) and never 500
            assert body["retry"] is True and body["error"]
        ready = await client.get("/readyz")
        # Still ready: it reads, and its webhooks answer 503 (retry) while the disk is full; on the
        # single-node default an unready replica would only turn those 503s into refused connections.
        assert ready.status == 200

        os.remove(filler)
        retried = await asyncio.gather(*(client.post(URL, json=delivery(f"full{k}"), headers=AUTH)
                                         for k in range(4)))
        assert [r.status for r in retried] == [200] * 4
        again = await client.post(URL, json=delivery("full0"), headers=AUTH)  # Alertmanager's duplicate
        assert again.status == 200 and (await again.json())["new"] == 0
        store = client.app[RUNTIME].store
        assert await store.ping() is None
    apps = await recorded(small_disk / "data", vclock)
    expected = sorted(f"{app}/{i}" for app in ("before", "full0", "full1", "full2", "full3") for i in range(20))
    assert apps == expected  # the acknowledged ones, each once; nothing of a 503 half-written


RESTART = """
name: disk-test
match: {alertname: DiskTest, matchers: ['app=~".+"', 'i=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}-{{ labels.i }}"}
guardrails: {namespaces: [shop], cooldown: 10m}
steps: [{action: restart}]
"""


async def test_decisions_lost_to_a_full_disk_are_made_again_and_each_execution_runs_once(
    small_disk: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """Deciding writes the decisions, their executions and the guardrail changes (the embedded
    guardrail state shares the database) in one commit per batch: a full disk loses the whole
    batch, and once there is room each alert is decided again and each target restarted once."""
    from remediator.core.errors import StoreUnavailable
    from tests.pipeline.test_pipeline import Recorder

    books = small_disk.parent / "playbooks"
    books.mkdir()
    (books / "restart.yaml").write_text(RESTART)
    settings = settings_factory(data_dir=str(small_disk / "data"), playbooks=str(books), dry_run=False)
    cluster = Recorder()
    app = create_app(settings, clock=vclock, executors=(cluster, cluster), start_worker=False)
    async with TestClient(TestServer(app)) as client:
        rt = client.app[RUNTIME]
        assert (await client.post(URL, json=delivery("web", n=10), headers=AUTH)).status == 200
        filler = fill(small_disk)
        with pytest.raises(StoreUnavailable, match="disk is full"):
            await rt.worker.decide_all()
        await rt.worker.queue.drain()
        assert cluster.calls == []  # nothing admitted is on record: nothing ran

        os.remove(filler)
        assert await rt.worker.drain() == 10
        await rt.worker.drain()
        assert sorted(c[1] for c in cluster.calls) == sorted(f"Deployment/shop/web-{i}" for i in range(10))
        executions = await rt.store.list_executions(limit=100)
        assert sorted(e["status"] for e in executions) == ["succeeded"] * 10
