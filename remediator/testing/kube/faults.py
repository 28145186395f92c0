"""Fault injection and the request log: how tests make the fake misbehave and check what was sent.

Faults are rules consumed by matching requests ("the next 2 PATCHes to .../web fail
with 409"), so a test states exactly which call fails and the retry that follows sees
a healthy server.  Readiness faults are keyed on the workload, because that is how a
bad release shows up: every new pod of one Deployment fails its readiness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: The flow-control filter's plain-text 429 body (``priority-and-fairness.go``).
TOO_MANY_REQUESTS_TEXT = "Too many requests, please try again later.\n"


@dataclass
class Fault:
    """One rule: requests matching ``method`` and ``path`` (a regex searched in the URL path)."""

    id: int
    method: str
    path: re.Pattern[str]
    remaining: int | None  # None: every matching request, until cleared
    status: int | None = None
    message: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    plain_text: bool = False
    #: "ended": a watch answered 200 with no event (the apiserver, or a proxy, ended it at once);
    #: "expired": one answered with the watch cache's 410 Expired ERROR event.
    ends_watch: str = ""
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and self.path.search(path) is not None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "method": self.method, "path": self.path.pattern, "remaining": self.remaining,
            "status": self.status, "message": self.message, "retryAfter": self.retry_after,
            "delay": None if math.isinf(self.delay) else self.delay, "hang": math.isinf(self.delay),
            "plainText": self.plain_text, "endsWatch": self.ends_watch or None, "hits": self.hits,
        }


class Faults:
    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._ids = itertools.count(1)
        self._never_ready: set[tuple[str, str, str]] = set()
        self._released = asyncio.Event()

    # -- request faults ---------------------------------------------------------------------

    def add(
        self,
        *,
        method: str = "*",
        path: str = "",
        times: int | None = 1,
        status: int | None = None,
        message: str | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        plain_text: bool | None = None,
        ends_watch: str = "",
    ) -> Fault:
        """The general form; the named helpers below cover the usual cases."""
        if ends_watch not in ("", "ended", "expired"):
            raise ValueError(f"ends_watch is 'ended' or 'expired', not {ends_watch!r}")
        if status is None and delay <= 0 and not ends_watch:
            raise ValueError("a fault needs a status, a delay, or both")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every request)")
        if plain_text is None:
            plain_text = status == 429
        rule = Fault(next(self._ids), method.upper(), re.compile(path), times, status, message, retry_after,
                     delay, plain_text, ends_watch)
        self._rules.append(rule)
        return rule

    def fail(
        self, status: int, *, method: str = "*", path: str = "", times: int | None = 1,
        message: str | None = None, retry_after: int | None = None,
    ) -> Fault:
        """Matching requests fail with ``status`` and a Status body worded as the apiserver would."""
        return self.add(method=method, path=path, times=times, status=status, message=message,
                        retry_after=retry_after, plain_text=False)

    def conflict(self, *, method: str = "*", path: str = "", times: int | None = 1) -> Fault:
        """409 "the object has been modified", naming the object in the request path."""
        return self.fail(409, method=method, path=path, times=times)

    def throttle(
        self, *, method: str = "*", path: str = "", times: int | None = 1, retry_after: int = 1,
        status_body: bool = False,
    ) -> Fault:
        """429 as the flow-control filter sends it (text/plain); ``status_body`` for the Status form."""
        return self.add(method=method, path=path, times=times, status=429, retry_after=retry_after,
                        plain_text=not status_body)

    def server_error(
        self, status: int = 500, *, method: str = "*", path: str = "", times: int | None = 1,
        message: str | None = None,
    ) -> Fault:
        return self.fail(status, method=method, path=path, times=times, message=message)

    def delay(self, seconds: float, *, method: str = "*", path: str = "", times: int | None = 1) -> Fault:
        """Hold matching requests for ``seconds`` (real time: it is the network that is slow)."""
        return self.add(method=method, path=path, times=times, delay=seconds)

    def end_watch(self, *, path: str = "", times: int | None = 1, expired: bool = False) -> Fault:
        """Matching watches (GETs: aim ``path`` at a collection only watched) end at once, with no event
        (200 and an empty body), or with ``expired`` the 410 Expired ERROR event of a version the watch
        cache no longer holds: what a proxy cutting watches, or a cache that cannot keep up, looks like."""
        return self.add(method="GET", path=path, times=times, ends_watch="expired" if expired else "ended")

    def hang(self, *, method: str = "*", path: str = "", times: int | None = 1) -> Fault:
        """Hold matching requests until :meth:`release` or :meth:`clear` (or server shutdown)."""
        return self.add(method=method, path=path, times=times, delay=math.inf)

    def take(self, method: str, path: str) -> Fault | None:
        """The first rule matching this request, consumed by one use."""
        for rule in self._rules:
            if rule.matches(method, path):
                rule.hits += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    async def wait(self, seconds: float) -> None:
        """Sleep for a delay fault, cut short by :meth:`release`."""
        released = self._released
        if math.isinf(seconds):
            await released.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), timeout=seconds)

    def release(self) -> None:
        """Let every held request continue now."""
        self._released.set()
        self._released = asyncio.Event()

    @property
    def rules(self) -> list[Fault]:
        return list(self._rules)

    def remove(self, fault_id: int) -> bool:
        before = len(self._rules)
        self._rules = [f for f in self._rules if f.id != fault_id]
        return len(self._rules) != before

    # -- readiness faults -------------------------------------------------------------------

    def never_ready(self, namespace: str, name: str, kind: str = "Deployment") -> None:
        """New pods of this workload (Deployment, StatefulSet, ReplicaSet or Pod) run but never become ready."""
        self._never_ready.add((namespace, kind, name))

    def allow_ready(self, namespace: str, name: str, kind: str = "Deployment") -> None:
        self._never_ready.discard((namespace, kind, name))

    def blocks_readiness(self, namespace: str, kind: str, name: str) -> bool:
        return (namespace, kind, name) in self._never_ready

    @property
    def never_ready_workloads(self) -> list[tuple[str, str, str]]:
        return sorted(self._never_ready)

    def clear(self) -> None:
        """Drop every rule and readiness fault and release held requests."""
        self._rules.clear()
        self._never_ready.clear()
        self.release()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # decoded JSON when the body is JSON, else text, None when empty
    status: int | None = None  # filled in when the response is known
    fault: int | None = None  # id of the fault rule that answered, if any

    @property
    def watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch", "").lower() in ("true", "1")

    @property
    def dry_run(self) -> bool:
        """Whether the apiserver treated this request as a dry run.  A DELETE with a body takes its
        options from the body alone (the query's dryRun is then ignored, as the real apiserver does)."""
        if self.method == "DELETE" and self.body not in (None, ""):
            return isinstance(self.body, dict) and self.body.get("dryRun") == ["All"]
        return self.query.get("dryRun") == "All"


@dataclass
class RequestLog:
    """Every API request, oldest first (bounded so a long-running standalone fake stays small)."""

    limit: int = 10_000
    _entries: deque[RecordedRequest] = field(default_factory=deque)
    _waiters: list[tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]] = field(
        default_factory=list
    )

    def record(self, entry: RecordedRequest) -> RecordedRequest:
        if len(self._entries) >= self.limit:
            self._entries.popleft()
        self._entries.append(entry)
        for predicate, fut in self._waiters:
            if not fut.done() and predicate(entry):
                fut.set_result(entry)
        return entry

    async def arrival(
        self, method: str | None = None, path: str | None = None, *,
        where: Callable[[RecordedRequest], bool] | None = None, seen: bool = True,
    ) -> RecordedRequest:
        """Wait until a matching request reaches the server (at once if one already has, unless ``seen=False``).

        Lets a test act at the moment the client has got somewhere, e.g. "the rollout is
        being watched now", without polling or real sleeps.
        """
        pattern = re.compile(path) if path is not None else None

        def predicate(e: RecordedRequest) -> bool:
            return ((method is None or e.method == method.upper()) and (pattern is None or bool(pattern.search(e.path)))
                    and (where is None or where(e)))

        if seen:
            for entry in self._entries:
                if predicate(entry):
                    return entry
        fut: asyncio.Future[RecordedRequest] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            return await fut
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> list[RecordedRequest]:
        return list(self._entries)

    def matching(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Requests with this method (any if None) whose path matches the regex ``path`` (searched)."""
        pattern = re.compile(path) if path is not None else None
        return [
            e for e in self._entries
            if (method is None or e.method == method.upper()) and (pattern is None or pattern.search(e.path))
        ]

    def writes(self) -> list[RecordedRequest]:
        return [e for e in self._entries if e.method in ("POST", "PUT", "PATCH", "DELETE")]

    def clear(self) -> None:
        self._entries.clear()
