"""Plans are remembered per (playbook, what its templates read of the alert): a remembered plan
must be the plan :func:`make_plan` would render afresh, for every alert it is handed out for."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

from remediator.core.alerts import Alert
from remediator.core.planning import Plan, Refusal, make_plan
from remediator.core.playbooks import Playbook, parse_playbooks

START = datetime(2026, 11, 1, tzinfo=UTC)


def playbook(steps: str, rate_key: str = "") -> Playbook:
    text = textwrap.dedent("""\
        name: memo
        match: {alertname: Down}
        target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: web}
        steps: %s
        """) % steps
    if rate_key:
        text += f"guardrails: {{rate_limit: {{max: 1, per: 1h, key: {rate_key!r}}}}}\n"
    [book], problems = parse_playbooks(text, "memo.yaml")
    assert problems == []
    return book


def alert(labels: dict[str, str], *, minutes: int = 0, fingerprint: str = "f1") -> Alert:
    return Alert(fingerprint, "firing", {"alertname": "Down", **labels}, starts_at=START + timedelta(minutes=minutes))


def test_alerts_showing_the_templates_the_same_labels_get_the_same_plan() -> None:
    book = playbook('[{action: restart}, {action: notify, channel: ops, message: "{{ labels.namespace }} down"}]')
    first = make_plan(book, alert({"namespace": "shop"}), global_dry_run=True)
    again = make_plan(book, alert({"namespace": "shop"}, minutes=5, fingerprint="f2"), global_dry_run=True)
    other = make_plan(book, alert({"namespace": "pay"}), global_dry_run=True)
    assert isinstance(first, Plan) and isinstance(other, Plan)
    assert again == first
    assert other.target.namespace == "pay" and other.steps[1].params["message"] == "pay down"


def test_a_template_that_reads_the_start_time_is_rendered_for_each_start() -> None:
    book = playbook('[{action: notify, channel: ops, message: "since {{ startsAt }} ({{ fingerprint }})"}]')
    plans = [make_plan(book, alert({"namespace": "shop"}, minutes=m, fingerprint=f), global_dry_run=True)
             for m, f in ((0, "f1"), (1, "f1"), (1, "f2"), (0, "f1"))]
    messages = [p.steps[0].params["message"] for p in plans if isinstance(p, Plan)]
    assert messages == ["since 2026-11-01T00:00:00Z (f1)", "since 2026-11-01T00:01:00Z (f1)",
                        "since 2026-11-01T00:01:00Z (f2)", "since 2026-11-01T00:00:00Z (f1)"]


def test_labels_in_another_order_are_another_plan_when_a_template_iterates_over_them() -> None:
    book = playbook("[{action: restart}]", rate_key="{% for k in labels %}{{ k }},{% endfor %}")
    ab = make_plan(book, alert({"namespace": "shop", "b": "1", "a": "1"}), global_dry_run=True)
    ba = make_plan(book, alert({"namespace": "shop", "a": "1", "b": "1"}), global_dry_run=True)
    assert isinstance(ab, Plan) and isinstance(ba, Plan)
    assert (ab.limit_key, ba.limit_key) == ("memo|alertname,namespace,b,a,", "memo|alertname,namespace,a,b,")


def test_refusals_are_remembered_as_they_were_made_and_the_dry_run_flag_is_part_of_the_plan() -> None:
    book = playbook("[{action: restart}]")
    for _ in range(2):
        refused = make_plan(book, alert({}), global_dry_run=True)
        assert isinstance(refused, Refusal) and refused.reason == "invalid target: the alert has no 'namespace'"
    live, dry = (make_plan(book, alert({"namespace": "shop"}), global_dry_run=d) for d in (False, True))
    assert isinstance(live, Plan) and isinstance(dry, Plan)
    assert (live.dry_run, dry.dry_run) == (False, True)


def test_an_edited_playbook_is_planned_with_its_own_templates() -> None:
    before = playbook('[{action: notify, channel: ops, message: "a {{ labels.namespace }}"}]')
    after = playbook('[{action: notify, channel: ops, message: "b {{ labels.namespace }}"}]')
    plans = [make_plan(b, alert({"namespace": "shop"}), global_dry_run=True) for b in (before, after, before)]
    assert [p.steps[0].params["message"] for p in plans if isinstance(p, Plan)] == ["a shop", "b shop", "a shop"]


def test_an_alert_with_large_annotations_is_planned_afresh_not_kept() -> None:
    # The memo's key held every label and annotation: 400 alerts with an annotation of 0.9 MiB (a log
    # excerpt; a webhook body may be 1 MiB) kept 377 MiB after they were gone, 3.8 GiB at 4,096 keys.
    import gc
    import tracemalloc

    book = playbook('[{action: restart}, {action: notify, channel: ops, message: "{{ labels.namespace }} down"}]')
    excerpt = "log line " * 20_000  # 180 kB

    def alerts(n: int) -> list[Alert]:
        return [Alert(f"big{i}", "firing", {"alertname": "Down", "namespace": "shop"},
                      annotations={"excerpt": excerpt + str(i)}, starts_at=START) for i in range(n)]

    tracemalloc.start()
    try:
        batch = alerts(40)
        gc.collect()
        held_with_the_alerts = tracemalloc.get_traced_memory()[0]
        plans = [make_plan(book, a, global_dry_run=True) for a in batch]
        assert all(isinstance(p, Plan) and p.steps[1].params["message"] == "shop down" for p in plans)
        del batch, plans
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held_with_the_alerts > 40 * len(excerpt)  # the measure sees the annotations
    assert kept < 2 * len(excerpt)  # and none of them is kept once the alerts are gone
