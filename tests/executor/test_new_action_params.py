"""Bad parameters of set_image, set_env, set_resources and min_healthy_replicas never reach the API.

A fixed bad value is a load-time problem on its own line (``file:line: what``); a value
rendered from alert content is checked the same way before any request is built, and
a bad one is a ``not_allowed`` decision with the reason: nothing is sent, nothing runs,
no ``on_failure``.  The grammars themselves (image references, env names, quantities)
are pinned down here too, since everything else relies on them.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.clock import VirtualClock
from remediator.core.names import name_problem
from remediator.core.playbooks import parse_playbooks
from remediator.core.quantities import UNITS, QuantityError, format_quantity, parse_quantity
from remediator.testing.kube.harness import FakeKube
from tests.executor.harness import NS, open_harness, playbook, web

DIGEST = "sha256:" + "0123456789abcdef" * 4

# -- the grammars -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "nanos"), [
    ("500m", 5 * 10**8), ("2", 2 * 10**9), (2, 2 * 10**9), (0.5, 5 * 10**8), ("1.5Gi", 3 * 2**29 * 10**9),
    ("4Gi", 4 * 2**30 * 10**9), ("100Mi", 100 * 2**20 * 10**9), ("1k", 10**12), ("1e3", 10**12),
    ("1.5e-3", 15 * 10**5), (".5", 5 * 10**8), ("5.", 5 * 10**9), ("1n", 1), ("1E", 10**27),
])
def test_quantities_parse_exactly(text: Any, nanos: int) -> None:
    assert parse_quantity(text).nanos == nanos


@pytest.mark.parametrize("text", ["", ".", "-1", "1Gb", "1 Gi", "Gi", "1.5Gi\n", "1e999", "0x10", "1..5",
                                  "1" * 65, True, None, [1]])
def test_what_is_not_a_quantity_is_refused(text: Any) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


@pytest.mark.parametrize(("text", "resource", "sent"), [
    ("1.5Gi", "memory", "1536Mi"), ("3Gi", "memory", "3Gi"), ("1500M", "memory", "1500M"), ("1e3", "memory", "1k"),
    ("1", "memory", "1"), ("1500m", "cpu", "1500m"), ("2000m", "cpu", "2"), ("0.1", "cpu", "100m"),
])
def test_quantities_are_sent_in_their_shortest_exact_form(text: str, resource: str, sent: str) -> None:
    q = parse_quantity(text).rounded_up(UNITS[resource])
    assert format_quantity(q, resource) == sent
    assert parse_quantity(sent) == q


def test_a_factor_multiplies_exactly_even_beyond_a_floats_range() -> None:
    """4Gi in nano-units is past 2**53: a float product would not be 6Gi exactly."""
    assert parse_quantity("4Gi").times(1.5) == parse_quantity("6Gi")
    assert parse_quantity("3").times(1.1) == parse_quantity("3300m")


@pytest.mark.parametrize("image", [
    "web", "registry.example/web:1.0", "localhost:5000/team/web:v1", f"ghcr.io/org/app@{DIGEST}",
    f"registry.example/web:2.1@{DIGEST}", "docker.io/library/nginx:1.25-alpine", "reg.io/a__b/c-d--e:TAG_1.x",
])
def test_image_references_of_the_reference_grammar_are_accepted(image: str) -> None:
    assert name_problem("set_image", "image", image) is None


@pytest.mark.parametrize("image", [
    "", "Web:1", "registry.example/Web:1", "web:", "web:-x", "a//b", "web:1 ", " web", "web;rm -rf", "web:1.0\n",
    "web@sha256:abc", "web@md5:" + "0" * 32, "web:" + "x" * 129, "a" * 600, "https://registry.example/web",
])
def test_image_references_outside_the_grammar_are_refused(image: str) -> None:
    assert "is not a valid image reference" in (name_problem("set_image", "image", image) or "")


@pytest.mark.parametrize(("name", "ok"), [("JAVA_OPTS", True), ("_x1", True), ("1X", False), ("A-B", False),
                                          ("A.B", False), ("", False), ("A B", False), ("A\n", False)])
def test_env_names_are_c_identifiers(name: str, ok: bool) -> None:
    assert (name_problem("set_env", "name", name) is None) is ok


# -- load time: file:line -----------------------------------------------------------------------

BAD = """\
name: bad
match: {alertname: A}
target: {kind: Deployment, namespace: shop, name: web}
steps:
  - action: set_image
    container: App
    image: "Registry/Web:1"
    only_if_current: "{{ labels.x }}"
  - action: set_env
    container: app
    name: 1JAVA
    value: 12
  - action: set_resources
    container: app
    limits:
      memory: {factor: 1.5}
      cpu: {to: 2, factor: 2, max: 4}
    requests:
      memory: {to: 8Gi, max: 4Gi}
      cpu: {to: lots}
      gpu: {to: 1}
  - action: set_resources
    container: app
  - action: delete_pod
    pod: x
    min_healthy_replicas: -1
  - action: set_image
    container: app
    image: web:2
    only_if_current: "web:(1"
