"""Label and field selector parsing, as the apiserver reads them from query strings."""

from __future__ import annotations

import pytest

from remediator.testing.kube.selectors import (
    SelectorError,
    format_label_selector,
    from_label_selector_object,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "pod-template-hash": "abc"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=api", True),
        ("missing!=x", True),
        ("app in (api, web)", True),
        ("app in (api)", False),
        ("app notin (api,db)", True),
        ("missing notin (a)", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("app=web,tier=front", True),
        ("app=web, tier in (back)", False),
        (" app = web ", True),
    ],
)
def test_label_selector_operators(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize("bad", ["app in (web", "app in web", "=web", "app=web,", "a b=c"])
def test_malformed_label_selectors_are_rejected(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_label_selector_objects_and_their_string_form() -> None:
    obj = {"matchLabels": {"b": "2", "a": "1"},
           "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                                {"key": "canary", "operator": "DoesNotExist"}]}
    assert format_label_selector(obj) == "a=1,b=2,env in (dev,prod),!canary"
    assert from_label_selector_object(obj).matches({"a": "1", "b": "2", "env": "dev"})
    assert not from_label_selector_object(obj).matches({"a": "1", "b": "2", "env": "dev", "canary": "y"})


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "shop"}, "status": {"phase": "Running"}}
    assert parse_field_selector("metadata.name=p", "pods").matches(pod)
    assert parse_field_selector("metadata.name==p,metadata.namespace=shop", "pods").matches(pod)
    assert not parse_field_selector("metadata.name!=p", "pods").matches(pod)
    assert parse_field_selector("status.phase=Running", "pods").matches(pod)
    with pytest.raises(SelectorError, match=r'"status\.phase" is not a known field selector'):
        parse_field_selector("status.phase=Running", "deployments")
    with pytest.raises(SelectorError):
        parse_field_selector("metadata.name", "pods")
