"""At shutdown every notice left gets one last attempt, and none vanishes without a trace.

The drain is a few (real) seconds inside the pod's grace period; a notice may be waiting
out a ``Retry-After`` or a backoff of minutes on the clock.  The drain used to wait
those out until its time ran out, then cancel the delivery, and the notice in flight
was gone: no log line, no metric, no audit record (the shutdown line counted only the
queued ones).  These tests run the real dispatcher against local receivers on the
VirtualClock, which never moves here: whatever goes out, goes out without waiting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision
from remediator.notify.dispatcher import Dispatcher
from tests.notify.conftest import OpenRuntime, deliver
from tests.notify.helpers import counted, sample_decision
from tests.notify.receivers import HANG, Receiver, requests_seen
from tests.notify.test_delivery import PLAYBOOK, hook
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder

NOT_DELIVERED = "notifications not delivered before shutdown"


def execution(n: int) -> Decision:
    return dataclasses.replace(sample_decision(), execution_id=f"ex-{n}", fingerprint=f"fp{n}")


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, execution: str, outcome: Mapping[str, Any]) -> None:
        self.records.append((execution, dict(outcome)))

    def of(self, result: str) -> list[tuple[str, str, int, int]]:
        return [(e, o["event"], o["attempts"], o.get("count", 1)) for e, o in self.records if o["result"] == result]


async def test_a_retry_after_wait_is_cut_and_every_notice_gets_one_last_attempt(vclock: VirtualClock) -> None:
    """Slack answered the first notice 429 with Retry-After: 300; two more wait behind it.
    The stop used to wait the whole drain for a retry due minutes later, then drop all three."""
    audit = Audit()
    with capture_logs() as logs:
        async with Receiver(vclock, [429], retry_after="300") as rx, aiohttp.ClientSession() as session:
            d = Dispatcher({"h": hook("h", rx.url())}, session=session, clock=vclock, registry=CollectorRegistry(),
                           on_outcome=audit)
            d.start()
            for n in (1, 2, 3):
                await d.notify("failed", execution(n), {"channels": ("h",)})
            await vclock.sleeping(lambda left: left > 250)  # answered 429: waiting out the Retry-After
            began = time.monotonic()
            await d.close(drain_timeout=2)
            took = time.monotonic() - began
    assert took < 1.0, f"the drain waited {took:.1f}s for a retry due minutes later"
    assert [(r.json()["execution"]["id"], r.answer) for r in rx.requests] == [
        ("ex-1", 429), ("ex-1", 200), ("ex-2", 200), ("ex-3", 200)
    ]
    assert counted(d, "h", "sent") == 3 and counted(d, "h", "lost") == 0
    assert audit.of("sent") == [("ex-1", "failed", 2, 1), ("ex-2", "failed", 1, 1), ("ex-3", "failed", 1, 1)]
    assert not [e for e in logs if e["event"] == NOT_DELIVERED]


async def test_what_the_drain_leaves_is_counted_logged_once_and_recorded_as_lost(vclock: VirtualClock) -> None:
    """A receiver that hangs holds the first notice mid-request past the drain; two wait behind it.
    All three are lost: the metric, one log line and each execution's audit say so (the one in
    flight used to be missing from all three, the log line counted 2)."""
    audit = Audit()
    with capture_logs() as logs:
        async with Receiver(vclock, [HANG]) as rx, aiohttp.ClientSession() as session:
            d = Dispatcher({"h": hook("h", rx.url())}, session=session, clock=vclock, registry=CollectorRegistry(),
                           on_outcome=audit)
            d.start()
            for n in (1, 2, 3):
                await d.notify("failed", execution(n), {"channels": ("h",)})
            await requests_seen(rx, 1)
            assert d.pending() == 3
            await d.close(drain_timeout=0.5)
    assert counted(d, "h", "lost") == 3
    assert counted(d, "h", "sent") == counted(d, "h", "failed") == counted(d, "h", "dropped") == 0
    [line] = [e for e in logs if e["event"] == NOT_DELIVERED]
    assert (line["log_level"], line["count"], line["lost"], line["failed"], line["channels"]) == (
        "error", 3, 3, 0, {"h": 3}
    )
    assert sorted(audit.of("lost")) == [("ex-1", "failed", 1, 1), ("ex-2", "failed", 0, 1), ("ex-3", "failed", 0, 1)]
    assert all(o["error"] == "not delivered before shutdown" for _, o in audit.records)
    assert d.pending() == 0


async def test_last_attempts_that_fail_are_counted_and_told_in_one_line(vclock: VirtualClock) -> None:
    """A receiver answering 500 at shutdown: each notice is tried once more, not retried, and
    recorded as failed; the log gets one line for them all, not one per notice."""
    audit = Audit()
    with capture_logs() as logs:
        async with Receiver(vclock, [500] * 10) as rx, aiohttp.ClientSession() as session:
            d = Dispatcher({"h": hook("h", rx.url())}, session=session, clock=vclock, registry=CollectorRegistry(),
                           on_outcome=audit)
            d.start()
            for n in (1, 2, 3):
                await d.notify("failed", execution(n), {"channels": ("h",)})
            await vclock.sleeping(lambda left: left <= 2)  # the first answer was a 500: backing off 1-2 s
            await d.close(drain_timeout=2)
    assert [r.json()["execution"]["id"] for r in rx.requests] == ["ex-1", "ex-1", "ex-2", "ex-3"]
    assert counted(d, "h", "failed") == 3 and counted(d, "h", "lost") == 0
    assert audit.of("failed") == [("ex-1", "failed", 2, 1), ("ex-2", "failed", 1, 1), ("ex-3", "failed", 1, 1)]
    assert all("not retried: shutting down" in o["error"] for _, o in audit.records)
    assert not [e for e in logs if e["event"] == "notification failed"]
    [line] = [e for e in logs if e["event"] == NOT_DELIVERED]
    assert (line["count"], line["lost"], line["failed"]) == (3, 0, 3)


async def test_a_notice_lost_at_shutdown_reaches_the_executions_audit_in_the_store(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """The runtime closes the dispatcher before the store: the lost records are in the execution."""
    async with Receiver(vclock, [HANG] * 3) as rx:
        chans = {"dead": {"type": "webhook", "url": rx.url()}}
        async with open_notify_runtime(chans, Recorder(), playbook=PLAYBOOK % "dead") as rt:
            await deliver(rt, payload(alert_json({"alertname": "WebDown"})))
            await requests_seen(rx, 1)  # 'started' hangs mid-request, 'succeeded' waits behind it
            assert rt.notifications is not None
            await rt.notifications.close(drain_timeout=0.5)  # as the shutdown does, with the store open
            [ex] = await rt.store.list_executions()
            record = await rt.store.get_execution(ex["id"])
    assert record is not None
    [lost] = [n for n in record["notifications"] if n.get("result") == "lost"]
    assert (lost["channel"], lost["event"], lost["count"], lost["attempts"]) == ("dead", "started, succeeded", 2, 1)
    assert lost["error"] == "not delivered before shutdown: 2 notices"
