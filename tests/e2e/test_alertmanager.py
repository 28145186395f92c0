"""A real Alertmanager drives the real daemon: the foundation's end-to-end acceptance test.

Alerts go in through ``amtool``, reach the daemon the way production traffic does
(grouped, bearer-authenticated, re-sent and retried by Alertmanager), and come out as
dry-run executions in the daemon's API and its SQLite store.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.processes import ROOT, Alertmanager, Daemon, http_get, wait_for
from tests.large_groups import outage_alert

pytestmark = pytest.mark.e2e

DELIVERY_TIMEOUT = 30.0

ORDERS = {"alertname": "HighDatabaseConnectionUsage", "severity": "warning", "namespace": "shop",
          "deployment": "orders-api"}
WEB = {"alertname": "HighLatency", "severity": "warning", "namespace": "shop", "deployment": "web"}
UNMATCHED = {"alertname": "DiskWillFillIn4Hours", "severity": "warning", "namespace": "shop", "instance": "node-1"}
FORBIDDEN = {"alertname": "HighLatency", "severity": "warning", "namespace": "kube-system", "deployment": "coredns"}
CART = {"alertname": "HighLatency", "severity": "critical", "namespace": "shop", "deployment": "cart"}
#: In the shop group: a label past the daemon's limits (4,096 characters), which Alertmanager passes on.
#: It once cost the whole group its deliveries (a 400, which Alertmanager never retries).
HOSTILE = {"alertname": "HighLatency", "severity": "warning", "namespace": "shop", "deployment": "api",
           "path": "/" + "x" * 5000}


def execution_for(daemon: Daemon, playbook: str, name: str) -> dict[str, Any] | None:
    found = [e for e in daemon.executions() if e["playbook"] == playbook and e["target"]["name"] == name]
    assert len(found) <= 1, f"more than one execution of {playbook} for {name}: {found}"
    return found[0] if found else None


def at_least(process: Daemon | Alertmanager, minimum: float, name: str, **labels: str) -> float | None:
    value = process.metric(name, **labels)
    return value if value >= minimum else None


def wait_execution(daemon: Daemon, playbook: str, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = execution_for(daemon, playbook, name)
        return found if found is not None and found["status"] == "dry_run" else None

    return wait_for(probe, timeout=DELIVERY_TIMEOUT, what=f"a finished dry-run {playbook} execution for {name}")


def steps(execution: dict[str, Any], key: str = "steps") -> list[tuple[str, str, dict[str, Any]]]:
    return [(s["phase"], s["action"], s["params"]) for s in execution[key]]


def read_store(daemon: Daemon) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alerts, decisions) from the daemon's embedded store; each alert with its parsed labels."""
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        alerts = [
            {**dict(r), "labels": json.loads(r["alert"])["labels"]}
            for r in db.execute("SELECT fingerprint, status, alert, processed, dedup_key FROM alerts")
        ]
        decisions = [
            dict(r)
            for r in db.execute(
                "SELECT d.id, d.fingerprint, d.playbook, d.kind, d.exec_status, a.status AS alert_status"
                " FROM decisions d LEFT JOIN alerts a ON a.dedup_key = d.alert_key"
            )
        ]
    return alerts, decisions


def all_processed(daemon: Daemon) -> bool | None:
    """True once the worker has taken every recorded alert (read-only, beside the running daemon)."""
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        [(pending,)] = db.execute("SELECT count(*) FROM alerts WHERE processed = 0")
    return True if pending == 0 else None


def shipped_receiver() -> dict[str, Any]:
    """The remediator receiver's webhook_config in deploy/alertmanager/alertmanager.yml."""
    conf = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    [hook] = next(r for r in conf["receivers"] if r["name"] == "remediator")["webhook_configs"]
    return dict(hook)


