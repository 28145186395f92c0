"""The executor's world in one process: the daemon's runtime, the fake apiserver, one virtual clock.

The fake cluster reads the daemon's :class:`VirtualClock`, so pods become ready, progress
deadlines pass and retry backoffs end only when a test moves that one clock.  Alerts go
in through the store and the worker exactly as a webhook delivery would put them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.alerts import validate_payload
from remediator.executors.kube import KubeExecutor
from remediator.ports import ReceivedAlert
from remediator.runtime import Runtime, open_runtime
from remediator.settings import KubernetesSettings
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import FakeKube
from tests.kube_fake.helpers import deployment
from tests.kube_fake.helpers import statefulset as db
from tests.payloads import alert_json, payload

NS = "shop"
__all__ = ["NS", "Harness", "db", "open_harness", "playbook", "steps_of", "web"]

#: Backoffs (≤ 10 s) and the Retry-After values the tests use; never a request timeout (30 s),
#: a lease renewal (100 s) or a wait_healthy timeout, which tests move past explicitly.
RETRY_SLEEPS = 15.0


def web(
    name: str = "web",
    *,
    replicas: int = 3,
    image: str = "registry.example/web:1.0",
    env: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment in shop whose pods also run a sidecar, so a change to ``app`` must leave it alone."""
    manifest = deployment(name, NS, replicas=replicas, image=image, env=env, **spec)
    manifest["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "registry.example/proxy:2"})
    return manifest


def playbook(
    steps: str, *, on_failure: str = "", name: str = "fix", guardrails: str = "", alertname: str = "Broken",
    kind: str = "Deployment",
) -> str:
    """A playbook for ``alertname`` on the ``kind`` named by label ``deployment`` in shop (which its matchers
    guarantee: a target reading a label no matcher guarantees is refused at load)."""
    text = textwrap.dedent(
        f"""\
        name: {name}
        match: {{alertname: {alertname}, matchers: ['deployment=~".+"']}}
        target: {{kind: {kind}, namespace: shop, name: "{{{{ labels.deployment }}}}"}}
        guardrails:
          namespaces: [shop]
        """
    )
    if guardrails:
        text += textwrap.indent(textwrap.dedent(guardrails), "  ")
    text += "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")
    if on_failure:
        text += "on_failure:\n" + textwrap.indent(textwrap.dedent(on_failure), "  ")
    return text


