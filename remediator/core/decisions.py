"""What the pipeline decided for one (alert, playbook) pair, and why.

Every matching playbook gets exactly one decision per alert delivery; the kinds are
part of the public contract (replay output, API, metrics labels).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from remediator.core.alerts import format_time
from remediator.core.frozen import fast_frozen


class DecisionKind(enum.StrEnum):
    EXECUTED = "executed"
    RATE_LIMITED = "rate_limited"
    COOLDOWN = "cooldown"
    LOCKED = "locked"
    BUDGET_EXHAUSTED = "budget_exhausted"
    CIRCUIT_OPEN = "circuit_open"
    PAUSED = "paused"
    NOT_ALLOWED = "not_allowed"
    NO_MATCH = "no_match"
    RESOLVED_CANCELLED = "resolved_cancelled"
    STABILISING = "stabilising"
    GUARDRAIL_UNAVAILABLE = "guardrail_unavailable"
    RESOLVED = "resolved"  # a resolved alert that a playbook matched but that had nothing to cancel
    # The guardrails would admit it, and its playbook wants a human's yes first: its execution
    # waits (``awaiting_approval``) to be approved, denied or expired.
    AWAITING_APPROVAL = "awaiting_approval"


#: How long an execution waits for its approval unless the playbook says (``approval.timeout``).
DEFAULT_APPROVAL_TIMEOUT = 900.0


@dataclass(frozen=True)
class Approval:
    """``approval:``: a human approves each execution (on a playbook) or step (on a step) before it runs.

    ``approvers`` are admin tokens by fingerprint (``sha256:`` and a prefix of at least 12 hex
    digits of the token's SHA-256): tokens carry no name, and the fingerprint is what the audit
    already shows of whoever pauses or approves.  Empty: any admin token may approve or deny.
    """

    required: bool = True
    timeout: float = DEFAULT_APPROVAL_TIMEOUT
    approvers: tuple[str, ...] = ()

    def allows(self, token_sha256: str) -> bool:
        """Whether the admin token with this SHA-256 (hex) may approve or deny."""
        return not self.approvers or any(
            token_sha256.startswith(a.removeprefix("sha256:")) for a in self.approvers
        )

    def to_json(self) -> dict[str, Any]:
        return {"required": self.required, "timeout": self.timeout, "approvers": list(self.approvers)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Approval:
        return cls(bool(raw.get("required", True)), float(raw.get("timeout", DEFAULT_APPROVAL_TIMEOUT)),
                   tuple(raw.get("approvers", ())))


@fast_frozen
@dataclass(frozen=True)
class ResolvedTarget:
    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        """``Kind/namespace/name``: the lock's and the summary's key.  Kept once written (in the
        instance's ``__dict__``, outside its fields): a plan's target is shared by every alert
        planned alike, and each decision asks for it several times."""
        key: str | None = self.__dict__.get("_key")
        if key is None:
            key = self.__dict__["_key"] = f"{self.kind}/{self.namespace}/{self.name}"
        return key

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


#: The phase of a step's approval record (see ``pipeline.gate_step``): beside "main" and "on_failure".
APPROVAL_PHASE = "approval"


@fast_frozen
@dataclass(frozen=True)
class PlannedStep:
    index: int
    action: str
    params: dict[str, Any]
    phase: str = "main"  # "main" or "on_failure"
    #: A human approves this step before it runs (``approval:`` on the step): the execution stops
    #: before it, awaiting approval.  Carried by the plan, so the decision's recorded gate (its
    #: timeout, its approvers) is the one applied, whatever the playbook says later.
    approval: Approval | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"index": self.index, "action": self.action, "phase": self.phase, "params": self.params}
        if self.approval is not None:  # absent otherwise: decisions without gates read as before
            out["approval"] = self.approval.to_json()
        return out


@fast_frozen
@dataclass(frozen=True)
class Decision:
    alert_key: str
    fingerprint: str
    playbook: str
    playbook_version: str
    kind: DecisionKind
    reason: str
    at: datetime
    target: ResolvedTarget | None = None
    steps: tuple[PlannedStep, ...] = ()
    on_failure: tuple[PlannedStep, ...] = ()
    dry_run: bool = True
    execution_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "alert": self.alert_key,
            "playbook": self.playbook,
            "playbook_version": self.playbook_version,
            "at": format_time(self.at),
            "decision": self.kind.value,
            "reason": self.reason,
            "target": self.target.to_json() if self.target else None,
            "dry_run": self.dry_run,
            "execution_id": self.execution_id,
            "steps": [s.to_json() for s in self.steps],
            "on_failure": [s.to_json() for s in self.on_failure],
        }


def execution_id(alert_key: str, playbook: str) -> str:
    """Deterministic, so a redelivered or re-processed alert maps to the same execution."""
    return "ex-" + hashlib.sha256(f"{alert_key}#{playbook}".encode()).hexdigest()[:24]


def decision_from_json(raw: dict[str, Any]) -> Decision:
    """Inverse of :meth:`Decision.to_json` (the store keeps decisions as JSON)."""
    from remediator.core.alerts import parse_time

    def steps(items: list[dict[str, Any]]) -> tuple[PlannedStep, ...]:
        return tuple(PlannedStep(s["index"], s["action"], dict(s["params"]), s.get("phase", "main"),
                                 Approval.from_json(s["approval"]) if s.get("approval") else None) for s in items)

    target = raw.get("target")
    return Decision(
        alert_key=raw["alert"],
        fingerprint=raw["fingerprint"],
        playbook=raw["playbook"],
        playbook_version=raw.get("playbook_version", ""),
        kind=DecisionKind(raw["decision"]),
        reason=raw.get("reason", ""),
        at=parse_time(raw["at"]),
        target=ResolvedTarget(**target) if target else None,
        steps=steps(raw.get("steps", [])),
        on_failure=steps(raw.get("on_failure", [])),
        dry_run=bool(raw.get("dry_run", True)),
        execution_id=raw.get("execution_id"),
    )
