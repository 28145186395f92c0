"""A large Alertmanager group is recorded whole, and what Alertmanager leaves out of one is reported.

Alertmanager never retries a 4xx: a group refused for its size or its count was lost for good, re-sent
and refused again at every group_interval (2,000 realistic alerts were over the old 1 MiB).  So the
limits hold together: the shipped receiver's ``max_alerts`` is at most the daemon's MAX_ALERTS (beyond
it Alertmanager cuts the group and says so in ``truncatedAlerts``), and the default body limit holds
MAX_ALERTS alerts of a generous size, so a group cut to that count is never refused for its bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog
import yaml

from remediator.core.alerts import MAX_ALERTS
from remediator.settings import Settings, WebhookSettings
from tests.core.conftest import Client
from tests.core.test_webhook_http import recorded_fingerprints
from tests.large_groups import delivered
from tests.payloads import payload

ROOT = Path(__file__).resolve().parents[2]
URL = "/webhooks/alertmanager"
AUTH = {"Authorization": "Bearer t1"}
#: Bytes per alert the default body limit holds at MAX_ALERTS: over twice a typical Kubernetes
#: alert's (tests/large_groups.py: some 700 in a webhook body).
ALLOWANCE = 1600


async def metric(client: Client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    return next((float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{name} ")), 0.0)


def test_the_shipped_receiver_cuts_groups_at_the_daemons_alert_limit() -> None:
    conf = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    [hook] = next(r for r in conf["receivers"] if r["name"] == "remediator")["webhook_configs"]
    assert 0 < hook["max_alerts"] <= MAX_ALERTS  # 0 is no limit: a larger group would be refused whole


def test_the_limits_take_a_large_namespace_and_stay_bounded() -> None:
    limit = WebhookSettings().max_body_bytes
    assert MAX_ALERTS >= 10_000  # an outage of a large namespace, per alertname
    assert MAX_ALERTS * ALLOWANCE <= limit <= 16 * 1024 * 1024  # memory: docs/operations.md, "Large alert groups"
    assert Settings().worker.max_backlog >= MAX_ALERTS  # one full group is never more than the backlog bound


async def test_a_group_of_max_alerts_generous_alerts_is_recorded_whole(client: Client) -> None:
    pad = ALLOWANCE - len(json.dumps(delivered(MAX_ALERTS - 1, "big")))
    alerts = [delivered(i, "big", pad=pad) for i in range(MAX_ALERTS)]
    body = json.dumps(payload(*alerts)).encode()
    assert MAX_ALERTS * ALLOWANCE <= len(body) <= WebhookSettings().max_body_bytes
    r = await client.post(URL, data=body, headers=AUTH)
    assert r.status == 200, await r.text()
    assert await r.json() == {"status": "accepted", "alerts": MAX_ALERTS, "new": MAX_ALERTS, "duplicates": 0,
                              "truncatedAlerts": 0}
    assert len(set(await recorded_fingerprints(client))) == MAX_ALERTS
    # one more is refused whole: the receiver's max_alerts is what keeps Alertmanager from sending it
    r = await client.post(URL, data=json.dumps(payload(*alerts, delivered(MAX_ALERTS, "big"))), headers=AUTH)
    assert r.status == 400
    assert (await r.json())["error"] == f"body.alerts: too many items ({MAX_ALERTS + 1}; at most {MAX_ALERTS})"


async def test_a_truncated_delivery_is_recorded_counted_and_warned_about(client: Client) -> None:
    body = payload(*(delivered(i, "big") for i in range(3)), truncated=7)
    body["groupKey"] = '{}/{alertname=~"HighCPUUsage"}:{alertname="HighCPUUsage", namespace="big"}'
    with structlog.testing.capture_logs() as logs:
        r = await client.post(URL, json=body, headers=AUTH)
        assert r.status == 200
        assert await r.json() == {"status": "accepted", "alerts": 3, "new": 3, "duplicates": 0,
                                  "truncatedAlerts": 7}
        assert sorted(await recorded_fingerprints(client)) == [f"{i:016x}" for i in range(3)]
        assert await metric(client, "remediator_alerts_truncated_total") == 7
        # Alertmanager re-sends the group at each group_interval, cut the same way: counted each time
        r = await client.post(URL, json=body, headers=AUTH)
        assert (await r.json())["duplicates"] == 3
        assert await metric(client, "remediator_alerts_truncated_total") == 14
        r = await client.post(URL, json=payload(delivered(3, "big")), headers=AUTH)  # a whole group: no warning
        assert (await r.json())["new"] == 1
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["truncated"], e["recorded"], e["group_key"]) for e in warned] == [(7, 3, body["groupKey"])] * 2
    assert all("max_alerts" in e["event"] for e in warned)
    assert await metric(client, "remediator_alerts_truncated_total") == 14