class Harness:
    def __init__(self, rt: Runtime, kube: FakeKube, clock: VirtualClock) -> None:
        self.rt = rt
        self.kube = kube
        self.cluster: FakeCluster = kube.cluster
        self.clock = clock

    # -- alerts in ----------------------------------------------------------------------

    async def record(self, deployment: str = "web", **labels: str) -> None:
        raw = payload(alert_json({"alertname": "Broken", "namespace": NS, "deployment": deployment, **labels}))
        p = validate_payload(raw)
        await self.rt.store.record_alerts(
            [ReceivedAlert(a, self.clock.now(), p.receiver, p.group_key) for a in p.alerts]
        )

    def start(self, deployment: str = "web", **labels: str) -> asyncio.Task[Any]:
        """Deliver an alert and let the worker process it, in the background."""

        async def go() -> None:
            await self.record(deployment, **labels)
            await self.rt.worker.drain()

        return asyncio.create_task(go())

    async def fire(
        self, deployment: str = "web", *, drive: Callable[[float], bool] | None = None, **labels: str
    ) -> dict[str, Any]:
        """Deliver an alert, let the pipeline run it to the end, and return the execution's audit.

        While it runs, time is moved past every short sleep (``drive``: retry backoffs by
        default), as if the executor had waited for real.
        """
        await self.until_done(self.start(deployment, **labels), drive=drive)
        return await self.execution()

    async def until_done(
        self, task: asyncio.Task[Any] | Coroutine[Any, Any, Any], *, drive: Callable[[float], bool] | None = None
    ) -> Any:
        """Wait for ``task``, moving time on whenever the code under test waits for it.

        Two kinds of waiting move the shared clock: a short sleep (``drive``: retry backoffs
        by default) is skipped to its end, and a new watch on the fake (wait_healthy) lets
        the cluster run until it has settled, as a rollout would while kubectl watched.
        """
        task = task if isinstance(task, asyncio.Task) else asyncio.ensure_future(task)
        predicate = drive or (lambda left: left <= RETRY_SLEEPS)
        watches_handled = self._watches()
        while not task.done():
            sleeper = asyncio.ensure_future(self.clock.sleeping(predicate))
            watch = asyncio.ensure_future(self._new_watch(watches_handled))
            done, _ = await asyncio.wait({task, sleeper, watch}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (sleeper, watch):
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await waiter
            if sleeper in done:
                await self.advance(sleeper.result())
            elif watch in done:
                watches_handled = self._watches()
                await self.settle()
        return task.result()

    async def _new_watch(self, handled: int) -> None:
        await self.cluster.requests.arrival(where=lambda r: self._watches() > handled)

    def _watches(self) -> int:
        return sum(1 for r in self.cluster.requests if r.watch)

    async def settle(self, limit: float = 3600.0) -> None:
        """Move time until the fake cluster has nothing left to do on its own (rollouts finished)."""
        start = self.clock.monotonic()
        while (due := self.cluster.controller.next_due()) is not None and self.clock.monotonic() - start < limit:
            await self.advance(max(due - self.cluster.now(), 0.001))

    async def answer_lost(
        self, method: str, path: str, *, request_timeout: float, changes: str = "deployments"
    ) -> None:
        """The client gives up on a held ``method path`` after ``request_timeout``; the apiserver then
        commits it (a write that landed although its answer was lost), changing ``changes``."""
        await self.cluster.requests.arrival(method, path)
        await self.sleeping_for(request_timeout)
        await self.advance(request_timeout)
        watching = self.cluster.watch(changes, int(self.cluster.resource_version))
        try:
            self.cluster.faults.release()
            await watching.queue.get()
        finally:
            self.cluster.unwatch(watching)

    # -- time ---------------------------------------------------------------------------

    async def sleeping_for(self, seconds: float) -> float:
        """Wait until something sleeps ``seconds`` on the clock (e.g. a Retry-After, a request timeout)."""
        return await self.clock.sleeping(lambda left: math.isclose(left, seconds, abs_tol=1e-6))

    async def advance(self, seconds: float) -> None:
        """Move the shared clock, stopping at every sleeper's deadline and every cluster event on the way."""
        target = self.clock.monotonic() + seconds
        while True:
            now = self.clock.monotonic()
            stops = [target]
            if pending := self.clock.pending():
                stops.append(now + pending[0])
            due = self.cluster.controller.next_due()
            if due is not None:
                stops.append(now + max(0.0, due - self.cluster.now()))
            step = max(0.0, min(stops) - now)
            await self.clock.advance(step)
            self.cluster.reconcile()
            for _ in range(5):
                await asyncio.sleep(0)
            if self.clock.monotonic() >= target:
                return
            if step == 0.0 and due is not None and due <= self.cluster.now():
                await self.clock.advance(min(0.001, target - self.clock.monotonic()))

    # -- audit out ----------------------------------------------------------------------

    async def execution(self) -> dict[str, Any]:
        executions = await self.rt.store.list_executions()
        assert executions, "no execution was recorded"
        full = await self.rt.store.get_execution(executions[0]["id"])
        assert full is not None
        return full

    def get(self, name: str = "web", kind: str = "deployments") -> dict[str, Any]:
        obj = self.cluster.get(kind, NS, name)
        assert obj is not None, f"{kind}/{name} is not in the fake cluster"
        return obj


def steps_of(execution: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(r["phase"], r["action"], r["status"]) for r in execution["results"]]


@contextlib.asynccontextmanager
async def open_harness(
    tmp_path: Path,
    settings_factory: Callable[..., Any],
    clock: VirtualClock,
    kube: FakeKube,
    playbooks: dict[str, str],
    *,
    dry_run: bool = False,
    request_timeout: float = 30.0,
    retries: int = 5,
) -> AsyncIterator[Harness]:
    directory = tmp_path / "playbooks"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in playbooks.items():
        (directory / f"{name}.yaml").write_text(text)
    settings = settings_factory(playbooks=str(directory), dry_run=dry_run, data_dir=str(tmp_path / "data"))
    k = KubernetesSettings(mode="kubeconfig", request_timeout=request_timeout, retries=retries)
    live = KubeExecutor(kube.api, clock, k)
    dry = KubeExecutor(kube.api, clock, k, server_dry_run=True)
    async with open_runtime(settings, clock=clock, executors=(live, dry), start_worker=False) as rt:
        yield Harness(rt, kube, clock)
