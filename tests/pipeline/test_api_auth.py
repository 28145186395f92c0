"""The read API takes credentials (a read token, or a webhook token until tokens have roles);
probes and the scrape stay open; what it shows of old records is redacted."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.core.errors import ConfigError
from remediator.core.redact import LAST_APPLIED
from remediator.core.rollout import diff
from remediator.ports import StepResult
from remediator.runtime import RUNTIME
from remediator.settings import load_settings
from tests.payloads import db_pool_alert, payload

Client = TestClient[Any, Any]
WEBHOOK = {"Authorization": "Bearer t1"}
READ = {"Authorization": "Bearer r1"}
READ_PATHS = ("/api/v1/executions", "/api/v1/executions/{id}", "/api/v1/guardrails")


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Client]:
    app = create_app(settings_factory(api={"read_tokens": ["r1"]}), clock=vclock, start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def one_execution(client: Client) -> str:
    r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert()), headers=WEBHOOK)
    assert r.status == 200
    await client.app[RUNTIME].worker.drain()
    [item] = await client.app[RUNTIME].store.list_executions()
    return str(item["id"])


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"reader:{password}".encode()).decode()}


async def test_the_read_api_refuses_missing_or_wrong_credentials(client: Client) -> None:
    ex = await one_execution(client)
    for path in READ_PATHS:
        url = path.format(id=ex)
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer "}, basic("nope"),
                        {"Authorization": "Basic !!!"}, {"Authorization": "r1"}):
            r = await client.get(url, headers=headers)
            assert r.status == 401, (url, headers)
            assert await r.json() == {"error": "missing or invalid credentials"}
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="remediator"'


async def test_a_read_token_or_a_webhook_token_reads(client: Client) -> None:
    ex = await one_execution(client)
    for headers in (READ, WEBHOOK, basic("r1"), basic("t1")):
        listed = await client.get("/api/v1/executions", headers=headers)
        assert listed.status == 200 and [e["id"] for e in (await listed.json())["executions"]] == [ex]
        detail = await client.get(f"/api/v1/executions/{ex}", headers=headers)
        assert detail.status == 200 and (await detail.json())["id"] == ex
        guard = await client.get("/api/v1/guardrails", headers=headers)
        assert guard.status == 200 and (await guard.json())["paused"] is False
    missing = await client.get("/api/v1/executions/ex-nope", headers=READ)
    assert missing.status == 404  # only an authorized reader learns what exists


async def test_a_read_token_neither_feeds_alerts_nor_pauses(client: Client) -> None:
    r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert()), headers=READ)
    assert r.status == 401
    assert (await client.post("/api/v1/pause", headers=READ)).status == 401
    assert (await client.post("/api/v1/resume", headers=READ)).status == 401
    assert (await client.post("/api/v1/pause", headers=WEBHOOK)).status == 200


async def test_probes_and_metrics_stay_open(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    r = await client.get("/metrics")
    assert r.status == 200 and "remediator_" in await r.text()


async def test_insecure_no_auth_still_opens_everything_for_local_experiments(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    settings = settings_factory(webhook={"insecure_no_auth": True})
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        assert (await c.get("/api/v1/executions")).status == 200
        assert (await c.get("/api/v1/guardrails")).status == 200


async def test_without_read_tokens_the_webhook_tokens_read(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    async with TestClient(TestServer(create_app(settings_factory(), clock=vclock, start_worker=False))) as c:
        assert (await c.get("/api/v1/executions")).status == 401
        assert (await c.get("/api/v1/executions", headers=WEBHOOK)).status == 200


async def test_an_unreadable_read_tokens_file_stops_the_start(
    settings_factory: Callable[..., Any], vclock: VirtualClock, tmp_path: Path
) -> None:
    settings = settings_factory(api={"read_tokens_file": str(tmp_path / "missing")})
    server = TestServer(create_app(settings, clock=vclock, start_worker=False))
    with pytest.raises(ConfigError, match="cannot read secret file"):
        await server.start_server()
    await server.close()


async def test_a_record_from_before_redaction_is_redacted_as_it_is_read(client: Client) -> None:
    """Defence in depth: a step stored with raw snapshots (as before the fix) never leaves raw."""
    ex = await one_execution(client)
    secret = "hunter2-xyz"

    def deployment(pool: str) -> dict[str, Any]:
        env = [{"name": "SECRET_TOKEN", "value": secret}, {"name": "DB_POOL_MAX_SIZE", "value": pool}]
        return {"kind": "Deployment",
                "metadata": {"name": "orders-api", "annotations": {LAST_APPLIED: json.dumps({"env": env}) + pool}},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "env": env}]}}}}

    before, after = deployment("20"), deployment("30")
    raw = StepResult("ok", "set DB_POOL_MAX_SIZE from 20 to 30 in container app", before, after,
                     {"from": 20, "to": 30, "diff": diff(before, after)})
    step = PlannedStep(0, "resize_pool", {"container": "app", "env": "DB_POOL_MAX_SIZE", "by": 10})
    now = datetime(2026, 11, 22, 10, 5, tzinfo=UTC)
    await client.app[RUNTIME].store.record_step(ex, step, raw, started=now, finished=now)
    assert secret in json.dumps(await client.app[RUNTIME].store.get_execution(ex))  # stored raw, as old records are

    text = await (await client.get(f"/api/v1/executions/{ex}", headers=READ)).text()
    assert secret not in text
    result = json.loads(text)["results"][0]
    assert result["after"]["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "SECRET_TOKEN", "value": "<redacted>"}, {"name": "DB_POOL_MAX_SIZE", "value": "30"}]
    assert result["after"]["metadata"]["annotations"] == {LAST_APPLIED: "<redacted>"}
    assert result["details"]["diff"] == [{"path": "/spec/template/spec/containers/0/env/1/value", "op": "replace",
                                          "before": "20", "after": "30"}]
    assert secret not in await (await client.get("/api/v1/executions", headers=READ)).text()


# -- settings ---------------------------------------------------------------------------------


def test_read_tokens_from_yaml_env_and_file_plus_the_webhook_tokens(tmp_path: Path) -> None:
    f = tmp_path / "read-tokens"
    f.write_text("file-a\nfile-b, file-c\n")
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(f"api:\n  read_tokens: [yaml-r]\n  read_tokens_file: {f}\nwebhook:\n  tokens: [hook]\n")
    s = load_settings(str(cfg), env={})
    assert s.read_tokens() == ("yaml-r", "file-a", "file-b", "file-c", "hook")
    assert s.webhook_tokens() == ("hook",)  # a read token never feeds alerts
    s = load_settings(None, env={"REMEDIATOR_API_READ_TOKENS": "env-a,env-b", "REMEDIATOR_WEBHOOK_TOKENS": "hook"})
    assert s.api.read_tokens == ("env-a", "env-b") and s.read_tokens() == ("env-a", "env-b", "hook")
    s = load_settings(None, env={"REMEDIATOR_API_READ_TOKENS_FILE": str(f)})
    assert s.read_tokens() == ("file-a", "file-b", "file-c")


def test_unknown_api_keys_are_refused_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text("dry_run: true\napi:\n  read_token: [x]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg), env={})
    assert str(err.value).startswith(f"{cfg}:3: api.read_token: unknown setting; known: read_tokens, read_tokens_file")
    with pytest.raises(ConfigError, match=r"api\.read_token: unknown setting"):
        load_settings(None, env={"REMEDIATOR_API_READ_TOKEN": "x"})
    with pytest.raises(ConfigError, match="REMEDIATOR_READ_TOKENS"):  # the section is `api`
        load_settings(None, env={"REMEDIATOR_READ_TOKENS": "x"})


def test_a_missing_read_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    s = load_settings(None, env={"REMEDIATOR_API_READ_TOKENS_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="cannot read secret file"):
        s.read_tokens()
