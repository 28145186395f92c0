"""structlog setup: JSON lines for machines, a console renderer for people at a TTY.

Everything the process logs leaves in the one format, one event per line: structlog's own
events, and the stdlib loggers of the libraries (aiohttp, asyncpg, asyncio, warnings), which
are routed through structlog's ``ProcessorFormatter``.  A traceback is the ``exception``
field of its event, never raw lines a log collector would split into separate records.

Per-alert and per-decision events are DEBUG; the decision loop logs one INFO summary per batch.
A storm of 20,000 alerts must not spend its time writing 20,000 lines, and the JSON itself is
encoded by msgspec (already the webhook's decoder) rather than ``json.dumps``, which took several
times as long per event.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import msgspec
import structlog
from aiohttp.http_exceptions import HttpProcessingError

#: The stdlib logger that writes raw API response bodies at DEBUG.
SECRET_BEARING_LOGGER = "kubernetes_asyncio.client.rest"

#: A client that goes away mid-request is the client's business, not an error of the daemon.
DISCONNECTS: tuple[type[BaseException], ...] = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Deferred:
    """A logger's context, bound now and merged in only when a line is written.

    Why: the pipeline binds an alert's context at each stage (its fingerprint, then the
    playbook, then the execution), and structlog's ``bind`` copies the context and builds a
    new logger every time, a few µs an alert for lines that at INFO are mostly never written
    (each decision's are at DEBUG).  Here ``bind`` merges two small dictionaries, and a
    filtered-out level costs a call that returns None.  Later keys win, as with ``bind``.
    """

    __slots__ = ("_context", "_debug", "_logger")

    def __init__(self, logger: Any, context: dict[str, Any], *, debug: bool = True) -> None:
        """``debug``: False when the logger writes no DEBUG line (asked once by the logger's owner,
        :func:`writes_debug`): then a debug call merges nothing."""
        self._logger = logger
        self._context = context
        self._debug = debug

    def bind(self, **context: Any) -> Deferred:
        return Deferred(self._logger, {**self._context, **context}, debug=self._debug)

    def debug(self, event: str, **kw: Any) -> Any:
        if not self._debug:
            return None
        return self._logger.debug(event, **{**self._context, **kw})

    def info(self, event: str, **kw: Any) -> Any:
        return self._logger.info(event, **{**self._context, **kw})

    def warning(self, event: str, **kw: Any) -> Any:
        return self._logger.warning(event, **{**self._context, **kw})

    def error(self, event: str, **kw: Any) -> Any:
        return self._logger.error(event, **{**self._context, **kw})

    def exception(self, event: str, **kw: Any) -> Any:
        return self._logger.exception(event, **{**self._context, **kw})


def writes(logger: Any, level: int) -> bool:
    """Whether a bound logger writes lines at ``level`` (structlog's filtering loggers know their
    level, fixed when they are bound; any other logger is assumed to)."""
    enabled = getattr(logger, "is_enabled_for", None)
    return bool(enabled(level)) if enabled is not None else True


def writes_debug(logger: Any) -> bool:
    return writes(logger, logging.DEBUG)


class DisconnectsAtDebug(logging.Filter):
    """Lower a record about a client disconnect (aiohttp logs them at ERROR) to DEBUG, and drop
    it unless DEBUG is wanted: one per impatient client would bury the real errors."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DISCONNECTS) or (record.name.startswith("aiohttp") and "onnection lost" in record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.level <= logging.DEBUG
        return True


class RequestBytesUnlogged(logging.Filter):
    """A request aiohttp's parser refused (a control character in a header, a line too long) is
    logged without its bytes, at WARNING: the parser's error quotes the offending line, and an
    ``Authorization`` header with a stray control character put the token itself in the log at
    ERROR, once per delivery.  What is kept says what was wrong with the request, not what it held;
    it is the client's error, not the daemon's."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = (f"{record.getMessage()}: refused a malformed request ({type(exc).__name__}, status "
                          f"{exc.code}); its bytes are not logged, they may hold a token")
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _unencodable(obj: Any) -> str:
    """What msgspec cannot encode is logged as its repr (as structlog's own JSON renderer does)."""
    return repr(obj)


class JSONLines:
    """Renders an event as one JSON line, with msgspec (several times faster than ``json.dumps``)."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_unencodable)

    def __call__(self, _logger: Any, _name: str, event: structlog.typing.EventDict) -> str:
        return self._encoder.encode(event).decode()


class _OnePrinter:
    """structlog's logger factory, handing out one shared printer (it holds only its file).

    ``PrintLoggerFactory`` makes a new one for every logger assembled: every ``bind`` on a
    logger from ``get_logger``, several per alert decided."""

    def __init__(self, file: Any) -> None:
        self._printer = structlog.PrintLogger(file)

    def __call__(self, *_names: Any) -> structlog.PrintLogger:
        return self._printer


def _processors() -> list[structlog.typing.Processor]:
    """What every event goes through, whichever logger it came from."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def configure(fmt: str = "auto", level: str = "info") -> None:
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else JSONLines()
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *_processors()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(DisconnectsAtDebug(numeric))
    handler.addFilter(RequestBytesUnlogged())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    # At DEBUG the Kubernetes client logs every response body: whole Deployments, with env
    # values a snapshot would redact.  It never goes below INFO, whatever the daemon's level.
    logging.getLogger(SECRET_BEARING_LOGGER).setLevel(max(numeric, logging.INFO))
    structlog.configure(
        processors=[*_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_OnePrinter(sys.stderr),
        cache_logger_on_first_use=False,
    )
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
    """An exception nothing caught ends the process as one JSON event too."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    info: Any = (kind, exc, tb)
    structlog.get_logger("remediator").critical("uncaught exception: exiting", exc_info=info)
