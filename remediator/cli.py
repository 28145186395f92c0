"""Command line: ``remediator serve|schema|validate|...`` (contract in shared/spec/interface.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remediator.core.errors import ConfigError


def _settings(args: argparse.Namespace) -> Any:
    from remediator.settings import load_settings

    overrides: dict[str, Any] = {}
    if getattr(args, "dry_run", False):
        overrides["dry_run"] = True
    for attr, key in (
        ("playbooks", "playbooks"),
        ("listen", "listen"),
        ("database_url", "database_url"),
        ("redis_url", "redis_url"),
        ("data_dir", "data_dir"),
    ):
        value = getattr(args, attr, None)
        if value:
            overrides[key] = value
    if getattr(args, "insecure_no_auth", False):
        overrides["webhook"] = {"insecure_no_auth": True}
    config = getattr(args, "config", None)
    if config is None and Path("remediator.yaml").exists():
        config = "remediator.yaml"
    return load_settings(config, overrides=overrides)


class _Signals:
    """``serve``'s signal handling: installed before anything else, kept until the process exits.

    SIGTERM and SIGINT ask for a stop.  The first at once stops the runtime taking work if it is
    up (:meth:`remediator.runtime.Runtime.stop_taking_work`), or keeps the worker from starting if
    it is not yet, and wakes :func:`_serve`; a later one is only logged.  SIGHUP reloads once the
    runtime runs (:func:`remediator.runtime.on_sighup`); before, and while stopping, it is only logged.

    Why first: as the image's PID 1 the daemon gets no default action for a signal it has no
    handler for: the kernel drops it.  Handlers installed only once the worker ran and the site
    listened meant that a pod deleted while it started went on to claim and resume work until the
    kubelet's SIGKILL, mid-step, its leases held.  Why Python handlers rather than the loop's
    (``loop.add_signal_handler``): removing one, as the runtime did with SIGHUP, or closing the
    loop, puts back the default action, and a SIGHUP during the shutdown killed the daemon with
    its executions neither finished nor handed over; these stay until the process exits.
    """

    STOPS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.received = ""  # the signal that asked for the stop
        self.app: Any = None  # the web.Application, whose runtime the first stop reaches
        for sig in (*self.STOPS, signal.SIGHUP):
            signal.signal(sig, self._caught)

    def _caught(self, signum: int, _frame: Any) -> None:
        """The Python-level handler: it runs between two bytecodes of the main thread, so it only
        hands the signal to the loop (call_soon_threadsafe is safe here, as asyncio.Runner's own
        SIGINT handler relies on)."""
        sig = signal.Signals(signum)
        loop = self.loop
        if loop is None:  # the loop is not running yet: remember the first stop, for when it is
            if sig in self.STOPS and not self.received:
                self.received = sig.name
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the process is exiting
            loop.call_soon_threadsafe(self._handle, sig)

    def started(self) -> asyncio.Event:
        """In the running loop: the stop request, already set if a stop came before."""
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        if self.received:
            self.stop.set()
        return self.stop

    def _handle(self, sig: signal.Signals) -> None:
        import structlog

        from remediator.runtime import RUNTIME, on_sighup

        log = structlog.get_logger("remediator")
        rt = self.app[RUNTIME] if self.app is not None and RUNTIME in self.app else None
        if sig == signal.SIGHUP:
            if rt is None:
                log.info("SIGHUP ignored: the daemon is not running yet")
            else:
                on_sighup(rt)
        elif self.stop is not None and self.stop.is_set():
            log.info("already stopping", signal=sig.name)
        else:
            self.received = sig.name
            self.request_stop()

    def ignore(self) -> None:
        """Once the loop has closed: ignored to the very end (interpreter finalization would put
        back the default action of a signal with a Python handler, not of an ignored one)."""
        for sig in (*self.STOPS, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)

    def request_stop(self) -> None:
        """Stop taking work now (a signal, or a background task that died)."""
        from remediator.runtime import RUNTIME

        assert self.stop is not None
        self.stop.set()
        if self.app is not None and RUNTIME in self.app:
            self.app[RUNTIME].stop_taking_work()


async def _serve(args: argparse.Namespace, signals: _Signals) -> int:
    stop = signals.started()
    from aiohttp import web

    from remediator import heap, http
    from remediator.app import create_app, shutdown_budget
    from remediator.logs import configure

    settings = _settings(args)
    configure(settings.log.format, settings.log.level)
    import structlog

    log = structlog.get_logger("remediator")
    _require_cluster(settings)
    host, _, port = settings.listen.rpartition(":")
    app = create_app(settings, stop=stop, handle_sighup=False)  # SIGHUP is _Signals' too
    signals.app = app
    runner = web.AppRunner(app, handle_signals=False, access_log=None, **http.server_options(settings))
    await runner.setup()  # runs cleanup_ctx startup: stores, worker (not if a stop came meanwhile)
    from remediator.runtime import RUNTIME

    failed = app[RUNTIME].failed
    # What the start built (modules, the playbook set, clients) lives as long as the daemon: frozen,
    # and collections made rarer (remediator/heap.py says what they cost here).
    with heap.long_run():
        if stop.is_set():
            log.info("stop requested during startup: not listening", signal=signals.received)
        else:
            site = web.TCPSite(runner, host or "0.0.0.0", int(port))
            try:
                await site.start()
            except OSError as exc:  # the port is taken, or the address is not ours: one line, not a traceback
                log.error("cannot listen", address=settings.listen, error=exc.strerror or str(exc))
                signals.request_stop()
                await runner.cleanup()
                return 1
            log.info("listening", address=settings.listen, dry_run=settings.dry_run)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(failed.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        signals.request_stop()  # already done by a signal; not by a background task that died
        budget = shutdown_budget(settings)
        log.info("shutting down: no longer accepting requests", signal=signals.received or None,
                 budget_seconds=budget.total)
        # Side by side: the runtime stops taking work and gives executions their grace (begun by the
        # signal), while the HTTP server drains; then aiohttp's shutdown, and the runtime's close
        # (cleanup_ctx: it waits for the executions' handover, then the notifications, then the stores).
        await http.stop_serving(runner, app[http.DRAIN], settings)
        await runner.cleanup()
        if failed.is_set():
            log.error("stopped: a background task died (see above)")
            return 1
        log.info("stopped")
        return 0


def _require_cluster(settings: Any) -> None:
    """Live mode needs a cluster: without one every execution would fail, using up cooldowns and
    opening breakers, while the daemon looked ready."""
    from remediator.runtime import find_cluster

    if settings.dry_run or find_cluster(settings.kubernetes, os.environ).mode != "none":
        return
    raise ConfigError(
        f"not in dry-run, and no Kubernetes cluster (kubernetes.mode: {settings.kubernetes.mode}): found no "
        "service account (KUBERNETES_SERVICE_HOST and a token), no KUBECONFIG and no ~/.kube/config; "
        "configure a cluster or run with --dry-run (REMEDIATOR_DRY_RUN=true)"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    signals = getattr(args, "signals", None) or _Signals()  # main() installs them before anything slow
    try:
        return asyncio.run(_serve(args, signals))
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        signals.ignore()


def cmd_schema(args: argparse.Namespace) -> int:
    from remediator.core.schema import document_schema, playbook_schema

    print(json.dumps(document_schema() if args.file else playbook_schema(), indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from remediator.playbook_files import load_paths

    problems: list[str] = []
    channels = None
    try:
        settings = _settings(args) if (args.config or Path("remediator.yaml").exists()) else None
        if settings is not None:
            channels = list(settings.channels)
    except ConfigError as exc:
        problems.append(str(exc))
    missing = [p for p in args.paths if not Path(p).exists()]
    for p in missing:
        problems.append(f"{p}:1: no such file or directory")
    pset, found = load_paths([p for p in args.paths if p not in missing], channels)
    files: dict[str, int] = {}  # files in the order given, each file's problems by line
    for p in found:
        files.setdefault(p.path, len(files))
    problems += [str(p) for p in sorted(found, key=lambda p: (files[p.path], p.line))]
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"ok: {len(pset.playbooks)} playbook(s) valid", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from remediator.logs import configure
    from remediator.playbook_files import load_paths
    from remediator.replay import ReplayInputError
    from remediator.replay_report import run_replay

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log.format, "warning")  # decisions go to stdout; only trouble to stderr
    sets = []
    for paths in [settings.playbooks.split(",")] + ([[args.compare]] if args.compare else []):
        missing = [p for p in paths if not Path(p).exists()]
        pset, problems = load_paths([p for p in paths if p not in missing])
        found = [f"{p}:1: no such file or directory" for p in missing] + [str(p) for p in problems]
        if found:
            print("\n".join(found), file=sys.stderr)
            return 1
        sets.append(pset)
    try:
        with open(args.file, "rb"):
            pass
    except OSError as exc:
        print(f"{args.file}:1: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    kwargs: dict[str, Any] = dict(
        fmt=args.format, summary_only=args.summary, kube=args.kube, reorder_window=args.reorder_window,
        approve=args.approve,
    )
    try:
        run_replay(args.file, sets, settings, sys.stdout, **kwargs)
    except ReplayInputError as exc:
        sys.stdout.flush()
        print(exc, file=sys.stderr)
        return 1
    except ConfigError as exc:  # --kube without a usable cluster configuration
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from remediator.logs import configure
    from remediator.playbook_tests import run_tests

    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(settings.log.format, "warning")
    return run_tests(args.path, settings, sys.stdout)


#: The widest ``--reorder-window``, a year: wider is no use (the whole input is held to be sorted) and,
#: far enough, is past the earliest time there is.
MAX_REORDER_WINDOW = 365 * 86400.0


def _reorder_window(text: str) -> float:
    """``--reorder-window``: seconds, 0 (the input in order) to :data:`MAX_REORDER_WINDOW`; argparse
    answers anything else with a usage error (exit 2) naming the option."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_REORDER_WINDOW:  # NaN too
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds from 0 to {MAX_REORDER_WINDOW:.0f}")
    return value


