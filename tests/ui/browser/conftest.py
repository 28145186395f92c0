"""A real browser on a real daemon: one headless chromium and one daemon (with its fake cluster) per
module, seeded with decisions of each kind.  Every test here skips, with one line saying what to
install, when chromium, chromedriver or selenium is missing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.payloads import alert_json, db_pool_alert
from tests.ui.browser.stack import Stack, chromium, missing_browser, started


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    with started(tmp_path_factory.mktemp("browser")) as s:
        yield s


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    with chromium() as driver:
        driver.set_page_load_timeout(30)
        yield driver


@dataclass(frozen=True)
class Seeded:
    """The module's decisions, oldest first: two executions (one grew a pool from 20 to 30, one
    scaled), then a refusal (a namespace off the allowlist).  Each has its own time."""

    pool: dict[str, Any]
    scaled: dict[str, Any]
    refused: dict[str, Any]


def seed(stack: Stack) -> Seeded:
    """Post the alerts one at a time, each decided (and its execution finished) before the next."""
    stack.post_alerts(db_pool_alert())
    [pool] = stack.wait_decided(1)
    stack.wait_finished(pool["execution_id"])
    stack.post_alerts(alert_json({"alertname": "HighLatency", "severity": "warning", "namespace": "shop",
                                  "deployment": "web"}))
    scaled = stack.wait_decided(2)[0]
    stack.wait_finished(scaled["execution_id"])
    stack.post_alerts(db_pool_alert(namespace="kube-public", deployment="dns"))
    refused = stack.wait_decided(3)[0]
    return Seeded(pool, scaled, refused)


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Seeded:
    return seed(stack)
