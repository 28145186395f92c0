"""Watch streams: newline-delimited JSON events over a chunked response.

A watch subscribes to the store first and only then streams the backlog, so nothing
written in between is lost; selector filtering turns edits that move an object into
or out of the selector into ADDED/DELETED, as the apiserver's watch cache does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from remediator.testing.kube import params
from remediator.testing.kube import resources as r
from remediator.testing.kube import status as st
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.objects import Object, clone, meta, namespace_of
from remediator.testing.kube.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from remediator.testing.kube.store import Event, TooOld


async def stream(
    request: web.Request,
    cluster: FakeCluster,
    res: r.Resource,
    namespace: str | None,
    *,
    default_timeout: float,
    disconnect_poll: float,
) -> web.StreamResponse:
    """Serve one watch until ``timeoutSeconds`` (or ``default_timeout``), shutdown, or the client leaves."""
    try:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), res.plural)
    except SelectorError as exc:
        raise st.bad_request(str(exc)) from None
    raw_rv = request.query.get("resourceVersion") or ""
    if raw_rv not in ("", "0") and not raw_rv.isdigit():  # the apiserver's answer: a 500 without a reason
        raise st.ApiError(500, f'resourceVersion: Invalid value: "{raw_rv}": strconv.ParseUint: parsing '
                               f'"{raw_rv}": invalid syntax', reason="")
    since = int(raw_rv) if raw_rv not in ("", "0") else None
    timeout = params.integer(request, "timeoutSeconds")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (timeout if timeout and timeout > 0 else default_timeout)
    initial_bookmark = since is None and params.flag(request, "sendInitialEvents") and params.flag(
        request, "allowWatchBookmarks")
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        watcher = cluster.watch(res, since)
    except TooOld as exc:
        await response.prepare(request)
        await _send(response, {"type": "ERROR", "object": st.expired(str(exc))})
        await response.write_eof()
        return response
    try:
        await response.prepare(request)
        for past in watcher.backlog:
            await _send(response, translate(past, namespace, labels, fields))
        if initial_bookmark:
            await _send(response, bookmark(res, cluster.resource_version, initial_events_end=True))
        while (remaining := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(watcher.queue.get(), timeout=min(remaining, disconnect_poll))
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break  # the client left; aiohttp does not cancel the handler for us
                continue
            if event is None:
                break
            await _send(response, translate(event, namespace, labels, fields))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
    except ConnectionError:
        pass  # the client went away: nothing left to tell it
    finally:
        cluster.unwatch(watcher)
    return response


def _passes(obj: Object | None, namespace: str | None, labels: LabelSelector, fields: FieldSelector) -> bool:
    return (
        obj is not None and (namespace is None or namespace_of(obj) == namespace)
        and labels.matches(meta(obj).get("labels")) and fields.matches(obj)
    )


def translate(
    event: Event, namespace: str | None, labels: LabelSelector, fields: FieldSelector
) -> dict[str, Any] | None:
    """The event this watcher sees, or None: edits across its selector become ADDED/DELETED."""
    now = _passes(event.object, namespace, labels, fields)
    if event.type != "MODIFIED":
        return {"type": event.type, "object": event.object} if now else None
    before = _passes(event.previous, namespace, labels, fields)
    if now:
        return {"type": "MODIFIED" if before else "ADDED", "object": event.object}
    if before and event.previous is not None:
        gone = clone(event.previous)
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return {"type": "DELETED", "object": gone}
    return None


def bookmark(res: r.Resource, rv: str, *, initial_events_end: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": rv}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version, "metadata": metadata}}


async def _send(response: web.StreamResponse, event: dict[str, Any] | None) -> None:
    if event is not None:
        await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