def _add_replay_commands(sub: Any) -> None:
    from remediator.replay import DEFAULT_REORDER_WINDOW

    replay = sub.add_parser("replay", help="replay past alerts in dry-run on a virtual clock")
    replay.add_argument("file", help="JSON Lines: webhook payloads, wrapped payloads or control lines")
    replay.add_argument("--playbooks", help="playbook directory (default: the configured one)")
    replay.add_argument("--compare", metavar="DIR2", help="replay against this playbook set too and print what changed")
    replay.add_argument("--format", choices=("table", "json"), default="table")
    replay.add_argument("--summary", action="store_true", help="print only the summary (counts), not every decision")
    replay.add_argument("--config")
    replay.add_argument("--kube", action="store_true", help="server-side dry-run against the configured cluster")
    replay.add_argument("--approve", choices=("all", "none"), default="none",
                        help="simulate the answer to playbooks' approval requests (default none: they wait, "
                             "nothing runs)")
    replay.add_argument(
        "--reorder-window",
        type=_reorder_window,
        default=DEFAULT_REORDER_WINDOW,
        metavar="SECONDS",
        help=f"how far out of time order the input may be, 0 to {MAX_REORDER_WINDOW:.0f} (default %(default).0f)",
    )
    replay.set_defaults(func=cmd_replay)

    test = sub.add_parser("test", help="run playbook test cases (*.test.yaml)")
    test.add_argument("path", help="a directory searched for *.test.yaml files, or one test file")
    test.add_argument("--config")
    test.set_defaults(func=cmd_test)


