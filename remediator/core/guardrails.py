"""Guardrail decisions: may this plan execute now?

The rules live here as pure functions over a :class:`GuardState` snapshot, so the
embedded adapter runs them directly and the Redis adapter's Lua mirrors them; one
contract test suite keeps the two in agreement.  Order matters and is documented:
paused, circuit breaker, lock, cooldown, rate limit, budgets, concurrency.

A check yields a :class:`Finding` (a code and the facts behind it) and only
:func:`explain` turns findings into reasons, so both adapters word every decision
identically.

Time is always the caller's ``now`` (from the injectable clock), never a server's, so
replay runs the same rules on virtual time.  Everything that can lapse carries its
own expiry (locks, running slots, cooldowns, windows): a crashed holder frees its
lock and its concurrency slot by itself, and :func:`collect` may drop lapsed entries
at any time without changing a single verdict.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from remediator.core.alerts import format_time
from remediator.core.decisions import DecisionKind
from remediator.core.durations import format_duration
from remediator.core.frozen import fast_frozen


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

    @property
    def longest_budget(self) -> float:
        """How far back budget history matters: scopes share one history across their budgets."""
        return max((b.per for b in self.budgets), default=0.0)

    def budgets_for(self, namespace: str) -> list[tuple[int, Budget]]:
        """The budgets (with their position, which names them in a finding) that bind a namespace."""
        return [(i, b) for i, b in enumerate(self.budgets) if b.scope in ("*", namespace)]


@fast_frozen
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


@fast_frozen
@dataclass(frozen=True)
class Verdict:
    kind: DecisionKind
    reason: str
    holder: str = ""  # LOCKED: the execution that holds the target's lock

    @property
    def admitted(self) -> bool:
        return self.kind is DecisionKind.EXECUTED


#: How long a lock's record (its last owner) outlives its expiry or release, in seconds: far
#: longer than an execution waits to be resumed (a lease period; longer only through an
#: outage), so a resumed execution learns that another one held its target meanwhile (see
#: :func:`reacquire`).  Past it, the executor's own check still refuses to re-apply a write
#: the target no longer holds the premise of.  Kept short because the embedded state keeps
#: one record per target touched, and rewrites them all on every change.
LOCK_RECORD_KEPT = 86400.0

#: How long the state remembers, per execution, that its release told the breaker an outcome, in
#: seconds: a release applied again within it changes the breaker no more (see :func:`release`).
#: Its copies come within moments (a script sent again over a lost reply) or, from a replica that
#: retries a release it never heard land, once the state is reachable again: a day outlasts any
#: outage that leaves the daemon running.  One record per finished execution, kept as long as a
#: lock's record for the same reason of size.
OUTCOME_RECORD_KEPT = LOCK_RECORD_KEPT


@fast_frozen
@dataclass(frozen=True)
class Lock:
    """A target's lock; once ``expires`` has passed it is free, but its owner stays on record."""

    owner: str
    expires: float


@fast_frozen
@dataclass(frozen=True)
class Slot:
    """A running execution's share of the concurrency limits; it lapses with the lock."""

    namespace: str
    expires: float


@dataclass(frozen=True)
class Breaker:
    failures: int = 0
    open_until: float = 0.0
    trial_owner: str = ""  # half-open: the one execution allowed through


#: A playbook's breaker before its first failure (frozen: one serves them all, made once).
CLOSED_BREAKER = Breaker()


@dataclass
class GuardState:
    """Everything the rules read; the embedded adapter keeps exactly this."""

    paused: bool = False
    locks: dict[str, Lock] = field(default_factory=dict)
    cooldown_until: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)  # limit key -> execution times
    history_per: dict[str, float] = field(default_factory=dict)  # limit key -> its window (for collect)
    budget_history: dict[str, list[float]] = field(default_factory=dict)  # scope -> execution times
    running: dict[str, Slot] = field(default_factory=dict)  # owner -> slot
    breakers: dict[str, Breaker] = field(default_factory=dict)
    outcomes: dict[str, float] = field(default_factory=dict)  # owner -> until when its counted outcome is kept


