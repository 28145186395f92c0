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


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from remediator.app import create_app
    from remediator.logs import configure

    settings = _settings(args)
    configure(settings.log.format, settings.log.level)
    import structlog

    log = structlog.get_logger("remediator")
    host, _, port = settings.listen.rpartition(":")
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()  # runs cleanup_ctx startup: stores, worker
    site = web.TCPSite(runner, host or "0.0.0.0", int(port))
    await site.start()
    log.info("listening", address=settings.listen, dry_run=settings.dry_run)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: no longer accepting requests")
    await runner.cleanup()  # stop accepting, then worker, guardrails, store in reverse order
    log.info("stopped")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2


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
    problems += [str(p) for p in found]
    for line in problems:
        print(line)
    if problems:
        return 1
    print(f"ok: {len(pset.playbooks)} playbook(s) valid", file=sys.stderr)
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(BrokenPipeError):
        code: int = args.func(args)
        return code
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    sys.exit(main())
