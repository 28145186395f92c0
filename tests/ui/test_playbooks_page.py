"""The playbooks page: the loaded set and its version, the last rejected reload's problems as
``file:line``, and a week of decisions per playbook whose bars count what the store recorded."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.clock import VirtualClock
from remediator.core.alerts import format_time
from remediator.runtime import RUNTIME
from tests.payloads import T0, alert_json
from tests.tokens import READ
from tests.ui.conftest import Client, Snapshots, deliver

POOL = """# grow the pool
name: db-pool-exhaustion
description: Grow the connection pool
match:
  alertname: HighDatabaseConnectionUsage
  matchers: ['namespace=~".+"', 'deployment=~".+"']
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails: {namespaces: [shop], cooldown: 10m}
steps:
  - {action: resize_pool, container: app, env: DB_POOL_MAX_SIZE, by: 10, max: 50}
  - {action: wait_healthy, timeout: 5m}
"""
RESTART = """name: service-down-restart
match: {alertname: ServiceDown}
target: {kind: Deployment, namespace: shop, name: web}
steps: [{action: restart}]
"""


@pytest.fixture
def books(tmp_path: Path) -> Path:
    """Two playbooks in files a test may break or edit."""
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "db-pool.yaml").write_text(POOL)
    (books / "restart.yaml").write_text(RESTART)
    return books


@pytest.fixture
def vclock() -> VirtualClock:
    """Eight days before the suite's T0, so a test can record decisions over the week before it."""
    return VirtualClock(T0 - timedelta(days=8))


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock, books: Path) -> AsyncIterator[Client]:
    executor = Snapshots()
    app = create_app(settings_factory(dry_run=False, playbooks=str(books)), clock=vclock,
                     executors=(executor, executor), start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def html_of(client: Client, status: int = 200) -> str:
    r = await client.get("/ui/playbooks", headers=READ)
    assert r.status == status, await r.text()
    return await r.text()


def pool_alert(at: datetime, **labels: str) -> dict[str, Any]:
    return alert_json({"alertname": "HighDatabaseConnectionUsage", "severity": "warning", "namespace": "shop",
                       "deployment": "orders-api", **labels}, starts_at=format_time(at))


def bars(html: str, playbook: str) -> dict[str, tuple[int, int]]:
    """The playbook's chart: day -> (executed, other), as the bars say."""
    row = re.search(rf'<tr data-playbook="{re.escape(playbook)}">(.*?)</tr>', html, re.S)
    assert row is not None, f"no row for {playbook}"
    days = re.findall(r'<g class="day" data-day="([\d-]+)" data-executed="(\d+)" data-other="(\d+)">', row.group(1))
    return {day: (int(e), int(o)) for day, e, o in days}


async def test_the_loaded_set_with_its_version_and_sources(client: Client, books: Path) -> None:
    rt = client.app[RUNTIME]
    html = await html_of(client)
    pset = rt.playbooks.current
    assert f'<code class="set-version">{pset.version}</code>' in html and "2 playbooks loaded" in html
    for p in pset.playbooks:
        assert f'<tr data-playbook="{p.name}">' in html
        assert f"<code>{p.location}</code>" in html and f"<code>{p.version}</code>" in html
    assert f"{books}/db-pool.yaml:2</code>" in html  # file:line of the playbook's name
    assert "Deployment/{{ labels.namespace }}/{{ labels.deployment }}: resize_pool → wait_healthy" in html
    assert "None: the files on disk are the set in use." in html
    assert '<a href="/ui/playbooks" aria-current="page">Playbooks</a>' in html  # the navigation, this page marked
    assert '<a href="/ui/replay">Replay</a>' in html and '<a href="/ui/guardrails">Guardrails</a>' in html
    assert "no decisions" in html


async def test_it_needs_a_read_token(client: Client) -> None:
    r = await client.get("/ui/playbooks")
    assert r.status == 401 and 'action="/ui/login"' in await r.text()
    r = await client.get("/ui/playbooks", headers={"Authorization": "Bearer t1"})  # a webhook token
    assert r.status == 403


async def test_a_rejected_reload_shows_file_and_line_and_keeps_the_last_good_set(client: Client, books: Path) -> None:
    rt = client.app[RUNTIME]
    before = rt.playbooks.current.version
    broken = books / "broken.yaml"
    broken.write_text("name: broken\nmatch:\n  alertname: X\ntarget: {kind: Deployment, namespace: a, name: b}\n"
                      "steps:\n  - action: explode\n")
    assert not await rt.playbooks.reload_async()
    html = await html_of(client)
    assert "The last reload was rejected" in html
    [problem] = re.findall(r'<ul class="load-errors"><li><code>([^<]+)</code></li></ul>', html)
    assert problem.startswith(f"{broken}:6: ") and "explode" in problem
    assert f'<code class="set-version">{before}</code>' in html and '<tr data-playbook="broken">' not in html
    broken.unlink()
    assert await rt.playbooks.reload_async()
    assert "None: the files on disk are the set in use." in await html_of(client)


async def test_the_bars_count_the_decisions_of_the_last_seven_days(client: Client, vclock: VirtualClock) -> None:
    rt = client.app[RUNTIME]
    for at, alerts in [
        (T0 - timedelta(days=8), [pool_alert(T0 - timedelta(days=8))]),  # before the week: not drawn
        (T0 - timedelta(days=2), [pool_alert(T0 - timedelta(days=2))]),  # executed
        (T0 - timedelta(days=2, minutes=-1), [pool_alert(T0 - timedelta(days=2), pod="p2")]),  # cooldown
        (T0, [pool_alert(T0), pool_alert(T0, namespace="kube-public")]),  # executed; not_allowed
    ]:
        vclock.set(at)
        await deliver(client, *alerts)
    html = await html_of(client)
    week = [(T0 - timedelta(days=6 - i)).date().isoformat() for i in range(7)]
    expected = {day: (0, 0) for day in week} | {"2026-11-20": (1, 1), "2026-11-22": (1, 1)}
    assert bars(html, "db-pool-exhaustion") == expected
    # the same counts as the decisions the store lists for the week
    recorded = [d for d in await rt.store.query_decisions(_week_query()) if d["playbook"] == "db-pool-exhaustion"]
    assert sorted(d["decision"] for d in recorded) == ["cooldown", "executed", "executed", "not_allowed"]
    assert "2 executed, 2 other" in html
    assert "no decisions" in html  # the other playbooks decided nothing


async def test_a_renamed_playbook_keeps_its_bars_among_those_no_longer_loaded(
    client: Client, books: Path, vclock: VirtualClock
) -> None:
    rt = client.app[RUNTIME]
    vclock.set(T0)
    await deliver(client, pool_alert(T0))
    source = books / "db-pool.yaml"
    source.write_text(source.read_text().replace("name: db-pool-exhaustion", "name: db-pool-grow"))
    assert await rt.playbooks.reload_async()
    html = await html_of(client)
    assert "No longer loaded" in html
    assert bars(html, "db-pool-exhaustion")["2026-11-22"] == (1, 0)
    assert bars(html, "db-pool-grow") == {} and "no decisions" in html


async def test_an_unreachable_store_still_shows_the_set(client: Client) -> None:
    await client.app[RUNTIME].store.close()
    html = await html_of(client, 503)
    assert "store unavailable: the week of decisions cannot be counted" in html
    assert '<tr data-playbook="db-pool-exhaustion">' in html


def _week_query() -> Any:
    from remediator.ports import DecisionQuery

    return DecisionQuery(since=T0.replace(hour=0) - timedelta(days=6), limit=100)