class Check(enum.StrEnum):
    """What a check found; the Redis scripts return the same codes."""

    PASSED = "passed"
    PAUSED = "paused"
    OPEN = "open"
    HALF_OPEN = "half_open"
    LOCKED = "locked"
    COOLDOWN = "cooldown"
    RATE = "rate"
    BUDGET = "budget"
    RUNNING = "running"
    RUNNING_NS = "running_ns"


@fast_frozen
@dataclass(frozen=True)
class Finding:
    """A check's outcome with the figures its reason needs, so a refusal can say how far off the
    next chance is rather than only that there was none.

    ``at`` is a time: when the breaker closes, the cooldown ends, or (rate limit, budget) when
    enough executions have left the window for one more to fit, were nothing else admitted.
    ``count`` is the consecutive failures, the executions in the window or the running ones.
    """

    check: Check
    at: float = 0.0
    count: int = 0
    holder: str = ""  # the lock's owner
    budget: int = 0  # BUDGET: the exhausted budget's position in the policy


def _moment(at: float) -> str:
    """A time in a reason: RFC 3339 UTC, to the second, rounded up (so "next allowed at" is never early)."""
    return format_time(datetime.fromtimestamp(math.ceil(at), UTC))


def _span(seconds: float) -> str:
    """A duration in a reason, in the playbooks' own grammar (``1h``, ``5m``), rounded up to the second."""
    return format_duration(math.ceil(seconds))


def explain(finding: Finding, req: Request, policy: Policy) -> Verdict:
    """The one place a finding becomes a decision kind and a human reason."""
    now = req.now
    match finding.check:
        case Check.PASSED:
            return _ALL_PASSED
        case Check.PAUSED:
            return Verdict(DecisionKind.PAUSED, "remediation is paused (kill switch)")
        case Check.OPEN:
            return Verdict(
                DecisionKind.CIRCUIT_OPEN,
                f"circuit open after {finding.count} consecutive failures, until {_moment(finding.at)}",
            )
        case Check.HALF_OPEN:
            return Verdict(DecisionKind.CIRCUIT_OPEN, "circuit half-open: a trial execution is already running")
        case Check.LOCKED:
            return Verdict(DecisionKind.LOCKED, f"{req.target_key} is locked by execution {finding.holder}",
                           finding.holder)
        case Check.COOLDOWN:
            return Verdict(
                DecisionKind.COOLDOWN, f"in cooldown until {_moment(finding.at)} (another {_span(finding.at - now)})"
            )
        case Check.RATE:
            return Verdict(
                DecisionKind.RATE_LIMITED,
                f"rate limited: {finding.count} of {req.rate_max} executions in the last {_span(req.rate_per)}; "
                f"next allowed at {_moment(finding.at)}",
            )
        case Check.BUDGET:
            b = policy.budgets[finding.budget]
            scope = "global" if b.scope == "*" else f"namespace {b.scope}"
            return Verdict(
                DecisionKind.BUDGET_EXHAUSTED,
                f"{scope} budget of {b.max} per {_span(b.per)} exhausted ({finding.count} used); "
                f"next at {_moment(finding.at)}",
            )
        case Check.RUNNING:
            return Verdict(
                DecisionKind.BUDGET_EXHAUSTED,
                f"{finding.count} executions already running (max {policy.max_running})",
            )
        case Check.RUNNING_NS:
            return Verdict(
                DecisionKind.BUDGET_EXHAUSTED,
                f"{finding.count} executions already running in namespace {req.namespace}",
            )


_ALL_PASSED = Verdict(DecisionKind.EXECUTED, "all guardrails passed")
_PASSED = Finding(Check.PASSED)


def _window(times: list[float], now: float, per: float) -> list[float]:
    return [t for t in times if t > now - per]


def _room_at(window: list[float], limit: int, per: float) -> float:
    """When the window holds fewer than ``limit`` again (counting only what is in it now): the
    time its ``len - limit + 1``-th oldest entry leaves.  Usually the oldest, but late requests
    from other replicas can leave more than ``limit`` inside."""
    return sorted(window)[len(window) - limit] + per


def _live_slots(state: GuardState, now: float, *, besides: str) -> dict[str, Slot]:
    return {o: s for o, s in state.running.items() if o != besides and s.expires > now}


