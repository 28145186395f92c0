"""What a lost guardrail state can be rebuilt with, read from the store.

The Redis guardrail state may be lost whole (a Redis restarted without persistence,
flushed, or failed over to a replica that never had it).  The store, which records every
decision and execution, knows most of it again:

- the kill switch's pause (the store's setting);
- the lock and concurrency slot of every unfinished execution (``pending`` or ``running``:
  admitted, not ended), held for its playbook's ``lock_ttl`` from the rebuild, as a renewal
  would; the execution renews it from there, or it lapses as a dead holder's does;
- each target's last holder within :data:`LOCK_RECORD_KEPT` (a lapsed record), so that an
  execution stopped at a step's approval is still refused after another one acted on it;
- cooldowns: from each admission, and from the end of each execution of the window
  (an unfinished one: from now, the least its end will set);
- rate-limit and budget histories: the admissions of the window (an admitted decision at its
  time; one approved later at its end, or now if unfinished: no earlier than its admission).

It cannot know, and does not pretend to: the circuit breakers (consecutive failures need
to know which failures count, which only the release that fed them knew: they start
closed), the outcome records of releases (none is needed: a release waiting for the
rebuild lands after it), the histories of playbooks removed since (their rate limit is
unknown; budgets still count them), and cooldowns of executions that ran longer than the
look-back.  docs/operations.md says so.

Plain reads of the store's roles (:class:`SeedStore`), planned with the playbooks as loaded
now, the same way a resumed execution rebuilds its guardrail request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from remediator.core.alerts import parse_time
from remediator.core.decisions import DecisionKind, ResolvedTarget
from remediator.core.guardrails import LOCK_RECORD_KEPT, Policy
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import Playbook, PlaybookSet
from remediator.ports import AWAITING_APPROVAL, AlertHistory, AuditLog, DecisionQuery, ExecutionLedger, KillSwitchStore

#: Decisions read per page while rebuilding.
PAGE = 1000
#: An approval-gated decision whose execution ended with one of these was never admitted.
NEVER_ADMITTED = frozenset({AWAITING_APPROVAL, "denied", "refused", "expired", "resolved_cancelled"})


class SeedStore(ExecutionLedger, AuditLog, AlertHistory, KillSwitchStore, Protocol):
    """The store's roles a rebuild reads (every store implements them)."""


@dataclass(frozen=True)
class Held:
    """An unfinished execution's lock and slot (``live``), or a finished one's record: the target's last holder."""

    owner: str
    target_key: str
    namespace: str
    expires: float
    live: bool


@dataclass
class Seed:
    """What the state is re-seeded with; every time is epoch seconds."""

    paused: bool = False
    locks: dict[str, Held] = field(default_factory=dict)  # target key -> its holder
    cooldowns: dict[str, float] = field(default_factory=dict)  # limit key -> until
    rates: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)  # limit key -> (per, owner -> at)
    budgets: dict[str, dict[str, float]] = field(default_factory=dict)  # scope -> owner -> at

    def summary(self) -> dict[str, int | bool]:
        return {"paused": self.paused, "locks": sum(h.live for h in self.locks.values()),
                "last_holders": sum(not h.live for h in self.locks.values()), "cooldowns": len(self.cooldowns),
                "rate_entries": sum(len(e) for _, e in self.rates.values()),
                "budget_entries": sum(len(e) for e in self.budgets.values())}


@dataclass(frozen=True)
class _Limits:
    """One admission's keys and windows, from its playbook as loaded now."""

    limit_key: str
    namespace: str
    cooldown: float
    rate_per: float
    lock_ttl: float


