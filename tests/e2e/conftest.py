"""Fixtures for the end-to-end tests: a real daemon subprocess and a real Alertmanager pointed at it."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import Alertmanager, Daemon, _Service, require_binary


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failing e2e test's report carries both processes' logs: the assertion alone rarely explains it."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in ("daemon", "alertmanager", "prometheus"):
        process = getattr(item, "funcargs", {}).get(name)
        if isinstance(process, Daemon | _Service):
            report.sections.append((f"{name} log (tail)", process.log()))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A started daemon; at the end it must shut down gracefully on SIGTERM (exit code 0)."""
    d = Daemon(tmp_path)
    d.start()
    yield d
    if d.proc is not None:
        code = d.stop()
        assert code == 0, f"daemon exited with {code} on SIGTERM:\n{d.log()}"


@pytest.fixture
def alertmanager_binaries() -> tuple[str, str]:
    """Alertmanager's and amtool's paths, looked up before anything is started."""
    return require_binary("prometheus-alertmanager", "alertmanager"), require_binary("amtool")


@pytest.fixture
def alertmanager(
    alertmanager_binaries: tuple[str, str], daemon: Daemon, tmp_path: Path
) -> Iterator[Alertmanager]:
    """A started Alertmanager whose only receiver is ``daemon``'s webhook."""
    binary, amtool = alertmanager_binaries
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    am = Alertmanager(binary, amtool, workdir, daemon)
    try:
        am.start()
        yield am
    finally:
        am.stop()