"""

EXPECTED = [
    "bad.yaml:6: steps.0: set_image.container 'App' is not a valid container name (DNS-1123 label: lowercase "
    "letters, digits and '-', at most 63 characters)",
    "bad.yaml:7: steps.0: set_image.image 'Registry/Web:1' is not a valid image reference "
    "(registry/repository[:tag][@sha256:digest], lowercase repository)",
    "bad.yaml:8: steps.0.only_if_current: a fixed pattern, not a template",
    "bad.yaml:11: steps.1: set_env.name '1JAVA' is not a valid env var name (a C identifier: letters, digits and "
    "'_', not starting with a digit)",
    "bad.yaml:12: steps.1.value: 12 is not of type 'string'",
    "bad.yaml:16: steps.2.limits.memory: factor needs max (the most this step may set the resource to)",
    "bad.yaml:17: steps.2.limits.cpu: give exactly one of to, factor (got to, factor)",
    "bad.yaml:19: steps.2.requests.memory: to (8Gi) is above max (4Gi)",
    "bad.yaml:20: steps.2.requests.cpu.to: 'lots' is not a quantity (expected e.g. 500m, 1.5Gi, 2)",
    "bad.yaml:21: steps.2.requests.gpu: unknown field; expected one of cpu, memory",
    "bad.yaml:22: steps.3: give requests or limits (or both)",
    "bad.yaml:26: steps.4.min_healthy_replicas: -1 is less than the minimum of 0",
    "bad.yaml:30: steps.5: set_image.only_if_current invalid regex 'web:(1': missing closing )",
]


def test_bad_parameters_are_load_time_problems_on_their_own_lines() -> None:
    playbooks, problems = parse_playbooks(BAD, "bad.yaml")
    assert playbooks == []
    assert [str(p) for p in problems] == EXPECTED


def on_web(name: str, steps: str) -> str:
    """A playbook ``name`` acting on shop/web with ``steps`` (a YAML list, dedented here); its first step
    is on line 5, so a problem's ``file:line`` reads as in the caller's text."""
    return f"name: {name}\nmatch: {{alertname: A}}\ntarget: {{kind: Deployment, namespace: shop, name: web}}\n" \
           f"steps:\n{textwrap.dedent(steps)}"


def test_set_resources_min_is_checked_at_load_against_to_and_max() -> None:
    text = on_web("floors", """\
          - action: set_resources
            container: app
            limits:
              memory: {to: 64Mi, min: 128Mi, max: 4Gi}
              cpu: {factor: 0.5, min: 2, max: 1}
            requests:
              memory: {to: "{{ annotations.memory }}", min: 128Mi, max: 1Gi}
        """)
    playbooks, problems = parse_playbooks(text, "floors.yaml")
    assert playbooks == []
    assert [str(p) for p in problems] == [
        "floors.yaml:8: steps.0.limits.memory: to (64Mi) is below min (128Mi)",
        "floors.yaml:9: steps.0.limits.cpu: min (2) is above max (1)",
    ]


def test_the_documented_steps_load() -> None:
    good = on_web("good", """\
          - action: set_image
            container: app
            image: "registry.example/web:{{ annotations.rollback_version }}"
            only_if_current: "registry\\\\.example/web:2\\\\..*"
          - action: set_env
            container: app
            name: JAVA_OPTS
            value: "-Xms2g -Xmx4g"
          - action: set_resources
            container: app
            limits: {memory: {factor: 1.5, max: 4Gi}, cpu: {to: "2"}}
            requests: {memory: {to: "{{ annotations.memory }}", max: 4Gi}}
          - action: scale
            to: 0
          - action: delete_pod
            pod: "{{ labels.pod }}"
            min_healthy_replicas: 2
        """)
    playbooks, problems = parse_playbooks(good, "good.yaml")
    assert problems == [] and len(playbooks) == 1


# -- render time: refused before any request ------------------------------------------------------

ROLLBACK = "- action: rollback\n"
RENDERED = {
    "image": ('- action: set_image\n  container: app\n  image: "registry.example/web:{{ labels.version }}"\n',
              "version", "1.0 && curl evil", "is not a valid image reference"),
    "env-name": ('- action: set_env\n  container: app\n  name: "{{ labels.var }}"\n  value: x\n',
                 "var", "PATH=/tmp", "is not a valid env var name"),
    "env-value": ('- action: set_env\n  container: app\n  name: JAVA_OPTS\n  value: "{{ labels.opts * 2 }}"\n',
                  "opts", "x" * 3000, "is longer than 4096 characters"),
    "container": ('- action: set_env\n  container: "{{ labels.container }}"\n  name: A\n  value: x\n',
                  "container", "../app", "is not a valid container name"),
    "quantity": ('- action: set_resources\n  container: app\n  limits: {memory: {to: "{{ labels.mem }}", '
                 "max: 4Gi}}\n", "mem", "4Gi; rm", "is not a quantity"),
}


@pytest.mark.parametrize("case", sorted(RENDERED))
async def test_a_bad_rendered_value_is_refused_before_any_api_call(
    case: str, tmp_path: Path, settings_factory: Callable[..., Any], vclock: VirtualClock, kube: FakeKube
) -> None:
    steps, label, value, why = RENDERED[case]
    kube.cluster.apply(web(image="registry.example/web:1.0"))
    kube.cluster.apply(web(image="registry.example/web:2.0"))  # a release a wrongly run on_failure would undo
    seen = len(kube.cluster.requests)
    books = {"fix": playbook(steps, on_failure=ROLLBACK)}
    async with open_harness(tmp_path, settings_factory, vclock, kube, books) as h:
        await h.until_done(h.start(**{label: value}))
        store: Any = h.rt.store
        [decision] = [dict(d) for d in await store.list_decisions()]
        executions = await h.rt.store.list_executions()
    assert len(kube.cluster.requests) == seen  # not one request reached the apiserver
    assert decision["decision"] == "not_allowed"
    assert "invalid step parameters" in decision["reason"] and why in decision["reason"]
    assert executions == []
    assert kube.cluster.get("deployments", NS, "web")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example/web:2.0")


@pytest.mark.parametrize(("value", "why"), [
    ("x" * 4097, "is longer than 4096 characters"),
    ("a\x00b", "NUL"),
])
def test_a_fixed_set_env_value_out_of_bounds_is_refused_at_load(value: str, why: str) -> None:
    step = {"action": "set_env", "container": "app", "name": "JAVA_OPTS", "value": value}
    text = json.dumps({"name": "env", "match": {"alertname": "A"},
                       "target": {"kind": "Deployment", "namespace": "shop", "name": "web"}, "steps": [step]}, indent=1)
    playbooks, problems = parse_playbooks(text, "env.yaml")
    [line] = [n for n, text_line in enumerate(text.splitlines(), 1) if '"value":' in text_line]
    assert playbooks == [] and [p.line for p in problems] == [line]  # one problem, at the value's line
    assert why in problems[0].message, problems


def test_resize_pool_env_cannot_be_rendered_from_an_alert() -> None:
    """resize_pool's ``env`` is no template: the schema holds it to Kubernetes' env var name grammar, braces
    excluded, so no alert content can choose the variable (set_env's ``name`` is a template, checked once
    rendered: PARAM_RULES)."""
    step = {"action": "resize_pool", "container": "app", "env": "{{ labels.pool_env }}", "to": 20}
    text = json.dumps({"name": "pool", "match": {"alertname": "A"},
                       "target": {"kind": "Deployment", "namespace": "shop", "name": "web"}, "steps": [step]}, indent=1)
    playbooks, problems = parse_playbooks(text, "pool.yaml")
    assert playbooks == [] and len(problems) == 1
    assert "steps.0.env" in problems[0].message and "does not match" in problems[0].message, problems
