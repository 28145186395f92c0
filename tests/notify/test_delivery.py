"""Acceptance 2: retried until delivered once; a dead channel never slows a remediation.

Backoff and per-request timeouts run on the VirtualClock, so "slower" is measured in
virtual seconds, and retries take no real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from remediator.clock import VirtualClock
from remediator.core.errors import ConfigError
from remediator.notify.channels import Channel
from remediator.notify.delivery import retry_after
from remediator.notify.dispatcher import Dispatcher
from tests.notify.conftest import OpenRuntime, deliver
from tests.notify.helpers import counted, running_dispatcher, sample_decision
from tests.notify.receivers import HANG, Receiver, down_url, settle
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder

PLAYBOOK = """
name: restart-web
match: {alertname: WebDown}
target: {kind: Deployment, namespace: shop, name: web}
guardrails: {cooldown: 10m}
steps: [{action: restart}]
notify: [%s]
"""
LATER = "2026-11-22T11:00:00Z"


def hook(name: str, url: str, **kw: Any) -> Channel:
    return Channel(name, "webhook", url, events=("started", "succeeded", "failed"), **kw)


async def test_a_receiver_failing_twice_gets_the_message_exactly_once(vclock: VirtualClock) -> None:
    async with Receiver(vclock, [500, 500, 200]) as rx, running_dispatcher(vclock, hook("h", rx.url())) as d:
        await d.notify("failed", sample_decision(), {"channels": ("h",)})
        await settle(vclock, d)
        await vclock.advance(3600)  # nothing left to retry, however long we wait
        await asyncio.sleep(0.01)
    assert [r.answer for r in rx.requests] == [500, 500, 200]
    assert len(rx.accepted) == 1
    assert len({r.body for r in rx.requests}) == 1  # the same body each time
    assert len({r.headers["X-Remediator-Delivery"] for r in rx.requests}) == 1  # receivers can dedupe
    gaps = [b.at - a.at for a, b in zip(rx.requests, rx.requests[1:], strict=False)]
    assert all(g >= 1.0 for g in gaps)  # backed off on the (virtual) clock, not hammered
    assert counted(d, "h", "sent") == 1 and counted(d, "h", "failed") == 0
    assert d.metrics.registry.get_sample_value("remediator_notification_retries_total", {"channel": "h"}) == 2
    assert list(d.failures) == []


async def test_429_waits_what_retry_after_asks(vclock: VirtualClock) -> None:
    async with (
        Receiver(vclock, [429, 200], retry_after="30") as rx,
        running_dispatcher(vclock, hook("h", rx.url())) as d,
    ):
        await d.notify("started", sample_decision(), {"channels": ("h",)})
        await settle(vclock, d, step=0.5)
    first, second = rx.requests
    assert 30.0 <= second.at - first.at < 32.0  # not the 1-2s the backoff alone would wait
    assert counted(d, "h", "sent") == 1


def test_retry_after_accepts_seconds_and_http_dates(vclock: VirtualClock) -> None:
    later = vclock.now() + timedelta(seconds=120)
    assert retry_after({"Retry-After": "7"}, vclock) == 7.0
    assert retry_after({"Retry-After": later.strftime("%a, %d %b %Y %H:%M:%S GMT")}, vclock) == 120.0
    assert retry_after({"Retry-After": "soon"}, vclock) is None
    assert retry_after({}, vclock) is None
    # asctime's form and a -0000 zone parse with no zone at all: GMT still (RFC 9110), not a crash
    assert retry_after({"Retry-After": later.strftime("%a %b %d %H:%M:%S %Y")}, vclock) == 120.0
    assert retry_after({"Retry-After": later.strftime("%a, %d %b %Y %H:%M:%S -0000")}, vclock) == 120.0
    assert retry_after({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, vclock) is not None


async def test_a_refusal_is_not_retried_and_is_recorded(vclock: VirtualClock) -> None:
    async with Receiver(vclock, [404]) as rx, running_dispatcher(vclock, hook("h", rx.url())) as d:
        await d.notify("failed", sample_decision(), {"channels": ("h",)})
        await settle(vclock, d)
    assert len(rx.requests) == 1
    [failure] = d.failures_for("ex-1")
    assert (failure.channel, failure.event, failure.attempts) == ("h", "failed", 1)
    assert failure.error.startswith("HTTP 404")
    assert counted(d, "h", "failed") == 1


async def test_a_full_queue_drops_the_oldest(vclock: VirtualClock) -> None:
    async with Receiver(vclock) as rx, running_dispatcher(vclock, hook("h", rx.url()), start=False, queue_size=2) as d:
        for event in ("started", "failed", "succeeded"):
            await d.notify(event, sample_decision(), {"channels": ("h",)})
        assert counted(d, "h", "dropped") == 1
        d.start()
        await settle(vclock, d)
    assert [r.json()["event"] for r in rx.requests] == ["failed", "succeeded"]


@pytest.mark.parametrize("dead", ["hangs", "down"])
async def test_a_dead_channel_does_not_slow_the_remediation_and_is_recorded_as_failed(
    dead: str, tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """The execution finishes at the same virtual time with and without the dead channel."""
    elapsed: dict[str, float] = {}
    async with Receiver(vclock) as ops, Receiver(vclock, [HANG] * 10) as hanging:
        healthy = {"type": "webhook", "url": ops.url(), "request_timeout": "5m"}
        dead_cfg = {"type": "webhook", "url": hanging.url() if dead == "hangs" else down_url(),
                    "request_timeout": "10s", "max_attempts": 3}
        runs = {"without": {"ops": healthy}, "with": {"ops": healthy, "dead": dead_cfg}}
        for run, chans in runs.items():
            async with open_notify_runtime(
                chans, Recorder(), playbook=PLAYBOOK % ", ".join(chans), data_dir=str(tmp_path / run)
            ) as rt:
                before = vclock.now()
                # no virtual time passes here: a notifier that waited on a receiver would never return
                await asyncio.wait_for(deliver(rt, payload(alert_json({"alertname": "WebDown"}))), timeout=30)
                [ex] = await rt.store.list_executions()
                assert ex["status"] == "succeeded"
                record = await rt.store.get_execution(ex["id"])
                assert record is not None
                finished = record["finished_at"]
                elapsed[run] = (vclock.now() - before).total_seconds()
                assert finished == before.isoformat().replace("+00:00", "Z")
                assert rt.notifications is not None
                await settle(vclock, rt.notifications)
                d = rt.notifications
                if run == "with":
                    failures = d.failures_for(ex["id"])
                    assert [(f.channel, f.event, f.attempts) for f in failures] == [
                        ("dead", "started", 3),
                        ("dead", "succeeded", 3),
                    ]
                    expected = "no answer within 10s" if dead == "hangs" else "cannot reach the receiver"
                    assert all(expected in f.error for f in failures)
                    assert counted(d, "dead", "failed") == 2 and counted(d, "dead", "sent") == 0
                assert counted(d, "ops", "sent") == 2
                await d.join()  # outcomes reach the execution's audit too
                record = await rt.store.get_execution(ex["id"])
                assert record is not None
                audit = sorted((n["channel"], n["event"], n["result"], n["attempts"]) for n in record["notifications"])
                assert audit == sorted(
                    [("ops", "started", "sent", 1), ("ops", "succeeded", "sent", 1)]
                    + ([("dead", "started", "failed", 3), ("dead", "succeeded", "failed", 3)] if run == "with" else [])
                )
                assert all(expected in n["error"] for n in record["notifications"] if n["result"] == "failed")
    assert elapsed == {"without": 0.0, "with": 0.0}
    if dead == "hangs":
        assert len(hanging.requests) == 6  # 3 attempts for each of the two messages, then given up


async def test_skipped_is_opt_in_per_channel(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    async with Receiver(vclock) as all_events, Receiver(vclock) as defaults:
        chans = {
            "everything": {"type": "webhook", "url": all_events.url(), "events": ["started", "succeeded", "skipped"]},
            "usual": {"type": "webhook", "url": defaults.url()},
        }
        async with open_notify_runtime(chans, Recorder(), playbook=PLAYBOOK % "everything, usual") as rt:
            await deliver(rt, payload(alert_json({"alertname": "WebDown", "pod": "a"})))
            await deliver(rt, payload(alert_json({"alertname": "WebDown", "pod": "b"})))  # same target: cooldown
            assert rt.notifications is not None
            await settle(vclock, rt.notifications)
    assert [r.json()["event"] for r in all_events.requests] == ["started", "succeeded", "skipped"]
    assert [r.json()["event"] for r in defaults.requests] == ["started", "succeeded"]
    skipped = all_events.requests[2].json()
    assert skipped["result"] == "skipped (cooldown)" and skipped["execution"]["decision"] == "cooldown"
    assert skipped["text"].endswith(f"| cooldown: {skipped['execution']['reason']}")


async def test_channel_templates_render_and_fall_back_to_the_default(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    async with Receiver(vclock) as rx:
        chans = {"ops": {"type": "webhook", "url": rx.url(), "events": ["started"],
                         "template": "{{ labels.team }} team: {{ headline }} on {{ target.name }}"}}
        async with open_notify_runtime(chans, Recorder(), playbook=PLAYBOOK % "ops") as rt:
            await deliver(rt, payload(alert_json({"alertname": "WebDown", "team": "payments"})))
            await deliver(rt, payload(alert_json({"alertname": "WebDown", "pod": "x"}, starts_at=LATER)))
            await vclock.advance(3600)  # past the cooldown, so the team-less alert runs too
            await deliver(rt, payload(alert_json({"alertname": "WebDown", "pod": "y"}, starts_at=LATER)))
            assert rt.notifications is not None
            await settle(vclock, rt.notifications)
    texts = [r.json()["text"] for r in rx.requests]
    assert texts == [
        "payments team: Remediation started on web",
        "Remediation started | alert WebDown on Deployment shop/web | playbook restart-web",
    ]


async def test_channel_configuration_errors_are_refused_at_startup(
    tmp_path: Path, open_notify_runtime: OpenRuntime
) -> None:
    bad = {
        "unknown template name": {"type": "webhook", "url": "http://127.0.0.1:9/x", "template": "{{ secret }}"},
        "no routing key": {"type": "pagerduty"},
        "no url": {"type": "slack"},
        "unknown event": {"type": "webhook", "url": "http://127.0.0.1:9/x", "events": ["exploded"]},
        "bad on_started": {"type": "pagerduty", "routing_key": "k", "on_started": "page"},
    }
    for case, cfg in bad.items():
        with pytest.raises(ConfigError):
            async with open_notify_runtime({"ops": cfg}, Recorder(), playbook=PLAYBOOK % "ops"):
                pytest.fail(f"accepted: {case}")


async def test_a_playbook_naming_an_unconfigured_channel_is_a_playbook_error(
    tmp_path: Path, open_notify_runtime: OpenRuntime
) -> None:
    chans = {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}
    with pytest.raises(ConfigError, match="notifies unknown channel 'nowhere'"):  # the start is refused
        async with open_notify_runtime(chans, Recorder(), playbook=PLAYBOOK % "ops, nowhere"):
            pass


async def test_a_hung_audit_store_does_not_hold_up_shutdown(vclock: VirtualClock) -> None:
    reached, never = asyncio.Event(), asyncio.Event()

    async def stuck(execution: str, outcome: Mapping[str, Any]) -> None:
        reached.set()
        await never.wait()

    async with Receiver(vclock) as rx, aiohttp.ClientSession() as session:
        d = Dispatcher({"h": hook("h", rx.url())}, session=session, clock=vclock, registry=CollectorRegistry(),
                       on_outcome=stuck)
        d.start()
        await d.notify("failed", sample_decision(), {"channels": ("h",)})
        await asyncio.wait_for(reached.wait(), 10)  # delivered; its outcome is being written, forever
        await asyncio.wait_for(d.close(drain_timeout=0), 10)
    assert len(rx.requests) == 1 and counted(d, "h", "sent") == 1
