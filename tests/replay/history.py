"""A crafted alert history with known answers, and the playbooks it is replayed against.

Times are whole minutes after T0 so the live daemon, ticked once a minute, meets
every stabilisation deadline at exactly the instant replay does.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from remediator.core.alerts import format_time
from tests.payloads import T0, alert_json, payload

PLAYBOOKS = """\
name: pool
match: {alertname: PoolHigh, matchers: ['namespace=~".+"', 'deployment=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  namespaces: [shop]
  rate_limit: {max: 2, per: 1h}
  cooldown: 5m
steps:
  - action: resize_pool
    container: app
    env: POOL_SIZE
    by: 10
    max: 50
---
name: restart-when-down
match: {alertname: ServiceDown, matchers: ['namespace=~".+"', 'deployment=~".+"']}
target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
guardrails:
  for: 5m
  cooldown: 10m
steps:
  - action: restart
  - action: wait_healthy
    timeout: 2m
"""


def write_playbooks(directory: Path, text: str = PLAYBOOKS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "playbooks.yaml").write_text(text)
    return directory


def at(minutes: int) -> str:
    return format_time(T0 + timedelta(minutes=minutes))


def firing(name: str, deployment: str, minute: int, namespace: str = "shop") -> dict[str, Any]:
    labels = {"alertname": name, "namespace": namespace, "deployment": deployment}
    return alert_json(labels, starts_at=at(minute))


def resolved(name: str, deployment: str, started: int, minute: int) -> dict[str, Any]:
    labels = {"alertname": name, "namespace": "shop", "deployment": deployment}
    return alert_json(labels, status="resolved", starts_at=at(started), ends_at=at(minute))


# (minute, line): a webhook payload as received, or a kill-switch control line.
HISTORY: list[tuple[int, dict[str, Any]]] = [
    (0, payload(firing("PoolHigh", "orders", 0))),
    (2, payload(firing("PoolHigh", "orders", 2))),  # cooldown (5m) after the first
    (6, payload(firing("PoolHigh", "orders", 6), firing("PoolHigh", "cart", 6))),  # a burst: both execute
    (12, payload(firing("PoolHigh", "orders", 12))),  # cooldown over, but 2 executions within 1h
    (12, payload(firing("PoolHigh", "orders", 12))),  # redelivery: ignored
    (13, payload(firing("PoolHigh", "search", 13, namespace="kube-system"))),  # outside the allowlist
    (14, payload(firing("Unknown", "x", 14))),  # no playbook
    (20, payload(firing("ServiceDown", "web", 20))),  # waits until 10:25 ...
    (22, payload(resolved("ServiceDown", "web", 20, 22))),  # ... but resolves first
    (30, payload(firing("ServiceDown", "api", 30))),  # comes due at 10:35, inside the pause
    (31, {"at": at(31), "control": "pause"}),
    (33, payload(firing("PoolHigh", "billing", 33))),
    (36, {"at": at(36), "control": "resume"}),
    (40, payload(firing("ServiceDown", "worker", 40))),  # stable at 10:45: executes
    (61, payload(firing("PoolHigh", "orders", 61))),  # 10:00 left the 1h window: executes
    (62, payload(firing("ServiceDown", "late", 62))),  # still pending when the input ends
]

# (minute, alertname, status, playbook, decision, target name, step actions)
EXPECTED: list[tuple[int, str, str, str | None, str, str | None, list[str]]] = [
    (0, "PoolHigh", "firing", "pool", "executed", "orders", ["resize_pool"]),
    (2, "PoolHigh", "firing", "pool", "cooldown", "orders", ["resize_pool"]),
    (6, "PoolHigh", "firing", "pool", "executed", "orders", ["resize_pool"]),
    (6, "PoolHigh", "firing", "pool", "executed", "cart", ["resize_pool"]),
    (12, "PoolHigh", "firing", "pool", "rate_limited", "orders", ["resize_pool"]),
    (13, "PoolHigh", "firing", "pool", "not_allowed", "search", []),
    (14, "Unknown", "firing", None, "no_match", None, []),
    (22, "ServiceDown", "resolved", None, "no_match", None, []),
    (25, "ServiceDown", "firing", "restart-when-down", "resolved_cancelled", "web", ["restart", "wait_healthy"]),
    (33, "PoolHigh", "firing", "pool", "paused", "billing", ["resize_pool"]),
    (35, "ServiceDown", "firing", "restart-when-down", "paused", "api", ["restart", "wait_healthy"]),
    (45, "ServiceDown", "firing", "restart-when-down", "executed", "worker", ["restart", "wait_healthy"]),
    (61, "PoolHigh", "firing", "pool", "executed", "orders", ["resize_pool"]),
    (67, "ServiceDown", "firing", "restart-when-down", "executed", "late", ["restart", "wait_healthy"]),
]


def write_history(path: Path, history: list[tuple[int, dict[str, Any]]] = HISTORY) -> Path:
    """As an operator would save it: bare payloads (time from the alerts) and control lines."""
    path.write_text("".join(json.dumps(line) + "\n" for _, line in history))
    return path


def summarise(entry: dict[str, Any]) -> tuple[int, str, str, str | None, str, str | None, list[str]]:
    minute = int((datetime_of(entry["at"]) - T0).total_seconds() // 60)
    target = entry["target"]["name"] if entry["target"] else None
    return (minute, entry["alertname"], entry["status"], entry["playbook"], entry["decision"], target,
            [s["action"] for s in entry["steps"]])


def datetime_of(text: str) -> Any:
    from remediator.core.alerts import parse_time

    return parse_time(text)
