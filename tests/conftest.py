"""Fixtures shared by the whole suite: virtual clock, alert payloads, an in-process runtime, the real control plane."""

from __future__ import annotations

import copy
import json
import logging
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from remediator.clock import VirtualClock
from tests.payloads import EXAMPLE, PLAYBOOKS, T0


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Tests that run the CLI in-process (validate, test, replay) configure logging for a CLI run:
    structlog and the root logger then write to that test's captured stderr, closed once it ends,
    and every later log line would fail.  Put everything ``remediator.logs.configure`` sets back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    excepthook, showwarning = sys.excepthook, warnings.showwarning
    yield
    structlog.configure(**saved)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    sys.excepthook, warnings.showwarning = excepthook, showwarning


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def example_payload() -> dict[str, Any]:
    return copy.deepcopy(json.loads(EXAMPLE.read_text()))


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Any]:
    from remediator.settings import load_settings

    def make(**overrides: Any) -> Any:
        base: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "playbooks": str(PLAYBOOKS),
            "dry_run": True,
            "webhook": {"tokens": ["t1"]},
            "api": {"read_tokens": ["r1"], "admin_tokens": ["a1"]},  # tests/tokens.py
            "kubernetes": {"mode": "none"},  # never a developer's ~/.kube/config (auto is the default)
        }
        base.update(overrides)
        return load_settings(None, env={}, overrides=base)

    return make


@pytest.fixture
async def runtime(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Any]:
    from remediator.runtime import open_runtime

    async with open_runtime(settings_factory(), clock=vclock, start_worker=False) as rt:
        yield rt


# -- the real Kubernetes control plane, one per session, shared by every suite that uses it ----------

NO_BINARIES = "real Kubernetes control plane: no binaries (set KUBEBUILDER_ASSETS or run make test)"


class _PlaneReport:
    """What the terminal summary says about the session's control plane and the tests that ran on it."""

    def __init__(self) -> None:
        self.plane: Any = None
        self.outcomes: dict[str, int] = {}
        self.skipped = 0


_PLANE_REPORT = pytest.StashKey[_PlaneReport]()


def _plane_report(config: pytest.Config) -> _PlaneReport:
    return config.stash.setdefault(_PLANE_REPORT, _PlaneReport())


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's control plane (etcd, kube-apiserver, kube-controller-manager), shared by tests/real_kube
    and tests/contract so that a session starts one, not one per suite.

    Started by the first test that asks for it; skips with one clear line when the binaries
    are not installed (``$KUBEBUILDER_ASSETS``, filled by ``make kube-assets``).
    """
    from remediator.testing.control_plane import ControlPlane, ControlPlaneError, find_assets

    assets = find_assets()
    if assets is None:
        pytest.skip(NO_BINARIES)
    plane = ControlPlane(assets)
    try:
        plane.start()
    except ControlPlaneError as exc:
        pytest.fail(f"real Kubernetes control plane did not start: {exc}", pytrace=False)
    _plane_report(request.config).plane = plane
    try:
        yield plane
    finally:
        plane.stop()


#: ``request.node.user_properties`` entry of a test that asks for the control plane with getfixturevalue (the
#: contract suite's ``[real]`` half): such a request does not show in the test's fixture names.
ON_CONTROL_PLANE = ("control_plane", "requested")


def uses_control_plane(item: pytest.Item) -> bool:
    return "control_plane" in getattr(item, "fixturenames", ()) or ON_CONTROL_PLANE in item.user_properties


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Count the tests that ran on the control plane; a failure's report carries the processes' logs."""
    outcome = yield
    report = outcome.get_result()
    if not uses_control_plane(item):
        return
    state = _plane_report(item.config)
    if report.skipped and report.when == "setup":
        state.skipped += NO_BINARIES in str(report.longrepr)
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        key = "passed" if report.passed else "failed" if report.failed else "skipped"
        state.outcomes[key] = state.outcomes.get(key, 0) + 1
        plane = state.plane
        if report.failed and plane is not None and plane.workdir is not None:
            report.sections.append(("control plane logs (tail)", plane.logs(25)))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line: how many tests ran on the real apiserver (or why none did)."""
    state = _plane_report(config)
    if state.skipped:
        terminalreporter.write_line(f"{NO_BINARIES}: {state.skipped} tests skipped")
    ran = sum(state.outcomes.values())
    if not ran:
        return
    plane = state.plane
    where = (
        f"kube-apiserver {plane.version or '?'}, started in {plane.startup_seconds:.1f}s" if plane else "not started"
    )
    counts = ", ".join(f"{n} {k}" for k, n in sorted(state.outcomes.items()))
    terminalreporter.write_line(f"real Kubernetes control plane ({where}): {ran} tests ran on it ({counts})")
