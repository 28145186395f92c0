"""When a channel's queue is full, the least important notice goes, not simply the oldest.

A storm of healthy remediations (or a receiver answering 429 for a while) fills a
queue with routine notices.  Dropping the oldest would push out the one page that
matters; these tests run the real dispatcher against local receivers with its delivery
task held back, so the queue is full, then start it and look at what arrived.
"""

from __future__ import annotations

import dataclasses

from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision
from remediator.notify.channels import Channel
from remediator.notify.pagerduty import dedup_key
from tests.notify.helpers import counted, running_dispatcher, sample_decision
from tests.notify.receivers import HANG, Receiver, requests_seen, settle

PD_EVENTS = ("started", "succeeded", "failed", "resolved")
KEY = "K" * 32


def execution(fingerprint: str, execution_id: str) -> Decision:
    return dataclasses.replace(sample_decision(), fingerprint=fingerprint, execution_id=execution_id)


def incident(fingerprint: str, execution_id: str) -> str:
    return dedup_key(fingerprint, sample_decision().playbook, execution_id)


async def test_a_failed_remediations_page_outlives_a_burst_of_healthy_ones(vclock: VirtualClock) -> None:
    """Every healthy execution queues a resolve that changes nothing in PagerDuty; ten of
    them used to push the failed execution's trigger out of a queue of ten, and nobody was paged."""
    async with Receiver(vclock, ok=202) as pd:
        ch = Channel("pd", "pagerduty", pd.url("/v2/enqueue"), routing_key=KEY, events=PD_EVENTS)
        async with running_dispatcher(vclock, ch, start=False, queue_size=10) as d:
            await d.notify("failed", execution("fp-broken", "ex-broken"), {"channels": ("pd",)})
            for i in range(10):
                ok = execution(f"fp{i}", f"ex{i}")
                await d.notify("started", ok, {"channels": ("pd",)})  # not sent: the daemon never acknowledges
                await d.notify("succeeded", ok, {"channels": ("pd",)})
            assert counted(d, "pd", "dropped") == 1
            d.start()
            await settle(vclock, d)
    seen = [(r.json()["event_action"], r.json()["dedup_key"]) for r in pd.requests]
    assert seen[0] == ("trigger", incident("fp-broken", "ex-broken"))  # paged, and still first: order is kept
    # the one dropped is the oldest routine event: the first healthy execution's resolve
    assert seen[1:] == [("resolve", incident(f"fp{i}", f"ex{i}")) for i in range(1, 10)]


async def test_a_resolve_is_not_dropped_to_keep_the_trigger_it_closes(vclock: VirtualClock) -> None:
    """The failed execution's alert resolved: its resolve is the incident's newest state, so
    the older trigger is what goes (dropping the resolve would leave an incident open for an
    alert gone), and no other page is lost for it."""
    async with Receiver(vclock, ok=202) as pd:
        ch = Channel("pd", "pagerduty", pd.url("/v2/enqueue"), routing_key=KEY, events=PD_EVENTS)
        async with running_dispatcher(vclock, ch, start=False, queue_size=3) as d:
            await d.notify("failed", execution("fp1", "ex-a"), {"channels": ("pd",)})  # fp1 pages...
            await d.notify("failed", execution("fp2", "ex-c"), {"channels": ("pd",)})
            await d.notify("succeeded", execution("fp3", "ex-d"), {"channels": ("pd",)})
            await d.notify("resolved", execution("fp1", "ex-a"), {"channels": ("pd",)})  # ...then resolves
            await d.notify("succeeded", execution("fp4", "ex-e"), {"channels": ("pd",)})
            assert counted(d, "pd", "dropped") == 2
            d.start()
            await settle(vclock, d)
    seen = [(r.json()["event_action"], r.json()["dedup_key"]) for r in pd.requests]
    assert seen == [
        ("trigger", incident("fp2", "ex-c")),  # the page for the still-broken alert
        ("resolve", incident("fp1", "ex-a")),  # the resolved alert's incident ends resolved
        ("resolve", incident("fp4", "ex-e")),  # the newest routine event; fp3's older one went
    ]


async def test_failures_and_approval_requests_outlive_routine_notices(vclock: VirtualClock) -> None:
    """On any channel a notice a human must act on goes last; when the queue holds only
    such notices, a routine one arriving is the one dropped, and among equals the oldest."""
    events = ("started", "succeeded", "failed", "approval_requested")
    async with Receiver(vclock) as rx:
        ch = Channel("h", "webhook", rx.url(), events=events)
        async with running_dispatcher(vclock, ch, start=False, queue_size=2) as d:
            await d.notify("failed", execution("fp1", "ex-1"), {"channels": ("h",)})
            await d.notify("approval_requested", execution("fp2", "ex-2"), {"channels": ("h",)})
            await d.notify("started", execution("fp3", "ex-3"), {"channels": ("h",)})  # dropped on arrival
            await d.notify("succeeded", execution("fp3", "ex-3"), {"channels": ("h",)})  # dropped on arrival
            assert counted(d, "h", "dropped") == 2
            await d.notify("failed", execution("fp5", "ex-5"), {"channels": ("h",)})  # only equals: the oldest goes
            assert counted(d, "h", "dropped") == 3
            d.start()
            await settle(vclock, d)
    seen = [(r.json()["event"], r.json()["execution"]["id"]) for r in rx.requests]
    assert seen == [("approval_requested", "ex-2"), ("failed", "ex-5")]


async def test_a_storm_against_a_stalled_receiver_logs_its_drops_per_burst_with_counts(vclock: VirtualClock) -> None:
    """A receiver that hangs and 1,000 executions' notices for a queue of 10: each drop is counted,
    but the log gets one line when the dropping starts, one with the count a minute on while it
    lasts, and one with the total once the queue has emptied (it was one ERROR line per drop)."""
    with capture_logs() as logs:
        async with Receiver(vclock, [HANG]) as rx:
            ch = Channel("h", "webhook", rx.url(), events=("started",), timeout=3600)
            async with running_dispatcher(vclock, ch, queue_size=10) as d:
                await d.notify("started", execution("fp", "ex"), {"channels": ("h",)})
                await requests_seen(rx, 1)  # stuck in delivery
                for i in range(1000):
                    await d.notify("started", execution(f"fp{i}", f"ex-{i}"), {"channels": ("h",)})
                assert counted(d, "h", "dropped") == 990
                await vclock.advance(61)  # the storm goes on a minute later
                for i in range(1000, 1010):
                    await d.notify("started", execution(f"fp{i}", f"ex-{i}"), {"channels": ("h",)})
                assert counted(d, "h", "dropped") == 1000
                rx.gate.set()  # the receiver comes back: the queue drains
                await settle(vclock, d)
    lines = [(e["log_level"], e["event"], e.get("count")) for e in logs if e["channel"] == "h"
             and e["event"].startswith("notification queue")]
    assert lines == [
        ("error", "notification queue full: dropping the least important notices", None),
        ("error", "notification queue full: still dropping", 990),
        ("warning", "notification queue emptied after dropping", 1000),
    ]