def check(req: Request, state: GuardState, policy: Policy) -> Finding:
    """Run the checks in order; the first that refuses wins.

    A live lock refuses everyone, its own owner included: replicas with separate audit
    stores compute the same execution id for the same alert, so the owner alone cannot
    tell a retry from another replica's copy, and only a refusal is safe.  The owner
    keeps its lock by renewing it, not by being admitted again.
    """
    now = req.now
    if state.paused:
        return Finding(Check.PAUSED)
    br = state.breakers.get(req.playbook, CLOSED_BREAKER)
    if policy.breaker_threshold and br.failures >= policy.breaker_threshold:
        if now < br.open_until:
            return Finding(Check.OPEN, at=br.open_until, count=br.failures)
        trial = state.running.get(br.trial_owner)
        if br.trial_owner and br.trial_owner != req.owner and trial is not None and trial.expires > now:
            return Finding(Check.HALF_OPEN)  # a trial whose holder crashed lapses with its slot
    lock = state.locks.get(req.target_key)
    if lock and lock.expires > now:
        return Finding(Check.LOCKED, holder=lock.owner)
    until = state.cooldown_until.get(req.limit_key, 0.0)
    if now < until:
        return Finding(Check.COOLDOWN, at=until)
    if req.rate_max:
        recent = _window(state.history.get(req.limit_key, []), now, req.rate_per)
        if len(recent) >= req.rate_max:
            return Finding(Check.RATE, at=_room_at(recent, req.rate_max, req.rate_per), count=len(recent))
    for i, b in policy.budgets_for(req.namespace):
        used = _window(state.budget_history.get(b.scope, []), now, b.per)
        if len(used) >= b.max:
            return Finding(Check.BUDGET, at=_room_at(used, b.max, b.per), count=len(used), budget=i)
    return _concurrency(req, state, policy, now)


def _concurrency(req: Request, state: GuardState, policy: Policy, now: float) -> Finding:
    """The concurrency limits: the last of admission's checks, and all that :func:`take_back` checks."""
    if not (policy.max_running or policy.max_running_per_namespace):
        return _PASSED
    running = _live_slots(state, now, besides=req.owner)
    if policy.max_running and len(running) >= policy.max_running:
        return Finding(Check.RUNNING, count=len(running))
    if policy.max_running_per_namespace:
        in_ns = sum(1 for s in running.values() if s.namespace == req.namespace)
        if in_ns >= policy.max_running_per_namespace:
            return Finding(Check.RUNNING_NS, count=in_ns)
    return _PASSED


def evaluate(req: Request, state: GuardState, policy: Policy) -> Verdict:
    """Decide without changing anything: exactly the verdict :func:`admit` would give now.

    Plan-only (dry-run) executions ask this, so they see the guardrails without consuming
    them: no lock, cooldown, rate or budget history, concurrency slot or breaker trial.  A
    half-open breaker with no live trial answers EXECUTED, as :func:`admit` would, but the
    request does not become its trial: the next admission may still claim it.
    """
    return explain(check(req, state, policy), req, policy)


def admit(req: Request, state: GuardState, policy: Policy) -> Verdict:
    """Evaluate and, when admitted, record the execution start in ``state``."""
    verdict = evaluate(req, state, policy)
    if not verdict.admitted:
        return verdict
    now = req.now
    state.locks[req.target_key] = Lock(req.owner, now + req.lock_ttl)
    if req.cooldown:
        state.cooldown_until[req.limit_key] = now + req.cooldown
    # History is kept for twice its window: replicas take ``now`` before they call, so requests
    # may arrive slightly out of time order, and a late one must still count every execution
    # inside its own window.
    if req.rate_max:
        window = _window(state.history.get(req.limit_key, []), now, 2 * req.rate_per)
        state.history[req.limit_key] = [*window, now]
        state.history_per[req.limit_key] = req.rate_per
    longest = policy.longest_budget
    for scope in dict.fromkeys(b.scope for _, b in policy.budgets_for(req.namespace)):  # once per scope
        state.budget_history[scope] = [*_window(state.budget_history.get(scope, []), now, 2 * longest), now]
    state.running[req.owner] = Slot(req.namespace, now + req.lock_ttl)
    br = state.breakers.get(req.playbook, CLOSED_BREAKER)
    if policy.breaker_threshold and br.failures >= policy.breaker_threshold:
        state.breakers[req.playbook] = replace(br, trial_owner=req.owner)
    return verdict


