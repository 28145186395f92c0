"""Credentials by role: a webhook token only posts alerts, a read token reads the audit, an
admin token pauses and resumes; token files are re-read when rotated.  Probes stay open, the
scrape is open unless configured otherwise; what the audit shows of old records is redacted."""

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
ADMIN = {"Authorization": "Bearer a1"}
READ_PATHS = ("/api/v1/executions", "/api/v1/executions/{id}", "/api/v1/guardrails")


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock) -> AsyncIterator[Client]:
    app = create_app(settings_factory(api={"read_tokens": ["r1"], "admin_tokens": ["a1"]}), clock=vclock,
                     start_worker=False)
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


async def test_a_read_or_admin_token_reads_the_audit_and_a_webhook_token_is_forbidden(client: Client) -> None:
    ex = await one_execution(client)
    for headers in (READ, ADMIN, basic("r1"), basic("a1")):
        listed = await client.get("/api/v1/executions", headers=headers)
        assert listed.status == 200 and [e["id"] for e in (await listed.json())["executions"]] == [ex]
        detail = await client.get(f"/api/v1/executions/{ex}", headers=headers)
        assert detail.status == 200 and (await detail.json())["id"] == ex
        guard = await client.get("/api/v1/guardrails", headers=headers)
        assert guard.status == 200 and (await guard.json())["paused"] is False
    for path in READ_PATHS:  # Alertmanager's credential reads nothing
        for headers in (WEBHOOK, basic("t1")):
            r = await client.get(path.format(id=ex), headers=headers)
            assert r.status == 403, (path, headers)
            assert await r.json() == {"error": "this token may not do this: it needs the read role", "role": "read"}
    missing = await client.get("/api/v1/executions/ex-nope", headers=READ)
    assert missing.status == 404  # only an authorized reader learns what exists


async def test_only_an_admin_token_pauses_and_resumes(client: Client) -> None:
    for path in ("/api/v1/pause", "/api/v1/resume"):
        assert (await client.post(path)).status == 401
        assert (await client.post(path, headers={"Authorization": "Bearer nope"})).status == 401
        for headers in (WEBHOOK, READ, basic("t1")):
            r = await client.post(path, headers=headers)
            assert r.status == 403 and (await r.json())["role"] == "admin", (path, headers)
    assert (await (await client.get("/api/v1/guardrails", headers=READ)).json())["paused"] is False
    assert (await client.post("/api/v1/pause", headers=ADMIN)).status == 200
    assert (await (await client.get("/api/v1/guardrails", headers=READ)).json())["paused"] is True
    assert (await client.post("/api/v1/resume", headers=basic("a1"))).status == 200
    assert (await (await client.get("/api/v1/guardrails", headers=READ)).json())["paused"] is False


async def test_read_and_admin_tokens_never_feed_alerts(client: Client) -> None:
    for headers in (READ, ADMIN):
        r = await client.post("/webhooks/alertmanager", json=payload(db_pool_alert()), headers=headers)
        assert r.status == 403 and (await r.json())["role"] == "webhook"
    assert await client.app[RUNTIME].store.count_alerts() == 0
    text = await (await client.get("/metrics")).text()
    assert 'remediator_webhook_rejected_total{reason="forbidden"} 2.0' in text


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


async def test_without_read_tokens_nobody_reads(
    settings_factory: Callable[..., Any], vclock: VirtualClock
) -> None:
    async with TestClient(TestServer(create_app(settings_factory(), clock=vclock, start_worker=False))) as c:
        assert (await c.get("/api/v1/executions")).status == 401
        assert (await c.get("/api/v1/executions", headers=WEBHOOK)).status == 403


async def test_metrics_can_require_a_read_token(settings_factory: Callable[..., Any], vclock: VirtualClock) -> None:
    settings = settings_factory(api={"read_tokens": ["r1"], "metrics": "read"})
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        assert (await c.get("/metrics")).status == 401
        assert (await c.get("/metrics", headers=WEBHOOK)).status == 403
        r = await c.get("/metrics", headers=READ)
        assert r.status == 200 and "remediator_" in await r.text()
        assert (await c.get("/healthz")).status == 200 and (await c.get("/readyz")).status == 200