def _store_command(args: argparse.Namespace, run: Any) -> int:
    """Run ``run(settings)`` for a store command: 2 on bad configuration, 1 when the store is unreachable."""
    from remediator.core.errors import StoreUnavailable

    try:
        code: int = asyncio.run(run(_settings(args)))
        return code
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"remediator: store unavailable: {exc}", file=sys.stderr)
        return 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from remediator.clock import SystemClock

    async def run(settings: Any) -> int:
        if not settings.database_url:  # the embedded schema is created and upgraded whenever it is opened
            from remediator.store.sqlite import SQLiteStore
            from remediator.store.tools import embedded_path

            await (await SQLiteStore.open(embedded_path(settings), SystemClock(), recover=False)).close()
            print(f"embedded store schema up to date: {embedded_path(settings)}")
            return 0
        from remediator.store.postgres import PostgresStore

        store = await PostgresStore.open(settings.database_url, SystemClock(), migrate_schema=False)
        try:
            applied = await store.migrate()
        finally:
            await store.close()
        print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "schema up to date")
        return 0

    return _store_command(args, run)


def _when(text: str | None, default: Any) -> Any:
    """RFC 3339, or a duration meaning that long ago (``--since 24h``)."""
    from datetime import UTC, datetime, timedelta

    from remediator.core.alerts import parse_time
    from remediator.core.durations import parse_duration
    from remediator.core.errors import InvalidInput

    if not text:
        return default
    with contextlib.suppress(InvalidInput):
        return parse_time(text)
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except InvalidInput:
        raise ConfigError(f"{text!r} is neither an RFC 3339 time nor a duration such as 24h") from None


