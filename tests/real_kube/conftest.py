"""Fixtures for the tests against a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager).

One control plane per test session, started by the first test that asks for it (a
synchronous fixture: plain subprocesses and urllib polling, so it needs no event loop
of its own and lives happily beside pytest-asyncio's per-test loops).  Each test gets a
fresh namespace and a kubernetes-asyncio client on its own loop.

Without the binaries (``$KUBEBUILDER_ASSETS``, filled by ``make kube-assets``) every
test here skips with one line, and the terminal summary says so once.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from remediator.testing.control_plane import (
    ControlPlane,
    Kubelet,
    create_namespace,
    delete_namespace,
)

HERE = Path(__file__).resolve().parent
NO_BINARIES = "real Kubernetes control plane: no binaries (set KUBEBUILDER_ASSETS or run make test)"


class _Session:
    """What the terminal summary reports: the control plane started, and how the tests here went."""

    plane: ControlPlane | None = None
    outcomes: dict[str, int] = {}
    skipped_for_binaries = 0


@pytest.fixture
async def kube_admin(control_plane: ControlPlane) -> AsyncIterator[Any]:
    """A kubernetes-asyncio ``ApiClient`` authenticated as the admin (group system:masters)."""
    async with control_plane.api_client() as api:
        yield api


@pytest.fixture
async def namespace(kube_admin: Any) -> AsyncIterator[str]:
    """A fresh namespace (its default ServiceAccount exists), deleted after the test."""
    name = f"t-{secrets.token_hex(4)}"
    await create_namespace(kube_admin, name)
    yield name
    await delete_namespace(kube_admin, name)


@pytest.fixture
def kubelet(control_plane: ControlPlane, namespace: str) -> Iterator[Kubelet]:
    """The session's stand-in kubelet, running this test's namespace (pods bound and readied at once).

    A test changes how its pods behave with ``kubelet.manage(namespace, PodPolicy(...))``.
    """
    running = control_plane.kubelet()
    running.manage(namespace)
    yield running
    running.release(namespace)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Count the tests that really ran against the cluster; a failure's report carries the processes' logs."""
    outcome = yield
    report = outcome.get_result()
    if not item.path.is_relative_to(HERE):
        return
    if report.skipped and report.when == "setup":
        if NO_BINARIES in str(report.longrepr):
            _Session.skipped_for_binaries += 1
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        key = "passed" if report.passed else "failed" if report.failed else "skipped"
        _Session.outcomes[key] = _Session.outcomes.get(key, 0) + 1
        if report.failed and _Session.plane is not None and _Session.plane.workdir is not None:
            report.sections.append(("control plane logs (tail)", _Session.plane.logs(25)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line: how many tests ran against the real apiserver (or why none did)."""
    if _Session.skipped_for_binaries:
        terminalreporter.write_line(f"{NO_BINARIES}: {_Session.skipped_for_binaries} tests skipped")
    ran = sum(_Session.outcomes.values())
    if not ran:
        return
    plane = _Session.plane
    where = (
        f"kube-apiserver {plane.version or '?'}, started in {plane.startup_seconds:.1f}s" if plane else "not started"
    )
    counts = ", ".join(f"{n} {k}" for k, n in sorted(_Session.outcomes.items()))
    terminalreporter.write_line(f"real Kubernetes control plane ({where}): {ran} tests ran ({counts})")
