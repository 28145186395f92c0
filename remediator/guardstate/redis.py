"""Guardrail state shared by replicas, in Redis.

Admission, renewal and release are Lua scripts (:mod:`remediator.guardstate.lua`)
that run the pure rules atomically, so two replicas can never both pass a check
that only one may pass; evaluation (for plan-only executions) runs admission's checks
alone, in a script that writes nothing.  The kill switch is a key every admission
reads, so a pause binds every replica from its very next admission.

Failing closed: any Redis error or timeout becomes ``GuardrailUnavailable`` and the
pipeline starts nothing.  Timeouts are short, a failed connection is retried once at
once (the pooled connection died with a restarted server), and the pool reconnects
on its own: when Redis is back, the next admission simply works.

That retry sends a script again whenever the connection failed before its reply came,
and Redis may have run it already (the reply, not the command, was lost).  So every
script that changes the state is one that, sent twice, is applied once: RELEASE feeds
the breaker only where no record says it did for that execution already; RENEW,
REACQUIRE, TAKE_BACK, TRIAL and ABANDON write the same values again; the kill switch is
a SET or a DEL.  A second ADMIT records nothing: it meets the lock the first one took and
answers LOCKED by the execution itself, which the pipeline defers and takes over as its
own admission when it decides again (or, had a pause or the playbook's breaker opening
come in between, answers that refusal).  An admission whose reply never came (a timeout, or
that refusal) may still have been recorded; its lock and slot then lapse by their TTL,
and its cooldown, rate and budget count once, which errs on the side of doing nothing.

Clocks: every script takes its ``now`` from the calling replica (see :mod:`lua`), so a replica
whose clock is behind writes lock expiries, cooldowns and windows that end early for the others
(a lock renewed every third of its TTL lapses, for them, between two renewals once the clock is
two thirds of the TTL behind).  With ``max_clock_skew`` set, the replica measures its clock
against Redis ``TIME`` (a round trip at most every :data:`SKEW_INTERVAL`, and at once when its
wall clock jumps) and, while it is off by more, fails closed: every call that writes a time
raises ``GuardrailUnavailable``, as an unreachable Redis does (ABANDON, which only ends a lock
earlier, and the reads of the panel are left alone).

Keys are ``<prefix><kind>:<name>``; the prefix (``remediator:`` unless given, or
``?prefix=`` on the URL) separates daemons sharing one Redis.  Every per-target key
expires once it cannot matter any more; only the kill switch, the breakers (one per
playbook), a sequence counter and the state's marker stay.

A lost state (Redis restarted without persistence, flushed, failed over to a replica that never
had it) would forget the locks and slots of the executions still running, and admit a second one
on their targets.  So the state carries a marker (``<prefix>state``, no expiry, set once it is whole)
that every script admitting, keeping, taking back or freeing a lock checks in the same round trip;
without it, or when a renewal finds no record at all of the lock its execution holds, the adapter
fails closed (GuardrailUnavailable), says so once (ERROR, ``on_lost``) and rebuilds the state from
the store (``rebuild``: :mod:`remediator.guardstate.rebuild`) before setting the marker again.

Interruptions (:attr:`RedisGuardrails.interruptions`): every connection made to Redis (through ``open``:
the first ones, a pool growing, and every reconnection, including the one redis-py's retry makes
silently after a restart) and every connection error or timeout the adapter sees.  The kill switch
(:mod:`remediator.killswitch`) does not trust a reading of the store taken before the count moved: a
pause recorded while Redis was unreachable is in the store and never reached Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from remediator.core import guardrails as rules
from remediator.core.errors import GuardrailUnavailable
from remediator.core.guardrails import (
    Breaker,
    BreakerView,
    Check,
    Finding,
    GuardStatus,
    GuardUsage,
    Lock,
    Policy,
    Request,
    Slot,
    Verdict,
)
from remediator.guardstate import lua
from remediator.guardstate.rebuild import Seed
from remediator.ports import Clock

DEFAULT_PREFIX = "remediator:"
#: Live locks the guardrails panel lists at most (the first found by SCAN).
USAGE_LOCKS = 500
#: Lock records read per pipeline while listing them: a page view never sends Redis (which admits
#: every execution, single-threaded) one pipeline of a day of targets' records at once.
USAGE_CHUNK = 500
#: Seconds between two measurements of this replica's clock against Redis ``TIME``, at most.
SKEW_INTERVAL = 10.0
#: A jump of the wall clock against the monotonic one (an NTP step, a VM resumed) that has the
#: clock measured again at once, in seconds.
SKEW_JUMP = 1.0
#: The state's marker: a key with no expiry, set once the state is whole (new, or rebuilt from the
#: store).  Every script that admits, takes, keeps or frees a lock refuses to run without it.
MARKER = "state"
#: Held (SET NX, for :data:`REBUILD_LEASE` seconds) by the replica rebuilding a lost state.
REBUILDING = "rebuilding"
REBUILD_LEASE = 60.0
#: Seeding writes sent per pipeline.
SEED_CHUNK = 500
#: The operations whose scripts check the marker: one that succeeds shows the state whole.
_CHECKED = frozenset({"admit", "renew", "reacquire", "take back", "trial", "release"})
T = TypeVar("T")
Rebuild = Callable[[float], Awaitable[Seed]]


class _Connections:
    """Counts the connections redis-py makes (its ``redis_connect_func``: called for every new socket,
    then it does what redis-py would have done)."""

    def __init__(self) -> None:
        self.made = 0

    async def connected(self, connection: AbstractConnection) -> None:
        self.made += 1
        await connection.on_connect()


def split_prefix(url: str) -> tuple[str, str | None]:
    """Take ``prefix`` out of the URL's query (redis-py would reject it); the rest is for redis-py."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), None)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _glob_escape(text: str) -> str:
    """``text`` matched literally by SCAN's glob (a prefix may hold ``*``, ``?`` or ``[``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _history(keep: float, entries: dict[str, float]) -> list[str | int | float]:
    """SEED_HISTORY's arguments: how long the key is kept, then member, time pairs."""
    return [keep, *(x for owner, at in entries.items() for x in (owner, repr(at)))]


