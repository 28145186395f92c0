"""Guardrail decisions: may this plan execute now?

The rules live here as pure functions over a :class:`GuardState` snapshot, so the
embedded adapter runs them directly and the Redis adapter's Lua mirrors them; one
contract test suite keeps the two in agreement.  Order matters and is documented:
paused, circuit breaker, lock, cooldown, rate limit, budgets, concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from remediator.core.decisions import DecisionKind


@dataclass(frozen=True)
class Budget:
    """At most ``max`` executions per ``per`` seconds in a scope ('*' or a namespace)."""

    scope: str
    max: int
    per: float


@dataclass(frozen=True)
class Policy:
    """Daemon-wide limits from the configuration."""

    budgets: tuple[Budget, ...] = ()
    max_running: int = 0  # 0 = unlimited
    max_running_per_namespace: int = 0
    breaker_threshold: int = 0  # consecutive failures that open a playbook's breaker; 0 = off
    breaker_cooloff: float = 600.0


@dataclass(frozen=True)
class Request:
    """One attempt to execute; ``owner`` (the execution id) owns the lock it takes."""

    owner: str
    playbook: str
    target_key: str
    limit_key: str
    namespace: str
    now: float
    rate_max: int = 0
    rate_per: float = 0.0
    cooldown: float = 0.0
    lock_ttl: float = 600.0


@dataclass(frozen=True)
class Verdict:
    kind: DecisionKind
    reason: str

    @property
    def admitted(self) -> bool:
        return self.kind is DecisionKind.EXECUTED


@dataclass(frozen=True)
class Lock:
    owner: str
    expires: float


@dataclass(frozen=True)
class Breaker:
    failures: int = 0
    open_until: float = 0.0
    trial_owner: str = ""  # half-open: the one execution allowed through


@dataclass
class GuardState:
    """Everything the rules read; the embedded adapter keeps exactly this."""

    paused: bool = False
    locks: dict[str, Lock] = field(default_factory=dict)
    cooldown_until: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)  # limit key -> execution times
    budget_history: dict[str, list[float]] = field(default_factory=dict)  # scope -> execution times
    running: dict[str, str] = field(default_factory=dict)  # owner -> namespace
    breakers: dict[str, Breaker] = field(default_factory=dict)


def _window(times: list[float], now: float, per: float) -> list[float]:
    return [t for t in times if t > now - per]


def evaluate(req: Request, state: GuardState, policy: Policy) -> Verdict:
    """Decide without changing anything."""
    now = req.now
    if state.paused:
        return Verdict(DecisionKind.PAUSED, "remediation is paused (kill switch)")
    br = state.breakers.get(req.playbook, Breaker())
    if policy.breaker_threshold and br.failures >= policy.breaker_threshold:
        if now < br.open_until:
            return Verdict(
                DecisionKind.CIRCUIT_OPEN,
                f"circuit open after {br.failures} consecutive failures, until {br.open_until - now:.0f}s from now",
            )
        if br.trial_owner and br.trial_owner != req.owner:
            return Verdict(DecisionKind.CIRCUIT_OPEN, "circuit half-open: a trial execution is already running")
    lock = state.locks.get(req.target_key)
    if lock and lock.expires > now and lock.owner != req.owner:
        return Verdict(DecisionKind.LOCKED, f"{req.target_key} is locked by execution {lock.owner}")
    until = state.cooldown_until.get(req.limit_key, 0.0)
    if now < until:
        return Verdict(DecisionKind.COOLDOWN, f"in cooldown for another {until - now:.0f}s")
    if req.rate_max:
        recent = _window(state.history.get(req.limit_key, []), now, req.rate_per)
        if len(recent) >= req.rate_max:
            return Verdict(
                DecisionKind.RATE_LIMITED,
                f"rate limit reached: {len(recent)} executions in the last {req.rate_per:.0f}s",
            )
    for b in policy.budgets:
        if b.scope not in ("*", req.namespace):
            continue
        used = _window(state.budget_history.get(b.scope, []), now, b.per)
        if len(used) >= b.max:
            scope = "global" if b.scope == "*" else f"namespace {b.scope}"
            return Verdict(DecisionKind.BUDGET_EXHAUSTED, f"{scope} budget of {b.max} per {b.per:.0f}s exhausted")
    running = {o: ns for o, ns in state.running.items() if o != req.owner}
    if policy.max_running and len(running) >= policy.max_running:
        return Verdict(
            DecisionKind.BUDGET_EXHAUSTED, f"{len(running)} executions already running (max {policy.max_running})"
        )
    if policy.max_running_per_namespace:
        in_ns = sum(1 for ns in running.values() if ns == req.namespace)
        if in_ns >= policy.max_running_per_namespace:
            return Verdict(
                DecisionKind.BUDGET_EXHAUSTED, f"{in_ns} executions already running in namespace {req.namespace}"
            )
    return Verdict(DecisionKind.EXECUTED, "all guardrails passed")


def admit(req: Request, state: GuardState, policy: Policy) -> Verdict:
    """Evaluate and, when admitted, record the execution start in ``state``."""
    verdict = evaluate(req, state, policy)
    if not verdict.admitted:
        return verdict
    now = req.now
    state.locks[req.target_key] = Lock(req.owner, now + req.lock_ttl)
    if req.cooldown:
        state.cooldown_until[req.limit_key] = now + req.cooldown
    if req.rate_max:
        window = _window(state.history.get(req.limit_key, []), now, req.rate_per)
        state.history[req.limit_key] = [*window, now]
    longest = max((b.per for b in policy.budgets), default=0.0)
    for b in policy.budgets:
        if b.scope in ("*", req.namespace):
            state.budget_history[b.scope] = [*_window(state.budget_history.get(b.scope, []), now, longest), now]
    state.running[req.owner] = req.namespace
    br = state.breakers.get(req.playbook, Breaker())
    if policy.breaker_threshold and br.failures >= policy.breaker_threshold:
        state.breakers[req.playbook] = replace(br, trial_owner=req.owner)
    return verdict


def renew(req: Request, state: GuardState, now: float) -> bool:
    """Extend the owner's lock; False if it was lost (expired and taken)."""
    lock = state.locks.get(req.target_key)
    if lock is None or lock.owner != req.owner:
        return False
    state.locks[req.target_key] = Lock(req.owner, now + req.lock_ttl)
    return True


def release(req: Request, state: GuardState, policy: Policy, *, succeeded: bool, now: float) -> None:
    """Free the lock (only its owner may), restart the cooldown, feed the breaker."""
    lock = state.locks.get(req.target_key)
    if lock is not None and lock.owner == req.owner:
        del state.locks[req.target_key]
    state.running.pop(req.owner, None)
    if req.cooldown:
        state.cooldown_until[req.limit_key] = max(state.cooldown_until.get(req.limit_key, 0.0), now + req.cooldown)
    br = state.breakers.get(req.playbook, Breaker())
    if succeeded:
        state.breakers.pop(req.playbook, None)
    elif policy.breaker_threshold:
        failures = br.failures + 1
        open_until = now + policy.breaker_cooloff if failures >= policy.breaker_threshold else br.open_until
        state.breakers[req.playbook] = Breaker(failures, open_until, "")
