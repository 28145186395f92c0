"""Object storage with etcd's visible behaviour: one revision counter, an event history, watchers.

Every write gets the next global resourceVersion and one watch event; the history is
bounded so that a client watching from an old resourceVersion gets 410 Expired, as it
would after etcd compaction.  The store knows nothing of API semantics (defaults,
validation, preconditions): those live in :mod:`.api`, and the controllers write here
through the same path so watchers see their changes too.

Two indexes keep the simulated control plane linear in the number of objects, as a
real controller's informer indexes do: objects by the uid of their controller owner
(a Deployment's ReplicaSets, a ReplicaSet's pods) and every uid in use.  Listeners
hear every change synchronously, which is how the controllers learn what to resync.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from remediator.testing.kube.objects import clone

Object = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One change; ``previous`` lets a selector-filtered watch turn edits into ADDED/DELETED."""

    type: str
    resource: str
    object: Object
    previous: Object | None
    rv: int


class TooOld(Exception):
    """The requested resourceVersion is older than the retained history (watch answers 410)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")


@dataclass(eq=False)
class Watcher:
    resource: str
    backlog: list[Event]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


def _key(obj: Object) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta["name"])


def _controller_uid(obj: Object) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _same_but_version(a: Object, b: Object) -> bool:
    """Equal apart from resourceVersion: such a write is a no-op, as in the apiserver."""
    a_meta, b_meta = dict(a.get("metadata") or {}), dict(b.get("metadata") or {})
    a_meta.pop("resourceVersion", None)
    b_meta.pop("resourceVersion", None)
    return a_meta == b_meta and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }


class Store:
    def __init__(self, history_size: int = 1000) -> None:
        self._objects: dict[str, dict[tuple[str, str], Object]] = {}
        self._rv = 1
        self._history: deque[Event] = deque()
        self._history_size = max(1, history_size)
        self._compacted = 0
        self._watchers: set[Watcher] = set()
        self._listeners: list[Callable[[Event], None]] = []
        # (resource, controller uid) -> keys of the objects it controls; uid -> (resource, key)
        self._owned: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._uids: dict[str, tuple[str, tuple[str, str]]] = {}

    @property
    def resource_version(self) -> int:
        return self._rv

    # -- reads ----------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Object | None:
        obj = self._objects.get(resource, {}).get((namespace, name))
        return clone(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Object]:
        return [clone(o) for o in self.iter(resource, namespace)]

    def iter(self, resource: str, namespace: str | None = None) -> Iterator[Object]:
        """Stored objects without copying, sorted by (namespace, name): callers must not mutate them."""
        bucket = self._objects.get(resource, {})
        for key in sorted(bucket):
            if namespace is None or key[0] == namespace:
                yield bucket[key]

    def peek(self, resource: str, namespace: str, name: str) -> Object | None:
        """The stored object itself, not a copy: callers must not mutate it."""
        return self._objects.get(resource, {}).get((namespace, name))

    def owned(self, resource: str, owner_uid: str) -> builtins.list[Object]:
        """Copies of the objects of ``resource`` whose controller owner has ``owner_uid``, by (namespace, name)."""
        bucket = self._objects.get(resource, {})
        return [clone(bucket[k]) for k in sorted(self._owned.get((resource, owner_uid), ()))]

    def owned_view(self, resource: str, owner_uid: str) -> builtins.list[Object]:
        """Like :meth:`owned`, but the stored objects themselves: for readers that never mutate them."""
        bucket = self._objects.get(resource, {})
        return [bucket[k] for k in sorted(self._owned.get((resource, owner_uid), ()))]

    def owned_keys(self, resource: str, owner_uid: str) -> builtins.list[tuple[str, str]]:
        return sorted(self._owned.get((resource, owner_uid), ()))

    def has_uid(self, uid: str) -> bool:
        return uid in self._uids

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with every change, synchronously, after it is stored."""
        self._listeners.append(listener)

    # -- writes ---------------------------------------------------------------------------

    # Writes take ownership of the object they are given (the caller must not touch it
    # afterwards) and return the stored object itself: stored objects are replaced, never
    # mutated, so sharing them is safe for readers, and copying every write is what made
    # the fake slow.  Whoever hands an object out of the fake copies it first.

    def insert(self, resource: str, obj: Object) -> Object:
        key = _key(obj)
        bucket = self._objects.setdefault(resource, {})
        if key in bucket:
            raise KeyError(f"{resource} {key} already exists")
        stored = self._stamp(obj)
        bucket[key] = stored
        self._index(resource, key, None, stored)
        self._emit("ADDED", resource, stored, None)
        return stored

    def update(self, resource: str, obj: Object) -> Object:
        """Replace the stored object; a write that changes nothing keeps its resourceVersion."""
        key = _key(obj)
        bucket = self._objects.get(resource, {})
        previous = bucket[key]
        if _same_but_version(previous, obj):
            return previous
        stored = self._stamp(obj)
        bucket[key] = stored
        self._index(resource, key, previous, stored)
        self._emit("MODIFIED", resource, stored, previous)
        return stored

    def delete(self, resource: str, namespace: str, name: str) -> Object | None:
        previous = self._objects.get(resource, {}).pop((namespace, name), None)
        if previous is None:
            return None
        gone = self._stamp(clone(previous))
        self._index(resource, (namespace, name), previous, None)
        self._emit("DELETED", resource, gone, previous)
        return gone

    def _index(self, resource: str, key: tuple[str, str], old: Object | None, new: Object | None) -> None:
        old_owner = _controller_uid(old) if old is not None else None
        new_owner = _controller_uid(new) if new is not None else None
        if old_owner != new_owner and old_owner is not None:
            keys = self._owned.get((resource, old_owner))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._owned[(resource, old_owner)]
        if new_owner is not None:
            self._owned.setdefault((resource, new_owner), set()).add(key)
        old_uid = str((old.get("metadata") or {}).get("uid") or "") if old is not None else ""
        new_uid = str((new.get("metadata") or {}).get("uid") or "") if new is not None else ""
        if old_uid and old_uid != new_uid:
            self._uids.pop(old_uid, None)
        if new_uid:
            self._uids[new_uid] = (resource, key)

    def _stamp(self, obj: Object) -> Object:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        return obj

    def _emit(self, kind: str, resource: str, obj: Object, previous: Object | None) -> None:
        # Stored objects are replaced, never mutated in place, so the event may share them.
        event = Event(kind, resource, obj, previous, self._rv)
        if len(self._history) >= self._history_size:
            self._compacted = self._history.popleft().rv
        self._history.append(event)
        for watcher in self._watchers:
            if watcher.resource == resource:
                watcher.queue.put_nowait(event)
        for listener in self._listeners:
            listener(event)

    # -- watches --------------------------------------------------------------------------

    def watch(self, resource: str, since: int | None) -> Watcher:
        """Subscribe; the backlog holds what the client has not seen yet.

        ``since=None`` means "from now, starting with the current state": every existing
        object as a synthetic ADDED event, as the apiserver does for resourceVersion "" or "0".
        """
        if since is None:
            backlog = [Event("ADDED", resource, clone(o), None, int(o["metadata"]["resourceVersion"]))
                       for o in self.iter(resource)]
        else:
            if since < self._compacted:
                raise TooOld(since, self._compacted + 1)
            backlog = [e for e in self._history if e.resource == resource and e.rv > since]
        watcher = Watcher(resource, backlog)
        self._watchers.add(watcher)
        return watcher

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watches(self) -> None:
        """End every open watch (server shutdown): each stream ends as if it had timed out."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        self._watchers.clear()

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older resourceVersions now get 410."""
        self._history.clear()
        self._compacted = self._rv
