"""A plan-only execution whose executor asks nobody (no cluster) is over once decided (issue 17,
item 4: "plan-only executions finish without extra round trips").

It is computed while its alert is decided and recorded with the decision, already finished,
in the decision's transaction.  What the audit, the notifications and the metrics say must be
what the execution queue would have said running it: the same steps, results, status and
notifications, in the same order.  Checked by deciding the same alerts twice, once with the
plan-only executor (the daemon's dry executor without a cluster) and once with the same
executor behind a wrapper the pipeline does not know (the ordinary path: claim, lease, steps,
finish), on SQLite and on PostgreSQL + Redis (where a batch's lookups and verdicts are asked once).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.decisions import Decision, PlannedStep
from remediator.executors.plan_only import PlanOnlyExecutor, UnconfiguredExecutor
from remediator.ports import StepContext, StepResult
from remediator.runtime import open_runtime
from tests.guardrails.conftest import REDIS_URL, delete_prefix, prefixed
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import received
from tests.store.conftest import fresh_schema

CHANNELS = {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}
PLAYBOOK = """
name: bounce
match: {alertname: Down, matchers: ['app=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.app }}"}
notify: [ops]
steps:
  - {action: restart}
  - {action: notify, channel: ops, message: "restarted {{ labels.app }}"}
  - {action: wait_healthy, timeout: 120}
on_failure: [{action: rollback}]
"""


class Notices:
    """A notifier that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, tuple[str, ...], str]] = []

    async def notify(self, event: str, decision: Decision, detail: Mapping[str, Any]) -> None:
        results = detail.get("results") or {}
        summary = ",".join(f"{k[0]}{k[1]}={r.status}" for k, r in sorted(results.items()))
        self.sent.append((event, decision.execution_id or "", tuple(detail["channels"]),
                          str(detail.get("message", "")) + summary))


class Opaque:
    """The plan-only executor behind a wrapper: to the pipeline, an executor like any other."""

    def __init__(self) -> None:
        self.inner = PlanOnlyExecutor()
        self.runs = 0

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.runs += 1
        return await self.inner.run(step, ctx)


class Refusing(PlanOnlyExecutor):
    """Plans every step but wait_healthy, which it reports failed (a plan-only executor: the fast
    path is tried, and must give the execution up to the queue)."""

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if step.action == "wait_healthy":
            return StepResult("failed", "not healthy")
        return await super().run(step, ctx)


def by_execution(sent: list[tuple[str, str, tuple[str, ...], str]]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for notice in sent:
        grouped.setdefault(notice[1], []).append(notice)
    return grouped


def alerts(*apps: str) -> dict[str, Any]:
    return payload(*(alert_json({"alertname": "Down", "app": app}, fingerprint=f"{i:016x}")
                     for i, app in enumerate(apps)))


def without_times(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["results"] = [{k: v for k, v in r.items() if k not in ("started_at", "finished_at")} for r in doc["results"]]
    return {k: v for k, v in doc.items() if k not in ("finished_at",)}


async def run(settings: Any, vclock: VirtualClock, dry: Any, apps: tuple[str, ...]) -> dict[str, Any]:
    notices = Notices()
    async with open_runtime(settings, clock=vclock, notifier=notices, executors=(UnconfiguredExecutor(), dry),
                            start_worker=False) as rt:
        await rt.store.record_alerts(received(alerts(*apps), vclock))
        decided = await rt.worker.decide_all()
        unfinished_after_deciding = await rt.store.unfinished_executions()
        await rt.worker.drain()
        executions = sorted(await rt.store.list_executions(), key=lambda e: e["id"])
        docs = [without_times(await rt.store.get_execution(e["id"])) for e in executions]
    return {"decided": decided, "unfinished": unfinished_after_deciding, "docs": docs,
            "statuses": [e["status"] for e in executions], "notices": notices.sent}


def playbooks(tmp_path: Path) -> str:
    pb = tmp_path / "pb"
    pb.mkdir(exist_ok=True)
    (pb / "bounce.yaml").write_text(PLAYBOOK)
    return str(pb)


async def both_ways(backend: str, settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock,
                    apps: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any], Opaque]:
    """The same alerts decided the ordinary way (``Opaque``) and the fast way, each on a fresh store."""
    opaque = Opaque()
    outcomes = []
    for name, dry in (("queued", opaque), ("inline", PlanOnlyExecutor())):
        async with contextlib.AsyncExitStack() as stack:
            more: dict[str, Any] = {}
            if backend == "postgres":  # with Redis: the batch's verdicts are prefetched in one round trip
                more["database_url"] = (await stack.enter_async_context(fresh_schema())).dsn
                prefix = f"test-planned-{secrets.token_hex(6)}:"
                stack.push_async_callback(delete_prefix, prefix)
                more["redis_url"] = prefixed(REDIS_URL, prefix)
            settings = settings_factory(playbooks=playbooks(tmp_path), channels=CHANNELS,
                                        data_dir=str(tmp_path / name), **more)
            outcomes.append(await run(settings, vclock, dry, apps))
    return outcomes[0], outcomes[1], opaque


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_plan_only_execution_is_recorded_with_its_decision_as_the_queue_would_record_it(
    backend: str, settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    queued, inline, opaque = await both_ways(backend, settings_factory, tmp_path, vclock, ("web", "api", "cart"))

    assert opaque.runs == 3 * 2  # the ordinary path ran restart and wait_healthy for each (notify is the pipeline's)
    # Deciding left the ordinary path's executions to the queue, and none at all on the fast path.
    assert len(queued["unfinished"]) == 3 and inline["unfinished"] == []
    assert queued["statuses"] == inline["statuses"] == ["dry_run"] * 3
    assert inline["docs"] == queued["docs"]
    assert [r["status"] for r in inline["docs"][0]["results"]] == ["planned", "ok", "planned"]
    # per execution, the same notifications in the same order (the queue interleaves executions)
    assert by_execution(inline["notices"]) == by_execution(queued["notices"])
    assert [n[0] for n in inline["notices"] if n[1] == inline["docs"][0]["id"]] == ["started", "message", "dry_run"]


async def test_a_plan_that_does_not_come_out_ok_runs_the_ordinary_way(
    settings_factory: Callable[..., Any], tmp_path: Path, vclock: VirtualClock
) -> None:
    """A failed step means on_failure and the breaker: the execution queue's business."""
    settings = settings_factory(playbooks=playbooks(tmp_path), channels=CHANNELS)
    outcome = await run(settings, vclock, Refusing(), ("web",))
    assert len(outcome["unfinished"]) == 1  # left to the queue
    [doc] = outcome["docs"]
    assert outcome["statuses"] == ["failed"]
    assert [(r["action"], r["status"]) for r in doc["results"]] == [
        ("restart", "planned"), ("notify", "ok"), ("wait_healthy", "failed")]  # nothing changed: no on_failure
