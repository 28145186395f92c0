"""A page that lands after its alert's resolve is followed by the resolve.

Replica A's PagerDuty trigger for a failed execution is throttled (429) and retried for
minutes; replica B decides the alert's resolve meanwhile and tells PagerDuty at once (the
execution has finished).  PagerDuty drops a resolve for an incident that is not open, then
A's trigger opened one that nothing ever resolved.  Now A, once its page is delivered,
asks the store whether the alert resolved meanwhile (and no later episode fired), and
resolves the incident itself.  PagerDuty is a local stub that keeps incidents as the
Events API v2 documents; time is virtual.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.notify.channels import Channel
from remediator.notify.pagerduty import dedup_key
from remediator.runtime import Runtime, open_runtime
from tests.guardrails.conftest import REDIS_URL, delete_prefix, prefixed
from tests.notify.conftest import record
from tests.notify.helpers import counted, running_dispatcher, sample_decision
from tests.notify.receivers import PagerDuty, requests_seen, settle
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder
from tests.store.conftest import fresh_schema

KEY = "R" * 32
EVENTS = ["started", "failed", "succeeded", "resolved"]
PLAYBOOK = """
name: restart-web
match: {alertname: WebDown}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
notify: [pd]
"""
FIRST = "2026-11-22T10:00:00Z"
LATER = "2026-11-22T10:20:00Z"


def channel(url: str) -> Channel:
    return Channel("pd", "pagerduty", url, routing_key=KEY, events=tuple(EVENTS))


def answers(value: bool | Exception) -> Callable[[], Any]:
    calls: list[None] = []

    async def check() -> bool:
        calls.append(None)
        if isinstance(value, Exception):
            raise value
        return value

    check.calls = calls  # type: ignore[attr-defined]
    return check


@pytest.mark.parametrize(
    ("answer", "seen"),
    [
        (True, [("trigger", "throttled"), ("trigger", "opened"), ("resolve", "applied")]),
        (False, [("trigger", "throttled"), ("trigger", "opened")]),  # still firing: the page stands
        (ConnectionError("store down"), [("trigger", "throttled"), ("trigger", "opened")]),  # unknown: left open
    ],
)
async def test_a_delivered_page_is_resolved_only_if_its_alert_resolved_meanwhile(
    answer: bool | Exception, seen: list[tuple[str, str]], vclock: VirtualClock
) -> None:
    check = answers(answer)
    with capture_logs() as logs:
        async with PagerDuty(vclock, throttle=1) as pd, running_dispatcher(vclock, channel(pd.url())) as d:
            await d.notify("failed", sample_decision(), {"channels": ("pd",), "resolved_meanwhile": check})
            await settle(vclock, d, step=2.0)
    assert pd.seen == seen
    assert len(check.calls) == 1  # type: ignore[attr-defined]
    if isinstance(answer, Exception):
        [warning] = [e for e in logs if e["event"].startswith("could not ask whether the alert resolved")]
        assert warning["error"] == "store down"


async def test_a_newer_notice_of_the_incident_queued_behind_the_page_has_the_last_word(vclock: VirtualClock) -> None:
    """The resolve already follows the page in this queue: nothing to ask, nothing sent twice."""
    check = answers(True)
    async with PagerDuty(vclock, throttle=1) as pd, running_dispatcher(vclock, channel(pd.url())) as d:
        await d.notify("failed", sample_decision(), {"channels": ("pd",), "resolved_meanwhile": check})
        await d.notify("resolved", sample_decision(), {"channels": ("pd",)})
        await settle(vclock, d, step=2.0)
    assert pd.seen == [("trigger", "throttled"), ("trigger", "opened"), ("resolve", "applied")]
    assert check.calls == []  # type: ignore[attr-defined]


async def test_a_shutdown_while_asking_counts_the_delivered_page_as_sent_only(vclock: VirtualClock) -> None:
    asked, never = asyncio.Event(), asyncio.Event()

    async def hangs() -> bool:
        asked.set()
        await never.wait()
        return True

    async with PagerDuty(vclock) as pd, running_dispatcher(vclock, channel(pd.url())) as d:
        await d.notify("failed", sample_decision(), {"channels": ("pd",), "resolved_meanwhile": hangs})
        await asyncio.wait_for(asked.wait(), 10)
        await d.close(drain_timeout=0.2)
    assert pd.seen == [("trigger", "opened")]
    assert (counted(d, "pd", "sent"), counted(d, "pd", "lost")) == (1, 0)


# -- two replicas on one PostgreSQL store and one Redis ----------------------------------------


@asynccontextmanager
async def replicas(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, pd: PagerDuty
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    pb = tmp_path / "pb"
    pb.mkdir()
    (pb / "p.yaml").write_text(PLAYBOOK)
    prefix = f"test-late-page-{secrets.token_hex(6)}:"
    broken = Recorder(fail={"restart"})
    try:
        async with fresh_schema() as schema:
            def settings(name: str) -> Any:
                return settings_factory(
                    data_dir=str(tmp_path / name), playbooks=str(pb), dry_run=False, database_url=schema.dsn,
                    redis_url=prefixed(REDIS_URL, prefix),
                    channels={"pd": {"type": "pagerduty", "url": pd.url("/v2/enqueue"), "routing_key": KEY,
                                     "events": EVENTS}},
                )

            async with (
                open_runtime(settings("a"), clock=vclock, executors=(broken, broken), start_worker=False) as a,
                open_runtime(settings("b"), clock=vclock, executors=(broken, broken), start_worker=False) as b,
            ):
                yield a, b
    finally:
        await delete_prefix(prefix)


def webdown(status: str = "firing", starts_at: str = FIRST) -> dict[str, Any]:
    ends_at = "2026-11-22T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"
    return payload(alert_json({"alertname": "WebDown"}, status=status, starts_at=starts_at, ends_at=ends_at,
                              fingerprint="f00d"))


async def page_throttled_on_a_then_resolved_on_b(a: Runtime, b: Runtime, pd: PagerDuty) -> None:
    await record(a, webdown())
    await a.worker.drain()  # A runs it: it fails, and its page is throttled
    await requests_seen(pd, 1)  # the trigger (429); 'started' sends nothing
    assert pd.seen == [("trigger", "throttled")]
    await record(b, webdown("resolved"))
    await b.worker.drain()  # B decides the resolve and tells PagerDuty at once: nothing is open yet
    assert b.notifications is not None
    await asyncio.wait_for(b.notifications.join(), 10)
    assert pd.seen[-1] == ("resolve", "dropped: no open alert")


async def test_a_page_retried_past_the_resolve_another_replica_sent_is_resolved_by_its_sender(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    async with PagerDuty(vclock, throttle=1) as pd, replicas(tmp_path, settings_factory, vclock, pd) as (a, b):
        await page_throttled_on_a_then_resolved_on_b(a, b, pd)
        assert a.notifications is not None
        await settle(vclock, a.notifications, step=2.0)  # the throttle is over: A's page goes out
        [ex] = await a.store.list_executions()
        await a.notifications.join()
        audit = await a.store.get_execution(ex["id"])
    assert pd.seen[2:] == [("trigger", "opened"), ("resolve", "applied")]
    assert pd.open == {}, "an incident for an alert already resolved, open for good"
    assert audit is not None
    assert [(n["event"], n["result"]) for n in audit["notifications"] if n.get("channel") == "pd"] == [
        ("resolved", "sent"), ("failed", "sent"), ("resolved", "sent")  # B's resolve, A's
    ]


async def test_a_late_page_is_not_resolved_once_the_alert_fires_again(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    """The alert fired again after its resolve: the incident is the new episode's now, and a
    resolve for the old one would silence it."""
    async with PagerDuty(vclock, throttle=1) as pd, replicas(tmp_path, settings_factory, vclock, pd) as (a, b):
        await page_throttled_on_a_then_resolved_on_b(a, b, pd)
        await record(b, webdown(starts_at=LATER))  # a new episode, not decided yet
        assert a.notifications is not None
        await settle(vclock, a.notifications, step=2.0)
    assert pd.seen[2:] == [("trigger", "opened")]
    ex = execution_id(f"f00d|{FIRST}|firing", "restart-web")
    assert pd.open == {dedup_key("f00d", "restart-web", ex): "triggered"}
