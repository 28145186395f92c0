"""The fake's own HTTP control API under ``/_fake/``, for driving a standalone instance.

It mirrors the Python API (``cluster.faults``, ``cluster.requests``, ``compact_history``,
``advance``) so a test that runs the fake as a process can do what an in-process test
does.  These paths are never logged and never subject to faults.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from remediator.testing.kube import params
from remediator.testing.kube.clock import ManualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.faults import RecordedRequest


async def handle(cluster: FakeCluster, request: web.Request, path: str) -> web.Response:
    faults, method = cluster.faults, request.method
    body = params.decode(await request.read())
    args: dict[str, Any] = body if isinstance(body, dict) else dict(request.query)
    if path == "/_fake/faults":
        if method == "GET":
            return web.json_response({"faults": [f.describe() for f in faults.rules],
                                      "neverReady": [list(w) for w in faults.never_ready_workloads]})
        if method == "POST":
            return _add_fault(cluster, args)
        if method == "DELETE":
            faults.clear()
            return web.json_response({"cleared": True})
    if path.startswith("/_fake/faults/") and method == "DELETE":
        tail = path.rsplit("/", 1)[1]
        removed = tail.isdigit() and faults.remove(int(tail))
        return web.json_response({"removed": removed}, status=200 if removed else 404)
    if path == "/_fake/release" and method == "POST":
        faults.release()
        return web.json_response({"released": True})
    if path == "/_fake/never-ready" and method in ("POST", "DELETE"):
        if not args.get("namespace") or not args.get("name"):
            return web.json_response({"error": "namespace and name are required"}, status=400)
        action = faults.never_ready if method == "POST" else faults.allow_ready
        action(str(args["namespace"]), str(args["name"]), str(args.get("kind") or "Deployment"))
        cluster.reconcile()
        return web.json_response({"neverReady": [list(w) for w in faults.never_ready_workloads]})
    if path == "/_fake/requests":
        if method == "GET":
            return web.json_response({"requests": [_describe(e) for e in cluster.requests]})
        if method == "DELETE":
            cluster.requests.clear()
            return web.json_response({"cleared": True})
    if path == "/_fake/compact" and method == "POST":
        cluster.compact_history()
        return web.json_response({"resourceVersion": cluster.resource_version})
    if path == "/_fake/reconcile" and method == "POST":
        cluster.reconcile()
        return web.json_response({"resourceVersion": cluster.resource_version})
    if path == "/_fake/advance" and method == "POST":
        if not isinstance(cluster.clock, ManualClock):
            return web.json_response({"error": "this fake runs on real time"}, status=400)
        cluster.advance(float(args.get("seconds") or 0))
        return web.json_response({"now": cluster.now()})
    return web.json_response({"error": f"unknown control endpoint {method} {path}"}, status=404)


def _add_fault(cluster: FakeCluster, args: dict[str, Any]) -> web.Response:
    """``{"method", "path", "status", "times", "message", "retryAfter", "delay", "hang", "plainText", "endsWatch"}``."""
    try:
        times = args.get("times", 1)
        fault = cluster.faults.add(
            method=str(args.get("method", "*")),
            path=str(args.get("path", "")),
            times=None if times is None else int(times),
            status=int(args["status"]) if args.get("status") is not None else None,
            message=args.get("message"),
            retry_after=int(args["retryAfter"]) if args.get("retryAfter") is not None else None,
            delay=math.inf if args.get("hang") else float(args.get("delay") or 0.0),
            plain_text=args.get("plainText"),
            ends_watch=str(args.get("endsWatch") or ""),
        )
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"fault": fault.describe()}, status=201)


def _describe(e: RecordedRequest) -> dict[str, Any]:
    return {"method": e.method, "path": e.path, "query": e.query, "contentType": e.content_type,
            "body": e.body, "status": e.status, "fault": e.fault}