def cmd_export(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from remediator.core.alerts import format_time
    from remediator.store.tools import export_alerts, open_store

    try:
        since = _when(args.since, datetime(1, 1, 1, tzinfo=UTC))
        until = _when(args.until, datetime(9999, 12, 31, tzinfo=UTC))
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    if since >= until:  # an empty span: exporting nothing, and saying it went well, would hide the mistake
        print(f"remediator export: --since ({format_time(since)}) must be earlier than --until ({format_time(until)})",
              file=sys.stderr)
        return 2

    async def run(settings: Any) -> int:
        store = await open_store(settings)
        try:
            count = await export_alerts(store, since, until, out)
        finally:
            await store.close()
        print(f"exported {count} alert(s)", file=sys.stderr)
        return 0

    to_file = bool(args.output) and args.output != "-"
    try:
        out = open(args.output, "w") if to_file else sys.stdout  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"{args.output}: cannot write: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        return _store_command(args, run)
    finally:
        if to_file:
            out.close()


def _add_store_commands(sub: Any) -> None:
    migrate = sub.add_parser("migrate", help="create or upgrade the store's schema")
    migrate.add_argument("--config")
    migrate.add_argument("--database-url")
    migrate.add_argument("--data-dir")
    migrate.set_defaults(func=cmd_migrate)

    export = sub.add_parser("export", help="recorded alerts as JSON Lines that `remediator replay` accepts")
    export.add_argument("--since", help="RFC 3339 time, or a duration meaning that long ago (24h)")
    export.add_argument("--until", help="RFC 3339 time, or a duration meaning that long ago (exclusive)")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--config")
    export.add_argument("--database-url")
    export.add_argument("--data-dir")
    export.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remediator", description="Alert remediation daemon")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config")
    serve.add_argument("--dry-run", action="store_true")
    serve.add_argument("--playbooks")
    serve.add_argument("--listen")
    serve.add_argument("--database-url")
    serve.add_argument("--redis-url")
    serve.add_argument("--data-dir")
    serve.add_argument(
        "--insecure-no-auth", action="store_true", help="accept unauthenticated webhooks (local experiments only)"
    )
    serve.set_defaults(func=cmd_serve)

    schema = sub.add_parser("schema", help="print the playbook JSON Schema")
    schema.add_argument("--file", action="store_true", help="schema of a whole file (one or more playbooks)")
    schema.set_defaults(func=cmd_schema)

    validate = sub.add_parser("validate", help="check playbook files and the config")
    validate.add_argument("paths", nargs="+")
    validate.add_argument("--config")
    validate.set_defaults(func=cmd_validate)
    _add_replay_commands(sub)
    _add_store_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # `serve`'s signal handlers come first, before the parser (building it imports the replay, half
    # a second): a SIGTERM to PID 1 before them is lost (see _Signals).
    signals = _Signals() if list(sys.argv[1:] if argv is None else argv)[:1] == ["serve"] else None
    args = build_parser().parse_args(argv)
    args.signals = signals
    with contextlib.suppress(BrokenPipeError):
        code: int = args.func(args)
        return code
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    sys.exit(main())
