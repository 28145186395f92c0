"""A storm is not a storm of log lines (issue 17 item 4): each decision is logged at DEBUG,
and the decision loop logs one INFO line per batch with its counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import received

PLAYBOOK = """
name: restart
match: {alertname: Down}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
"""


async def test_decisions_at_debug_one_summary_per_batch_at_info(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "restart.yaml").write_text(PLAYBOOK)
    settings = settings_factory(playbooks=str(tmp_path / "pb"))
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        names = ["Down", "Other", "Other"]
        alerts = [alert_json({"alertname": name}, fingerprint=f"a{i}") for i, name in enumerate(names)]
        await rt.store.record_alerts(received(payload(*alerts), vclock))
        with capture_logs() as logs:
            await rt.worker.decide_all()
    decisions = [e for e in logs if e["event"] in ("decision", "no playbook matches")]
    assert {e["log_level"] for e in decisions} == {"debug"} and len(decisions) == 3
    [summary] = [e for e in logs if e["log_level"] == "info"]
    assert summary["event"] == "alerts decided"
    assert (summary["alerts"], summary["executed"], summary["no_match"]) == (3, 1, 2)
