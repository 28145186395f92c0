"""``remediator serve`` as a subprocess, as a deployment runs it: its JSON log read as it comes.

A test waits for a log event (``listening``, ``execution finished``, ``playbooks loaded``)
rather than polling the daemon: it acts the moment the daemon says it got there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Bounds a wait on a loaded two-core machine; a healthy daemon answers in well under a second.
PATIENCE = 60.0

Event = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    url: str
    events: list[Event] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # lines that were not JSON: there must be none
    wrapped: bool = False  # started under a wrapper: the daemon is its child
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode(errors="replace").rstrip("\n")
            try:
                event = json.loads(text)
            except ValueError:
                self.raw.append(text)
                continue
            async with self._changed:
                self.events.append(event if isinstance(event, dict) else {"event": event})
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def event(self, predicate: Callable[[Event], bool], *, after: int = 0) -> Event:
        """The first logged event from index ``after`` on that satisfies ``predicate``; waits for it."""
        async def wait() -> Event:
            async with self._changed:
                while True:
                    found = next((e for e in self.events[after:] if predicate(e)), None)
                    if found is not None:
                        return found
                    if self.proc.returncode is not None:
                        raise AssertionError(f"the daemon exited ({self.proc.returncode}) first: {self.log()}")
                    await self._changed.wait()

        return await asyncio.wait_for(wait(), PATIENCE)

    async def named(self, name: str, *, after: int = 0, **fields: Any) -> Event:
        return await self.event(lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items()),
                                after=after)

    @property
    def pid(self) -> int:
        """The daemon's process: the one started, or under a wrapper (``unshare --fork``) its one child."""
        if not self.wrapped:
            return self.proc.pid
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    async def exited(self) -> int:
        """The exit code, once the daemon has exited (within :data:`PATIENCE`)."""
        return await asyncio.wait_for(self.proc.wait(), PATIENCE)

    def log(self) -> str:
        return "\n".join([json.dumps(e) for e in self.events] + self.raw)


@contextlib.asynccontextmanager
async def started(args: Sequence[str], env: Mapping[str, str], *, cwd: str | None = None,
                  wrap: Sequence[str] = ()) -> AsyncIterator[Daemon]:
    """Start ``python -m remediator <args>`` (under ``wrap``: ``unshare ...``) and yield at once;
    SIGTERM it at the end if it still runs."""
    proc = await asyncio.create_subprocess_exec(
        *wrap, sys.executable, "-m", "remediator", *args, env=dict(env), cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    daemon = Daemon(proc, "", wrapped=bool(wrap))
    reader = asyncio.create_task(daemon._read())
    try:
        yield daemon
    finally:
        if proc.returncode is None:
            with contextlib.suppress(OSError, AssertionError):  # a wrapper does not pass the signal on
                os.kill(daemon.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), PATIENCE)
        finally:
            if proc.returncode is None:
                proc.kill()
            await reader


@contextlib.asynccontextmanager
async def serving(args: Sequence[str], env: Mapping[str, str], *, cwd: str | None = None,
                  listen: str | None = None) -> AsyncIterator[Daemon]:
    """Start ``python -m remediator <args>``; yield once it logged ``listening``; SIGTERM it at the end."""
    async with started(args, env, cwd=cwd) as daemon:
        ready = await daemon.named("listening")
        address = listen or str(ready["address"])
        host, _, port = address.rpartition(":")
        daemon.url = f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
        yield daemon
