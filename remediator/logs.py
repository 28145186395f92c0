"""structlog setup: JSON lines for machines, a console renderer for people at a TTY."""

from __future__ import annotations

import logging
import sys

import structlog

#: The stdlib logger that writes raw API response bodies at DEBUG.
SECRET_BEARING_LOGGER = "kubernetes_asyncio.client.rest"


def configure(fmt: str = "auto", level: str = "info") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    # At DEBUG the Kubernetes client logs every response body: whole Deployments, with env
    # values a snapshot would redact.  It never goes below INFO, whatever the daemon's level.
    logging.getLogger(SECRET_BEARING_LOGGER).setLevel(max(numeric, logging.INFO))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
