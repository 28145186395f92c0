"""A page outlives an outage of its receiver: failures (5xx, connection refused or dropped,
timeouts) are retried for minutes, not ``max_attempts`` times.

With five attempts 1+2+4+8 s apart, a page was given up 15 s into a PagerDuty outage of 45 s
and nobody was paged, while a throttle got ten minutes.  A page is now retried until ten
minutes after it was queued (backoff 1 s doubling, at most a minute); a routine notice still
gives up after ``max_attempts``, so it never holds a page queued behind it for longer than
that.  Real local receivers, on the VirtualClock.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from aiohttp import web

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision
from remediator.notify.channels import Channel
from tests.notify.helpers import counted, running_dispatcher, sample_decision
from tests.notify.receivers import PagerDuty, Seen, settle

KEY = "K" * 32
BUDGET = 600.0


class Outage(PagerDuty):
    """PagerDuty, down (``how``: answering 503, or dropping the connection) until virtual ``until``."""

    def __init__(self, clock: VirtualClock, until: float, how: str = "503") -> None:
        super().__init__(clock)
        self.until, self.how = until, how
        self.failed: list[tuple[str, float]] = []  # (event_action, when) of each request answered with a failure

    async def _handle(self, request: web.Request) -> web.Response:
        if self.clock.monotonic() >= self.until:
            return await super()._handle(request)
        body = await request.read()
        self.failed.append((json.loads(body)["event_action"], self.clock.monotonic()))
        self.requests.append(Seen(request.path, dict(request.headers), body, self.clock.monotonic(),
                                  self.clock.now().timestamp(), 503))
        if self.how == "drop":
            assert request.transport is not None
            request.transport.abort()
        return web.json_response({"status": "unavailable"}, status=503)


def channel(url: str) -> Channel:
    return Channel("pd", "pagerduty", url, routing_key=KEY, events=("failed", "succeeded", "resolved"))


def execution(name: str) -> Decision:
    return dataclasses.replace(sample_decision(), fingerprint=f"fp-{name}", execution_id=f"ex-{name}")


@pytest.mark.parametrize("how", ["503", "drop"])
async def test_a_page_queued_during_an_outage_of_45_seconds_is_delivered(how: str, vclock: VirtualClock) -> None:
    start = vclock.monotonic()
    async with (
        Outage(vclock, start + 45, how) as pd,
        running_dispatcher(vclock, channel(pd.url("/v2/enqueue"))) as d,
    ):
        await d.notify("failed", execution("broken"), {"channels": ("pd",)})
        await settle(vclock, d)
    assert len(pd.failed) > 5  # past max_attempts
    assert pd.seen == [("trigger", "opened")] and len(pd.pages) == 1
    assert counted(d, "pd", "sent") == 1 and counted(d, "pd", "failed") == 0
    # backed off, at most a minute at a time: it lands within a minute of PagerDuty's return
    assert pd.requests[-1].at - (start + 45) <= 61


async def test_a_page_is_given_up_ten_minutes_after_it_was_queued(vclock: VirtualClock) -> None:
    start = vclock.monotonic()
    async with (
        Outage(vclock, start + 3600) as pd,
        running_dispatcher(vclock, channel(pd.url("/v2/enqueue"))) as d,
    ):
        await d.notify("failed", execution("broken"), {"channels": ("pd",)})
        await settle(vclock, d, step=2.0)
    [failure] = d.failures
    assert "given up 10 min after it was queued" in failure.error and failure.error.startswith("HTTP 503")
    assert BUDGET - 2 <= pd.requests[-1].at - start <= BUDGET + 4  # the last try at the end of the budget
    gaps = [b.at - a.at for a, b in zip(pd.requests, pd.requests[1:], strict=False)]
    assert max(gaps) <= 62 and len(pd.requests) < 25  # backed off to a minute, not hammered


async def test_a_routine_notice_failing_does_not_hold_a_page_behind_it(vclock: VirtualClock) -> None:
    """A resolve (routine) is given up after max_attempts, as before; the page queued behind it
    is tried some 15 s later, and retried until PagerDuty answers."""
    start = vclock.monotonic()
    async with (
        Outage(vclock, start + 45) as pd,
        running_dispatcher(vclock, channel(pd.url("/v2/enqueue"))) as d,
    ):
        await d.notify("succeeded", execution("healthy"), {"channels": ("pd",)})
        await d.notify("failed", execution("broken"), {"channels": ("pd",)})
        await settle(vclock, d)
    [failure] = d.failures
    assert (failure.execution_id, failure.event, failure.attempts) == ("ex-healthy", "succeeded", 5)
    first_trigger = next(at for action, at in pd.failed if action == "trigger")
    assert first_trigger - start <= 20
    assert pd.seen == [("trigger", "opened")]
