"""What needs a human shows in the log at the level a log pipeline alerts on (issue 14):
a failed step at WARNING, a failed execution at ERROR; a success stays at INFO."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import received

PLAYBOOK = """
name: restart
match: {alertname: Down}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
"""


class Answers:
    def __init__(self, status: str) -> None:
        self.status = status

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        return StepResult(self.status, "as told")  # type: ignore[arg-type]


@pytest.mark.parametrize(("outcome", "step_level", "execution_level"), [
    ("failed", "warning", "error"),
    ("ok", "info", "info"),
])
async def test_failures_are_logged_at_warning_and_error(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
    outcome: str, step_level: str, execution_level: str,
) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "restart.yaml").write_text(PLAYBOOK)
    executor = Answers(outcome)
    settings = settings_factory(playbooks=str(tmp_path / "pb"), dry_run=False)
    async with open_runtime(settings, clock=vclock, executors=(executor, executor), start_worker=False) as rt:
        await rt.store.record_alerts(received(payload(alert_json({"alertname": "Down"})), vclock))
        with capture_logs() as logs:
            await rt.worker.drain()
    [step] = [e for e in logs if e["event"] == "step"]
    [finished] = [e for e in logs if e["event"] == "execution finished"]
    assert (step["log_level"], finished["log_level"]) == (step_level, execution_level)
