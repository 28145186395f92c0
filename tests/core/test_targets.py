"""Issue 15 item 4: a playbook's target is fixed, or rendered from what every alert it selects has.

Alerts from aggregated rules (``sum(rate(...))``) carry no ``deployment`` or ``namespace``
label.  A playbook whose target reads a label its matchers do not guarantee would match such
an alert and then refuse it at every firing; :func:`check_targets` finds that when the
playbook is loaded, at the line of the target field.  These tests pin which matchers
guarantee a label, which template reads need one, and that the load-time verdict agrees with
what planning does with an alert carrying only the guaranteed labels; and that every way in
(``remediator validate``, the daemon's start, a reload, replay) refuses such a playbook, while
everything the project ships loads.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from remediator.core.alerts import Alert
from remediator.core.errors import ConfigError
from remediator.core.matchers import parse_matcher
from remediator.core.planning import Refusal, make_plan
from remediator.core.playbooks import Match, check_targets, combine, parse_playbooks
from remediator.core.templates import required_labels
from remediator.playbook_files import PlaybookRepository, load_paths
from remediator.replay import load_playbooks
from remediator.runtime import open_runtime
from tests.payloads import PLAYBOOKS, ROOT


@pytest.mark.parametrize(
    ("matcher", "guaranteed"),
    [
        ('deployment="api"', True),
        ('deployment=""', False),  # selects alerts *without* the label
        ('deployment!=""', True),
        ('deployment!="api"', False),
        ('deployment=~".+"', True),
        ('deployment=~"api|web"', True),
        ('deployment=~".*"', False),
        ('deployment=~"api|"', False),  # the empty alternative matches a missing label
        ('deployment=~"(api)?"', False),
        ('deployment!~""', True),
        ('deployment!~"api"', False),
        ('namespace!~"kube-.*"', False),
    ],
)
def test_a_label_is_guaranteed_only_by_a_matcher_that_refuses_the_empty_value(matcher: str, guaranteed: bool) -> None:
    match = Match((parse_matcher(matcher),))
    assert (match.guaranteed_labels() == {parse_matcher(matcher).name}) is guaranteed


@pytest.mark.parametrize(
    ("template", "needed"),
    [
        ("web", set()),
        ("{{ labels.deployment }}", {"deployment"}),
        ('{{ labels["app.kubernetes.io/name"] }}-svc', {"app.kubernetes.io/name"}),
        ("{{ labels.app ~ '-' ~ labels.tier }}", {"app", "tier"}),
        ("{{ labels.deployment | default('api') }}", set()),
        ("{{ labels.deployment | default('api') | lower }}", set()),
        ("{{ (labels.app ~ '-x') | default('api') }}", {"app"}),  # the concatenation fails before default
        ("{{ labels.get('app', 'api') }}", set()),
        ("{{ labels.get('app') }}", {"app"}),  # renders 'None' when absent
        ("{% if labels.app is defined %}{{ labels.app }}{% else %}api{% endif %}", set()),
        ("{{ labels.app if 'app' in labels else 'api' }}", set()),
        ("{{ annotations.deployment }}", set()),  # never guaranteed: refused at render time
        ("{{ labels[annotations.key] }}", set()),  # a computed key is render time's to judge
    ],
)
def test_required_labels_are_the_reads_without_a_fallback(template: str, needed: set[str]) -> None:
    assert required_labels(template) == needed


def playbook(match: str, target: str) -> str:
    match, target = (textwrap.indent(block, "  ") for block in (match, target))
    return f"name: p\nmatch:\n{match}\ntarget:\n{target}\nsteps:\n  - action: restart\n"


def problems(text: str) -> list[str]:
    pbs, found = parse_playbooks(text, "pb.yaml")
    assert found == []
    return [str(p) for p in check_targets(combine([(pbs, found)])[0])]


AGGREGATED = 'alertname: HighErrorRate\nmatchers: [severity="critical"]'


def test_a_target_from_labels_the_matchers_do_not_fix_is_a_problem_at_its_line() -> None:
    text = playbook(AGGREGATED, 'kind: Deployment\nnamespace: shop\nname: "{{ labels.deployment }}"')
    assert problems(text) == [
        "pb.yaml:8: target.name uses labels.deployment, which the matchers do not guarantee; alerts from "
        "aggregated rules (sum(rate(...))) carry no such label: match on it (deployment=~\".+\"), give it a "
        "default (| default('...')) or name the target statically"
    ]


def test_each_field_and_each_missing_label_is_named() -> None:
    text = playbook(AGGREGATED, 'kind: Deployment\nnamespace: "{{ labels.namespace }}"\n'
                                'name: "{{ labels.app }}-{{ labels.tier }}"')
    found = problems(text)
    assert [p.split(" which")[0] for p in found] == [
        "pb.yaml:7: target.namespace uses labels.namespace,",
        "pb.yaml:8: target.name uses labels.app and labels.tier,",
    ]


@pytest.mark.parametrize(
    "target",
    [
        "kind: Deployment\nnamespace: shop\nname: api-service",  # static
        'kind: Deployment\nnamespace: shop\nname: "{{ annotations.deployment }}"',
        "kind: Deployment\nnamespace: shop\nname: \"{{ labels.deployment | default('api-service') }}\"",
        'kind: Deployment\nnamespace: shop\nname: "{{ labels.alertname | lower }}"',  # alertname is matched
    ],
)
def test_static_annotation_defaulted_and_matched_targets_load(target: str) -> None:
    assert problems(playbook(AGGREGATED, target)) == []


@pytest.mark.parametrize(
    "matcher", ['deployment=~".+"', 'deployment!=""', 'deployment="api"', 'deployment=~"api|web"']
)
def test_a_matcher_that_fixes_the_label_makes_the_target_load(matcher: str) -> None:
    match = f'alertname: HighErrorRate\nmatchers: [\'{matcher}\']'
    assert problems(playbook(match, 'kind: Deployment\nnamespace: shop\nname: "{{ labels.deployment }}"')) == []


@pytest.mark.parametrize(
    ("matchers", "name"),
    [
        ('[severity="critical"]', "{{ labels.deployment }}"),
        ('[deployment=~".+"]', "{{ labels.deployment }}"),
        ('[deployment!="x"]', "{{ labels.deployment }}"),
        ('[deployment!=""]', "{{ labels.deployment }}-{{ labels.tier | default('a') }}"),
        ("[]", "{{ labels.deployment | default('api') }}"),
        ("[]", "{{ annotations.deployment }}"),
    ],
)
def test_the_load_time_verdict_agrees_with_planning_for_the_barest_alert(matchers: str, name: str) -> None:
    """An alert with only the labels the matchers guarantee: planning names the target exactly when
    loading found no problem (annotations aside: the alert carries the one the template reads)."""
    text = playbook(f"alertname: X\nmatchers: {matchers}", f'kind: Deployment\nnamespace: shop\nname: "{name}"')
    pbs, found = parse_playbooks(text, "pb.yaml")
    assert found == []
    labels = {label: "api" for label in pbs[0].match.guaranteed_labels()}
    alert = Alert("f", "firing", {**labels, "alertname": "X"}, {"deployment": "api"})
    plan = make_plan(pbs[0], alert, global_dry_run=True)
    refused = isinstance(plan, Refusal) and plan.reason.startswith("invalid target")
    assert refused is bool(problems(text))


def yaml_blocks(page: Path) -> list[str]:
    return re.findall(r"```ya?ml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


#: Every playbook the project ships or shows: the daemon's own, the runbook examples, the
#: deploy base's starter (its ConfigMap), and the examples in the README and the reference.
SHIPPED_DIRS = (PLAYBOOKS, ROOT / "examples" / "runbooks" / "playbooks", ROOT / "deploy" / "kubernetes" / "playbooks")
PAGES = (ROOT / "README.md", ROOT / "docs" / "playbooks.md")


def test_every_shipped_playbook_and_example_loads_with_its_target_checked() -> None:
    loaded, found = load_paths(SHIPPED_DIRS)
    assert [str(p) for p in found] == []
    assert {"db-pool-exhaustion", "starter-check-rollout"} <= {p.name for p in loaded.playbooks}
    for page in PAGES:
        blocks = [parse_playbooks(block, str(page)) for block in yaml_blocks(page)]
        examples, _ = combine((pbs, []) for pbs, _ in blocks)  # blocks of settings are not playbooks
        assert examples.playbooks, page
        assert [str(p) for p in check_targets(examples)] == [], page


UNGUARDED = playbook(AGGREGATED, 'kind: Deployment\nnamespace: shop\nname: "{{ labels.deployment }}"')
GUARDED = playbook('alertname: HighErrorRate\nmatchers: [severity="critical", deployment=~".+"]',
                   'kind: Deployment\nnamespace: shop\nname: "{{ labels.deployment }}"')
REFUSAL = (":8: target.name uses labels.deployment, which the matchers do not guarantee; alerts from aggregated "
           "rules (sum(rate(...))) carry no such label")


def test_validate_refuses_the_playbook_at_the_target_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # validate reads ./remediator.yaml when there is one
    (tmp_path / "ok.yaml").write_text(GUARDED.replace("name: p", "name: ok"))
    (tmp_path / "bad.yaml").write_text(UNGUARDED)
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert [line.split(", which")[0] for line in out.splitlines()] == [
        f"{tmp_path / 'bad.yaml'}:8: target.name uses labels.deployment"
    ]
    assert REFUSAL in out and "ok:" not in err
    (tmp_path / "bad.yaml").write_text(GUARDED)
    assert main(["validate", str(tmp_path)]) == 0
    assert "ok: 2 playbook(s) valid" in capsys.readouterr().err


async def test_the_daemon_does_not_start_with_it(tmp_path: Path, settings_factory: Callable[..., Any]) -> None:
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "bad.yaml").write_text(UNGUARDED)
    with pytest.raises(ConfigError) as refused:
        async with open_runtime(settings_factory(playbooks=str(tmp_path / "pb")), start_worker=False):
            pytest.fail("the daemon started")
    assert f"{tmp_path / 'pb' / 'bad.yaml'}{REFUSAL}" in str(refused.value)


def test_a_reload_with_it_keeps_the_last_good_set(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GUARDED)
    repo = PlaybookRepository([str(tmp_path)])
    assert repo.reload()
    before = repo()
    f.write_text(UNGUARDED.replace("name: p", "name: changed"))
    assert not repo.reload()
    assert repo() is before and [p.name for p in repo().playbooks] == ["p"]
    assert [f"{p.path}:{p.line}" for p in repo.last_problems] == [f"{f}:8"]
    assert REFUSAL in str(repo.last_problems[0])


def test_replay_loads_through_the_same_check(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(UNGUARDED)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'bad.yaml'}{REFUSAL}")):
        load_playbooks(str(tmp_path))