def _hold(req: Request, state: GuardState, now: float) -> None:
    """Hold the target's lock and the execution's slot for ``lock_ttl`` more (RENEW, REACQUIRE and
    TAKE_BACK share this, as their Lua scripts share ``_HOLD_LOCK``)."""
    state.locks[req.target_key] = Lock(req.owner, now + req.lock_ttl)
    state.running[req.owner] = Slot(req.namespace, now + req.lock_ttl)


def renew(req: Request, state: GuardState, now: float) -> bool:
    """Extend the owner's live lock and slot; False if it lapsed or another owner holds it."""
    lock = state.locks.get(req.target_key)
    if lock is None or lock.owner != req.owner or lock.expires <= now:
        return False
    _hold(req, state, now)
    return True


def reacquire(req: Request, state: GuardState, now: float) -> bool:
    """Take the target's lock back for an execution that is resuming (after a restart or a
    renewal gap): only while this execution was its last holder (live or lapsed).

    False once another execution has held it since, even if that one has finished and
    released it: whatever it did to the target came after this execution's plan, and
    acting on again would revert it.  The lock's record outlives its release for
    :data:`LOCK_RECORD_KEPT` so that this stays known.

    Not a new admission: its limits were counted when it was first admitted.
    """
    lock = state.locks.get(req.target_key)
    if lock is not None and lock.owner != req.owner:
        return False
    _hold(req, state, now)
    return True


def take_back(req: Request, state: GuardState, policy: Policy, now: float) -> Finding:
    """:func:`reacquire` for an execution that gave its lock and slot up to wait for a person (a
    step's approval) and goes on now: the lock on the same terms (LOCKED: another execution has
    held the target since), the slot only within the concurrency limits (RUNNING, RUNNING_NS:
    the executions running now fill them).  A slot given up is not the execution's any more, so
    taking it back is taking a new one; its rate and budget, counted when it was admitted, are not
    counted again."""
    lock = state.locks.get(req.target_key)
    if lock is not None and lock.owner != req.owner:
        return Finding(Check.LOCKED, holder=lock.owner)
    finding = _concurrency(req, state, policy, now)
    if finding.check is Check.PASSED:
        _hold(req, state, now)
    return finding


def go_on_as_trial(req: Request, state: GuardState, policy: Policy, now: float) -> bool:
    """Whether an admitted execution that its playbook's breaker stopped (it was admitted before the
    breaker opened) may take its next step now: closed, yes; open, no; half-open, only as the breaker's
    one trial, taking the role when no live trial holds it.

    Why: half-open lets one execution through to find out whether the remediation works again.
    Without this the executions an open breaker stopped half way all went on the moment it cooled
    off, none of them its trial, and a remediation that still fails ran once for each of them."""
    br = state.breakers.get(req.playbook, CLOSED_BREAKER)
    if not (policy.breaker_threshold and br.failures >= policy.breaker_threshold):
        return True
    if now < br.open_until:
        return False
    if br.trial_owner and br.trial_owner != req.owner:
        trial = state.running.get(br.trial_owner)
        if trial is not None and trial.expires > now:
            return False
    if br.trial_owner != req.owner:
        state.breakers[req.playbook] = replace(br, trial_owner=req.owner)
    return True


def abandon(req: Request, state: GuardState) -> None:
    """Admitted, but nothing will run under this admission (its decision was not recorded: the
    store failed, or another replica recorded it first): free the lock and the concurrency slot
    now rather than at their TTL, so that the retry of the same execution is not refused by its
    own lock.

    The lock is left lapsed, not deleted: its record keeps this owner, lapsed at ``req.now``
    (when it was taken), as :func:`release` leaves one.  Admission overwrote the record of
    whoever held the target before, so deleting it would also erase the fact that another
    execution held the target since an execution stopped (at a step's gate, or interrupted),
    and :func:`take_back` / :func:`reacquire` would then let that one run its stale plan over
    the other's change.  What the record said before is not kept, so it cannot be restored;
    keeping this owner errs towards refusing a stopped execution that nobody else touched the
    target of (it ends refused as superseded, unrun), never towards running a stale one.  The
    owner itself is still admitted (a lapsed lock binds nobody) and still takes it back.

    Rate, budget and cooldown bookkeeping stay as admitted: counting an execution that did
    not happen errs towards doing less, which is the safe side; the breaker is not fed.
    """
    lock = state.locks.get(req.target_key)
    if lock is not None and lock.owner == req.owner:
        state.locks[req.target_key] = Lock(req.owner, min(lock.expires, req.now))
    state.running.pop(req.owner, None)


