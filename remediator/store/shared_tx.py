"""One SQLite connection's writes, shared transactions and group commits.

Why: with one commit (one fsync, ``synchronous=FULL``) per statement, a storm of 20,000
alerts spent most of its time waiting on the disk: some five commits per decided alert,
more per execution (bench/RESULTS.md).  Here every write joins the one open transaction
(``BEGIN IMMEDIATE`` when none is open) and its caller is answered once a COMMIT that
carries it has returned, so the writes made while one commit runs share the next: the
webhook's inserts, every running execution's step records, the decision loop's decisions.

A *deferred* batch (:meth:`SharedTransaction.deferred`) goes further for the task that opens
it: its writes do not wait at all, and leaving the batch waits once for every transaction
they went into.  The decision loop decides a claimed batch of alerts this way: all their
decisions (and the guardrail state changes they made, which live in the same database) are
durable together or not at all, and nothing outside the batch acts on them before that:
whoever acts (an execution claiming its lease, a webhook answer) waits for a commit that
carries everything written before it, on this one connection.

A failed statement or COMMIT rolls the whole transaction back: every writer in it hears
``StoreUnavailable`` (a deferred batch when it ends), and ``on_rollback`` callbacks run so
that state kept in memory beside the database (the guardrails) goes back to what is on disk.
A :meth:`SharedTransaction.together` unit that wrote into it writes nothing more: its next
write would open a new transaction, and commit (say) a decision without the guardrail admission
it was made on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

from remediator.core.errors import StoreUnavailable
from remediator.store.sqlite_conn import InlineConnection

T = TypeVar("T")


async def complete(work: Coroutine[Any, Any, T], *, eager: bool = False) -> T:
    """Run ``work`` to its end even if the caller is cancelled meanwhile, then pass the
    cancellation on.

    For transactions: a statement abandoned half way (the caller's task cancelled while it
    runs on the database's thread) must not have its transaction rolled back under the
    other writers that share it.  Only once ``work`` is done does the caller see its
    cancellation.

    ``eager``: run its first step here, in the caller's task, as an eager task's would (Python
    3.12's eager_task_factory): a write that finds the lock free and runs its statements inline
    never suspends, and a task with its two trips round the event loop would cost more than the
    statements (some 20 µs a write on a slow machine, two writes a decided alert).  Nothing can
    cancel that step: only a suspended coroutine can be cancelled, so what runs before it
    suspends is whole.  Only for work that enters nothing bound to the current task before it
    first suspends: an ``asyncio.timeout`` entered there belongs to the caller, and when it fires
    it cancels the caller (which this outwaits) instead of the work, which then has no deadline.
    asyncpg's pool acquire and connect enter one: PostgreSQL's intake hung on a server that
    accepted connections and never answered.  The embedded store's writes (an asyncio.Lock, then
    statements on the loop or its thread) are eager; PostgreSQL's are not.
    """
    if eager:
        try:
            first = work.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        task: asyncio.Future[T] = asyncio.ensure_future(_Resumed(work, first))
    else:
        task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as exc:  # the caller's: the task itself goes on
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the caller hears of its cancellation instead
        raise cancelled
    return task.result()


class _Resumed(Coroutine[Any, Any, T]):
    """The rest of ``work``, which suspended on ``first`` in its caller's step: the task that
    runs this waits on ``first`` and from then on passes everything to ``work`` (a ``yield from``
    started one step late).

    A class, not a generator: whatever is thrown in (a cancellation) reaches ``work`` even
    before the task's first step, where a generator not yet started would die without passing
    it on, and leave ``work`` suspended for good (holding the connection's lock, say)."""

    def __init__(self, work: Coroutine[Any, Any, T], first: Any) -> None:
        self._work = work
        self._first: list[Any] = [first]  # yielded to the task by its first step, once
        self.__qualname__ = getattr(work, "__qualname__", type(work).__name__)  # the task's repr names it

    def send(self, value: Any) -> Any:
        if self._first:
            return self._first.pop()
        return self._work.send(value)  # its StopIteration carries the result to the task

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first.clear()
        if val is None and tb is None:
            return self._work.throw(typ)
        return self._work.throw(typ, val, tb)

    def close(self) -> None:
        self._work.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("only complete()'s task runs the rest of a write")


def _retrieved(fut: asyncio.Future[None]) -> None:
    """A transaction nobody waited on (all its writers deferred, then gone) must not log
    'exception never retrieved'."""
    if not fut.cancelled():
        fut.exception()


class _Transaction:
    """One open transaction, and whether a writer waits for its commit."""

    def __init__(self) -> None:
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.committed.add_done_callback(_retrieved)
        self.wanted = False
        self.rolled_back = False


class _Unit:
    """A :meth:`SharedTransaction.together` block of one task, and the transaction it wrote into."""

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.transaction: _Transaction | None = None


class _Deferred:
    """The transactions a deferred batch wrote into; only its own task's writes defer."""

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.transactions: list[_Transaction] = []


class SharedTransaction:
    def __init__(self, db: InlineConnection, lock: asyncio.Lock, what: str = "embedded store") -> None:
        self._db = db
        self._lock = lock  # the connection's: held for each statement, and for each COMMIT
        self._what = what
        self._open: _Transaction | None = None
        self._committer: asyncio.Task[None] | None = None
        # Per task (a ContextVar), per connection (one per instance, not module state).
        self._batch: contextvars.ContextVar[_Deferred | None] = contextvars.ContextVar(
            f"remediator-deferred-{id(self)}", default=None
        )
        self.on_rollback: list[Callable[[], None]] = []
        self._units = 0  # open together() blocks: no COMMIT may split their writes
        self._unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(
            f"remediator-unit-{id(self)}", default=None
        )
        self._no_units = asyncio.Event()
        self._no_units.set()

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"{self._what}: {exc}")

    async def write(self, body: Callable[[], Awaitable[T]], *, single: bool = False, group: bool = False) -> T:
        """Run ``body`` (statements on the connection) inside the open transaction; return
        once it is committed, or at once inside this task's :meth:`deferred` batch.

        With no transaction open (nothing to share), a write outside a batch commits on its own
        at once, as it would without this class: one statement (``single``) in autocommit, more
        between BEGIN and COMMIT.  ``group``: join or open a shared transaction anyway, for
        writers that come many at once (the webhook's), so they share commits.
        """
        batch = self._batch.get()
        if batch is not None and batch.task is not asyncio.current_task():
            batch = None  # a task started inside someone else's batch waits for its own writes
        unit = self._my_unit()  # here, in the caller's task: past a wait for the lock, complete()'s runs on
        if batch is None and not group and self._open is None:
            done = await complete(self._alone(body, single=single, unit=unit), eager=True)
            if done is not None:
                return done[0]
        result, txn = await complete(self._locked(body, wanted=batch is None, unit=unit), eager=True)
        if batch is not None:
            batch.transactions.append(txn)
            return result
        await self._committed(txn)
        return result

    def _my_unit(self) -> _Unit | None:
        unit = self._unit.get()
        return unit if unit is not None and unit.task is asyncio.current_task() else None

    def _unbroken(self, unit: _Unit | None) -> None:
        """Refuse a write of a unit whose transaction was rolled back (the caller holds the lock,
        so no rollback comes between this and the write): the unit's earlier writes are lost, and
        this one must not be kept without them.  Its caller decides the alert again from scratch,
        as after any ``StoreUnavailable``."""
        if unit is not None and unit.transaction is not None and unit.transaction.rolled_back:
            raise StoreUnavailable(f"{self._what}: the transaction of this unit's earlier writes was rolled back")

    async def _alone(self, body: Callable[[], Awaitable[T]], *, single: bool, unit: _Unit | None) -> tuple[T] | None:
        """``body`` committed on its own, if still no transaction is open once the lock is ours
        (None: one is, join it)."""
        async with self._lock:
            self._unbroken(unit)
            if self._open is not None:
                return None
            try:
                if single:
                    return (await body(),)
                await self._db.execute("BEGIN IMMEDIATE")
                result = await body()
                await self._db.execute("COMMIT")
                return (result,)
            except BaseException as exc:
                if not single:
                    with contextlib.suppress(sqlite3.Error, ValueError):
                        await self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError | ValueError):  # disk full, closed, locked
                    raise self._unavailable(exc) from exc
                raise

    async def _locked(
        self, body: Callable[[], Awaitable[T]], *, wanted: bool, unit: _Unit | None
    ) -> tuple[T, _Transaction]:
        async with self._lock:
            self._unbroken(unit)
            try:
                if self._open is None:
                    await self._db.execute("BEGIN IMMEDIATE")
                    self._open = _Transaction()
                txn = self._open
                if unit is not None:
                    unit.transaction = txn  # the same one all along, no COMMIT starting while it is open
                result = await body()
                txn.wanted = txn.wanted or wanted
                return result, txn
            except sqlite3.Error as exc:
                if not self._open or not getattr(self._db, "in_transaction", False):
                    await self._roll_back(exc)  # the error ended the transaction: all its writers lose
                # else only this statement was undone (a constraint, say): the others' writes stand
                if isinstance(exc, sqlite3.OperationalError):  # disk full, closed, locked
                    raise self._unavailable(exc) from exc
                raise
            except BaseException as exc:
                await self._roll_back(exc)
                if isinstance(exc, ValueError):  # the connection is closed
                    raise self._unavailable(exc) from exc
                raise

    async def _roll_back(self, exc: BaseException) -> None:
        """The open transaction is lost (the caller holds the lock): every writer in it hears so."""
        txn, self._open = self._open, None
        with contextlib.suppress(sqlite3.Error, ValueError):
            await self._db.execute("ROLLBACK")
        if txn is not None:
            txn.rolled_back = True
            txn.committed.set_exception(self._unavailable(exc))
            for callback in self.on_rollback:
                callback()

    async def _committed(self, txn: _Transaction) -> None:
        if not txn.committed.done():
            txn.wanted = True
            if self._committer is None:
                self._committer = asyncio.create_task(self._commit_wanted(), name="sqlite-group-commit")
        await asyncio.shield(txn.committed)

    async def _commit_wanted(self) -> None:
        """Commit the open transaction while a writer waits for it.  Writes that come meanwhile
        join the next one: one fsync for all of them."""
        try:
            while self._open is not None and self._open.wanted:
                if self._units:
                    await self._no_units.wait()
                    continue
                await complete(self._commit(), eager=True)
        finally:
            self._committer = None

    async def _commit(self) -> None:
        async with self._lock:
            if not self._units:
                await self._commit_locked()

    async def _commit_locked(self) -> None:
        txn = self._open
        if txn is None:
            return
        try:
            await self._db.execute("COMMIT")
        except BaseException as exc:
            await self._roll_back(exc)
            return
        self._open = None
        txn.committed.set_result(None)

    @contextlib.asynccontextmanager
    async def deferred(self) -> AsyncIterator[None]:
        """Writes of this task inside do not wait for their commit; leaving waits once for all
        of them (``StoreUnavailable`` if any was rolled back)."""
        outer = self._batch.get()
        if outer is not None and outer.task is asyncio.current_task():
            yield  # already inside one: the outer batch waits
            return
        batch = _Deferred()
        token = self._batch.set(batch)
        try:
            yield
        except BaseException:
            self._batch.reset(token)
            with contextlib.suppress(StoreUnavailable):  # what was written is kept; the error is the caller's
                await self._wait_all(batch)
            raise
        self._batch.reset(token)
        await self._wait_all(batch)

    @contextlib.asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        """The writes made inside (one alert's guardrail changes and decisions) land in one
        transaction: no COMMIT starts until the block ends.  Whoever waits for a commit meanwhile
        waits for the block; so the block must never wait on another task's commit.

        If the transaction is rolled back meanwhile (another writer's statement or a COMMIT
        failed), the block's writes after that raise ``StoreUnavailable``: see :meth:`_unbroken`."""
        self._units += 1
        self._no_units.clear()
        outer = self._my_unit()
        token = self._unit.set(_Unit()) if outer is None else None  # inside one of its own: that one
        try:
            yield
        finally:
            if token is not None:
                self._unit.reset(token)
            self._units -= 1
            if not self._units:
                self._no_units.set()
        if not self._units and self._open is not None and self._open.wanted:
            # Writers waited for this block: commit now, before the next block starts and
            # (there being no await between two blocks) the committer never gets a turn.
            with contextlib.suppress(StoreUnavailable):
                await complete(self._commit(), eager=True)

    async def _wait_all(self, batch: _Deferred) -> None:
        for txn in dict.fromkeys(batch.transactions):
            await self._committed(txn)

    async def settled(self) -> None:
        """Wait until what has been written so far is committed: for an answer read from those
        writes (a refusal).  At once inside this task's deferred batch, which commits with them."""
        batch = self._batch.get()
        if batch is not None and batch.task is asyncio.current_task():
            return
        # What has been written so far, taken before waiting for the lock: a COMMIT of it may hold
        # the lock now, and if that fails, the transaction is gone (self._open None) once the lock
        # is ours; waiting for it then raises, where reading self._open afterwards would say
        # "nothing to wait for" about writes that were rolled back.
        txn = self._open
        async with self._lock:  # a write committing on its own (see write) holds it to its end
            txn = txn or self._open
        if txn is not None:
            await self._committed(txn)  # StoreUnavailable if it was rolled back meanwhile

    async def flush(self) -> None:
        """Commit whatever is open (at close)."""
        if self._open is not None:
            await self._committed(self._open)
