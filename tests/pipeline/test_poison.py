"""A poison alert (its processing raises every time) is parked after worker.max_tries; intake goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import Alert, validate_payload
from remediator.core.playbooks import PlaybookSet
from remediator.pipeline import Outcome
from remediator.ports import BatchLookups, ReceivedAlert
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


async def test_an_alert_that_breaks_the_batchs_shared_lookups_fails_alone(
    settings_factory: Callable[..., Any], vclock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch's lookups (what every decision will ask the store, asked once) match and plan each
    # alert before any is decided.  An alert that makes matching raise there failed the whole batch,
    # outside the per-alert handling: claimed again at the lease's end, failing again, for ever, with
    # every alert behind it undecided and no attempt counted.
    matching = PlaybookSet.matching

    def poisoned(self: PlaybookSet, alert: Alert) -> Any:
        if alert.labels.get("poison"):
            raise ValueError("a bug this alert triggers")
        return matching(self, alert)

    monkeypatch.setattr(PlaybookSet, "matching", poisoned)
    async with open_runtime(settings_factory(worker={"max_tries": 2}), clock=vclock, start_worker=False) as rt:
        assert isinstance(rt.store, BatchLookups)  # the embedded default asks a batch's questions at once
        await deliver(rt, payload(alert_json({"alertname": "HighLatency", "poison": "yes", "severity": "warning",
                                              "namespace": "shop", "deployment": "web"})))
        await deliver(rt, payload(*[alert_json({"alertname": "HighLatency", "severity": "warning",
                                                "namespace": "shop", "deployment": f"web-{i}"}) for i in range(5)]))
        for _ in range(3):
            await rt.worker.drain()
            await vclock.advance(300)
        parked = await rt.store.parked_alerts()
        decided = {row["target"]["name"] for row in await rt.store.list_decisions()}
    assert decided == {f"web-{i}" for i in range(5)}
    [p] = parked
    assert p["attempts"] == 2 and p["error"] == "ValueError: a bug this alert triggers"