def release(req: Request, state: GuardState, policy: Policy, *, succeeded: bool | None, now: float) -> None:
    """Free the lock (only its owner may), restart the cooldown, feed the breaker.

    The freed lock keeps its record (owner, lapsed now) so that :func:`reacquire` knows who
    held the target last.  ``succeeded=None`` leaves the breaker as it is: the execution
    tried nothing that could tell whether the remediation works (the alert named something
    that does not exist, the target changed under it).

    Applied twice, it is applied once.  A release can reach the state more than once: the
    Redis client sends a script again when the connection died before its reply, which Redis
    may have run already, and a replica retries a release it never heard land until the state
    answers.  Counted each time, one failed execution opened a breaker whose threshold was
    two.  So a release with an outcome leaves a record of it under the execution's id (for
    :data:`OUTCOME_RECORD_KEPT`), and one that finds that record leaves the breaker alone: a
    success applied again cannot close a breaker that another execution's failure fed
    meanwhile either.  An execution tells one outcome, at its end (a stop at a step's gate
    tells none), so no later outcome is lost to the record.  The rest needs none: freeing the
    lock and slot again changes nothing, and the cooldown runs to the later of its end and
    ``now + cooldown``, where a retry's remaining cooldown leaves it.
    """
    lock = state.locks.get(req.target_key)
    if lock is not None and lock.owner == req.owner:
        state.locks[req.target_key] = Lock(req.owner, min(lock.expires, now))
    state.running.pop(req.owner, None)
    if req.cooldown:
        state.cooldown_until[req.limit_key] = max(state.cooldown_until.get(req.limit_key, 0.0), now + req.cooldown)
    br = state.breakers.get(req.playbook, CLOSED_BREAKER)
    if succeeded is None or state.outcomes.get(req.owner, 0.0) > now:
        return
    state.outcomes[req.owner] = now + OUTCOME_RECORD_KEPT
    if succeeded:
        state.breakers.pop(req.playbook, None)
    elif policy.breaker_threshold:
        failures = br.failures + 1
        open_until = now + policy.breaker_cooloff if failures >= policy.breaker_threshold else br.open_until
        state.breakers[req.playbook] = Breaker(failures, open_until, "")


def collect(state: GuardState, policy: Policy, now: float, grace: float) -> None:
    """Drop what has lapsed, so persisted state does not grow with every target ever seen.

    Nothing dropped could change a verdict: lapsed slots and cooldowns act as absent, a
    lapsed lock's record is kept :data:`LOCK_RECORD_KEPT` for :func:`reacquire`, and
    history outside every window is never counted.  ``grace`` keeps a
    window's history a while longer in case a playbook widens its ``per``.
    """
    state.locks = {k: v for k, v in state.locks.items() if v.expires + LOCK_RECORD_KEPT > now}
    state.running = {k: v for k, v in state.running.items() if v.expires > now}
    state.cooldown_until = {k: v for k, v in state.cooldown_until.items() if v > now}
    state.outcomes = {k: v for k, v in state.outcomes.items() if v > now}
    for key in list(state.history):
        per = 2 * state.history_per.get(key, 0.0) + grace
        kept = _window(state.history[key], now, per)
        if kept:
            state.history[key] = kept
        else:
            del state.history[key]
            state.history_per.pop(key, None)
    for key in [k for k in state.history_per if k not in state.history]:
        del state.history_per[key]
    longest = 2 * policy.longest_budget + grace
    state.budget_history = {
        k: kept for k, times in state.budget_history.items() if (kept := _window(times, now, longest))
    }


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerView:
    """A playbook's circuit breaker as the API and ``/metrics`` show it."""

    state: BreakerState
    failures: int
    open_until: float
    trial_owner: str

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.failures,
            "open_until": datetime.fromtimestamp(self.open_until, UTC).isoformat() if self.open_until else None,
            "trial_execution": self.trial_owner or None,
        }