def _finding(reply: list[str]) -> Finding:
    """ADMIT's and EVALUATE's reply: ``{code, at, count, holder, budget}``, trailing ones left out."""
    code, at, count, holder, budget = [*reply, *("0", "0", "0", "", "0")[len(reply):]]
    return Finding(Check(code), at=float(at), count=int(count), holder=holder, budget=int(budget))


class RedisGuardrails:
    def __init__(
        self,
        client: Redis,
        policy: Policy,
        clock: Clock,
        *,
        prefix: str = DEFAULT_PREFIX,
        grace: float = 3600.0,
        deadline: float = 3.0,
        max_clock_skew: float = 0.0,
        on_skew: Callable[[float], None] | None = None,
        rebuild: Rebuild | None = None,
        on_lost: Callable[[str], None] | None = None,
        connections: _Connections | None = None,
    ) -> None:
        self._client = client
        self._connections = connections or _Connections()  # a client made elsewhere: its errors are counted
        self._errors = 0  # connection errors and timeouts seen (interruptions)
        self._policy = policy
        self._clock = clock
        self.prefix = prefix
        self._grace = grace
        self._deadline = deadline
        self._admit = client.register_script(lua.ADMIT)
        self._evaluate = client.register_script(lua.EVALUATE)
        self._renew = client.register_script(lua.RENEW)
        self._release = client.register_script(lua.RELEASE)
        self._abandon = client.register_script(lua.ABANDON)
        self._trial = client.register_script(lua.TRIAL)
        self._reacquire = client.register_script(lua.REACQUIRE)
        self._take_back = client.register_script(lua.TAKE_BACK)
        self._seed_lock = client.register_script(lua.SEED_LOCK)
        self._seed_cooldown = client.register_script(lua.SEED_COOLDOWN)
        self._seed_history = client.register_script(lua.SEED_HISTORY)
        # A lost state (see _state_lost): what it is rebuilt from (None: nothing, the marker is set again),
        # who is told (the metric), the rebuild under way, and since when it is known lost (None: whole).
        self._rebuild = rebuild
        self._on_lost = on_lost
        self._rebuilding: asyncio.Future[bool] | None = None
        self._lost_since: float | None = None
        # Changes this adapter made (admit, release, renew...): a prefetched verdict read before
        # the latest one is stale (prefetch_evaluations).  owner -> (changes then, request, reply).
        self._changes = 0
        self._prefetched: dict[str, tuple[int, Request, list[str]]] = {}
        # This replica's clock against Redis's: 0 never measures (a virtual clock has nothing to compare).
        self._max_skew = max_clock_skew
        self._on_skew = on_skew
        #: The last measurement: this replica's clock minus Redis's, seconds (None: not measured yet).
        self.clock_skew: float | None = None
        self._skewed = False
        self._skew_at: float | None = None  # monotonic time of the last measurement
        self._skew_base = 0.0  # wall clock minus monotonic clock then
        self._measuring: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        policy: Policy,
        clock: Clock,
        *,
        prefix: str | None = None,
        socket_timeout: float = 1.0,
        grace: float = 3600.0,
        max_clock_skew: float = 0.0,
        on_skew: Callable[[float], None] | None = None,
        rebuild: Rebuild | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> RedisGuardrails:
        """Connect lazily: an unreachable Redis at start-up fails closed like one lost later.

        A state without its marker (new, or lost while no replica ran) is seeded from ``rebuild``
        (the store: see :mod:`remediator.guardstate.rebuild`) before this returns, if it can be."""
        url, url_prefix = split_prefix(url)
        connections = _Connections()
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            redis_connect_func=connections.connected,
        )
        guard = cls(client, policy, clock, prefix=prefix or url_prefix or DEFAULT_PREFIX, grace=grace,
                    deadline=3 * socket_timeout + 0.5, max_clock_skew=max_clock_skew, on_skew=on_skew,
                    rebuild=rebuild, on_lost=on_lost, connections=connections)
        try:
            await guard.ping()
        except GuardrailUnavailable as exc:
            structlog.get_logger("remediator.guardrails").error(
                "redis unreachable: no remediation starts until it is", error=str(exc)
            )
        else:
            with contextlib.suppress(GuardrailUnavailable):  # logged as it is measured
                await guard._in_time()
            await guard._recover(force=False, at_start=True)  # else the first script finds it lost
        return guard

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}{kind}:{name}" if name else f"{self.prefix}{kind}"

    async def _guarded(self, op: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._deadline):
                reply = await call
        except ResponseError as exc:
            if lua.STATE_LOST in str(exc):
                raise self._state_lost("marker_missing", op) from exc
            if lua.NO_LOCK_RECORD in str(exc):
                raise self._state_lost("lock_record_missing", op) from exc
            raise GuardrailUnavailable(f"redis {op} failed: {exc}") from exc
        except (RedisError, OSError, TimeoutError) as exc:
            self._errors += 1
            raise GuardrailUnavailable(f"redis {op} failed: {str(exc) or type(exc).__name__}") from exc
        if op in _CHECKED:
            self._lost_since = None  # the marker was there: the state is whole (again)
        return reply

    # -- a lost state ------------------------------------------------------------------------

    def _state_lost(self, how: str, op: str) -> GuardrailUnavailable:
        """A script found the state lost: its marker missing (``marker_missing``: Redis restarted without
        persistence, was flushed or failed over to a replica that never had it), or no record at all of
        a lock its caller holds (``lock_record_missing``: a record outlives its lock by a day, so part of
        the state went).  Said once per loss (ERROR, and the metric), a rebuild from the store started
        unless one is under way, and GuardrailUnavailable returned for the caller to raise: nothing is
        admitted, taken back or kept until the rebuild has set the marker again (the pipeline defers its
        decisions and pauses its executions meanwhile, as for an unreachable Redis)."""
        if self._lost_since is None:
            self._lost_since = self._clock.monotonic()
            if self._on_lost is not None:
                self._on_lost(how)
            structlog.get_logger("remediator.guardrails").error(
                "the guardrail state was lost (Redis restarted without persistence, flushed, or failed over?): "
                "nothing is admitted or renewed until it is rebuilt from the store", detected_by=how, op=op,
                prefix=self.prefix)
        if self._rebuilding is None:
            self._rebuilding = asyncio.ensure_future(self._recover(force=how == "lock_record_missing"))
            self._rebuilding.add_done_callback(self._rebuilt)
        what = ("its marker key is missing" if how == "marker_missing"
                else "a lock this execution holds has no record at all")
        return GuardrailUnavailable(f"the guardrail state was lost ({what}): rebuilding it from the store; "
                                    f"nothing is admitted or renewed until then")

    async def recover(self) -> bool:
        """Wait for the rebuild under way, or rebuild now if the state is lost; True once it is whole
        (False: the store or Redis did not answer, or another replica is rebuilding it)."""
        if self._rebuilding is not None:
            return await asyncio.shield(self._rebuilding)
        return await self._recover(force=False)

    def _rebuilt(self, done: asyncio.Future[bool]) -> None:
        self._rebuilding = None
        if not done.cancelled():
            done.exception()  # _recover logs its own failures

    async def _bounded(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(self._deadline):
            return await call

    async def _recover(self, *, force: bool, at_start: bool = False) -> bool:
        """Rebuild the state from the store and set its marker; True when the state is whole.

        One replica at a time (the :data:`REBUILDING` key; another finding it held leaves the work to
        it, and its callers keep being deferred until the marker is back), and every write only adds
        what is missing, so a rebuild repeated (by a replica whose lease on it lapsed) or over a state
        that kept part of it changes nothing that is there.  ``force``: rebuild although the marker
        is there (a lock's record went missing under it).  Never raises: a store or Redis that does
        not answer leaves the marker missing, and the next script to find it so tries again."""
        log = structlog.get_logger("remediator.guardrails")
        token = secrets.token_hex(8)
        lease = self._key(REBUILDING)
        try:
            if not await self._bounded(self._client.set(lease, token, nx=True, px=int(REBUILD_LEASE * 1000))):
                log.info("the guardrail state is being rebuilt by another replica")
                return False
            try:
                marked: int = await self._bounded(self._client.exists(self._key(MARKER)))
                if marked and not force:
                    return True
                now = self._clock.now().timestamp()
                seed = await self._rebuild(now) if self._rebuild is not None else Seed()
                await self._seed(seed, now)
                await self._bounded(self._client.set(self._key(MARKER), f"{now!r} {token}"))
            finally:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await self._bounded(self._client.eval(
                        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end", 1, lease,
                        token))
        except Exception as exc:  # a rebuild that failed is tried again by the next script that finds it lost
            log.error("could not rebuild the guardrail state from the store: nothing is admitted until it can be",
                      error=str(exc) or type(exc).__name__)
            return False
        self._changes += 1  # verdicts prefetched before it are stale
        self._lost_since = None  # whole again: a later loss is news
        summary = seed.summary()
        if at_start and not any(summary.values()):
            log.info("guardrail state initialised (nothing to rebuild from the store)")
            return True
        if at_start and self._on_lost is not None:
            self._on_lost("startup")  # lost while no replica ran (or from a version without the marker)
        log.warning("guardrail state rebuilt from the store", forced=force, at_start=at_start, **summary)
        return True

    async def _seed(self, seed: Seed, now: float) -> None:
        """Write ``seed`` (see :mod:`lua`'s SEED scripts: each only adds what is missing)."""
        grace = self._grace
        calls: list[tuple[object, list[str], list[str | int | float]]] = []
        for held in seed.locks.values():
            calls.append((self._seed_lock, [self._key("lock", held.target_key), self._key("running"),
                                            self._key("running-ns")],
                          [held.owner, held.namespace, repr(held.expires), repr(now), grace, int(held.live)]))
        for key, until in seed.cooldowns.items():
            calls.append((self._seed_cooldown, [self._key("cooldown", key)], [repr(until), repr(now), grace]))
        for key, (per, entries) in seed.rates.items():
            calls.append((self._seed_history, [self._key("rate", key)], _history(2 * per + grace, entries)))
        for scope, entries in seed.budgets.items():
            calls.append((self._seed_history, [self._key("budget", scope)],
                          _history(2 * self._policy.longest_budget + grace, entries)))
        for start in range(0, len(calls), SEED_CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for script, keys, args in calls[start:start + SEED_CHUNK]:
                await script(keys=keys, args=args, client=pipe)  # type: ignore[operator]
            await self._bounded(pipe.execute())
        if seed.paused:
            await self._bounded(self._client.set(self._key("paused"), "1"))

    # -- this replica's clock against Redis's ------------------------------------------------

    async def _in_time(self) -> None:
        """Raise GuardrailUnavailable while this replica's clock is off Redis's by more than
        ``max_clock_skew`` (certainly: half the round trip is allowed for); measure it first when due."""
        if self._max_skew <= 0:
            return
        if self._skew_due():
            if self._measuring is None:  # one measurement for every call waiting on it
                self._measuring = asyncio.ensure_future(self._guarded("time", self._measure_skew()))
                self._measuring.add_done_callback(self._measured)
            await asyncio.shield(self._measuring)
        if self._skewed:
            raise GuardrailUnavailable(
                f"this replica's clock is {self.clock_skew:+.3f}s off the guardrail state's (Redis TIME), more "
                f"than guardrails.max_clock_skew ({self._max_skew:g}s): nothing is admitted or renewed until it "
                "is back (is NTP running on this node?)")

    def _measured(self, done: asyncio.Future[None]) -> None:
        self._measuring = None
        if not done.cancelled():
            done.exception()  # retrieved: each caller awaiting it raised it already

    def _skew_due(self) -> bool:
        if self._skew_at is None:
            return True
        mono = self._clock.monotonic()
        jump = abs(self._clock.now().timestamp() - mono - self._skew_base)
        return mono - self._skew_at >= SKEW_INTERVAL or jump > SKEW_JUMP

    async def _measure_skew(self) -> None:
        start = self._clock.monotonic()
        wall = self._clock.now().timestamp()
        seconds, micros = await self._client.time()
        half = (self._clock.monotonic() - start) / 2
        skew = wall + half - (seconds + micros / 1e6)  # Redis read its clock about halfway through
        self.clock_skew = skew
        self._skew_at, self._skew_base = start, wall - start
        if self._on_skew is not None:
            self._on_skew(skew)
        skewed = abs(skew) - half > self._max_skew  # beyond it however the round trip split
        log = structlog.get_logger("remediator.guardrails")
        if skewed and not self._skewed:
            log.error("this replica's clock is off the guardrail state's (Redis TIME) by more than "
                      "guardrails.max_clock_skew: nothing is admitted or renewed until it is back (NTP?)",
                      skew_seconds=round(skew, 3), round_trip_seconds=round(2 * half, 3), max_clock_skew=self._max_skew)
        elif self._skewed and not skewed:
            log.warning("this replica's clock is back within guardrails.max_clock_skew of the guardrail state's",
                        skew_seconds=round(skew, 3), max_clock_skew=self._max_skew)
        self._skewed = skewed

    def _admission(self, req: Request) -> tuple[list[str], list[str | int | float]]:
        """The keys and arguments of ADMIT and EVALUATE (one layout for both scripts)."""
        p = self._policy
        budgets = p.budgets_for(req.namespace)
        keys = [
            self._key("paused"),
            self._key("breaker", req.playbook),
            self._key("lock", req.target_key),
            self._key("cooldown", req.limit_key),
            self._key("rate", req.limit_key),
            self._key("running"),
            self._key("running-ns"),
            self._key("seq"),
            self._key(MARKER),
            *(self._key("budget", b.scope) for _, b in budgets),
        ]
        args: list[str | int | float] = [
            req.owner, req.namespace, req.now, req.rate_max, req.rate_per, req.cooldown, req.lock_ttl,
            p.breaker_threshold, p.max_running, p.max_running_per_namespace, self._grace, p.longest_budget,
        ]
        for i, b in budgets:
            args += [i, b.max, b.per]
        return keys, args

    async def _changing(self, op: str, call: Awaitable[T]) -> T:
        """A call that may change the state: prefetched verdicts read before it are stale.  Counted
        as it starts and as it ends, so that a reading taken while it was under way is stale too."""
        self._changes += 1
        try:
            return await self._guarded(op, call)
        finally:
            self._changes += 1

    async def admit(self, req: Request) -> Verdict:
        await self._in_time()
        keys, args = self._admission(req)
        reply = await self._changing("admit", self._admit(keys=keys, args=args))
        return rules.explain(_finding(reply), req, self._policy)

    async def evaluate(self, req: Request) -> Verdict:
        """ADMIT's checks alone, in one read-only script: nothing is written, no key created."""
        hit = self._prefetched.pop(req.owner, None)
        if hit is not None and hit[0] == self._changes and replace(hit[1], now=req.now) == req:
            return rules.explain(_finding(hit[2]), req, self._policy)
        await self._in_time()
        keys, args = self._admission(req)
        reply = await self._guarded("evaluate", self._evaluate(keys=keys, args=args))
        return rules.explain(_finding(reply), req, self._policy)

    async def prefetch_evaluations(self, requests: Sequence[Request]) -> None:
        """The read-only script for every request, pipelined: one round trip for a batch."""
        self._prefetched.clear()
        if not requests:
            return
        await self._in_time()
        pipe = self._client.pipeline(transaction=False)
        for req in requests:
            keys, args = self._admission(req)
            await self._evaluate(keys=keys, args=args, client=pipe)
        changes = self._changes
        replies = await self._guarded("evaluate", pipe.execute())
        if changes == self._changes:  # else read across a change: ask each again
            self._prefetched = {req.owner: (changes, req, reply) for req, reply in zip(requests, replies, strict=True)}

    def _hold_keys(self, req: Request) -> list[str]:
        """RENEW's, REACQUIRE's and TAKE_BACK's keys."""
        return [self._key("lock", req.target_key), self._key("running"), self._key("running-ns"), self._key(MARKER)]

    async def renew(self, req: Request) -> bool:
        await self._in_time()
        now = self._clock.now().timestamp()
        keys = self._hold_keys(req)
        args: list[str | int | float] = [req.owner, req.namespace, now, req.lock_ttl, self._grace]
        return bool(await self._changing("renew", self._renew(keys=keys, args=args)))

    async def reacquire(self, req: Request) -> bool:
        await self._in_time()
        now = self._clock.now().timestamp()
        keys = self._hold_keys(req)
        args: list[str | int | float] = [req.owner, req.namespace, now, req.lock_ttl, self._grace]
        return bool(await self._changing("reacquire", self._reacquire(keys=keys, args=args)))

    async def take_back(self, req: Request) -> Finding:
        await self._in_time()
        now = self._clock.now().timestamp()
        keys = self._hold_keys(req)
        args: list[str | int | float] = [req.owner, req.namespace, now, req.lock_ttl, self._grace,
                                         self._policy.max_running, self._policy.max_running_per_namespace]
        reply = await self._changing("take back", self._take_back(keys=keys, args=args))
        return Finding(Check.PASSED) if reply == 1 else _finding([str(x) for x in reply])

    async def go_on_as_trial(self, req: Request) -> bool:
        await self._in_time()
        keys = [self._key("breaker", req.playbook), self._key("running"), self._key(MARKER)]
        args: list[str | int | float] = [req.owner, self._clock.now().timestamp(), self._policy.breaker_threshold]
        return bool(await self._changing("trial", self._trial(keys=keys, args=args)))

    async def abandon(self, req: Request) -> None:
        keys = [self._key("lock", req.target_key), self._key("running"), self._key("running-ns")]
        await self._changing("abandon", self._abandon(keys=keys, args=[req.owner, req.now]))

    async def release(self, req: Request, *, succeeded: bool | None) -> None:
        await self._in_time()
        now = self._clock.now().timestamp()
        keys = [
            self._key("lock", req.target_key),
            self._key("running"),
            self._key("running-ns"),
            self._key("cooldown", req.limit_key),
            self._key("breaker", req.playbook),
            self._key("breakers"),
            self._key("outcome", req.owner),
            self._key(MARKER),
        ]
        args: list[str | int | float] = [
            req.owner, now, req.cooldown, "-" if succeeded is None else int(succeeded), self._policy.breaker_threshold,
            self._policy.breaker_cooloff, self._grace, req.playbook,
        ]
        await self._changing("release", self._release(keys=keys, args=args))

    @property
    def interruptions(self) -> int:
        """Connections made plus connection errors and timeouts seen (:class:`~remediator.ports.Interruptions`):
        a reading of the store taken before this moved may have missed a pause that never reached Redis."""
        return self._connections.made + self._errors

    async def paused(self) -> bool:
        return bool(await self._guarded("read pause", self._client.exists(self._key("paused"))))

    async def set_paused(self, paused: bool) -> None:
        key = self._key("paused")
        await self._changing("set pause", self._client.set(key, "1") if paused else self._client.delete(key))

    async def status(self) -> GuardStatus:
        return await self._guarded("status", self._status())

    async def _status(self) -> GuardStatus:
        names = sorted(str(n) for n in await self._client.smembers(self._key("breakers")))
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(self._key("paused"))
        for name in names:
            pipe.hmget(self._key("breaker", name), ["failures", "open_until", "trial_owner"])
        paused, *rows = await pipe.execute()
        breakers = {
            name: Breaker(int(row[0]), float(row[1] or 0.0), row[2] or "")
            for name, row in zip(names, rows, strict=True)
            if row[0] is not None
        }
        return rules.status(bool(paused), breakers, self._policy, self._clock.now().timestamp())

    async def breaker(self, playbook: str) -> BreakerView:
        return await self._guarded("read breaker", self._breaker(playbook))

    async def _breaker(self, playbook: str) -> BreakerView:
        failures, open_until, trial_owner = await self._client.hmget(
            self._key("breaker", playbook), ["failures", "open_until", "trial_owner"])
        br = rules.CLOSED_BREAKER if failures is None else Breaker(
            int(failures), float(open_until or 0.0), str(trial_owner or ""))
        return rules.breaker_view(br, self._policy, self._clock.now().timestamp())

    async def usage(self) -> GuardUsage:
        return await self._guarded("usage", self._usage())

    async def _usage(self) -> GuardUsage:
        """The budget histories in their longest window, the live slots, and the locks: their keys
        are found by ``SCAN`` (a lock's record outlives it by a day, so at most a day of targets;
        for a person's page, never on an admission's path), at most :data:`USAGE_LOCKS` shown."""
        now = self._clock.now().timestamp()
        scopes = list(dict.fromkeys(b.scope for b in self._policy.budgets))
        pipe = self._client.pipeline(transaction=False)
        for scope in scopes:
            pipe.zrangebyscore(self._key("budget", scope), f"({now - self._policy.longest_budget!r}", "+inf",
                               withscores=True)
        pipe.zrangebyscore(self._key("running"), f"({now!r}", "+inf", withscores=True)
        pipe.hgetall(self._key("running-ns"))
        *histories, slots, namespaces = await pipe.execute()
        running = {str(owner): Slot(str(namespaces.get(owner, "")), float(expires)) for owner, expires in slots}
        locks, cut = await self._live_locks(now)
        budget_history = {scope: [float(t) for _, t in history] for scope, history in zip(scopes, histories,
                                                                                           strict=True)}
        return rules.usage(self._policy, now, budget_history, running, locks, locks_cut=cut)

    async def _live_locks(self, now: float) -> tuple[dict[str, Lock], bool]:
        """The live locks, read :data:`USAGE_CHUNK` records at a time as SCAN finds their keys, and no
        further once :data:`USAGE_LOCKS` are found; and whether it stopped there with records unread."""
        lock_prefix = f"{self.prefix}lock:"  # _key("lock", name) for every name
        pattern = _glob_escape(lock_prefix) + "*"
        locks: dict[str, Lock] = {}
        chunk: list[str] = []

        async def read() -> bool:
            """Read the chunk's records into ``locks``; True when the cap came before its last record."""
            pipe = self._client.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, ["owner", "expires"])
            records = list(zip(chunk, await pipe.execute(), strict=True))
            chunk.clear()
            for key, (owner, expires) in records:
                if len(locks) >= USAGE_LOCKS:
                    return True  # this record and those after it unread
                if owner is not None and expires is not None and float(expires) > now:
                    locks[key.removeprefix(lock_prefix)] = Lock(str(owner), float(expires))
            return False

        async for key in self._client.scan_iter(match=pattern, count=1000):
            if len(locks) >= USAGE_LOCKS:  # the cap, and a key still unread
                return locks, True
            chunk.append(str(key))
            if len(chunk) >= USAGE_CHUNK and await read():
                return locks, True
        return locks, bool(chunk) and await read()

    async def ping(self) -> None:
        await self._guarded("ping", self._client.ping())

    async def close(self) -> None:
        if self._measuring is not None:
            self._measuring.cancel()
        if self._rebuilding is not None:
            self._rebuilding.cancel()
        await self._client.aclose()
