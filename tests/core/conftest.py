"""The daemon's app over real HTTP on the embedded default, for the webhook tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.settings import load_settings
from tests.payloads import PLAYBOOKS

Client = TestClient[Any, Any]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    settings = load_settings(
        None,
        env={},
        overrides={
            "data_dir": str(tmp_path),
            "playbooks": str(PLAYBOOKS),
            "dry_run": True,
            "webhook": {"tokens": ["t1", "t2"]},
        },
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c
