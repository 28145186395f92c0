"""An approval gives back its claim on the execution only while the execution still waits.

Settling an approval (the execution becomes ``pending``) clears the claim, and this replica's own
execution queue may claim the execution again, under the same owner name, while the approval is
still writing its "approved" event.  Giving the claim back after that cleared the queue's claim of
an execution it was running: another replica could then claim it too and run the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.core.errors import StoreUnavailable
from remediator.runtime import open_runtime
from tests.payloads import alert_json, payload
from tests.pipeline.test_dry_run_is_absolute import ADMIN, GATED
from tests.pipeline.test_pipeline import Recorder, playbook_dir, received

STEP_GATED = """
name: gated
match: {alertname: Gated}
target: {kind: Deployment, namespace: shop, name: api}
steps:
  - {action: scale, to: 3}
  - {action: restart, approval: {timeout: 10m}}
"""


@pytest.mark.parametrize("fails", [False, True], ids=["answered", "cut-short-after-settling"])
@pytest.mark.parametrize("playbook", [GATED, STEP_GATED], ids=["playbook", "step"])
async def test_an_approval_keeps_the_claim_its_own_queue_took_meanwhile(
        playbook: str, fails: bool, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_factory(playbooks=playbook_dir(tmp_path, playbook), dry_run=False)
    async with open_runtime(settings, clock=vclock, executors=(Recorder(), Recorder()), start_worker=False) as rt:
        [r] = received(payload(alert_json({"alertname": "Gated"})), vclock)
        await rt.store.record_alerts([r])
        await rt.worker.drain()  # decided; the step-gated one runs its first step and stops at the gate
        did = execution_id(r.alert.dedup_key, "gated")
        assert (await rt.store.approval(did)).status == "awaiting_approval"

        recorded, claimed = rt.store.record_event, []

        async def record_event(execution: str, event: str, at: Any, **detail: Any) -> None:
            await recorded(execution, event, at, **detail)
            if event == "approved":  # this replica's queue claims the now-pending execution meanwhile
                claimed.extend(await rt.store.claim_unfinished(rt.pipeline.owner, 300.0))
                if fails:  # and the answer is cut short after settling (an error; the request's timeout)
                    raise StoreUnavailable("the audit write failed")

        monkeypatch.setattr(rt.store, "record_event", record_event)
        if fails:
            with pytest.raises(StoreUnavailable):
                await rt.pipeline.answer_approval(did, approve=True, by="a1", token_sha256=ADMIN)
        else:
            got = await rt.pipeline.answer_approval(did, approve=True, by="a1", token_sha256=ADMIN)
            assert got.outcome == "approved"
        assert claimed == [did]
        assert await rt.store.claim_unfinished("replica-2", 300.0) == []  # still this replica's to run