async def test_rotated_token_files_take_effect_without_a_restart(
    settings_factory: Callable[..., Any], vclock: VirtualClock, tmp_path: Path
) -> None:
    """Rotation as the kubelet does it: the Secret's file is replaced, a new inode in place."""
    files = {role: tmp_path / f"{role}-tokens" for role in ("webhook", "read", "admin")}
    for role, f in files.items():
        f.write_text(f"{role}-old\n")
    settings = settings_factory(webhook={"tokens_file": str(files["webhook"])},
                                api={"read_tokens_file": str(files["read"]), "admin_tokens_file": str(files["admin"])})
    async with TestClient(TestServer(create_app(settings, clock=vclock, start_worker=False))) as c:
        for role, path in (("read", "/api/v1/guardrails"), ("admin", "/api/v1/pause")):
            method = c.get if role == "read" else c.post
            assert (await method(path, headers={"Authorization": f"Bearer {role}-old"})).status == 200
            replacement = tmp_path / f"{role}.new"
            replacement.write_text(f"{role}-new\n")
            replacement.replace(files[role])
            assert (await method(path, headers={"Authorization": f"Bearer {role}-old"})).status == 401
            assert (await method(path, headers={"Authorization": f"Bearer {role}-new"})).status == 200
        hook = "/webhooks/alertmanager"
        files["webhook"].write_text("webhook-old\nwebhook-new\n")  # rewritten in place: both during rotation
        assert (await c.post(hook, json=payload(db_pool_alert()), headers={"Authorization": "Bearer webhook-new"})
                ).status == 200
        files["webhook"].unlink()  # a file that vanishes keeps the tokens in use rather than locking everyone out
        assert (await c.post(hook, json=payload(db_pool_alert()), headers={"Authorization": "Bearer webhook-old"})
                ).status == 200


async def test_sighup_rereads_the_token_files(
    settings_factory: Callable[..., Any], vclock: VirtualClock, tmp_path: Path
) -> None:
    """Also when the file's stamp does not change (same size, mtime restored): SIGHUP forces it."""
    import asyncio
    import os
    import signal

    from remediator.runtime import open_runtime

    f = tmp_path / "read-tokens"
    f.write_text("aaaa\n")
    stamp = f.stat()
    settings = settings_factory(api={"read_tokens_file": str(f)})
    async with open_runtime(settings, clock=vclock, start_worker=False) as rt:
        assert rt.credentials.roles_of("aaaa") == {"read"}
        f.write_text("bbbb\n")
        os.utime(f, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        rt.credentials.refresh()
        assert rt.credentials.roles_of("aaaa") == {"read"}  # the stamp did not move: nothing re-read
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(1000):  # the handler runs on the loop's next turns; no time passes
            if rt.credentials.roles_of("bbbb") is not None:
                break
            await asyncio.sleep(0)
        assert rt.credentials.roles_of("bbbb") == {"read"} and rt.credentials.roles_of("aaaa") is None


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


def test_tokens_by_role_from_yaml_env_and_file(tmp_path: Path) -> None:
    f = tmp_path / "read-tokens"
    f.write_text("file-a\nfile-b, file-c\n")
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text(f"api:\n  read_tokens: [yaml-r]\n  read_tokens_file: {f}\n  admin_tokens: [boss]\n"
                   "webhook:\n  tokens: [hook]\n")
    s = load_settings(str(cfg), env={})
    assert s.read_tokens() == ("yaml-r", "file-a", "file-b", "file-c")  # a webhook token is not a read token
    assert s.webhook_tokens() == ("hook",)  # a read token never feeds alerts
    assert s.admin_tokens() == ("boss",)
    s = load_settings(None, env={"REMEDIATOR_API_READ_TOKENS": "env-a,env-b", "REMEDIATOR_WEBHOOK_TOKENS": "hook",
                                 "REMEDIATOR_API_ADMIN_TOKENS": "adm", "REMEDIATOR_API_ADMIN_TOKENS_FILE": str(f)})
    assert s.api.read_tokens == ("env-a", "env-b") and s.read_tokens() == ("env-a", "env-b")
    assert s.admin_tokens() == ("adm", "file-a", "file-b", "file-c")
    s = load_settings(None, env={"REMEDIATOR_API_READ_TOKENS_FILE": str(f)})
    assert s.read_tokens() == ("file-a", "file-b", "file-c")


def test_unknown_api_keys_are_refused_with_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text("dry_run: true\napi:\n  read_token: [x]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg), env={})
    assert str(err.value) == (f"{cfg}:3: api.read_token: unknown setting; known: admin_tokens, admin_tokens_file, "
                              "metrics, read_tokens, read_tokens_file; did you mean read_tokens?")
    with pytest.raises(ConfigError, match=r"REMEDIATOR_API_READ_TOKEN: api\.read_token: unknown setting.*"
                                          r"did you mean REMEDIATOR_API_READ_TOKENS\?"):
        load_settings(None, env={"REMEDIATOR_API_READ_TOKEN": "x"})
    with pytest.raises(ConfigError, match="REMEDIATOR_READ_TOKENS"):  # the section is `api`
        load_settings(None, env={"REMEDIATOR_READ_TOKENS": "x"})


def test_a_missing_read_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    s = load_settings(None, env={"REMEDIATOR_API_READ_TOKENS_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="cannot read secret file"):
        s.read_tokens()
