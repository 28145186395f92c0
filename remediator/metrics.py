"""Prometheus metrics, one registry per daemon instance (no global state)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from remediator.core.guardrails import BreakerState, GuardStatus


class _Flush:
    """Registered first, so that every collection of the registry (a scrape, a test's
    ``get_sample_value``) first adds the counts :meth:`Metrics.count` is holding."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self._metrics.flush()
        return ()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # (counter, label values) -> its child, and the counts not yet added: see count()
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}
        self._held: dict[tuple[Counter, tuple[str, ...]], int] = {}
        r.register(_Flush(self))
        self.alerts_received = Counter(
            "remediator_alerts_received_total",
            "Alerts in accepted webhook deliveries, duplicates included",
            ["status"],
            registry=r,
        )
        self.alerts_duplicate = Counter(
            "remediator_alerts_duplicate_total", "Alert deliveries ignored as duplicates", registry=r
        )
        self.alerts_refused = Counter(
            "remediator_alerts_refused_total",
            "Alerts refused from a delivery whose other alerts were taken (the reasons are logged)", registry=r
        )
        self.alerts_truncated = Counter(
            "remediator_alerts_truncated_total",
            "Each accepted delivery's truncatedAlerts (alerts Alertmanager left out: its max_alerts), summed: a group"
            " re-sent while still too large adds its count again at each re-send, so this is not distinct alerts",
            registry=r,
        )
        self.webhook_rejected = Counter(
            "remediator_webhook_rejected_total", "Webhook requests rejected", ["reason"], registry=r
        )
        self.webhook_latency = Histogram(
            "remediator_webhook_duration_seconds",
            "Webhook handler latency",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.matches = Counter(
            "remediator_playbook_matches_total", "Alerts matched by playbook", ["playbook"], registry=r
        )
        self.decisions = Counter(
            "remediator_decisions_total", "Decisions by playbook and kind", ["playbook", "decision"], registry=r
        )
        self.executions = Counter(
            "remediator_executions_total", "Finished executions by result", ["playbook", "result"], registry=r
        )
        self.steps = Counter("remediator_steps_total", "Steps by action and status", ["action", "status"], registry=r)
        self.guardrail_unavailable = Counter(
            "remediator_guardrail_unavailable_total",
            "Decisions refused because guardrail state was unreachable",
            registry=r,
        )
        self.store_unavailable = Counter(
            "remediator_store_unavailable_total", "Store operations that failed because it was unreachable", registry=r
        )
        self.decisions_deferred = Counter(
            "remediator_decisions_deferred_total",
            "Decisions put off (the alert stays pending and is decided again later), by cause",
            ["cause"],
            registry=r,
        )
        self.alerts_parked = Counter(
            "remediator_alerts_parked_total",
            "Alerts set aside, never to be retried, after their processing failed worker.max_tries times",
            registry=r,
        )
        self.pending_alerts = Gauge("remediator_queue_wakeups", "Worker wake-ups", registry=r)
        self.playbooks_loaded = Gauge("remediator_playbooks_loaded", "Playbooks in the active set", registry=r)
        self.playbook_reloads = Counter(
            "remediator_playbook_reloads_total", "Playbook reload attempts", ["result"], registry=r
        )
        self.paused = Gauge("remediator_paused", "1 while the kill switch is engaged", registry=r)
        self.breaker_state = Gauge(
            "remediator_circuit_breaker_state",
            "1 for each playbook's current circuit breaker state (closed, open, half_open)",
            ["playbook", "state"],
            registry=r,
        )
        self.breaker_failures = Gauge(
            "remediator_circuit_breaker_consecutive_failures",
            "Consecutive failed executions per playbook (reset by a success)",
            ["playbook"],
            registry=r,
        )
        self.retention_deleted = Counter(
            "remediator_retention_deleted_total",
            "Records deleted by retention (decisions, steps, alerts)",
            ["kind"],
            registry=r,
        )
        self.kube_errors = Counter(
            "remediator_kube_api_errors_total",
            "Failed Kubernetes API calls by HTTP status (or timeout, unreachable)",
            ["code"],
            registry=r,
        )
        self.kube_retries = Counter(
            "remediator_kube_api_retries_total", "Steps retried after a transient API error", ["action"], registry=r
        )
        self.clock_skew = Gauge(
            "remediator_clock_skew_seconds",
            "This replica's clock minus the guardrail state's (Redis TIME), read in the middle of the round trip;"
            " measured every 10 s while guardrails.max_clock_skew is set",
            registry=r,
        )
        self.guardrail_locks_lost = Counter(
            "remediator_guardrail_locks_lost_total",
            "Executions whose target lock lapsed or was taken while they ran (renewal failed)",
            registry=r,
        )
        self.guardrail_state_lost = Counter(
            "remediator_guardrail_state_lost_total",
            "Times this replica found the guardrail state (Redis) lost and rebuilt it from the store, by how it"
            " was found: marker_missing (Redis restarted without persistence, flushed, failed over),"
            " lock_record_missing (a held lock's record gone), startup (lost while no replica ran)",
            ["detected_by"],
            registry=r,
        )

    def count(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()``, added when the registry is next collected: ``labels()``
        costs some 2.5 µs (it checks and locks) and ``inc()`` one more (it locks), where adding to a
        dictionary costs a tenth of that, and the pipeline counts several times per alert.

        Only for counters read through the registry (``/metrics``, ``get_sample_value``), which
        sees every count; and only from the event loop's thread, as everything here is."""
        key = (counter, labels)
        held = self._held
        held[key] = held.get(key, 0) + 1

    def flush(self) -> None:
        """Add the counts :meth:`count` holds to their counters."""
        held, self._held = self._held, {}
        for key, n in held.items():
            child = self._children.get(key)
            if child is None:
                counter, labels = key
                child = self._children[key] = counter.labels(*labels)
            child.inc(n)

    def show_guardrails(self, status: GuardStatus) -> None:
        """Mirror the shared guardrail state: every replica reports the same breakers and pause."""
        self.paused.set(1 if status.paused else 0)
        self.breaker_state.clear()
        self.breaker_failures.clear()
        for name, view in status.breakers.items():
            for state in BreakerState:
                self.breaker_state.labels(name, state.value).set(1 if state is view.state else 0)
            self.breaker_failures.labels(name).set(view.failures)
