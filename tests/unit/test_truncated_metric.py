"""``remediator_alerts_truncated_total`` says what it counts: each delivery's ``truncatedAlerts``, summed.

Alertmanager re-sends a group at every ``group_interval``; a group still over the receiver's
``max_alerts`` is cut again, and its ``truncatedAlerts`` is added again (tests/core/test_webhook_limits.py).
The help text read "Alerts Alertmanager left out of accepted deliveries", as if it counted each alert
left out once.  Counting distinct alerts cannot be done: Alertmanager says how many, not which.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from remediator.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]


def test_the_help_text_and_the_docs_say_that_re_sends_add_up() -> None:
    [help_line] = [line for line in generate_latest(Metrics().registry).decode().splitlines()
                   if line.startswith("# HELP remediator_alerts_truncated_total ")]
    assert "Each accepted delivery's truncatedAlerts" in help_line
    assert "adds its count again at each re-send" in help_line and "not distinct alerts" in help_line
    operations = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    assert "That counter sums the deliveries' counts" in operations
    assert "not the number of distinct alerts left out" in operations
