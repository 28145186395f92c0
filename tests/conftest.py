"""Fixtures shared by the whole suite: virtual clock, alert payloads, an in-process runtime."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from tests.payloads import EXAMPLE, PLAYBOOKS, T0


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def example_payload() -> dict[str, Any]:
    return copy.deepcopy(json.loads(EXAMPLE.read_text()))


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Any]:
    from remediator.settings import load_settings

    def make(**overrides: Any) -> Any:
        base: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "playbooks": str(PLAYBOOKS),
            "dry_run": True,
            "webhook": {"tokens": ["t1"]},
            "api": {"read_tokens": ["r1"], "admin_tokens": ["a1"]},  # tests/tokens.py
        }
        base.update(overrides)
        return load_settings(None, env={}, overrides=base)

    return make


@pytest.fixture
async def runtime(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Any]:
    from remediator.runtime import open_runtime

    async with open_runtime(settings_factory(), clock=vclock, start_worker=False) as rt:
        yield rt