@dataclass(frozen=True)
class GuardStatus:
    paused: bool
    breakers: Mapping[str, BreakerView]


@dataclass(frozen=True)
class BudgetUse:
    """A budget as the guardrails panel shows it: executions counted in its window now, and when
    one more fits again (0 while there is room)."""

    scope: str
    max: int
    per: float
    used: int
    next_at: float = 0.0


@dataclass(frozen=True)
class GuardUsage:
    """What the guardrail state holds right now, beside the switch and the breakers: each budget's
    use, the live concurrency slots (execution id -> slot) and the live target locks (target ->
    lock).  Lapsed slots and locks are left out: they bind nobody (a lapsed lock's record only
    tells a resuming execution who held the target last)."""

    budgets: tuple[BudgetUse, ...] = ()
    running: Mapping[str, Slot] = field(default_factory=dict)
    locks: Mapping[str, Lock] = field(default_factory=dict)
    #: The adapter stopped listing locks at its cap with lock records unread (there may be more).
    locks_cut: bool = False

    def to_json(self) -> dict[str, object]:
        """As ``GET /api/v1/guardrails`` shows it (times as the breakers' are, RFC 3339 UTC)."""

        def moment(at: float) -> str:
            return datetime.fromtimestamp(at, UTC).isoformat()

        return {
            "budgets": [{"scope": b.scope, "max": b.max, "per_seconds": b.per, "used": b.used,
                         "next_at": moment(b.next_at) if b.next_at else None} for b in self.budgets],
            "running": [{"execution": owner, "namespace": slot.namespace, "until": moment(slot.expires)}
                        for owner, slot in self.running.items()],
            "locks": [{"target": target, "execution": lock.owner, "until": moment(lock.expires)}
                      for target, lock in self.locks.items()],
            "locks_cut": self.locks_cut,
        }


def usage(
    policy: Policy,
    now: float,
    budget_history: Mapping[str, list[float]],
    running: Mapping[str, Slot],
    locks: Mapping[str, Lock],
    *,
    locks_cut: bool = False,
) -> GuardUsage:
    """The usage both adapters report, from the raw state each reads: counted as :func:`check`
    counts (the same windows), so the panel says what the next admission would find.
    ``locks_cut``: the adapter listed the locks only up to its cap."""
    budgets = []
    for b in policy.budgets:
        used = _window(list(budget_history.get(b.scope, [])), now, b.per)
        room = _room_at(used, b.max, b.per) if len(used) >= b.max else 0.0
        budgets.append(BudgetUse(b.scope, b.max, b.per, len(used), room))
    return GuardUsage(
        tuple(budgets),
        {owner: slot for owner, slot in sorted(running.items()) if slot.expires > now},
        {target: lock for target, lock in sorted(locks.items()) if lock.expires > now},
        locks_cut,
    )


def breaker_view(br: Breaker, policy: Policy, now: float) -> BreakerView:
    if not policy.breaker_threshold or br.failures < policy.breaker_threshold:
        state = BreakerState.CLOSED
    else:
        state = BreakerState.OPEN if now < br.open_until else BreakerState.HALF_OPEN
    return BreakerView(state, br.failures, br.open_until, br.trial_owner)


def status(paused: bool, breakers: Mapping[str, Breaker], policy: Policy, now: float) -> GuardStatus:
    return GuardStatus(paused, {name: breaker_view(br, policy, now) for name, br in sorted(breakers.items())})


def with_playbooks(current: GuardStatus, playbooks: Iterable[str]) -> GuardStatus:
    """Add a closed breaker for every playbook without a record, so each one shows up."""
    closed = BreakerView(BreakerState.CLOSED, 0, 0.0, "")
    everyone = {name: closed for name in playbooks} | dict(current.breakers)
    return GuardStatus(current.paused, dict(sorted(everyone.items())))
