"""A live step on a Deployment whose containers carry a plain-value secret: the secret is
nowhere in the read API's answer, the stored audit, the store's files or the logs, while
the value the step changed (DB_POOL_MAX_SIZE 20 -> 30) still shows."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web as aioweb
from aiohttp.test_utils import TestClient, TestServer

from remediator import http
from remediator.core.redact import LAST_APPLIED, REDACTED
from remediator.logs import configure
from remediator.runtime import RUNTIME
from tests.executor.conftest import OpenHarness
from tests.executor.harness import Harness, playbook, steps_of, web
from tests.tokens import READ

SECRET = "hunter2-xyz"
INIT_SECRET = "init-only-pw"
POOL = "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  by: 10\n  max: 50\n"
RESTART = "- action: restart\n"
ENV_PATH = "/spec/template/spec/containers/0/env/1/value"


def secret_web() -> dict[str, Any]:
    manifest = web(env=[
        {"name": "SECRET_TOKEN", "value": SECRET},
        {"name": "DB_POOL_MAX_SIZE", "value": "20"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}},
    ])
    spec = manifest["spec"]["template"]["spec"]
    spec["initContainers"] = [{"name": "migrate", "image": "registry.example/migrate:1",
                               "env": [{"name": "DB_PASSWORD", "value": INIT_SECRET}]}]
    spec["containers"][1]["env"] = [{"name": "PROXY_TOKEN", "value": SECRET}]
    return manifest


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """Every log line the daemon writes, rendered as in production (JSON lines), plus stdlib records."""
    saved = structlog.get_config()
    configure("json", "debug")  # the daemon's own processors and renderer, every level
    out = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
    caplog.set_level("DEBUG")  # every library logger at the daemon's most verbose level too

    def lines() -> str:
        return out.getvalue() + caplog.text

    yield lines
    structlog.configure(**saved)


async def api_answer(h: Harness, execution_id: str) -> tuple[str, str]:
    """The read API's answers (list and detail) for the harness's runtime, over real HTTP."""
    app = aioweb.Application(middlewares=[http.json_errors])
    http.routes(app)
    app[RUNTIME] = h.rt
    async with TestClient(TestServer(app)) as client:
        auth = READ
        assert (await client.get(f"/api/v1/executions/{execution_id}")).status == 401
        detail = await client.get(f"/api/v1/executions/{execution_id}", headers=auth)
        listed = await client.get("/api/v1/executions", headers=auth)
        assert detail.status == 200 and listed.status == 200
        return await detail.text(), await listed.text()


def store_files(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((tmp_path / "data").glob("remediator.db*")))


@pytest.mark.parametrize("dry_run", [False, True], ids=["live", "server-dry-run"])
async def test_resize_pool_shows_its_change_and_no_secret(
    harness: OpenHarness, tmp_path: Path, logged: Any, dry_run: bool
) -> None:
    async with harness({"fix": playbook(POOL)}, dry_run=dry_run) as h:
        h.cluster.apply(secret_web())
        assert SECRET in h.get()["metadata"]["annotations"][LAST_APPLIED]  # kubectl apply put it there
        ex = await h.fire()
        stored = json.dumps(ex)
        answer, listing = await api_answer(h, ex["id"])
        files = store_files(tmp_path)
        if not dry_run:
            live_env = h.get()["spec"]["template"]["spec"]["containers"][0]["env"]
            assert live_env[1] == {"name": "DB_POOL_MAX_SIZE", "value": "30"}
    logs = logged()

    status = "planned" if dry_run else "ok"
    assert steps_of(ex) == [("main", "resize_pool", status)], ex["results"]
    for text, where in ((answer, "API answer"), (listing, "API list"), (stored, "stored step JSON"),
                        (logs, "logs")):
        assert SECRET not in text, where
        assert INIT_SECRET not in text, where
    assert SECRET.encode() not in files and INIT_SECRET.encode() not in files
    assert "set DB_POOL_MAX_SIZE from 20 to 30" in logs  # the logs were captured, and name the change

    [result] = json.loads(answer)["results"]
    assert (result["details"]["from"], result["details"]["to"]) == (20, 30)
    assert {"path": ENV_PATH, "op": "replace", "before": "20", "after": "30"} in result["details"]["diff"]
    for side, pool in (("before", "20"), ("after", "30")):
        snapshot = result[side]
        app, sidecar = snapshot["spec"]["template"]["spec"]["containers"]
        assert app["env"] == [
            {"name": "SECRET_TOKEN", "value": REDACTED},
            {"name": "DB_POOL_MAX_SIZE", "value": pool},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}},
        ]
        assert sidecar["env"] == [{"name": "PROXY_TOKEN", "value": REDACTED}]
        assert snapshot["spec"]["template"]["spec"]["initContainers"][0]["env"] == [
            {"name": "DB_PASSWORD", "value": REDACTED}]
        assert snapshot["metadata"]["annotations"][LAST_APPLIED] == REDACTED
    assert result == next(r for r in ex["results"] if r["action"] == "resize_pool")  # stored as answered


async def test_a_step_that_changes_no_env_keeps_no_env_value(harness: OpenHarness, logged: Any) -> None:
    async with harness({"fix": playbook(RESTART)}) as h:
        h.cluster.apply(secret_web())
        ex = await h.fire()
        answer, _ = await api_answer(h, ex["id"])
    assert steps_of(ex) == [("main", "restart", "ok")]
    assert SECRET not in answer and SECRET not in json.dumps(ex) and SECRET not in logged()
    result = json.loads(answer)["results"][0]
    assert [e.get("value") for e in result["after"]["spec"]["template"]["spec"]["containers"][0]["env"]] == [
        REDACTED, REDACTED, None]
