"""Guardrail state for a single process, optionally persisted to a JSON file.

It runs the pure rules of :mod:`remediator.core.guardrails` under one asyncio lock;
persisting after each change makes cooldowns and rate limits survive a restart of
the embedded single-node daemon.  Replay uses it without a file.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from remediator.core import guardrails as rules
from remediator.core.guardrails import Breaker, GuardState, Lock, Policy, Request, Verdict
from remediator.ports import Clock


def _dump(state: GuardState) -> dict[str, Any]:
    return {
        "paused": state.paused,
        "locks": {k: asdict(v) for k, v in state.locks.items()},
        "cooldown_until": state.cooldown_until,
        "history": state.history,
        "budget_history": state.budget_history,
        "running": state.running,
        "breakers": {k: asdict(v) for k, v in state.breakers.items()},
    }


def _load(raw: dict[str, Any]) -> GuardState:
    return GuardState(
        paused=bool(raw.get("paused", False)),
        locks={k: Lock(**v) for k, v in raw.get("locks", {}).items()},
        cooldown_until=dict(raw.get("cooldown_until", {})),
        history={k: list(v) for k, v in raw.get("history", {}).items()},
        budget_history={k: list(v) for k, v in raw.get("budget_history", {}).items()},
        running=dict(raw.get("running", {})),
        breakers={k: Breaker(**v) for k, v in raw.get("breakers", {}).items()},
    )


class MemoryGuardrails:
    def __init__(self, policy: Policy, clock: Clock, path: Path | None = None) -> None:
        self._policy = policy
        self._clock = clock
        self._path = path
        self._lock = asyncio.Lock()
        self.state = GuardState()
        if path is not None and path.exists():
            self.state = _load(json.loads(path.read_text()))

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(_dump(self.state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)

    async def admit(self, req: Request) -> Verdict:
        async with self._lock:
            verdict = rules.admit(req, self.state, self._policy)
            if verdict.admitted:
                self._save()
            return verdict

    async def renew(self, req: Request) -> bool:
        async with self._lock:
            return rules.renew(req, self.state, self._clock.now().timestamp())

    async def release(self, req: Request, *, succeeded: bool) -> None:
        async with self._lock:
            rules.release(req, self.state, self._policy, succeeded=succeeded, now=self._clock.now().timestamp())
            self._save()

    async def paused(self) -> bool:
        return self.state.paused

    async def set_paused(self, paused: bool) -> None:
        async with self._lock:
            self.state.paused = paused
            self._save()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
