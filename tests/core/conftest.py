"""The daemon's app over real HTTP on the embedded default, for the webhook tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from remediator.app import create_app
from remediator.http import server_options
from remediator.settings import Settings, load_settings
from tests.payloads import PLAYBOOKS

Client = TestClient[Any, Any]
OpenClient = Callable[..., contextlib.AbstractAsyncContextManager[Client]]


class DaemonServer(TestServer):
    """The app served as ``remediator serve`` serves it: the same request handler options (aiohttp's
    test server would otherwise cancel a handler whose client disconnects, which the daemon does not)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(create_app(settings))
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return await super()._make_runner(**{**kwargs, **server_options(self.settings)})


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(DaemonServer(settings)) as c:
        yield c


@pytest.fixture
def open_client(tmp_path: Path) -> OpenClient:
    """A client of the daemon on the embedded default, with ``overrides`` on top of the tests' settings."""

    def open_(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Client]:
        base: dict[str, Any] = {"data_dir": str(tmp_path), "playbooks": str(PLAYBOOKS), "dry_run": True,
                                "webhook": {"tokens": ["t1", "t2"]}}
        return serving(load_settings(None, env={}, overrides={**base, **overrides}))

    return open_


@pytest.fixture
async def client(open_client: OpenClient) -> AsyncIterator[Client]:
    async with open_client() as c:
        yield c
