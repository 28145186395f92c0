"""Poison alerts: attempts are counted per alert, and an alert that keeps failing is parked.

Run against both stores (the ``store`` fixture), which must count, park and list alike.
How the worker uses it: on a claimed alert whose processing raised, ``park_alert`` once
``attempts`` reached ``worker.max_tries``, else ``release_alert`` to retry after a backoff.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from remediator.clock import VirtualClock
from tests.payloads import T0
from tests.store.test_contract import alerts, firing


def apps(items: list[Any]) -> list[tuple[str, int]]:
    return [(s.received.alert.labels["app"], s.attempts) for s in items]


async def test_each_claim_is_an_attempt_but_taking_back_ones_own_is_not(store: Any, vclock: VirtualClock) -> None:
    await store.record_alerts(alerts(firing("a"), firing("b")))
    first = await store.claim_alerts("w1", 10, 30)
    assert apps(first) == [("a", 1), ("b", 1)]
    # w1's batch was cut short: it takes its claims back at once, and they were not tried meanwhile
    assert apps(await store.claim_alerts("w1", 10, 30)) == [("a", 1), ("b", 1)]
    # a failed: given back for a retry in a minute, keeping its count
    await store.release_alert(first[0].id, T0 + timedelta(seconds=60))
    assert apps(await store.claim_alerts("w1", 10, 30)) == [("b", 1)]
    await vclock.advance(60)
    assert apps(await store.claim_alerts("w1", 10, 30)) == [("a", 2), ("b", 1)]
    # w1 died: another worker takes both once their lease ran out, and that is one more attempt each
    await vclock.advance(30)
    again = await store.claim_alerts("w2", 10, 30)
    assert apps(again) == [("a", 3), ("b", 2)]
    # a deferral (stabilisation window, unreachable guardrails) is an outcome, not a failure: the count
    # starts over, at one, so its next claim says it was claimed before (a retry may take over its lock)
    await store.defer_alert(again[1].id, vclock.now())
    assert apps(await store.claim_alerts("w3", 10, 30)) == [("b", 2)]
    # reading alerts other than by claiming them says nothing of attempts
    exported = [s async for s in store.alerts_between(T0, T0 + timedelta(days=1))]
    assert [s.attempts for s in exported] == [0, 0]


async def test_a_parked_alert_is_never_claimed_again_and_the_next_ones_are(store: Any, vclock: VirtualClock) -> None:
    await store.record_alerts(alerts(firing("poison"), firing("b"), firing("c")))
    [poison] = await store.claim_alerts("w", 1, 30)  # oldest first: it would block the queue
    await store.park_alert(poison.id, "ValueError: boom")
    assert apps(await store.claim_alerts("w", 10, 30)) == [("b", 1), ("c", 1)]
    await store.release_alert(poison.id, vclock.now())  # a late release does not unpark it
    await vclock.advance(3600)
    assert apps(await store.claim_alerts("w2", 10, 30)) == [("b", 2), ("c", 2)]
    assert await store.count_alerts() == 3  # kept, for the audit


async def test_parked_alerts_are_listed_newest_first_with_their_error(store: Any, vclock: VirtualClock) -> None:
    batch = alerts(firing("a"), firing("b"), firing("c"))
    await store.record_alerts(batch)
    a, b, c = await store.claim_alerts("w", 10, 30)
    assert await store.parked_alerts() == []
    await vclock.advance(1)
    await store.park_alert(a.id, "ValueError: boom")
    await vclock.advance(0.25)
    long = "x" * 10 + "\x00" + "y" * 5000  # NUL is not storable in PostgreSQL text: escaped, as labels are
    await store.park_alert(b.id, long)
    await store.mark_processed(c.id)  # processed normally: not parked
    parked = await store.parked_alerts()
    assert [p["id"] for p in parked] == [b.id, a.id]
    assert parked[1] == {
        "id": a.id,
        "alert": batch[0].alert.to_json(),
        "receiver": "remediator",
        "received_at": "2026-11-22T10:00:00Z",
        "attempts": 1,
        "parked_at": "2026-11-22T10:00:01Z",
        "error": "ValueError: boom",
    }
    assert parked[0]["parked_at"] == "2026-11-22T10:00:01.250000Z"
    assert parked[0]["error"] == "x" * 10 + "\\u0000" + "y" * 1989  # the first 2,000 characters
    assert [p["id"] for p in await store.parked_alerts(limit=1)] == [b.id]


async def test_a_poison_alert_is_tried_max_tries_times_then_parked_while_the_rest_flows(
    store: Any, vclock: VirtualClock
) -> None:
    """The worker's intended use, spelled out: release with a backoff, park at ``max_tries``."""
    max_tries = 5
    await store.record_alerts(alerts(firing("poison"), *(firing(f"ok{i}") for i in range(4))))
    tried: list[int] = []
    processed: list[str] = []
    for _ in range(20):
        for item in await store.claim_alerts("w", 2, 30):
            app = item.received.alert.labels["app"]
            if app != "poison":
                await store.mark_processed(item.id)
                processed.append(app)
                continue
            tried.append(item.attempts)  # processing raised
            if item.attempts >= max_tries:
                await store.park_alert(item.id, f"RuntimeError: attempt {item.attempts}")
            else:
                await store.release_alert(item.id, vclock.now() + timedelta(seconds=2 ** item.attempts))
        await vclock.advance(10)
    assert tried == [1, 2, 3, 4, 5]
    assert processed == ["ok0", "ok1", "ok2", "ok3"]
    [parked] = await store.parked_alerts()
    assert (parked["attempts"], parked["error"]) == (5, "RuntimeError: attempt 5")
