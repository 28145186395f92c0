"""The aiohttp application: routes plus the runtime's lifecycle in ``cleanup_ctx``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from remediator import http
from remediator.ports import Clock, Executor, Notifier
from remediator.runtime import RUNTIME, open_runtime
from remediator.settings import Settings


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    executors: tuple[Executor, Executor] | None = None,
    start_worker: bool = True,
) -> web.Application:
    # The body limit is enforced by the webhook handler (413 with a JSON reason); aiohttp's
    # own limit is set higher so it never answers first with a plain-text error.
    app = web.Application(
        middlewares=[http.json_errors], client_max_size=max(settings.webhook.max_body_bytes * 2, 2 * 1024 * 1024)
    )
    http.routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        kwargs: dict[str, Any] = dict(clock=clock, notifier=notifier, executors=executors, start_worker=start_worker)
        async with open_runtime(settings, **kwargs) as rt:
            app[RUNTIME] = rt
            yield

    app.cleanup_ctx.append(lifecycle)
    return app
