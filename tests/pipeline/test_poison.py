"""A poison alert (its processing raises every time) is parked after worker.max_tries; intake goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.pipeline import Outcome
from remediator.ports import ReceivedAlert
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import deliver


async def test_a_poison_alert_is_parked_after_max_tries_and_a_thousand_behind_it_are_decided(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    async with open_runtime(settings_factory(worker={"max_tries": 3}), clock=vclock, start_worker=False) as rt:
        decide = rt.pipeline.decide
        decided: list[str] = []

        async def poisoned(received: ReceivedAlert, **kw: Any) -> Outcome:
            if received.alert.labels.get("poison"):
                raise ValueError("a bug this alert triggers")
            outcome = await decide(received, **kw)
            decided.append(received.alert.labels["n"])
            return outcome

        rt.pipeline.decide = poisoned  # type: ignore[method-assign]
        await deliver(rt, payload(alert_json({"alertname": "Poison", "poison": "yes", "n": "x"})))
        alerts = [alert_json({"alertname": "Other", "n": str(i)}) for i in range(1000)]
        for start in range(0, 1000, 100):
            batch = validate_payload(payload(*alerts[start:start + 100])).alerts
            await rt.store.record_alerts([ReceivedAlert(a, vclock.now()) for a in batch])
        for _ in range(5):  # each round: retries that came due, and everything else
            await rt.worker.drain()
            await vclock.advance(300)
        parked = await rt.store.parked_alerts()
        left = await rt.store.claim_alerts("check", 10, 30)
        metrics = rt.metrics.registry.get_sample_value("remediator_alerts_parked_total")
    assert len(decided) == 1000  # every alert behind it was decided, once
    [p] = parked
    assert p["attempts"] == 3 and p["error"] == "ValueError: a bug this alert triggers"
    assert left == []  # nothing is retried any more
    assert metrics == 1
