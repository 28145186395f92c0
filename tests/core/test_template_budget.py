"""A template's work is bounded by its own size times the alert's, whatever the alert holds.

Alert labels are input from anything that can push a metric label (128 of them, 4,096 characters
each).  A template whose cost grows with the product of two such values, or a single call that turns
a number from a label into gigabytes, would hold the event loop or the memory of the daemon for
every alert it matches.  Refused at load time where the shape says so, at render time otherwise.
"""

from __future__ import annotations

import textwrap

import pytest

from remediator.core.errors import ConfigError, TemplateError
from remediator.core.playbooks import parse_playbooks
from remediator.core.templates import MAX_RENDERED, check_template, render
from remediator.notify.events import check_message_template

LONG = "x" * 4096  # the longest label value a webhook accepts
LABELS = {"a": LONG, "b": LONG, "n": "100000000", "big": "200000", "ten": "10"}


@pytest.mark.parametrize(("source", "problem"), [
    ("{% for c in labels.a %}{% for d in labels.b %}{% endfor %}{% endfor %}web",
     "a loop inside a loop is not available in templates"),
    ("{% for c in labels.a %}{% if c %}{% for d in labels.b %}.{% endfor %}{% endif %}{% endfor %}",
     "a loop inside a loop is not available in templates"),
    ("{% for k in labels recursive %}{{ loop(labels) }}{% endfor %}", "recursive loops are not available"),
    ("{% macro f(d) %}{{ f(d ~ 'a') }}{{ f(d ~ 'b') }}{% endmacro %}{{ f('') }}", "macros are not available"),
    ("{% macro f() %}{{ caller() }}{% endmacro %}{% call f() %}x{% endcall %}", "macros are not available"),
])
def test_a_template_whose_cost_multiplies_alert_values_is_refused_at_load(source: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        check_template(source)
    with pytest.raises(ConfigError, match=f"^slack.template: {problem}"):
        check_message_template(source, "slack.template")


def test_the_playbook_says_file_and_line_of_such_a_template() -> None:
    text = textwrap.dedent("""\
        name: loops
        match: {alertname: Down}
        target:
          kind: Deployment
          namespace: shop
          name: "{% for c in labels.a %}{% for d in labels.b %}{% endfor %}{% endfor %}web"
        steps: [{action: restart}]
        """)
    books, problems = parse_playbooks(text, "loops.yaml")
    assert books == []
    assert [(p.path, p.line) for p in problems] == [("loops.yaml", 6)]
    assert "a loop inside a loop is not available in templates" in str(problems[0])


@pytest.mark.parametrize("source", [
    "{% for k, v in labels.items() %}{{ k }}={{ v }} {% endfor %}",  # one loop: as long as the alert
    "{% for c in labels.ten %}{{ c }}{% endfor %}{% for k in labels %}{{ k }}{% endfor %}",  # one after another
    "{{ '%5d' % 3 }} {{ 'ab' * 3 }} {{ 2 ** 10 }} {{ labels.ten.ljust(12) }}|{{ '{:>4}'.format(1) }}",
    "{{ labels.ten|center(6) }} {{ 'a\nb'|indent(2) }} {{ '%03d'|format(7) }}",
])
def test_ordinary_templates_pass_and_render(source: str) -> None:
    check_template(source)
    assert render(source, {"labels": {"ten": "10", "x": "y"}})


def test_a_render_stops_once_its_output_passes_the_budget() -> None:
    # One loop, so it loads: each of a's 4,096 characters writes b's 4,096 (16 MiB, were it let run).
    source = "{% for c in labels.a %}{{ labels.b }}{% endfor %}"
    check_template(source)
    with pytest.raises(TemplateError, match=f"renders more than {MAX_RENDERED} characters for this alert"):
        render(source, {"labels": LABELS})
    assert len(render(source, {"labels": {"a": "xx", "b": "yy"}})) == 4


@pytest.mark.parametrize(("source", "problem"), [
    ("{{ 'a' * (labels.n|int) }}", "a repetition longer than"),
    ("{{ (labels.n|int) * ['a'] }}", "a repetition longer than"),
    ("{{ ((labels.ten|int) ** (labels.big|int)) % 7 }}", "a power larger than"),
    ("{{ '%0*d' % (labels.n|int, 1) }}", r"taken from its arguments \(\*\)"),
    ("{{ '%0999999d' % 1 }}", "wider than 1000 characters"),
    ("{{ '%.999999f' % 1 }}", "wider than 1000 characters"),
    ("{{ labels.ten.ljust(labels.n|int) }}", "str.ljust wider than"),
    ("{{ labels.ten.zfill(999999) }}", "str.zfill wider than"),
    ("{{ '{:>999999}'.format(labels.ten) }}", "a format width or precision wider than"),
    ("{{ '{:{}}'.format(labels.ten, labels.n) }}", r"taken from its arguments \(\{:\{\}\}\)"),
    ("{{ labels.ten|center(labels.n|int) }}", "center wider than"),
    ("{{ labels.a|indent(labels.n|int) }}", "indent wider than"),
    ("{{ '%0999999d'|format(1) }}", "wider than 1000 characters"),
])
def test_a_number_from_the_alert_cannot_make_one_call_allocate_without_bound(source: str, problem: str) -> None:
    check_template(source)  # nothing in its shape says so: a label's value does
    with pytest.raises(TemplateError, match=problem):
        render(source, {"labels": LABELS})
