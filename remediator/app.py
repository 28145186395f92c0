"""The aiohttp application: routes plus the runtime's lifecycle in ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from remediator import http
from remediator.notify.dispatcher import DEFAULT_DRAIN_TIMEOUT
from remediator.ports import Clock, Executor, Notifier
from remediator.runtime import HANDOVER_TIMEOUT, RELEASE_FLUSH_TIMEOUT, RUNTIME, open_runtime
from remediator.settings import Settings

#: What closing the store may take at the end: PostgresStore.close gives its pool 5 s, then terminates it.
STORE_CLOSE_TIMEOUT = 5.0


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    executors: tuple[Executor, Executor] | None = None,
    start_worker: bool = True,
    stop: asyncio.Event | None = None,
    handle_sighup: bool = True,
) -> web.Application:
    """``stop``: set when a stop was asked for (``serve``'s signal handlers); if it is set before the
    runtime is up, the worker never starts.  ``handle_sighup=False``: the caller handles SIGHUP
    (``serve`` does, for the whole life of the process); see :func:`open_runtime`."""
    # The body limit is enforced by the webhook handler (413 with a JSON reason); aiohttp's
    # own limit is set higher so it never answers first with a plain-text error.
    app = web.Application(
        middlewares=[http.drain_gate, http.json_errors],
        client_max_size=max(settings.webhook.max_body_bytes * 2, 2 * 1024 * 1024),
    )
    app[http.DRAIN] = http.Drain()
    http.routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        kwargs: dict[str, Any] = dict(clock=clock, notifier=notifier, executors=executors, start_worker=start_worker,
                                      stop=stop, handle_sighup=handle_sighup)
        async with open_runtime(settings, **kwargs) as rt:
            app[RUNTIME] = rt
            yield

    app.cleanup_ctx.append(lifecycle)
    return app


@dataclass(frozen=True)
class ShutdownBudget:
    """The longest each stage of ``serve``'s shutdown takes, from SIGTERM, and the whole.

    HTTP and executions run side by side from the signal on; the notification drain and the
    closing of the stores come after both (executions still send notices and write to the store
    until they end).  tests/test_deploy.py holds the total below the Deployment's
    ``terminationGracePeriodSeconds``: past it the kubelet's SIGKILL would land mid-step, with the
    execution's lease held until it runs out instead of handed to another replica.
    """

    http: float  # stop listening, drain the requests in progress, aiohttp's own wait
    executions: float  # worker.shutdown_timeout for running executions, their handover, pending releases
    notifications: float  # queued notices and their audit records
    close: float  # the store's pool

    @property
    def total(self) -> float:
        return max(self.http, self.executions) + self.notifications + self.close


def shutdown_budget(settings: Settings) -> ShutdownBudget:
    return ShutdownBudget(
        http=http.shutdown_budget(settings),
        executions=settings.worker.shutdown_timeout + HANDOVER_TIMEOUT + RELEASE_FLUSH_TIMEOUT,
        notifications=DEFAULT_DRAIN_TIMEOUT,
        close=STORE_CLOSE_TIMEOUT,
    )
