"""``set_env`` values rendered from the alert reach the container as the alert said them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from remediator.core.alerts import Alert
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import parse_playbooks

HEADER = "name: env\nmatch: {alertname: Down}\ntarget: {kind: Deployment, namespace: shop, name: web}\nsteps:\n"


def planned(steps: str, **alert: Any) -> list[dict[str, Any]]:
    """The params of each step the playbook with ``steps`` (one YAML flow mapping a line) plans for an
    alert ``Down`` with ``alert``'s fields."""
    [book], problems = parse_playbooks(HEADER + steps, "env.yaml")
    assert problems == []
    plan = make_plan(book, Alert("f1", "firing", {"alertname": "Down"}, starts_at=datetime(2026, 11, 1, tzinfo=UTC),
                                 **alert), global_dry_run=True)
    assert isinstance(plan, Plan)
    return [dict(s.params) for s in plan.steps]


def test_a_dollar_from_the_alert_is_doubled_so_the_kubelet_expands_nothing() -> None:
    # The kubelet expands $(NAME) in an env value to NAME's value (a secret's): an annotation
    # "$(DB_PASSWORD)" put the password in a variable the application may log.  $$ is a literal $.
    noted, plain, message = planned(
        '  - {action: set_env, container: app, name: NOTE, value: "$(HOME)/{{ annotations.note }}"}\n'
        '  - {action: set_env, container: app, name: PLAIN, value: "$(HOME)/x"}\n'
        '  - {action: notify, channel: ops, message: "{{ annotations.note }}"}\n',
        annotations={"note": "$(DB_PASSWORD) $$(X) $5"})
    assert noted["value"] == "$(HOME)/$$(DB_PASSWORD) $$$$(X) $$5"  # the kubelet reads: $(HOME)/$(DB_PASSWORD) $$(X) $5
    assert plain["value"] == "$(HOME)/x"  # the author's own reference is theirs to make
    assert message["message"] == "$(DB_PASSWORD) $$(X) $5"  # nothing else is touched


def test_a_dollar_in_the_alerts_generator_url_is_doubled_too() -> None:
    # generatorURL is the sender's free text as much as an annotation (any string up to 8,192
    # characters): "$(DB_PASSWORD)" in it reached the container's env for the kubelet to expand.
    [source] = planned('  - {action: set_env, container: app, name: SOURCE, value: "{{ generatorURL }}"}\n',
                       generator_url="http://prom/graph?g0.expr=$(DB_PASSWORD)")
    assert source["value"] == "http://prom/graph?g0.expr=$$(DB_PASSWORD)"
