"""Guardrail state for a single process, optionally persisted to a JSON file.

It runs the pure rules of :mod:`remediator.core.guardrails` on the event loop: a
change is synchronous, so no two interleave and no lock is needed to apply one.
With a file (the embedded single-node daemon) no caller is answered before its
change is on disk: changes are applied in memory at once and written as a *group
commit* -- while one atomic write (temporary file, fsync, rename, fsync of the
directory) runs off the loop, the changes made meanwhile wait for the next, which
carries them all.  A failed write is a ``GuardrailUnavailable`` for every change
it carried and every one made on top of them: the state goes back to the last
one written, so the daemon fails closed and ``/readyz`` says why.

Why not copy-on-write: copying and re-serialising the whole state for each change
on the loop made every decision pay for every target remediated in the past day
(bench/RESULTS.md, decision latency).  Replay uses it without a file.

With the embedded store (the daemon's default) the state is not a file of its own but rows
of the store's SQLite database (:class:`GuardStateRows`): each change writes only the entries
it changed, in the same transaction as the decision it belongs to (the decision loop commits
a batch at once), so a crash can never keep an admission without its decision or the
reverse; a transaction that is rolled back takes the state back to what the database holds,
before the next change and before the next read (a read-only verdict, the panel): none of them
may rest on changes that never reached the disk.

The file is one node's state: an exclusive lock on it refuses a second process
(a second replica on a shared volume would silently overwrite the first's limits;
replicas share guardrails through Redis).  A file that cannot be read is moved
aside and the daemon starts *paused*: forgetting cooldowns must never be silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, runtime_checkable

import structlog

from remediator.core import guardrails as rules
from remediator.core.errors import ConfigError, GuardrailUnavailable
from remediator.core.guardrails import Breaker, GuardState, GuardStatus, Lock, Policy, Request, Slot, Verdict
from remediator.ports import Clock

FORMAT = 2
#: Seconds between two sweeps of lapsed entries (:func:`remediator.core.guardrails.collect`):
#: a sweep is linear in the state, and entries that lapsed meanwhile change no verdict.
COLLECT_EVERY = 60.0
#: The same for a state kept only in memory (replay's), where nothing is written: entries are
#: dropped far less often, as a sweep is only there to keep memory flat.  One record per finished
#: execution is kept a day (:data:`~remediator.core.guardrails.OUTCOME_RECORD_KEPT`), so memory is
#: bounded by a day and an hour of them; a sweep a minute would walk them all every minute.
MEMORY_COLLECT_EVERY = 3600.0
T = TypeVar("T")


def _dump(state: GuardState) -> dict[str, Any]:
    # Field by field rather than dataclasses.asdict, which deep-copies each record: this runs
    # once per write, over every lock record the state keeps.
    return {
        "format": FORMAT,
        "paused": state.paused,
        "locks": {k: {"owner": v.owner, "expires": v.expires} for k, v in state.locks.items()},
        "cooldown_until": state.cooldown_until,
        "history": state.history,
        "history_per": state.history_per,
        "budget_history": state.budget_history,
        "running": {k: {"namespace": v.namespace, "expires": v.expires} for k, v in state.running.items()},
        "breakers": {
            k: {"failures": v.failures, "open_until": v.open_until, "trial_owner": v.trial_owner}
            for k, v in state.breakers.items()
        },
        "outcomes": state.outcomes,
    }


#: The state's maps, each persisted entry by entry as rows (map, key, JSON value); "paused" is
#: the row ("meta", "paused").
MAPS = ("locks", "cooldown_until", "history", "history_per", "budget_history", "running", "breakers", "outcomes")


@runtime_checkable
class GuardStateRows(Protocol):
    """Where the embedded state lives when not in a file: the store's database (SQLiteStore)."""

    async def guard_rows(self) -> list[tuple[str, str, str]]:
        """Every (map, key, JSON value) row."""

    async def write_guard_rows(
        self, upserts: Sequence[tuple[str, str, str]], deletes: Sequence[tuple[str, str]]
    ) -> None:
        """Write in the store's current transaction: answered once committed, or at once in the
        calling task's decision batch (then committed with its decisions)."""

    def on_rollback(self, callback: Callable[[], None]) -> None:
        """``callback`` runs when a transaction is rolled back (written rows may be lost)."""

    async def settled(self) -> None:
        """Return once the writes made so far are committed (or will be with the caller's batch)."""


