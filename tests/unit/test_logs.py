"""The daemon's log is JSON only, one event a line: library loggers and tracebacks included,
client disconnects at DEBUG.  Run in a child process: logging is process-wide state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import logging, sys, warnings
    import structlog
    from remediator.logs import configure

    configure("json", sys.argv[1])
    log = structlog.get_logger("remediator.test")
    try:
        raise ValueError("structlog's own")
    except ValueError:
        log.exception("handled", detail=1)
    try:
        raise OSError("connection refused")
    except OSError:
        logging.getLogger("asyncpg.pool").exception("pool: cannot connect\\nsecond line")
    try:
        raise ConnectionResetError("Cannot write to closing transport")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("aiohttp.server").debug("Ignored premature client disconnection")
    logging.getLogger("kubernetes_asyncio.client.rest").debug("response body: secret")
    warnings.warn("something is deprecated", UserWarning)
    raise RuntimeError("nobody caught me")
    """
)


def run(level: str) -> tuple[int, list[dict[str, object]]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=60)
    lines = done.stderr.splitlines()
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line that is not JSON: {line!r}\n{done.stderr}")
    return done.returncode, events


def test_every_line_is_a_json_event_with_the_traceback_as_a_field() -> None:
    code, events = run("info")
    assert code == 1
    by_event = {str(e["event"]): e for e in events}
    assert [e.get("logger") for e in events] == [None, "asyncpg.pool", "py.warnings", None]
    assert "UserWarning: something is deprecated" in str(events[2]["event"]) and events[2]["level"] == "warning"
    handled = by_event["handled"]
    assert handled["level"] == "error" and handled["detail"] == 1
    assert "ValueError: structlog's own" in str(handled["exception"])
    pool = by_event["pool: cannot connect\nsecond line"]
    assert pool["level"] == "error" and pool["logger"] == "asyncpg.pool" and "timestamp" in pool
    assert str(pool["exception"]).startswith("Traceback") and "OSError: connection refused" in str(pool["exception"])
    uncaught = by_event["uncaught exception: exiting"]
    assert uncaught["level"] == "critical" and "RuntimeError: nobody caught me" in str(uncaught["exception"])


def test_client_disconnects_are_debug_and_the_api_bodies_never_logged() -> None:
    _, events = run("debug")
    disconnects = [e for e in events if e.get("logger") == "aiohttp.server"]
    assert [(e["event"], e["level"]) for e in disconnects] == [
        ("Error handling request", "debug"), ("Ignored premature client disconnection", "debug")]
    assert not any("secret" in json.dumps(e) for e in events)


def test_deferred_context_is_what_bind_would_have_given() -> None:
    """The pipeline's deferred binding writes the same events as structlog's bind, and binds nothing
    (builds no logger) for a level that is filtered out."""
    import structlog
    from structlog.testing import capture_logs

    from remediator.logs import Deferred

    base = structlog.get_logger("remediator.test").bind()
    with capture_logs() as deferred_events:
        log = Deferred(base, {"fingerprint": "f1", "status": "firing"}).bind(playbook="p").bind(status="resolved")
        log.info("decision", reason="r")
        log.warning("late", fingerprint="f2")
    with capture_logs() as bound_events:
        real = base.bind(fingerprint="f1", status="firing").bind(playbook="p").bind(status="resolved")
        real.info("decision", reason="r")
        real.warning("late", fingerprint="f2")
    assert deferred_events == bound_events
    assert deferred_events[0] == {"event": "decision", "fingerprint": "f1", "status": "resolved", "playbook": "p",
                                  "reason": "r", "log_level": "info"}

    class Counting:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, object]]] = []

        def debug(self, event: str, **kw: object) -> None:
            self.calls.append((event, kw))

    counting = Counting()
    Deferred(counting, {"a": 1}).bind(b=2).debug("e", c=3)
    assert counting.calls == [("e", {"a": 1, "b": 2, "c": 3})]


def test_a_logger_that_writes_no_debug_is_not_asked() -> None:
    import logging

    import structlog

    from remediator.logs import Deferred, writes_debug

    at_info = structlog.make_filtering_bound_logger(logging.INFO)(structlog.PrintLogger(), [], {})
    at_debug = structlog.make_filtering_bound_logger(logging.DEBUG)(structlog.PrintLogger(), [], {})
    assert (writes_debug(at_info), writes_debug(at_debug), writes_debug(object())) == (False, True, True)

    class Refusing:
        def debug(self, event: str, **kw: object) -> None:
            raise AssertionError("asked for a debug line it does not write")

    Deferred(Refusing(), {"a": 1}, debug=False).bind(b=2).debug("e", c=3)  # nothing merged, nothing called


SERVER = textwrap.dedent(
    """
    import asyncio, socket, sys
    from aiohttp import web
    from remediator.logs import configure

    configure("json", "info")

    async def main():
        app = web.Application()
        app.router.add_post("/webhooks/alertmanager", lambda r: web.json_response({}))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhooks/alertmanager HTTP/1.1\\r\\nHost: x\\r\\n"
                     b"Authorization: Bearer tok-SECRET-1\\x01\\r\\nContent-Length: 0\\r\\n\\r\\n")
        await writer.drain()
        print(await reader.read(100), file=sys.stdout)
        writer.close()
        await runner.cleanup()

    asyncio.run(main())
    """
)


def test_a_request_the_parser_refuses_is_logged_without_its_bytes() -> None:
    """aiohttp's parser quotes the offending header line in its error: a token with a stray control
    character was logged at ERROR, token included, for every delivery."""
    done = subprocess.run([sys.executable, "-c", SERVER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "400 Bad Request" in done.stdout  # the answer the client got (its bytes, printed)
    assert "tok-SECRET-1" not in done.stderr
    [event] = [e for e in map(json.loads, done.stderr.splitlines()) if e["logger"] == "aiohttp.server"]
    assert event["level"] == "warning" and event["logger"] == "aiohttp.server"
    assert "refused a malformed request (BadHttpMessage, status 400)" in event["event"]
