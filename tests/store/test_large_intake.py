"""A large delivery is serialised off the event loop, and recorded exactly as a small one."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.store.test_contract import alerts, firing
from tests.threads import where

SERIALISE = {"remediator.store.sqlite": "_rows", "remediator.store.postgres": "_columns"}


async def test_a_large_delivery_is_serialised_off_the_loop_and_recorded_in_order(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(type(store).__module__)
    if module.__name__ not in SERIALISE:
        pytest.skip("replay's in-memory store serialises nothing: it keeps the objects")
    name = SERIALISE[module.__name__]
    real = getattr(module, name)
    seen: list[str] = []

    def spy(batch: Any) -> Any:
        seen.append(where())
        return real(batch)

    monkeypatch.setattr(module, name, spy)
    raw = [firing(f"app-{i:03d}") for i in range(module.ROWS_IN_LOOP + 50)]
    assert await store.record_alerts(alerts(*raw, *raw[:10])) == len(raw)  # duplicates within absorbed
    assert await store.record_alerts(alerts(firing("small"), *raw[:3])) == 1
    assert seen == ["thread", "loop"]
    claimed = await store.claim_alerts("w", 1000, 30)
    assert [s.received.alert.labels["app"] for s in claimed] == [r["labels"]["app"] for r in raw] + ["small"]
