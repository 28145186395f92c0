"""A template that is one label is rendered by a lookup: exactly what Jinja renders, or refuses."""

from __future__ import annotations

import pytest

from remediator.core.errors import TemplateError
from remediator.core.templates import _compile, _one_label, render

LABELS = {"deployment": "web-1", "_private": "p", "items": "not a method", "spaced": " shop", "empty": ""}
SOURCES = ["{{ labels.deployment }}", "{{labels.deployment}}", "{{  labels.spaced  }}", "{{ labels._private }}",
           "{{ labels.empty }}", "{{ labels.missing }}", "{{ labels.items }}", "{{ labels.get }}",
           "{{- labels.deployment -}}", "{{ labels.deployment }}\n", "x{{ labels.deployment }}",
           "{{ labels['deployment'] }}", "{{ labels.deployment | upper }}"]


def _jinja(source: str, context: dict[str, object]) -> str:
    try:
        return "ok:" + _compile(source).render(context)
    except TemplateError as exc:
        return f"error:{exc}"


def _ours(source: str, context: dict[str, object]) -> str:
    try:
        return "ok:" + render(source, context)
    except TemplateError as exc:
        return f"error:{exc}"


@pytest.mark.parametrize("source", SOURCES)
def test_one_label_renders_as_jinja_does(source: str) -> None:
    context = {"labels": dict(LABELS), "annotations": {}}
    assert _ours(source, context) == _jinja(source, context)


def test_only_a_lone_label_that_is_not_a_dict_attribute_takes_the_lookup() -> None:
    assert [s for s in SOURCES if _one_label(s)] == [
        "{{ labels.deployment }}", "{{labels.deployment}}", "{{  labels.spaced  }}", "{{ labels._private }}",
        "{{ labels.empty }}", "{{ labels.missing }}"]
    with pytest.raises(TemplateError, match="the alert has no 'missing'"):
        render("{{ labels.missing }}", {"labels": {}})


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}web",
    "{{ lipsum() }}",
    "{{ dict(a=1) }}",
    "{{ cycler('a', 'b').next() }}",
])
def test_jinjas_own_globals_are_unknown_names_in_a_playbook(source: str) -> None:
    """They passed the unknown-name check, which cannot see globals: range() let a playbook's target
    take minutes to render (nested loops, each within the sandbox's cap) at its first alert."""
    from remediator.core.templates import check_template

    with pytest.raises(TemplateError, match="unknown name"):
        check_template(source)
