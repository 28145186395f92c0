"""Metrics.count holds its counts and adds them when the registry is collected: whoever reads the
registry (a scrape, get_sample_value) sees every count made before it, and nothing twice."""

from __future__ import annotations

from prometheus_client import generate_latest

from remediator.metrics import Metrics


def _scraped(m: Metrics) -> list[str]:
    return sorted(line for line in generate_latest(m.registry).decode().splitlines()
                  if line.startswith(("remediator_decisions_total", "remediator_steps_total")))


def test_every_count_is_seen_by_the_next_collection_and_only_once() -> None:
    m = Metrics()
    m.count(m.decisions, "pool", "executed")
    m.count(m.decisions, "pool", "executed")
    m.count(m.decisions, "pool", "cooldown")
    m.count(m.steps, "restart", "ok")
    assert m.registry.get_sample_value("remediator_decisions_total", {"playbook": "pool", "decision": "executed"}) == 2
    assert _scraped(m) == [
        'remediator_decisions_total{decision="cooldown",playbook="pool"} 1.0',
        'remediator_decisions_total{decision="executed",playbook="pool"} 2.0',
        'remediator_steps_total{action="restart",status="ok"} 1.0',
    ]
    m.count(m.decisions, "pool", "executed")
    assert 'remediator_decisions_total{decision="executed",playbook="pool"} 3.0' in _scraped(m)
    assert _scraped(m) == _scraped(m)  # collecting adds nothing by itself


def test_counts_made_directly_and_held_add_up() -> None:
    m = Metrics()
    m.executions.labels("pool", "succeeded").inc()
    m.count(m.executions, "pool", "succeeded")
    assert m.registry.get_sample_value("remediator_executions_total", {"playbook": "pool", "result": "succeeded"}) == 2
