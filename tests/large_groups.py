"""Large Alertmanager groups as a Kubernetes outage produces them: many alerts of one alertname in one
namespace, each with a realistic set of labels, three annotations and a generatorURL (some 0.7 KiB
in a webhook body; ``pad`` makes them larger)."""

from __future__ import annotations

from typing import Any

GENERATOR_URL = ("http://prometheus.example.com/graph?g0.expr="
                 "sum%28rate%28container_cpu_usage_seconds_total%5B5m%5D%29%29")


def outage_alert(i: int, namespace: str, *, pad: int = 0) -> dict[str, Any]:
    """Alert ``i`` of the outage, as posted to Alertmanager's /api/v2/alerts (no status, fingerprint nor endsAt)."""
    pod = f"svc-{i % 50}-7d9f8b6c5d-{i:05d}"
    annotations = {"summary": f"CPU usage above 90% for pod {pod}",
                   "description": "The container has used more than 90% of its CPU limit for 10 minutes.",
                   "runbook_url": "https://runbooks.example.com/HighCPUUsage"}
    if pad:
        annotations["detail"] = "x" * pad
    return {
        "labels": {"alertname": "HighCPUUsage", "namespace": namespace, "severity": "warning",
                   "deployment": f"svc-{i % 50}", "pod": pod, "container": "app",
                   "instance": f"10.1.{i // 250}.{i % 250}:9090", "job": "kubernetes-pods"},
        "annotations": annotations,
        "startsAt": "2026-11-22T10:00:00.123Z",
        "generatorURL": GENERATOR_URL,
    }


def delivered(i: int, namespace: str, *, pad: int = 0) -> dict[str, Any]:
    """:func:`outage_alert` as Alertmanager's webhook delivers it."""
    return {"status": "firing", **outage_alert(i, namespace, pad=pad), "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{i:016x}"}
