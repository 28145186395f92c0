"""The fake's HTTP face: Kubernetes REST paths, verbs and content types.

Everything here is translation: a request becomes one :class:`~.cluster.FakeCluster`
call and its result or :class:`~.status.ApiError` becomes a response, so the wire
behaviour (status codes, Status bodies) is decided in one place.  Fault injection and
the request log sit in a middleware in front of every Kubernetes path; the fake's own
control endpoints (:mod:`.control`) live under ``/_fake/`` and are neither logged nor
subject to faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from multidict import CIMultiDict

from remediator.testing.kube import control, discovery, params, watch
from remediator.testing.kube import resources as r
from remediator.testing.kube import status as st
from remediator.testing.kube.api import PATCH_TYPES
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.faults import TOO_MANY_REQUESTS_TEXT, Fault, RecordedRequest

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_BODY_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
#: The identity shown in Forbidden messages for injected 403s.
FAULT_USER = "system:serviceaccount:remediator:remediator"


@dataclass(frozen=True)
class Route:
    resource: r.Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_route(path: str) -> Route | None:
    """``/apis/apps/v1/namespaces/ns/deployments/web/scale`` -> its parts (None: not a resource path)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        return None
    res = r.lookup(group, version, rest[0])
    if res is None:
        return None
    return Route(res, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


class FakeKubeServer:
    """The aiohttp application around a cluster, plus start/stop on a loopback port."""

    def __init__(
        self,
        cluster: FakeCluster,
        *,
        watch_timeout: float = 1800.0,
        reconcile_interval: float | None = None,
        shutdown_timeout: float = 2.0,
    ) -> None:
        """``watch_timeout`` applies to watches without ``timeoutSeconds``; ``reconcile_interval``
        (real seconds) runs the controllers periodically, for a real-time clock."""
        self.cluster = cluster
        self.watch_timeout = watch_timeout
        self.reconcile_interval = reconcile_interval
        self.shutdown_timeout = shutdown_timeout
        #: How often an idle watch checks whether its client has gone away (real seconds).
        self.disconnect_poll = 1.0
        self.app = web.Application(middlewares=[self._middleware], client_max_size=16 * 2**20)
        self.app.router.add_route("*", "/{tail:.*}", self._route)
        self.app.on_shutdown.append(self._on_shutdown)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, shutdown_timeout=self.shutdown_timeout, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        if self.reconcile_interval:
            self._ticker = asyncio.create_task(self._tick(self.reconcile_interval))
        return self.url

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKubeServer:
        if not self.url:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_shutdown(self, app: web.Application) -> None:
        """Open watches and held requests would otherwise keep the shutdown waiting."""
        self.cluster.store.close_watches()
        self.cluster.faults.release()

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.cluster.reconcile()
            except Exception:
                log.exception("fake-kube reconcile failed")

    # -- middleware: request log and faults --------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        entry = self.cluster.requests.record(RecordedRequest(
            request.method, request.path, {k: request.query[k] for k in request.query},
            request.headers.get("Content-Type"), params.decode(await request.read()),
        ))
        fault = self.cluster.faults.take(request.method, request.path)
        response: web.StreamResponse | None = None
        if fault is not None:
            entry.fault = fault.id
            if fault.delay > 0:
                await self.cluster.faults.wait(fault.delay)
            if fault.ends_watch:
                response = _ended_watch(fault)
            elif fault.status is not None:
                response = _fault_response(fault, request)
        if response is None:
            try:
                response = await handler(request)
            except st.ApiError as exc:
                response = _error(exc)
        entry.status = response.status
        return response

    # -- routing --------------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_fake/"):
            return await control.handle(self.cluster, request, path)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        document = discovery.document(path, request.host or "127.0.0.1")
        if document is not None:
            return self._json(request, document)
        route = parse_route(path)
        if route is None:
            raise st.not_found_path()
        return await self._resource(request, route)

    async def _resource(self, request: web.Request, route: Route) -> web.StreamResponse:
        res, ns, name, sub = route.resource, route.namespace, route.name, route.subresource
        method = request.method
        if sub is not None and not (sub == "scale" and res.scale):
            raise st.not_found_path()
        if not res.namespaced:
            if ns is not None:
                raise st.not_found_path()
            ns = ""  # cluster-scoped objects are stored under the empty namespace
        if name is None:
            if method == "GET":
                verb = "watch" if params.flag(request, "watch") else "list"
                self._allow(res, verb)
                if verb == "watch":
                    return await watch.stream(request, self.cluster, res, ns, default_timeout=self.watch_timeout,
                                              disconnect_poll=self.disconnect_poll)
                return self._json(request, self.cluster.list_objects(
                    res, ns, label_selector=request.query.get("labelSelector"),
                    field_selector=request.query.get("fieldSelector"), limit=params.integer(request, "limit"),
                    continue_token=request.query.get("continue") or None,
                ))
            if method == "POST" and ns is not None:
                self._allow(res, "create")
                dry = params.dry_run(request, "CreateOptions")
                body = await self._body(request)
                fields = params.field_validation(request)
                created = self.cluster.create(res, ns, body, dry_run=dry, fields=fields)
                return self._json(request, created, status=201, warnings=fields.warnings)
            raise st.method_not_allowed()
        if ns is None:
            raise st.not_found_path()
        if sub == "scale":
            return await self._scale(request, res, ns, name)
        if method == "GET":
            self._allow(res, "get")
            return self._json(request, self.cluster.read(res, ns, name))
        if method == "PUT":
            self._allow(res, "update")
            dry = params.dry_run(request, "UpdateOptions")
            body = await self._body(request)
            fields = params.field_validation(request)
            replaced = self.cluster.replace(res, ns, name, body, dry_run=dry, fields=fields)
            return self._json(request, replaced, warnings=fields.warnings)
        if method == "PATCH":
            self._allow(res, "patch")
            dry = params.dry_run(request, "PatchOptions")
            patch_type, patch = await self._patch_body(request)
            fields = params.field_validation(request)
            patched = self.cluster.patch(res, ns, name, patch_type, patch, dry_run=dry, fields=fields)
            return self._json(request, patched, warnings=fields.warnings)
        if method == "DELETE":
            self._allow(res, "delete")
            # Options come from the body if there is one, else from the query; never both
            # (see params.delete_options: a merge here once hid a dry run that deleted).
            sent: Any = None
            if await request.read():
                decoded = await self._body(request)
                sent = {} if decoded is None else decoded  # "null" is a body, decoding to empty options
            options = params.delete_options(request, sent)
            result = self.cluster.delete(res, ns, name, options, dry_run=bool(options.get("dryRun")),
                                         grace_period=options.get("gracePeriodSeconds"))
            return self._json(request, result)
        raise st.method_not_allowed()

    async def _scale(self, request: web.Request, res: r.Resource, ns: str, name: str) -> web.StreamResponse:
        dry = params.dry_run(request, "PatchOptions" if request.method == "PATCH" else "UpdateOptions")
        if request.method == "GET":
            return self._json(request, self.cluster.read_scale(res, ns, name))
        if request.method == "PUT":
            body = await self._body(request)
            return self._json(request, self.cluster.replace_scale(res, ns, name, body, dry_run=dry))
        if request.method == "PATCH":
            patch_type, patch = await self._patch_body(request)
            return self._json(request, self.cluster.patch_scale(res, ns, name, patch_type, patch, dry_run=dry))
        raise st.method_not_allowed()

    @staticmethod
    def _allow(res: r.Resource, verb: str) -> None:
        if verb not in res.verbs:
            raise st.method_not_allowed()

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/yaml", "*/*", ""):
            raise st.unsupported_media_type(ctype, _BODY_TYPES)
        try:
            return yaml.safe_load(raw) if ctype == "application/yaml" else json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise st.bad_request(f"the request body could not be decoded: {exc}") from None

    async def _patch_body(self, request: web.Request) -> tuple[str, Any]:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in PATCH_TYPES:
            raise st.unsupported_patch_type()
        try:
            return ctype, json.loads(await request.read() or b"null")
        except ValueError as exc:
            raise st.bad_request(f"the patch could not be decoded as JSON: {exc}") from None

    def _json(
        self, request: web.Request, body: Any, status: int = 200, warnings: list[str] | None = None
    ) -> web.Response:
        pretty = request.query.get("pretty") in params.TRUE
        text = json.dumps(body, indent=2) if pretty else json.dumps(body, separators=(",", ":"))
        headers = CIMultiDict([("Content-Type", "application/json")])
        for warning in warnings or ():  # one header per warning, as the apiserver sends them
            headers.add("Warning", warning)
        return web.Response(status=status, body=(text + "\n").encode(), headers=headers)


def _error(exc: st.ApiError) -> web.Response:
    """Compact JSON and a newline, ``Content-Type: application/json`` with no charset: byte for byte the apiserver's."""
    text = json.dumps(exc.body, separators=(",", ":")) + "\n"
    headers = {"Content-Type": "application/json", **exc.headers}
    return web.Response(status=exc.code, body=text.encode(), headers=headers)


def _ended_watch(fault: Fault) -> web.Response:
    """A watch over at once: nothing at all, or the 410 Expired ERROR event (as :func:`watch.stream` sends it)."""
    body = b""
    if fault.ends_watch == "expired":
        event = {"type": "ERROR", "object": st.expired(fault.message or "too old resource version: 1 (2)")}
        body = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    return web.Response(status=200, body=body, headers={"Content-Type": "application/json"})


def _fault_response(fault: Fault, request: web.Request) -> web.Response:
    """The injected failure, worded as the apiserver would word it for this request."""
    status = fault.status or 500
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.plain_text:
        text = fault.message or (TOO_MANY_REQUESTS_TEXT if status == 429 else f"HTTP {status}\n")
        return web.Response(status=status, text=text, content_type="text/plain", headers=headers)
    route = parse_route(request.path)
    name = route.name if route is not None else None
    if route is not None and name and status == 409:
        err = st.conflict(route.resource, name, fault.message or st.MODIFIED)
    elif route is not None and name and status == 404:
        err = st.not_found(route.resource, name)
    elif route is not None and status == 403:
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(request.method, request.method.lower())
        where = f' in the namespace "{route.namespace}"' if route.namespace else ""
        why = fault.message or (f'User "{FAULT_USER}" cannot {verb} resource "{route.resource.plural}" '
                                f'in API group "{route.resource.group}"{where}')
        err = st.forbidden(route.resource, name or "", why)
    else:
        err = st.generic(status, fault.message, retry_after=fault.retry_after)
    if fault.retry_after is not None:
        err.details.setdefault("retryAfterSeconds", fault.retry_after)
        err.headers.update(headers)
    return _error(err)