@pytest.fixture
def grouping_alertmanager(
    alertmanager_binaries: tuple[str, str], daemon: Daemon, tmp_path: Path
) -> Iterator[Callable[[int], Alertmanager]]:
    """Starts an Alertmanager that groups as the shipped route does (by alertname and namespace) and
    sends the daemon at most ``max_alerts`` alerts of a group (the receiver's setting)."""
    started: list[Alertmanager] = []

    def start(max_alerts: int) -> Alertmanager:
        workdir = tmp_path / "grouping-alertmanager"
        workdir.mkdir()
        am = Alertmanager(*alertmanager_binaries, workdir, daemon)
        config = yaml.safe_load(am.config_path.read_text())
        # group_wait lets one POST of many alerts settle into the group before its first delivery
        config["route"].update(group_by=["alertname", "namespace"], group_wait="2s")
        config["receivers"][0]["webhook_configs"][0]["max_alerts"] = max_alerts
        am.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        started.append(am)
        am.start()
        return am

    yield start
    for am in started:
        am.stop()


def post_alerts(alertmanager: Alertmanager, alerts: list[dict[str, Any]]) -> None:
    """Alerts into Alertmanager in one POST of its API, as Prometheus sends them."""
    request = urllib.request.Request(alertmanager.url + "/api/v2/alerts", json.dumps(alerts).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200


def held_by(alertmanager: Alertmanager, namespace: str) -> set[str]:
    """The fingerprints of the alerts Alertmanager holds in ``namespace``."""
    query = urllib.parse.quote(f'namespace="{namespace}"')
    status, body = http_get(f"{alertmanager.url}/api/v2/alerts?filter={query}", timeout=30)
    assert status == 200, body[:500]
    return {a["fingerprint"] for a in json.loads(body)}


def recorded_in(daemon: Daemon, namespace: str) -> set[str]:
    """The fingerprints the daemon's embedded store holds in ``namespace`` (read-only, beside the daemon)."""
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT fingerprint, alert FROM alerts").fetchall()
    return {fp for fp, alert in rows if json.loads(alert)["labels"].get("namespace") == namespace}


LARGE_GROUP = 2000  # some 1.4 MiB as Alertmanager delivers it: refused whole (413) under the old 1 MiB limit


def test_a_large_group_is_recorded_whole(grouping_alertmanager: Callable[[int], Alertmanager], daemon: Daemon) -> None:
    """An outage of a large namespace: one group of 2,000 realistic alerts, through the shipped receiver
    settings, reaches the daemon and every alert of it is recorded (Alertmanager never retries a 4xx:
    a refused group was lost for good)."""
    alertmanager = grouping_alertmanager(shipped_receiver()["max_alerts"])
    post_alerts(alertmanager, [outage_alert(i, "bigns") for i in range(LARGE_GROUP)])

    def whole_group() -> set[str] | None:
        held = held_by(alertmanager, "bigns")
        return held if len(held) == LARGE_GROUP else None

    held = wait_for(whole_group, timeout=DELIVERY_TIMEOUT, what="Alertmanager to hold the whole group")
    wait_for(lambda: True if recorded_in(daemon, "bigns") == held else None, timeout=DELIVERY_TIMEOUT,
             what=f"the daemon to record all {LARGE_GROUP} alerts of the group")
    assert daemon.metric("remediator_webhook_rejected_total") == 0
    assert daemon.metric("remediator_alerts_truncated_total") == 0
    assert alertmanager.metric("alertmanager_notifications_failed_total", integration="webhook") == 0


def test_a_group_over_max_alerts_is_cut_and_what_was_sent_is_recorded(
    grouping_alertmanager: Callable[[int], Alertmanager], daemon: Daemon
) -> None:
    """Beyond the receiver's max_alerts Alertmanager sends the first ones and counts the rest in
    truncatedAlerts: the daemon records what came and reports what did not (metric, WARNING)."""
    alertmanager = grouping_alertmanager(100)
    post_alerts(alertmanager, [outage_alert(i, "cutns") for i in range(130)])

    def cut() -> list[dict[str, Any]]:
        return [json.loads(line) for line in daemon.log_path.read_text().splitlines()
                if line.startswith("{") and "max_alerts" in line]

    # a first delivery may come before Alertmanager has taken all 130 in: wait for the whole group's
    wait_for(lambda: True if any(w["truncated"] == 30 for w in cut()) else None, timeout=DELIVERY_TIMEOUT,
             what="a delivery of the whole group cut to max_alerts, with its truncatedAlerts")
    assert all(w["level"] == "warning" and w["recorded"] == 100 for w in cut()), cut()
    assert daemon.metric("remediator_alerts_truncated_total") == sum(w["truncated"] for w in cut())
    recorded = recorded_in(daemon, "cutns")
    assert len(recorded) >= 100 and recorded <= held_by(alertmanager, "cutns")
    assert daemon.metric("remediator_webhook_rejected_total") == 0


def test_alertmanager_alerts_become_dry_run_executions_exactly_once(alertmanager: Alertmanager, daemon: Daemon) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

    # 1. A first alert opens the "shop" group (with one the daemon cannot take); it plans the pool resize.
    alertmanager.add_alert(HOSTILE, start=start)
    alertmanager.add_alert(ORDERS, start=start, annotations={"summary": "orders-api uses 95% of its DB pool"})
    orders = wait_execution(daemon, "db-pool-exhaustion", "orders-api")
    assert orders["decision"] == "executed" and orders["dry_run"] is True
    assert orders["target"] == {"kind": "Deployment", "namespace": "shop", "name": "orders-api"}
    [(phase, action, resize), wait] = steps(orders)
    assert (phase, action) == ("main", "resize_pool")
    assert {"env": "DB_POOL_MAX_SIZE", "by": 10, "max": 50}.items() <= resize.items()
    assert wait[:2] == ("main", "wait_healthy")
    assert [(p, a) for p, a, _ in steps(orders, "on_failure")] == [("on_failure", "rollback")]
    detail = daemon.get_json(f"/api/v1/executions/{orders['id']}")
    assert detail["alert_payload"]["annotations"]["summary"] == "orders-api uses 95% of its DB pool"
    assert [(r["phase"], r["action"]) for r in detail["results"]] == [("main", "resize_pool"), ("main", "wait_healthy")]

    # 2. More alerts: the shop group is re-sent with orders-api in it again (a duplicate),
    #    kube-system gets its own group and is refused by the allowlist.
    for labels in (WEB, UNMATCHED, FORBIDDEN):
        alertmanager.add_alert(labels, start=start, annotations={"summary": f"{labels['alertname']} fired"})
    web = wait_execution(daemon, "high-latency-scale-up", "web")
    assert web["decision"] == "executed"
    assert web["target"] == {"kind": "Deployment", "namespace": "shop", "name": "web"}
    [(_, action, scale), (_, action2, _)] = steps(web)
    assert (action, action2) == ("scale", "wait_healthy")
    assert scale["factor"] == 1.5
    wait_for(
        lambda: at_least(
            daemon, 1, "remediator_decisions_total", playbook="high-latency-scale-up", decision="not_allowed"
        ),
        timeout=DELIVERY_TIMEOUT,
        what="the kube-system alert's not_allowed decision",
    )
    wait_for(
        lambda: at_least(daemon, 1, "remediator_alerts_duplicate_total"),
        timeout=DELIVERY_TIMEOUT,
        what="Alertmanager re-sending the shop group (a duplicate delivery)",
    )
    assert daemon.metric("remediator_webhook_rejected_total", reason="unauthorized") == 0, "its token was refused"
    assert daemon.metric("remediator_alerts_refused_total") >= 1  # the hostile alert, each time the group came
    before_restart = {e["id"]: e for e in daemon.executions()}
    assert len(before_restart) == 2, before_restart

    # 3. Restart.  An alert fired while the daemon is down reaches it through Alertmanager's
    #    retries, together with the whole shop group again: no second execution for any of them.
    assert daemon.stop() == 0, f"no graceful shutdown on SIGTERM:\n{daemon.log()}"
    alertmanager.add_alert(CART, start=start, annotations={"summary": "cart p99 above 2s"})
    wait_for(  # restart only once Alertmanager has failed to deliver, so it is retrying
        lambda: at_least(alertmanager, 1, "alertmanager_notification_requests_failed_total", integration="webhook"),
        timeout=DELIVERY_TIMEOUT,
        what="Alertmanager failing to reach the stopped daemon",
    )
    daemon.start()
    after_restart = {e["id"]: e for e in daemon.executions()}
    assert {i: after_restart.get(i) for i in before_restart} == before_restart, "executions lost in the restart"
    cart = wait_execution(daemon, "high-latency-scale-up", "cart")
    assert cart["decision"] == "executed" and cart["target"]["namespace"] == "shop"
    wait_for(
        lambda: at_least(daemon, 3, "remediator_alerts_duplicate_total"),
        timeout=DELIVERY_TIMEOUT,
        what="the restarted daemon receiving the shop group's older alerts again",
    )

    # 4. Resolve everything: Alertmanager sends the resolutions (send_resolved).
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    everything = (ORDERS, WEB, UNMATCHED, FORBIDDEN, CART)
    for labels in everything:
        alertmanager.add_alert(labels, start=start, end=end)
    wait_for(
        lambda: at_least(daemon, len(everything), "remediator_alerts_received_total", status="resolved"),
        timeout=DELIVERY_TIMEOUT,
        what="the resolved notifications",
    )
    wait_for(lambda: all_processed(daemon), timeout=DELIVERY_TIMEOUT, what="the worker to process every alert")
    final = daemon.executions()
    assert {e["id"] for e in final} == {orders["id"], web["id"], cart["id"]}
    assert all(e["status"] == "dry_run" and e["decision"] == "executed" for e in final)
    assert daemon.stop() == 0, f"no graceful shutdown on SIGTERM:\n{daemon.log()}"
    assert not daemon.log_levels() & {"error", "critical"}, f"the daemon logged errors:\n{daemon.log()}"

    # 5. The durable record, read after shutdown.
    alerts, decisions = read_store(daemon)

    def fingerprint(labels: dict[str, str]) -> str:
        [fp] = {str(a["fingerprint"]) for a in alerts if a["labels"] == labels}
        return fp

    fps = {name: fingerprint(labels) for name, labels in
           (("orders", ORDERS), ("web", WEB), ("unmatched", UNMATCHED), ("forbidden", FORBIDDEN), ("cart", CART))}
    for name, fp in fps.items():
        statuses = sorted(a["status"] for a in alerts if a["fingerprint"] == fp)
        assert statuses == ["firing", "resolved"], f"{name}: stored deliveries {statuses}"
    executions = Counter((d["fingerprint"], d["playbook"]) for d in decisions if d["exec_status"] is not None)
    assert executions == {
        (fps["orders"], "db-pool-exhaustion"): 1,
        (fps["web"], "high-latency-scale-up"): 1,
        (fps["cart"], "high-latency-scale-up"): 1,
    }
    firing = sorted((d["fingerprint"], d["playbook"], d["kind"]) for d in decisions if d["alert_status"] == "firing")
    assert firing == sorted([
        (fps["orders"], "db-pool-exhaustion", "executed"),
        (fps["web"], "high-latency-scale-up", "executed"),
        (fps["cart"], "high-latency-scale-up", "executed"),
        (fps["forbidden"], "high-latency-scale-up", "not_allowed"),
    ])
    unmatched = [d for d in decisions if d["fingerprint"] == fps["unmatched"]]
    assert not unmatched, "a decision for an alert no playbook matches"