class Rebuilder:
    """Reads a :class:`Seed` from the store; called by the Redis adapter when it finds its state lost."""

    def __init__(self, store: SeedStore, playbooks: Callable[[], PlaybookSet], policy: Policy) -> None:
        self._store = store
        self._playbooks = playbooks
        self._policy = policy

    async def __call__(self, now: float) -> Seed:
        """Raises StoreUnavailable when the store cannot answer (then nothing is seeded)."""
        seed = Seed()
        record = await self._store.kill_switch()
        seed.paused = bool(record and record.paused)
        playbooks = self._playbooks()
        for did in await self._store.unfinished_executions():
            decision = await self._store.decision(did)
            if decision is None or decision.target is None or decision.dry_run:
                continue  # a plan-only execution holds no lock
            limits = await self._limits(playbooks.by_name(decision.playbook), decision.playbook, decision.target,
                                        decision.alert_key)
            seed.locks[decision.target.key] = Held(did, decision.target.key, limits.namespace,
                                                   now + limits.lock_ttl, live=True)
            _later(seed.cooldowns, limits.limit_key, now + limits.cooldown if limits.cooldown else 0.0)
        budget_keep = 2 * self._policy.longest_budget
        lookback = max([LOCK_RECORD_KEPT, budget_keep]
                       + [2 * p.guardrails.rate_limit.per for p in playbooks.playbooks if p.guardrails.rate_limit]
                       + [p.guardrails.cooldown for p in playbooks.playbooks])
        last: dict[str, float] = {}  # target key -> when its recorded holder was admitted
        async for entry in self._admitted(datetime.fromtimestamp(now - lookback, UTC)):
            target = ResolvedTarget(**entry["target"])
            playbook = playbooks.by_name(entry["playbook"])
            limits = await self._limits(playbook, entry["playbook"], target, entry["alert"])
            status = entry["status"]
            ended = parse_time(entry["finished_at"]).timestamp() if entry.get("finished_at") else None
            decided = parse_time(entry["at"]).timestamp()
            # admitted when decided; approved later: at its end at the latest (unfinished: now)
            at = decided if entry["decision"] == DecisionKind.EXECUTED.value else min(ended or now, now)
            if limits.cooldown:
                _later(seed.cooldowns, limits.limit_key, max(at, ended or now) + limits.cooldown)
            if playbook is not None and playbook.guardrails.rate_limit and at > now - 2 * limits.rate_per:
                seed.rates.setdefault(limits.limit_key, (limits.rate_per, {}))[1][entry["id"]] = at
            if at > now - budget_keep:
                for _, budget in self._policy.budgets_for(target.namespace):
                    seed.budgets.setdefault(budget.scope, {})[entry["id"]] = at
            held = seed.locks.get(target.key)
            if (held is None or not held.live) and at >= last.get(target.key, 0.0) and status not in ("pending",
                                                                                                     "running"):
                last[target.key] = at
                seed.locks[target.key] = Held(entry["id"], target.key, target.namespace, min(ended or at, now),
                                              live=False)
        seed.cooldowns = {k: v for k, v in seed.cooldowns.items() if v > now}
        return seed

    async def _admitted(self, since: datetime) -> Any:
        """Every admitted, live decision since ``since``, newest first: the executed ones, and the
        approval-gated ones that were approved."""
        for kind in (DecisionKind.EXECUTED, DecisionKind.AWAITING_APPROVAL):
            before: str | None = None
            while True:
                page = await self._store.query_decisions(DecisionQuery(kinds=(kind,), since=since, limit=PAGE,
                                                                       before=before))
                for entry in page:
                    if entry.get("target") and not entry.get("dry_run") and (
                            kind is DecisionKind.EXECUTED or entry.get("status") not in NEVER_ADMITTED):
                        yield entry
                if len(page) < PAGE:
                    break
                before = page[-1]["id"]

    async def _limits(self, playbook: Playbook | None, name: str, target: ResolvedTarget, alert_key: str) -> _Limits:
        """The keys and windows an admission of ``playbook`` on ``target`` used: its rate limit's key
        rendered from the recorded alert when it has one of its own (as a resumed execution does)."""
        key = f"{name}|{target.key}"
        if playbook is None:
            return _Limits(key, target.namespace, 0.0, 0.0, 600.0)
        g = playbook.guardrails
        if g.rate_limit and g.rate_limit.key and (alert := await self._store.recorded_alert(alert_key)) is not None:
            plan = make_plan(playbook, alert, global_dry_run=False)
            if isinstance(plan, Plan) and plan.target == target:
                key = plan.limit_key
        return _Limits(key, target.namespace, g.cooldown, g.rate_limit.per if g.rate_limit else 0.0, g.lock_ttl)


def _later(times: dict[str, float], key: str, at: float) -> None:
    if at > times.get(key, 0.0):
        times[key] = at