def _rows(state: GuardState, maps: Sequence[str], before: GuardState | None) -> tuple[
        list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The rows that differ between ``before`` (None: nothing) and ``state``, in ``maps``."""
    dumped = _dump(state)
    upserts: list[tuple[str, str, str]] = []
    deletes: list[tuple[str, str]] = []
    if before is None or before.paused != state.paused:
        upserts.append(("meta", "paused", json.dumps(state.paused)))
    for name in maps:
        new, old = getattr(state, name), getattr(before, name) if before is not None else {}
        if new == old:
            continue
        upserts += [(name, k, json.dumps(dumped[name][k])) for k, v in new.items() if old.get(k) != v]
        deletes += [(name, k) for k in old.keys() - new.keys()]
    return upserts, deletes


def _from_rows(rows: Sequence[tuple[str, str, str]]) -> GuardState:
    raw: dict[str, Any] = {"format": FORMAT, **{m: {} for m in MAPS}}
    for name, key, value in rows:
        if name == "meta":
            raw[key] = json.loads(value)
        else:
            raw[name][key] = json.loads(value)
    return _load(raw)


def _encode(state: GuardState) -> bytes:
    return json.dumps(_dump(state), separators=(",", ":")).encode()


def _snapshot(state: GuardState) -> GuardState:
    """A copy that later changes cannot reach, at the cost of copying each top-level map.

    Enough because the rules never change a record in place: locks, slots and breakers
    are frozen, and history lists are replaced, never appended to.  So the snapshot can
    be serialised off the event loop while the loop goes on changing the state.
    """
    return GuardState(
        state.paused, dict(state.locks), dict(state.cooldown_until), dict(state.history),
        dict(state.history_per), dict(state.budget_history), dict(state.running), dict(state.breakers),
        dict(state.outcomes),
    )


def _encode_and_write(path: Path, state: GuardState) -> bytes:
    data = _encode(state)
    _write_atomically(path, data)
    return data


def _slot(raw: Any) -> Slot:
    if isinstance(raw, str):  # format 1 kept only the namespace: such a slot has lapsed
        return Slot(raw, 0.0)
    return Slot(str(raw["namespace"]), float(raw["expires"]))


def _load(raw: dict[str, Any]) -> GuardState:
    if not isinstance(raw, dict) or raw.get("format", 1) > FORMAT:
        raise ValueError(f"unknown guardrail state format {raw.get('format') if isinstance(raw, dict) else raw!r}")
    return GuardState(
        paused=bool(raw.get("paused", False)),
        locks={k: Lock(str(v["owner"]), float(v["expires"])) for k, v in raw.get("locks", {}).items()},
        cooldown_until={k: float(v) for k, v in raw.get("cooldown_until", {}).items()},
        history={k: [float(t) for t in v] for k, v in raw.get("history", {}).items()},
        history_per={k: float(v) for k, v in raw.get("history_per", {}).items()},
        budget_history={k: [float(t) for t in v] for k, v in raw.get("budget_history", {}).items()},
        running={k: _slot(v) for k, v in raw.get("running", {}).items()},
        breakers={k: Breaker(int(v["failures"]), float(v["open_until"]), str(v["trial_owner"]))
                  for k, v in raw.get("breakers", {}).items()},
        outcomes={k: float(v) for k, v in raw.get("outcomes", {}).items()},  # absent before they were kept
    )


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


class MemoryGuardrails:
    def __init__(
        self, policy: Policy, clock: Clock, path: Path | None = None, *, grace: float = 3600.0,
        rows: GuardStateRows | None = None,
    ) -> None:
        """In memory only (replay), in the file ``path``, or (``rows``, see :meth:`open_in`) in
        the store's database, ``path`` then only naming the single-node lock."""
        self._policy = policy
        self._clock = clock
        self._rows = rows
        self._stale = False  # a transaction holding changes was rolled back: reload before the next one
        self._reloading = asyncio.Lock()  # one reload at a time (see _fresh)
        if rows is not None:
            assert path is not None, "the single-node lock needs a path"
            self._take_file(path)
            rows.on_rollback(self._rolled_back)
            path = None  # no file writes
        self._path = path
        self._grace = grace
        self._owner_file: BinaryIO | None = None
        self._broken: str = ""  # why the last write failed; cleared by the next good one
        #: Changes not yet on disk that the next write will carry, and the write under way.
        self._pending: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.state = GuardState()
        if path is not None:
            self._take_file(path)
            self.state = self._read(path)
        self._last_written = _encode(self.state)  # what a failed write goes back to
        self._collected = float("-inf")  # when lapsed entries were last dropped

    @classmethod
    async def open_in(
        cls, rows: GuardStateRows, policy: Policy, clock: Clock, path: Path, *, grace: float = 3600.0,
    ) -> MemoryGuardrails:
        """The state kept in the store's database.  A state file left by an earlier version is
        taken over once (its entries written as rows) and renamed ``.imported``."""
        guard = cls(policy, clock, path, grace=grace, rows=rows)
        try:
            found = await rows.guard_rows()
            legacy = None if found else guard._legacy(path)
            if legacy is not None:
                guard.state = legacy
                await rows.write_guard_rows(*_rows(guard.state, MAPS, None))
                os.replace(path, path.with_name(f"{path.name}.imported"))
            else:
                guard.state = guard._decode_rows(found)
        except BaseException:
            await guard.close()
            raise
        return guard

    def _legacy(self, path: Path) -> GuardState | None:
        return self._read(path) if path.exists() else None

    def _decode_rows(self, found: Sequence[tuple[str, str, str]]) -> GuardState:
        try:
            return _from_rows(found)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            structlog.get_logger("remediator.guardrails").error(
                "guardrail state unreadable: starting PAUSED; resume via POST /api/v1/resume", error=str(exc),
            )
            return GuardState(paused=True)

    def _rolled_back(self) -> None:
        self._stale = True

    async def _fresh(self) -> None:
        """After a rollback, back to what the database holds before the state is read or changed.

        One reload at a time, and none once the state is fresh: a second reload that read the
        rows before a change made after the first (and not yet written) would put the state back
        from under that change, and nothing would reload it again until the next rollback."""
        if not self._stale:
            return
        async with self._reloading:
            if self._stale:
                await self._reload()

    async def _reload(self) -> None:
        """After a rollback: back to what the database holds (changes since are lost)."""
        assert self._rows is not None
        try:
            found = await self._rows.guard_rows()
        except Exception as exc:
            raise GuardrailUnavailable(f"guardrail state: {exc}") from exc
        self._stale = False
        self.state = self._decode_rows(found)

    async def _commit_rows(self, change: Callable[[GuardState], T], keep: Callable[[T], bool]) -> T:
        """Apply ``change`` and write the entries it changed in the store's transaction."""
        assert self._rows is not None
        await self._fresh()
        now = self._clock.now().timestamp()
        sweep = now - self._collected >= COLLECT_EVERY
        before = _snapshot(self.state)
        result = change(self.state)
        if not keep(result) and not sweep:
            # Nothing new to write, but the answer may rest on changes not yet committed: a
            # refusal based on a change that is then rolled back would be a false one.
            try:
                await self._rows.settled()
            except Exception as exc:
                self._stale = True
                raise GuardrailUnavailable(f"guardrail state: {exc}") from exc
            return result
        if sweep:
            rules.collect(self.state, self._policy, now, self._grace)
            self._collected = now
        try:
            await self._rows.write_guard_rows(*_rows(self.state, MAPS, before))
        except Exception as exc:  # StoreUnavailable: the transaction is gone, and with it this change
            self._stale = True
            raise GuardrailUnavailable(f"guardrail state: {exc}") from exc
        return result

    def _take_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_name(f"{path.name}.lock"), "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ConfigError(
                f"{path} is in use by another remediator process: the embedded guardrail state is single-node; "
                "run replicas with redis_url so they share their guardrails"
            ) from None
        self._owner_file = fh

    def _read(self, path: Path) -> GuardState:
        if not path.exists():
            return GuardState()
        try:
            return _load(json.loads(path.read_bytes()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(f"{path.name}.unreadable-{self._clock.now():%Y%m%dT%H%M%S}")
            os.replace(path, aside)
            structlog.get_logger("remediator.guardrails").error(
                "guardrail state unreadable: moved aside, starting PAUSED; resume via POST /api/v1/resume",
                path=str(path), moved_to=str(aside), error=str(exc),
            )
            return GuardState(paused=True)

    async def _commit(self, change: Callable[[GuardState], T], keep: Callable[[T], bool] = bool) -> T:
        """Apply ``change`` to the state and answer once it is on disk.

        ``keep(result)`` False means the rules changed nothing (a refusal, a failed renewal):
        nothing new is written, but the answer still waits for the changes it was read from,
        since a refusal based on a change that never reaches the disk would be a false one.
        """
        if self._rows is not None:
            return await self._commit_rows(change, keep)
        result = change(self.state)
        if self._path is None:  # in memory only: nothing to write, only lapsed entries to drop now and then
            now = self._clock.now().timestamp()
            if now - self._collected >= MEMORY_COLLECT_EVERY:
                rules.collect(self.state, self._policy, now, self._grace)
                self._collected = now
            return result
        batch = self._join() if keep(result) else (self._pending or self._inflight)
        if batch is not None:
            await asyncio.shield(batch)
        return result

    def _join(self) -> asyncio.Future[None]:
        """The write that will carry a change made now; starts the writer if it is idle."""
        loop = asyncio.get_running_loop()
        if self._pending is None:
            self._pending = loop.create_future()
            # A batch whose every waiter was cancelled must not log "exception never retrieved".
            self._pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        if self._writer is None:
            self._writer = loop.create_task(self._write_batches(), name="guardrail-state-writer")
        return self._pending

    async def _write_batches(self) -> None:
        assert self._path is not None
        try:
            while self._pending is not None:
                batch, self._pending = self._pending, None
                self._inflight = batch
                now = self._clock.now().timestamp()
                if now - self._collected >= COLLECT_EVERY:
                    rules.collect(self.state, self._policy, now, self._grace)
                    self._collected = now
                try:
                    data = await asyncio.to_thread(_encode_and_write, self._path, _snapshot(self.state))
                except OSError as exc:
                    self._broken = f"cannot write {self._path}: {exc.strerror or exc}"
                    # Back to what is on disk: this batch and every change made on top of it are lost.
                    self.state = _load(json.loads(self._last_written))
                    lost, self._pending = [batch, self._pending], None
                    for fut in lost:
                        if fut is not None and not fut.done():
                            fut.set_exception(GuardrailUnavailable(self._broken))
                    return
                finally:
                    self._inflight = None
                self._broken = ""
                self._last_written = data
                batch.set_result(None)
        finally:
            self._writer = None

    async def admit(self, req: Request) -> Verdict:
        return await self._commit(lambda s: rules.admit(req, s, self._policy), lambda v: v.admitted)

    async def evaluate(self, req: Request) -> Verdict:
        """The pure rules' verdict on the current state; nothing is changed or written.

        The state is only changed without an ``await``, so a synchronous read sees it between
        two changes (possibly one still being written: a reading, not a promise); never changes
        that were rolled back.
        """
        await self._fresh()
        return rules.evaluate(req, self.state, self._policy)

    async def renew(self, req: Request) -> bool:
        now = self._clock.now().timestamp()
        return await self._commit(lambda s: rules.renew(req, s, now))

    async def reacquire(self, req: Request) -> bool:
        now = self._clock.now().timestamp()
        return await self._commit(lambda s: rules.reacquire(req, s, now))

    async def take_back(self, req: Request) -> rules.Finding:
        now = self._clock.now().timestamp()
        return await self._commit(lambda s: rules.take_back(req, s, self._policy, now),
                                  lambda f: f.check is rules.Check.PASSED)

    async def abandon(self, req: Request) -> None:
        await self._commit(lambda s: rules.abandon(req, s), lambda _: True)

    async def go_on_as_trial(self, req: Request) -> bool:
        now = self._clock.now().timestamp()
        return await self._commit(lambda s: rules.go_on_as_trial(req, s, self._policy, now))

    async def release(self, req: Request, *, succeeded: bool | None) -> None:
        now = self._clock.now().timestamp()
        await self._commit(lambda s: rules.release(req, s, self._policy, succeeded=succeeded, now=now), lambda _: True)

    async def paused(self) -> bool:
        await self._fresh()
        return self.state.paused

    async def set_paused(self, paused: bool) -> None:
        await self._commit(lambda s: setattr(s, "paused", paused), lambda _: True)

    @property
    def interruptions(self) -> int:
        """Always 0 (:class:`~remediator.ports.Interruptions`): the state lives in this process (and the
        store's own database), so there is no connection of its own to lose a pause over."""
        return 0

    async def status(self) -> GuardStatus:
        await self._fresh()
        return rules.status(self.state.paused, self.state.breakers, self._policy, self._clock.now().timestamp())

    async def breaker(self, playbook: str) -> rules.BreakerView:
        await self._fresh()
        br = self.state.breakers.get(playbook, rules.CLOSED_BREAKER)
        return rules.breaker_view(br, self._policy, self._clock.now().timestamp())

    async def usage(self) -> rules.GuardUsage:
        await self._fresh()
        s = self.state
        return rules.usage(self._policy, self._clock.now().timestamp(), s.budget_history, s.running, s.locks)

    async def ping(self) -> None:
        """Reachable unless the last write failed; then try writing again, since only a write tells
        whether the disk is back (readiness and resumes would otherwise wait for one forever)."""
        if self._broken and self._path is not None:
            await asyncio.shield(self._join())
        await self._fresh()

    async def close(self) -> None:
        if self._writer is not None:  # answered changes are on disk; finish carrying the rest
            with contextlib.suppress(GuardrailUnavailable):
                await asyncio.shield(self._writer)
        if self._owner_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._owner_file.fileno(), fcntl.LOCK_UN)
            self._owner_file.close()
            self._owner_file = None
