"""The wired daemon: every adapter chosen from settings, built and closed in order.

``open_runtime`` is an async context manager so that the HTTP app (through
aiohttp's ``cleanup_ctx``), the CLI and the tests all build and tear down the same
way: stores first in, last out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import json
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml
from aiohttp import web

from remediator.clock import SystemClock
from remediator.core.errors import ConfigError, GuardrailUnavailable, StoreUnavailable
from remediator.core.guardrails import Budget, Policy
from remediator.core.playbooks import url_problem
from remediator.executors.checks import WithChecks, open_checks
from remediator.executors.plan_only import PlanOnlyExecutor, UnconfiguredExecutor
from remediator.guardstate.memory import GuardStateRows, MemoryGuardrails
from remediator.killswitch import KillSwitch
from remediator.metrics import Metrics
from remediator.notify.dispatcher import Dispatcher, open_dispatcher
from remediator.notify.log import LogNotifier
from remediator.pipeline import Pipeline, PipelineSettings
from remediator.playbook_files import PlaybookRepository
from remediator.ports import Clock, Executor, GuardrailStore, Notifier, Store
from remediator.settings import KubernetesSettings, Settings
from remediator.worker import Worker

WEBHOOK, READ, ADMIN = "webhook", "read", "admin"


class Credentials:
    """Tokens by role, re-read when one of their files changes, so a rotated Secret takes
    effect without a restart (the kubelet swaps the file; its inode or mtime changes).

    A webhook token (Alertmanager's) only posts alerts; a read token reads the audit; an admin
    token reads and pauses/resumes.  A token listed under several roles has them all.  A file
    that cannot be read at start stops the start; at a later reload the last good set stays.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._files = [f for f in (settings.webhook.tokens_file, settings.api.read_tokens_file,
                                   settings.api.admin_tokens_file) if f]
        self._stamp = self._fingerprint()
        self.roles = self._load()

    def _load(self) -> dict[str, frozenset[str]]:
        s = self.settings
        by_role = {WEBHOOK: s.webhook_tokens(), READ: s.read_tokens(), ADMIN: s.admin_tokens()}
        roles: dict[str, set[str]] = {}
        for role, tokens in by_role.items():
            for token in tokens:
                roles.setdefault(token, set()).update({role, READ} if role == ADMIN else {role})
        return {token: frozenset(r) for token, r in roles.items()}

    def _fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for f in self._files:
            try:
                st = Path(f).stat()
            except OSError:
                out.append((0, 0, 0))
                continue
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def refresh(self) -> None:
        """Re-read the token files if any changed since they were last read (cheap: a stat each)."""
        if self._files and self._fingerprint() != self._stamp:
            self.reload()

    def reload(self) -> bool:
        self._stamp = self._fingerprint()
        try:
            self.roles = self._load()
        except ConfigError as exc:
            structlog.get_logger("remediator").error("token reload failed: keeping the tokens in use", error=str(exc))
            return False
        structlog.get_logger("remediator").info("tokens reloaded", tokens=len(self.roles))
        return True

    def roles_of(self, presented: str) -> frozenset[str] | None:
        """The roles of ``presented``, or None for a token nobody issued.  Every token is compared,
        in constant time, so the answer's timing reveals nothing about which one matched."""
        found: frozenset[str] | None = None
        for token, roles in self.roles.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = roles
        return found


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    metrics: Metrics
    store: Store
    guardrails: GuardrailStore
    playbooks: PlaybookRepository
    pipeline: Pipeline
    worker: Worker
    credentials: Credentials
    kill_switch: KillSwitch  # durable: in the store, enforced through the guardrail state
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    notifications: Dispatcher | None = None
    # Set when a background task died: the daemon must stop (non-zero) rather than run half-alive.
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    _stopped: asyncio.Task[None] | None = field(default=None, init=False)  # the staged stop, once begun

    def supervise(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` among the runtime's background tasks, and fail the runtime if it ends on
        its own (an exception, or a loop that returned) while the daemon is not stopping."""
        self.tasks.append(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping or task.cancelled():
            return
        exc = task.exception()
        structlog.get_logger("remediator").error(
            "background task died: stopping the daemon", task=task.get_name(),
            error=repr(exc) if exc else "returned", exc_info=exc,
        )
        self.failed.set()

    def wake(self) -> None:
        self.worker.wake()

    def stop_taking_work(self) -> asyncio.Task[None]:
        """Begin the staged stop, at once: nothing more is claimed or decided, and running
        executions get ``worker.shutdown_timeout`` from now, then are handed over.  The task
        ends when all of that is done; calling again returns the same task.

        Why at once, from the signal handler: the stop used to begin only when aiohttp had
        drained its connections (up to a minute), and until then the replica that was told to
        go kept deciding alerts and starting remediations, and its executions' grace started late.
        """
        if self._stopped is None:
            self.stopping = True
            self.worker.stop()
            for task in self.tasks:
                if task.get_name() != "remediator-worker":
                    task.cancel()
            self._stopped = asyncio.get_running_loop().create_task(_stop(self), name="remediator-stop")
        return self._stopped


RUNTIME = web.AppKey("runtime", Runtime)


def guard_policy(settings: Settings) -> Policy:
    g = settings.guardrails
    return Policy(
        budgets=tuple(Budget(b.scope, b.max, b.per) for b in g.budgets),
        max_running=g.max_running,
        max_running_per_namespace=g.max_running_per_namespace,
        breaker_threshold=g.breaker_threshold,
        breaker_cooloff=g.breaker_cooloff,
    )


async def _open_store(settings: Settings, clock: Clock, stack: contextlib.AsyncExitStack) -> Store:
    if settings.database_url:
        try:
            from remediator.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError("database_url is set but the PostgreSQL store is not available in this build") from None
        store: Store = await PostgresStore.open(settings.database_url, clock)  # pragma: no cover
    else:
        from remediator.store.sqlite import SQLiteStore

        store = await SQLiteStore.open(Path(settings.data_dir) / "remediator.db", clock)
    stack.push_async_callback(store.close)
    return store


async def _open_guardrails(
    settings: Settings, clock: Clock, stack: contextlib.AsyncExitStack, store: Store, metrics: Metrics,
    playbooks: PlaybookRepository,
) -> GuardrailStore:
    policy = guard_policy(settings)
    if settings.redis_url:
        try:
            from remediator.guardstate.rebuild import Rebuilder
            from remediator.guardstate.redis import RedisGuardrails  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError("redis_url is set but the Redis guardrail state is not available in this build") from None
        # The clock is measured against Redis's only when it is the wall clock: a virtual one (tests) keeps
        # a time of its own that no server's clock can judge.
        skew = settings.guardrails.max_clock_skew if isinstance(clock, SystemClock) else 0.0
        guard: GuardrailStore = await RedisGuardrails.open(  # pragma: no cover
            settings.redis_url, policy, clock, max_clock_skew=skew, on_skew=metrics.clock_skew.set,
            # a state found lost (Redis restarted without persistence) is rebuilt from the store
            rebuild=Rebuilder(store, playbooks, policy),
            on_lost=lambda how: metrics.guardrail_state_lost.labels(how).inc())
    else:
        if settings.database_url:  # a shared store usually means replicas; embedded guardrails would not be shared
            structlog.get_logger("remediator").warning(
                "guardrail state is embedded (no redis_url): with several replicas, rate limits, cooldowns, "
                "locks and budgets hold per replica, not across them; set redis_url"
            )
        path = Path(settings.data_dir) / "guardrails.json"
        # With the embedded store, the state is rows of its database, changed in the decisions' transactions.
        guard = (await MemoryGuardrails.open_in(store, policy, clock, path) if isinstance(store, GuardStateRows)
                 else MemoryGuardrails(policy, clock, path))
    stack.push_async_callback(guard.close)
    return guard


async def _arm_kill_switch(settings: Settings, switch: KillSwitch) -> None:
    """``guardrails.paused`` starts the daemon paused, recorded as any pause is (only a resume
    undoes it).  Otherwise the guardrail state is re-armed now if it lost a recorded pause (a
    Redis restarted empty), before anything can be admitted."""
    if settings.guardrails.paused:
        await switch.pause(by="settings (guardrails.paused)")
        return
    with contextlib.suppress(StoreUnavailable, GuardrailUnavailable):  # then the first admission does it
        await switch.paused()


#: Where the kubelet mounts a pod's service account (token, ca.crt, namespace).
SERVICEACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Cluster:
    """The cluster ``kubernetes.mode`` resolves to, and who the daemon is there (for the startup log)."""

    mode: str  # incluster | kubeconfig | none
    server: str = ""
    context: str = ""
    user: str = ""
    kubeconfig: str = ""  # the file(s), for kubeconfig

    def settings(self, k: KubernetesSettings) -> KubernetesSettings:
        """``k`` with the mode made concrete, and the kubeconfig path that was chosen."""
        return dataclasses.replace(k, mode=self.mode, kubeconfig=self.kubeconfig or k.kubeconfig)


def find_cluster(
    k: KubernetesSettings, env: Mapping[str, str], *, serviceaccount: Path = SERVICEACCOUNT, home: Path | None = None
) -> Cluster:
    """``auto``: the pod's service account when in a pod, else ``KUBECONFIG``, else
    ``~/.kube/config``, else none.  ``incluster`` and ``kubeconfig`` are taken as given (their
    loader names what is missing); ``none`` is none.  Nothing is contacted here."""
    if k.mode == "none":
        return Cluster("none")
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if k.mode == "incluster" or (k.mode == "auto" and host and (serviceaccount / "token").is_file()):
        server = f"https://{'[' + host + ']' if ':' in host else host}:{port}" if host else ""
        return Cluster("incluster", server=server, context="in-cluster", user=_serviceaccount_user(serviceaccount))
    paths = k.kubeconfig or env.get("KUBECONFIG", "") or str((home or Path.home()) / ".kube" / "config")
    files = [Path(p).expanduser() for p in paths.split(os.pathsep) if p]
    if k.mode == "auto" and not any(f.is_file() for f in files):
        return Cluster("none")
    return Cluster("kubeconfig", kubeconfig=paths, **_kubeconfig_identity(files, k.context))


def _serviceaccount_user(directory: Path) -> str:
    """``system:serviceaccount:<ns>:<name>`` from the token's claims (read, not verified: only logged)."""
    try:
        claims = (directory / "token").read_text().strip().split(".")[1]
        subject = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4))).get("sub", "")
        return str(subject) or "serviceaccount"
    except (OSError, IndexError, ValueError, AttributeError):
        return "serviceaccount"


def _kubeconfig_identity(files: list[Path], context: str) -> dict[str, str]:
    """Server, context and user a kubeconfig (merged as kubectl merges: first file to set a name wins) selects."""
    merged: dict[str, dict[str, Any]] = {"clusters": {}, "contexts": {}, "users": {}}
    current = ""
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text()) if f.is_file() else None
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(doc, dict):
            continue
        current = current or str(doc.get("current-context") or "")
        for kind, items in merged.items():
            for item in doc.get(kind) or []:
                if isinstance(item, dict) and "name" in item:
                    items.setdefault(str(item["name"]), item.get(kind[:-1]) or {})
    name = context or current
    ctx = merged["contexts"].get(name, {})
    cluster = merged["clusters"].get(str(ctx.get("cluster", "")), {})
    return {"server": str(cluster.get("server", "")), "context": name, "user": str(ctx.get("user", ""))}


async def _live_executor(
    settings: Settings, cluster: Cluster, clock: Clock, stack: contextlib.AsyncExitStack, metrics: Metrics
) -> tuple[Executor, Executor]:
    """(live, dry) executors: with a cluster, dry-run becomes server-side."""
    if cluster.mode == "none":
        return UnconfiguredExecutor(), PlanOnlyExecutor()
    from remediator.executors.kube import open_kube_executors

    concrete = dataclasses.replace(settings, kubernetes=cluster.settings(settings.kubernetes))
    live, dry = await stack.enter_async_context(open_kube_executors(concrete, clock, metrics))
    return live, dry


def check_prometheus_url(settings: Settings) -> None:
    """A malformed ``prometheus.url`` stops the start.  (Playbooks with a ``prometheus_check`` and
    no URL at all are refused by the playbook repository, at the start and at every reload.)"""
    url = settings.prometheus.url
    if url and (problem := url_problem(url)):
        raise ConfigError(f"prometheus.url: {problem}")


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    executors: tuple[Executor, Executor] | None = None,
    start_worker: bool = True,
    stop: asyncio.Event | None = None,
    handle_sighup: bool = True,
) -> AsyncIterator[Runtime]:
    """The runtime, its worker running unless ``start_worker`` is False, or ``stop`` was set while
    it was being built (a SIGTERM during startup: nothing is claimed or resumed, it closes again).

    ``handle_sighup``: SIGHUP reloads (:func:`on_sighup`) through a handler of the loop's, left in
    place to the end; ``serve`` handles its signals itself and passes False."""
    clock = clock or SystemClock()
    log = structlog.get_logger("remediator")
    credentials = Credentials(settings)
    if not settings.webhook_tokens() and not settings.webhook.insecure_no_auth:
        raise ConfigError(
            "no webhook credentials configured: set REMEDIATOR_WEBHOOK_TOKENS or webhook.tokens_file, "
            "or pass --insecure-no-auth"
        )
    metrics = Metrics()
    check_prometheus_url(settings)
    repo = PlaybookRepository(settings.playbooks.split(","), channels=list(settings.channels),
                              prometheus=bool(settings.prometheus.url))
    if not repo.reload():
        # Refuse to start rather than consume alerts as no_match; reloads keep the last good set, so
        # the worker never runs with an empty one.
        raise ConfigError("no valid playbooks, not starting: " + "; ".join(map(str, repo.last_problems)))
    metrics.playbooks_loaded.set(len(repo.current.playbooks))
    async with contextlib.AsyncExitStack() as stack:
        store = await _open_store(settings, clock, stack)
        guard = await _open_guardrails(settings, clock, stack, store, metrics, repo)
        if executors is None:
            cluster = find_cluster(settings.kubernetes, os.environ)
            log.info("kubernetes", mode=cluster.mode, server=cluster.server or None, context=cluster.context or None,
                     user=cluster.user or None)
        live, dry = executors or await _live_executor(settings, cluster, clock, stack, metrics)
        dry_local = isinstance(dry, PlanOnlyExecutor)  # no cluster to ask: a dry run is over once decided
        # verification steps read HTTP endpoints, Prometheus and the store, never the cluster:
        # they run beside whichever executors act on it
        checks = await stack.enter_async_context(open_checks(settings.prometheus, store))
        live, dry = WithChecks(live, checks), WithChecks(dry, checks)
        # entered after the stores, so queued notifications drain before they close
        dispatcher = None if notifier else await stack.enter_async_context(
            open_dispatcher(settings, clock, metrics.registry, on_outcome=store.record_notification)
        )
        switch = KillSwitch(store, guard, clock=clock)
        stack.push_async_callback(switch.close)  # its re-arming stops before the stores close
        await _arm_kill_switch(settings, switch)
        pipeline = Pipeline(
            playbooks=repo,
            store=store,
            guardrails=guard,
            live=live,
            dry=dry,
            notifier=notifier or dispatcher or LogNotifier(),
            clock=clock,
            settings=PipelineSettings(
                dry_run=settings.dry_run,
                step_timeout=settings.worker.step_timeout,
                execution_lease=settings.worker.lease,
            ),
            metrics=metrics,
            kill_switch=switch,
            dry_local=dry_local,
        )
        worker = Worker(pipeline, settings.worker, intake=store)
        rt = Runtime(settings, clock, metrics, store, guard, repo, pipeline, worker, credentials, switch,
                     notifications=dispatcher)
        if stop is not None and stop.is_set():
            log.info("stop requested during startup: the worker does not start")
            rt.stop_taking_work()
        elif start_worker:
            rt.supervise(asyncio.create_task(worker.run(), name="remediator-worker"))
            rt.supervise(asyncio.create_task(_watch_playbooks(rt), name="remediator-playbook-watch"))
            if settings.worker.retention > 0:
                rt.supervise(asyncio.create_task(_retention(rt), name="remediator-retention"))
        if handle_sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: on_sighup(rt))
        log.info(
            "runtime ready",
            dry_run=settings.dry_run,
            store="postgresql" if settings.database_url else "embedded",
            guardrails="redis" if settings.redis_url else "embedded",
            playbooks=len(repo.current.playbooks),
        )
        try:
            yield rt
        finally:
            # The SIGHUP handler stays: removing it restored the default action, and a SIGHUP
            # during the stop (a config reloader, a token rotation script) killed the daemon with
            # its executions neither finished nor handed over.  While stopping it is ignored.
            await rt.stop_taking_work()


def on_sighup(rt: Runtime) -> None:
    """SIGHUP re-reads what may be rotated or edited in place: the playbooks and the token files.

    The playbooks are parsed off the loop (a thousand of them take seconds), so the reload is
    a task of its own; it is kept among the runtime's tasks so that stopping cancels it.  Once
    the runtime is stopping there is nothing to reload for: the signal is only logged."""
    if rt.stopping:
        structlog.get_logger("remediator").info("SIGHUP ignored: shutting down")
        return
    task = asyncio.get_running_loop().create_task(_reload(rt), name="remediator-playbook-reload")
    task.add_done_callback(_log_failed_reload)
    rt.tasks.append(task)
    rt.credentials.reload()


def _log_failed_reload(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        structlog.get_logger("remediator").error("playbook reload failed", error=repr(exc), exc_info=exc)


async def _reload(rt: Runtime) -> None:
    try:
        ok = await rt.playbooks.reload_async()
    except Exception:  # a loader bug: this watcher is supervised, and its death would stop the daemon
        structlog.get_logger("remediator").exception("playbook reload failed: the previous set keeps running")
        ok = False
    rt.metrics.playbook_reloads.labels("ok" if ok else "rejected").inc()
    rt.metrics.playbooks_loaded.set(len(rt.playbooks.current.playbooks))


async def _watch_playbooks(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(2.0)
        if await rt.playbooks.changed_async():
            await _reload(rt)


async def apply_retention(rt: Runtime) -> dict[str, int]:
    """Delete audit older than ``worker.retention`` (only ended episodes: see ``store.retention``)."""
    counts = await rt.store.delete_older_than(rt.settings.worker.retention / 86400.0)
    for kind, n in counts.items():
        rt.metrics.retention_deleted.labels(kind).inc(n)
    if any(counts.values()):
        structlog.get_logger("remediator").info("retention", **counts)
    return counts


async def _retention(rt: Runtime) -> None:
    """Every ``retention_interval``; harmless on several replicas (batched, skip-locked deletes)."""
    while True:
        await rt.clock.sleep(rt.settings.worker.retention_interval)
        try:
            await apply_retention(rt)
        except StoreUnavailable as exc:  # next round
            structlog.get_logger("remediator").warning("retention skipped: store unavailable", error=str(exc))


#: After ``worker.shutdown_timeout``, what handing the unfinished executions over may take (cancel
#: them, give their leases back: a store call each).  Past it the leases are left to run out.
HANDOVER_TIMEOUT = 5.0
#: Then the guardrail releases still waiting for the guardrail state get one more try, all within this.
RELEASE_FLUSH_TIMEOUT = 2.0


async def _stop(rt: Runtime) -> None:
    """Staged shutdown, begun by :meth:`Runtime.stop_taking_work`: the decider finishes the alert
    it is on, and running executions get ``worker.shutdown_timeout`` (one deadline for both,
    from the stop), then are cancelled, their leases handed back so another replica takes over at
    once rather than after the lease (each resumes from its write-ahead record)."""
    log = structlog.get_logger("remediator")
    loop = asyncio.get_running_loop()
    grace = rt.settings.worker.shutdown_timeout
    deadline = loop.time() + grace
    worker_tasks = [t for t in rt.tasks if t.get_name() == "remediator-worker"]
    if worker_tasks:  # first: the execution loop may be starting what it had claimed before the stop
        _done, pending = await asyncio.wait(worker_tasks, timeout=grace)
        for t in pending:
            log.warning("worker did not finish in time; its alert stays pending and resumes on restart")
            t.cancel()
    left = max(0.0, deadline - loop.time())
    try:
        async with asyncio.timeout(left + HANDOVER_TIMEOUT):
            await rt.worker.finish(left)
    except TimeoutError:
        log.warning("executions not handed over in time: their leases run out before another replica resumes them")
    # Releases the guardrail state did not answer (an outage as executions ended): one more try each.
    await rt.pipeline.releases.flush(RELEASE_FLUSH_TIMEOUT)
    await asyncio.gather(*rt.tasks, return_exceptions=True)
