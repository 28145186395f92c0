"""A PagerDuty trigger fits the Events API v2's documented limits, whatever the alert carries.

PagerDuty refuses an event over 512 KB with a 400, which is never retried: one rule putting
a stack trace in labels (60 labels of 4,000 characters, within intake's limits) made the page
of a failed remediation 720 KB, and nobody was paged.  The details go first; what a human
needs to act stays.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert
from remediator.core.decisions import ResolvedTarget
from remediator.notify.channels import Channel
from remediator.notify.events import StepLine, build_notice
from tests.notify.helpers import counted, running_dispatcher, sample_decision
from tests.notify.receivers import PagerDuty, settle
from tests.payloads import T0

PD_MAX = 512 * 1024  # "The maximum size of an event is 512 KB"


def pd(url: str = "https://events.pagerduty.com/v2/enqueue") -> Channel:
    return Channel("pd", "pagerduty", url, routing_key="K" * 32, events=("failed",))


def big_alert(labels: int, size: int, char: str = "€") -> Alert:
    values = {f"l{i:03d}": char * size for i in range(labels)}
    return Alert("fp1", "firing", {"alertname": "A" * 4000, "severity": "critical", **values})


@pytest.mark.parametrize(("labels", "size"), [(60, 4000), (128, 4096), (3, 4000)])
def test_a_trigger_of_a_huge_alert_fits_and_says_it_was_trimmed(labels: int, size: int) -> None:
    alert = big_alert(labels, size)
    decision = dataclasses.replace(sample_decision(), target=ResolvedTarget("Deployment", "n" * 300, "w" * 300))
    notice = build_notice("failed", decision, {"alert": alert}, at=T0)
    notice = dataclasses.replace(notice, steps=tuple(StepLine("main", i, "restart", "failed", "€" * 4000)
                                                     for i in range(40)))
    out = pd().encode(notice)
    assert out is not None
    assert len(out.body) <= PD_MAX
    body = json.loads(out.body)
    p, details = body["payload"], body["payload"]["custom_details"]
    assert len(p["summary"]) <= 1024 and len(body["dedup_key"]) <= 255
    assert all(len(p[f]) <= 255 for f in ("source", "component", "group", "class"))
    assert "512 KB" in details["trimmed"]
    # what a human needs to act is all there
    assert (details["event"], details["execution_id"], details["alert_fingerprint"]) == ("failed", "ex-1", "fp1")
    assert p["severity"] == "critical"


def test_a_trigger_that_fits_is_left_whole() -> None:
    alert = big_alert(3, 1000)
    out = pd().encode(build_notice("failed", sample_decision(), {"alert": alert}, at=T0))
    assert out is not None
    details = json.loads(out.body)["payload"]["custom_details"]
    assert "trimmed" not in details and details["alert_labels"] == dict(alert.labels)


async def test_the_page_of_a_huge_alert_is_delivered(vclock: VirtualClock) -> None:
    class Strict(PagerDuty):
        async def _handle(self, request):  # type: ignore[no-untyped-def]
            if len(await request.read()) > PD_MAX:
                from aiohttp import web

                self.seen.append(("trigger", "refused: over 512 KB"))
                return web.json_response({"status": "invalid event"}, status=400)
            return await super()._handle(request)

    async with Strict(vclock) as rx, running_dispatcher(vclock, pd(rx.url("/v2/enqueue"))) as d:
        await d.notify("failed", sample_decision(), {"channels": ("pd",), "alert": big_alert(60, 4000)})
        await settle(vclock, d)
    assert rx.seen == [("trigger", "opened")]
    assert counted(d, "pd", "sent") == 1
