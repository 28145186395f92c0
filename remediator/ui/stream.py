"""``/ui/events``: the timeline's live updates, as server-sent events.

Each stream polls the store once a second, on the runtime's clock, for the newest decisions
matching the page's filters (the same query, the same window of :data:`PAGE` rows), and sends
every row that is new or whose execution moved on (``running`` to ``succeeded``), rendered by
the same template as the page, for the script to put in place.  Polling the store rather than
listening to this replica's pipeline is what makes a stream show what every replica decided.

Bounded every way: at most ``max_streams`` open per replica (then a 503), each for at most
``stream_lifetime`` seconds (the browser's EventSource reconnects by itself; see
:class:`~remediator.ui.views.UiState`), remembering only the rows of the window it watches.  A
client that goes away is noticed at the next poll or write; at shutdown every stream is closed.
When more rows arrived within one poll than the window holds, the stream says ``reset`` and
the page reloads rather than show a timeline with a hole in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from aiohttp import web

from remediator.core.errors import StoreUnavailable
from remediator.http import BadQuery, _bounded, decision_query
from remediator.runtime import READ, RUNTIME
from remediator.ui import auth
from remediator.ui.views import PAGE, UI, filters

#: Seconds between two polls of the store.
POLL = 1.0
#: Seconds without any event after which a comment is sent: it finds a dead connection, and keeps proxies from
#: closing a quiet one.
HEARTBEAT = 15.0


def _state(item: dict[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, the row must be sent again for."""
    return item["id"], item.get("status"), item.get("finished_at")


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    rt, ui = request.app[RUNTIME], request.app[UI]
    try:
        auth.viewer(request, rt, READ)
    except auth.Denied as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    try:
        query = dataclasses.replace(decision_query({**filters(request.query), "limit": str(PAGE)}), before=None)
    except BadQuery as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if len(ui.streams) >= ui.max_streams:
        return web.json_response({"error": "too many live streams open; reload later"}, status=503)
    row = ui.env.get_template("row.html")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    task = asyncio.current_task()
    assert task is not None  # a handler runs in a task
    ui.streams.add(task)
    try:
        await response.prepare(request)
        await response.write(b"retry: 3000\n\n")
        seen: dict[str, tuple[Any, ...]] = {}
        started = last = rt.clock.monotonic()
        first = True
        while rt.clock.monotonic() - started < ui.stream_lifetime:
            if request.transport is None or request.transport.is_closing():
                break
            try:
                items = await _bounded(rt, rt.store.query_decisions(query), StoreUnavailable)
            except StoreUnavailable:
                await response.write(_event("unavailable", {"error": "store unavailable"}))
                last = rt.clock.monotonic()
            else:
                if not first and len(items) == query.limit and not any(i["id"] in seen for i in items):
                    await response.write(_event("reset", {}))
                    break
                changed = [i for i in items if seen.get(i["id"]) != _state(i)]
                for item in reversed(changed):  # oldest first: each new one goes on top
                    await response.write(_event("decision", {"id": item["id"], "html": row.render(d=item)}))
                if changed:
                    last = rt.clock.monotonic()
                seen = {i["id"]: _state(i) for i in items}
            if rt.clock.monotonic() - last >= HEARTBEAT:
                await response.write(b": keepalive\n\n")
                last = rt.clock.monotonic()
            first = False
            await rt.clock.sleep(POLL)
    except ConnectionResetError:  # the browser went away: its business
        pass
    finally:
        ui.streams.discard(task)
    return response


async def close_streams(app: web.Application) -> None:
    """``on_shutdown``: end every open stream, which would otherwise hold the shutdown for its lifetime
    (the browser reconnects, to another replica or to this one once it is back)."""
    for task in list(app[UI].streams):
        task.cancel()
