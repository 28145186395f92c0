"""``shared_tx.complete``: a write runs to its end whatever happens to its caller.

With ``eager`` its first step runs in the caller's task (no task, no trip round the event loop,
for a write that never suspends: most of a decision batch's); only what suspends is handed to a
task.  Without, the work is a task from its start, so a timeout it enters is its own.  These pin
the eager step, the timeout, and the cancellation safety the stores rely on either way.
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from remediator.store.shared_tx import complete

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_work_that_never_suspends_runs_in_the_callers_task() -> None:
    caller = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []

    async def work() -> int:
        seen.append(asyncio.current_task())
        return 7

    assert await complete(work(), eager=True) == 7
    assert seen == [caller]


async def test_a_timeout_the_work_enters_before_it_suspends_bounds_the_work() -> None:
    """As asyncpg's pool acquire and connect do: run eagerly, that timeout would belong to the
    caller, cancel it instead of the work when it fires, and the work would wait for ever."""
    async def work() -> None:
        async with asyncio.timeout(0):  # fires at the loop's next turn, no time waited
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await complete(work())


EAGER = pytest.mark.parametrize("eager", [True, False], ids=["eager", "task"])


@EAGER
async def test_work_that_suspends_is_resumed_and_answers_with_its_value(eager: bool) -> None:
    steps: list[str] = []
    later: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(later.set_result, "from a future")

    async def work() -> str:
        steps.append("before")
        await asyncio.sleep(0)  # a bare yield to the loop
        got = await later  # a future
        steps.append(WHO.get())
        return got

    WHO.set("the caller")
    assert await complete(work(), eager=eager) == "from a future"
    assert steps == ["before", "the caller"]


@EAGER
async def test_a_cancelled_caller_still_sees_the_work_to_its_end_then_hears_it(eager: bool) -> None:
    release = asyncio.Event()
    suspended = asyncio.Event()
    finished: list[str] = []

    async def work() -> str:
        suspended.set()
        await release.wait()
        finished.append("commit")
        return "done"

    caller = asyncio.create_task(complete(work(), eager=eager))
    await suspended.wait()
    caller.cancel()
    await asyncio.sleep(0)
    assert not caller.done()  # it waits for the work, which is not over
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["commit"]


@EAGER
async def test_errors_reach_the_caller_whether_raised_before_or_after_suspending(eager: bool) -> None:
    async def at_once() -> None:
        raise LookupError("first step")

    async def after_a_wait() -> None:
        await asyncio.sleep(0)
        raise KeyError("after suspending")

    with pytest.raises(LookupError, match="first step"):
        await complete(at_once(), eager=eager)
    with pytest.raises(KeyError, match="after suspending"):
        await complete(after_a_wait(), eager=eager)


@EAGER
async def test_an_error_thrown_into_the_suspended_work_reaches_it(eager: bool) -> None:
    """What the task throws (its cancellation) reaches the work, whose own handler decides: here
    it catches it and answers anyway.  The task is cancelled before its first step ran, the case
    where a plain generator handing over would die without telling the work (left suspended
    after its first step, holding what it took there: the connection's lock)."""
    suspended = asyncio.Event()
    handled: list[str] = []

    async def work() -> str:
        try:
            suspended.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            handled.append("cancelled")
            return "cleaned up"
        return "never"

    caller = asyncio.create_task(complete(work(), eager=eager))
    await suspended.wait()
    inner = [t for t in asyncio.all_tasks() if t is not caller and t is not asyncio.current_task()]
    assert len(inner) == 1  # the task that took the work over once it suspended
    inner[0].cancel()
    assert await caller == "cleaned up"
    assert handled == ["cancelled"]
