"""Executors used when no Kubernetes cluster is configured.

``PlanOnlyExecutor`` is dry-run without a cluster: it records the step with its
rendered parameters and touches nothing.  ``UnconfiguredExecutor`` refuses live
steps honestly instead of pretending they ran.
"""

from __future__ import annotations

from remediator.core.decisions import PlannedStep
from remediator.core.schema import CHECK_ACTIONS, MUTATING_ACTIONS
from remediator.executors.checks import planned_check
from remediator.ports import StepContext, StepResult


class PlanOnlyExecutor:
    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        if step.action in CHECK_ACTIONS:  # replay hands checks here directly: the same plan as a dry run's
            return planned_check(step, ctx)
        verb = "would run" if step.action in MUTATING_ACTIONS or step.action == "wait_healthy" else "would send"
        return StepResult(
            "planned",
            f"dry-run: {verb} {step.action} on {ctx.target.key}",
            details={"params": step.params, "target": ctx.target.to_json(), "server_side": False},
        )


class UnconfiguredExecutor:
    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        return StepResult("failed", f"no Kubernetes executor configured: cannot run {step.action} on {ctx.target.key}")
