"""A runtime with notification channels pointed at local receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.ports import Executor, ReceivedAlert
from remediator.runtime import Runtime, open_runtime

PUBLIC_URL = "https://remediator.example"
PLAYBOOK = """
name: restart-web
match: {alertname: WebDown, matchers: ['namespace=~".+"', 'deployment=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
steps:
  - action: restart
  - action: notify
    channel: ops-hook
    message: "restarted {{ labels.deployment }}"
notify: [%s]
"""

OpenRuntime = Callable[..., Any]


@pytest.fixture
def open_notify_runtime(
    tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock
) -> OpenRuntime:
    @asynccontextmanager
    async def open_(
        channels: Mapping[str, dict[str, Any]],
        executor: Executor,
        *,
        notify: tuple[str, ...] | None = None,
        playbook: str | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Runtime]:
        pb = tmp_path / "pb"
        pb.mkdir(exist_ok=True)
        names = ", ".join(notify if notify is not None else tuple(channels))
        (pb / "p.yaml").write_text(playbook or PLAYBOOK % names)
        settings = settings_factory(
            playbooks=str(pb), channels=dict(channels), public_url=PUBLIC_URL, **{"dry_run": False, **overrides}
        )
        async with open_runtime(settings, clock=vclock, executors=(executor, executor), start_worker=False) as rt:
            yield rt

    return open_


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    return str(path)


async def record(rt: Runtime, raw: dict[str, Any]) -> None:
    """The payload's alerts recorded as the webhook records them (nothing decided yet)."""
    p = validate_payload(raw)
    await rt.store.record_alerts([ReceivedAlert(a, rt.clock.now(), p.receiver, p.group_key) for a in p.alerts])


async def deliver(rt: Runtime, raw: dict[str, Any]) -> None:
    await record(rt, raw)
    await rt.worker.drain()
