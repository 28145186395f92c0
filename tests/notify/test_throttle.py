"""A throttled channel is retried on a time budget with minute-scale waits, not on ``max_attempts``.

PagerDuty answers 429 without ``Retry-After`` while it throttles a routing key and asks
to retry "preferably with a backoff of a few minutes".  Counted against ``max_attempts``
(5) with a backoff of seconds, a page was given up some 19 s into a throttle of a minute
and nobody was paged.  Real local receivers, on the VirtualClock.
"""

from __future__ import annotations

import dataclasses

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision
from remediator.notify.channels import Channel
from remediator.notify.pagerduty import dedup_key
from tests.notify.helpers import counted, running_dispatcher, sample_decision
from tests.notify.receivers import Receiver, settle
from tests.notify.test_delivery import hook

KEY = "K" * 32
THROTTLE_BUDGET = 600.0  # ten minutes from when the notice was queued
STEP = 2.0  # virtual seconds per round of settle: an answer, and the request after it, can each come a round late


def pagerduty(url: str, attempts: int = 5) -> Channel:
    return Channel("pd", "pagerduty", url, routing_key=KEY, events=("failed", "resolved"), attempts=attempts)


def execution(fingerprint: str, execution_id: str) -> Decision:
    return dataclasses.replace(sample_decision(), fingerprint=fingerprint, execution_id=execution_id)


def gaps(rx: Receiver) -> list[float]:
    return [b.at - a.at for a, b in zip(rx.requests, rx.requests[1:], strict=False)]


async def test_a_page_throttled_for_minutes_is_delivered_and_its_resolve_follows_it(vclock: VirtualClock) -> None:
    """Four 429s without Retry-After, max_attempts 3: the trigger goes out at the fifth try,
    minutes apart, and the resolve queued behind it only after it."""
    async with Receiver(vclock, [429] * 4, ok=202) as pd, running_dispatcher(vclock, pagerduty(pd.url(), 3)) as d:
        broken = execution("fp1", "ex-1")
        await d.notify("failed", broken, {"channels": ("pd",)})
        await d.notify("resolved", broken, {"channels": ("pd",)})
        await settle(vclock, d, step=STEP)
    seen = [(r.json()["event_action"], r.answer) for r in pd.requests]
    assert seen == [("trigger", 429)] * 4 + [("trigger", 202), ("resolve", 202)]
    assert {r.json()["dedup_key"] for r in pd.requests} == {dedup_key("fp1", "restart-web", "ex-1")}
    waits = gaps(pd)[:4]
    assert all(w >= 60 for w in waits), f"waits of {waits}: seconds, not minutes"
    assert pd.requests[4].at - pd.requests[0].at <= THROTTLE_BUDGET
    assert counted(d, "pd", "sent") == 2 and counted(d, "pd", "failed") == 0


async def test_a_throttle_past_the_budget_gives_up_and_holds_the_queue_for_the_budget_once(
    vclock: VirtualClock,
) -> None:
    """PagerDuty throttles for good: the page is retried for ten minutes from when it was queued,
    then given up; the two notices queued with it have spent their budget by then, so each gets
    one try, not ten minutes more each."""
    async with Receiver(vclock, [429] * 20, ok=202) as pd, running_dispatcher(vclock, pagerduty(pd.url())) as d:
        await d.notify("failed", execution("fp1", "ex-1"), {"channels": ("pd",)})
        await d.notify("resolved", execution("fp1", "ex-1"), {"channels": ("pd",)})
        await d.notify("failed", execution("fp2", "ex-2"), {"channels": ("pd",)})
        await settle(vclock, d, step=STEP)
    assert [(f.execution_id, f.event, f.attempts) for f in d.failures] == [
        ("ex-1", "failed", 6), ("ex-1", "resolved", 1), ("ex-2", "failed", 1)
    ]
    assert all("throttled: given up 10 min after it was queued" in f.error for f in d.failures)
    first, last_try = pd.requests[0].at, pd.requests[5].at
    assert THROTTLE_BUDGET - STEP <= last_try - first <= THROTTLE_BUDGET + STEP
    assert pd.requests[-1].at - last_try <= 2 * STEP  # the other two went at once
    assert counted(d, "pd", "failed") == 3


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_on_a_429_or_a_503_is_waited_and_not_counted_against_max_attempts(
    status: int, vclock: VirtualClock
) -> None:
    """Six answers asking to come back in 45 s, max_attempts 2: delivered at the seventh try,
    45 s apart (a 503's Retry-After was ignored: retried after 1-2 s, and given up at the second)."""
    async with (
        Receiver(vclock, [status] * 6, retry_after="45") as rx,
        running_dispatcher(vclock, hook("h", rx.url(), attempts=2)) as d,
    ):
        await d.notify("failed", sample_decision(), {"channels": ("h",)})
        await settle(vclock, d, step=STEP)
    assert [r.answer for r in rx.requests] == [status] * 6 + [200]
    assert all(45 <= g <= 45 + 2 * STEP for g in gaps(rx)), gaps(rx)
    assert counted(d, "h", "sent") == 1


async def test_a_retry_after_of_zero_backs_off_all_the_same(vclock: VirtualClock) -> None:
    """A receiver asking to come back at once, for good: its budget must not become a request a tick."""
    async with (
        Receiver(vclock, [429] * 100, retry_after="0") as rx,
        running_dispatcher(vclock, hook("h", rx.url())) as d,
    ):
        await d.notify("failed", sample_decision(), {"channels": ("h",)})
        await settle(vclock, d, step=STEP)
    assert 10 <= len(rx.requests) <= 20  # 1 s doubling to a minute, for ten minutes
    assert counted(d, "h", "failed") == 1


async def test_a_503_without_retry_after_is_a_failure_counted_against_max_attempts(vclock: VirtualClock) -> None:
    """A routine notice; a page is retried for minutes (test_outage.py)."""
    async with Receiver(vclock, [503] * 5) as rx, running_dispatcher(vclock, hook("h", rx.url(), attempts=3)) as d:
        await d.notify("started", sample_decision(), {"channels": ("h",)})
        await settle(vclock, d, step=0.5)
    assert len(rx.requests) == 3 and all(g < 10 for g in gaps(rx))
    [failure] = d.failures
    assert failure.attempts == 3 and failure.error.startswith("HTTP 503")
