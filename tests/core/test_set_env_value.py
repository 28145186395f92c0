"""``set_env`` values rendered from the alert reach the container as the alert said them."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

from remediator.core.alerts import Alert
from remediator.core.planning import Plan, make_plan
from remediator.core.playbooks import parse_playbooks


def test_a_dollar_from_the_alert_is_doubled_so_the_kubelet_expands_nothing() -> None:
    # The kubelet expands $(NAME) in an env value to NAME's value (a secret's): an annotation
    # "$(DB_PASSWORD)" put the password in a variable the application may log.  $$ is a literal $.
    text = textwrap.dedent("""\
        name: env
        match: {alertname: Down}
        target: {kind: Deployment, namespace: shop, name: web}
        steps:
          - {action: set_env, container: app, name: NOTE, value: "$(HOME)/{{ annotations.note }}"}
          - {action: set_env, container: app, name: PLAIN, value: "$(HOME)/x"}
          - {action: notify, channel: ops, message: "{{ annotations.note }}"}
        """)
    [book], problems = parse_playbooks(text, "env.yaml")
    assert problems == []
    alert = Alert("f1", "firing", {"alertname": "Down"}, annotations={"note": "$(DB_PASSWORD) $$(X) $5"},
                  starts_at=datetime(2026, 11, 1, tzinfo=UTC))
    plan = make_plan(book, alert, global_dry_run=True)
    assert isinstance(plan, Plan)
    noted, plain, message = (s.params for s in plan.steps)
    assert noted["value"] == "$(HOME)/$$(DB_PASSWORD) $$$$(X) $$5"  # the kubelet reads: $(HOME)/$(DB_PASSWORD) $$(X) $5
    assert plain["value"] == "$(HOME)/x"  # the author's own reference is theirs to make
    assert message["message"] == "$(DB_PASSWORD) $$(X) $5"  # nothing else is touched


def test_a_dollar_in_the_alerts_generator_url_is_doubled_too() -> None:
    # generatorURL is the sender's free text as much as an annotation (any string up to 8,192
    # characters): "$(DB_PASSWORD)" in it reached the container's env for the kubelet to expand.
    text = textwrap.dedent("""\
        name: env
        match: {alertname: Down}
        target: {kind: Deployment, namespace: shop, name: web}
        steps:
          - {action: set_env, container: app, name: SOURCE, value: "{{ generatorURL }}"}
        """)
    [book], problems = parse_playbooks(text, "env.yaml")
    assert problems == []
    alert = Alert("f1", "firing", {"alertname": "Down"}, starts_at=datetime(2026, 11, 1, tzinfo=UTC),
                  generator_url="http://prom/graph?g0.expr=$(DB_PASSWORD)")
    plan = make_plan(book, alert, global_dry_run=True)
    assert isinstance(plan, Plan)
    assert plan.steps[0].params["value"] == "http://prom/graph?g0.expr=$$(DB_PASSWORD)"
