"""``/api/v1/decisions`` lists every refusal with its reason and the guardrail figures behind it
(issue 16): how long a cooldown still runs, how many executions a rate limit counted in its
window and when the next one fits, which namespaces an allowlist has; the timeline shows the same."""

from __future__ import annotations

from typing import Any

from markupsafe import escape

from remediator.clock import VirtualClock
from tests.payloads import db_pool_alert
from tests.tokens import READ
from tests.ui.conftest import Client, deliver


def firing_at(minute: int, **labels: str) -> dict[str, Any]:
    """The db-pool alert firing anew at 10:<minute> (a new startsAt: a new episode, decided again)."""
    alert = db_pool_alert(**labels)
    alert["startsAt"] = f"2026-11-22T10:{minute:02d}:00Z"
    return alert


async def test_refusals_come_with_their_reasons_and_figures(client: Client, vclock: VirtualClock) -> None:
    # db-pool-exhaustion: per target, rate_limit 3 per 1h and cooldown 10m; namespaces shop, payments, ...
    await deliver(client, firing_at(0))  # executed at 10:00
    await vclock.advance(60)
    await deliver(client, firing_at(1))  # 10:01: in cooldown
    for minute in (11, 22, 33):  # executed at 10:11 and 10:22; at 10:33 the window holds three
        await vclock.advance((vclock.now().replace(minute=minute) - vclock.now()).total_seconds())
        await deliver(client, firing_at(minute))
    await deliver(client, db_pool_alert(namespace="kube-public", deployment="dns"))

    r = await client.get("/api/v1/decisions?decision=cooldown,rate_limited,not_allowed", headers=READ)
    assert r.status == 200
    refusals = [
        ("not_allowed", "namespace 'kube-public' is not in the playbook's allowlist "
                        "['shop', 'payments', 'checkout', 'default']"),
        ("rate_limited", "rate limited: 3 of 3 executions in the last 1h; next allowed at 2026-11-22T11:00:00Z"),
        ("cooldown", "in cooldown until 2026-11-22T10:10:00Z (another 9m)"),
    ]
    assert [(d["decision"], d["reason"]) for d in (await r.json())["decisions"]] == refusals
    html = await (await client.get("/ui", headers=READ)).text()
    for _, reason in refusals:
        assert f'<td class="reason">{escape(reason)}</td>' in html
