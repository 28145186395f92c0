"""Issue 15 item 5: the runbooks shipped as examples stay valid, tested and consistent.

``examples/runbooks`` holds Prometheus rule files and the playbooks that automate the
recovery their runbooks document.  CI holds them to what an operator would run:
``remediator validate`` and ``remediator test`` on the playbooks, ``promtool check rules``
on the rule files; and, since the two halves are written apart, every alert a playbook
or a test case names must be one the rules can send, with the labels they give it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from remediator.cli import main
from remediator.core.playbooks import check_targets
from remediator.playbook_files import load_paths
from tests.payloads import ROOT

RUNBOOKS = ROOT / "examples" / "runbooks"
PLAYBOOKS = RUNBOOKS / "playbooks"
RULE_FILES = sorted((RUNBOOKS / "rules").glob("*.yaml"))


def rules() -> dict[str, dict[str, Any]]:
    """Each alerting rule by its alert name."""
    found: dict[str, dict[str, Any]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            found.update({rule["alert"]: rule for rule in group["rules"] if "alert" in rule})
    return found


def test_the_playbooks_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(PLAYBOOKS)]) == 0
    assert "ok: 7 playbook(s) valid" in capsys.readouterr().err


def test_the_playbooks_pass_their_test_cases(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(PLAYBOOKS)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 passed, 0 failed" in out


def test_every_target_is_named_without_labels_the_aggregated_alerts_lack() -> None:
    pset, problems = load_paths([PLAYBOOKS])
    assert problems == []
    assert check_targets(pset) == []


def test_the_rule_files_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (`make lint` installs Debian's prometheus)")
    done = subprocess.run([promtool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


def test_playbooks_match_only_alerts_the_rules_send_with_the_labels_they_give() -> None:
    defined = rules()
    pset, _ = load_paths([PLAYBOOKS])
    for pb in pset.playbooks:
        names = [m.value for m in pb.match.matchers if m.name == "alertname"]
        assert names and all(n in defined for n in names), pb.name
        for name in names:
            # an alert exactly as the rule labels it must select the playbook
            labels = {"alertname": name, **defined[name].get("labels", {})}
            assert all(m.matches(labels) for m in pb.match.matchers), (pb.name, name)


def test_the_test_cases_send_alerts_as_the_rules_label_them() -> None:
    defined = rules()
    for path in sorted((PLAYBOOKS / "tests").glob("*.test.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]:
            for alert in case["alerts"]:
                labels = alert.get("labels")
                rule = defined.get(labels["alertname"]) if labels else None
                if rule is None or labels.get("service") != rule["labels"]["service"]:
                    continue  # a control event, or a deliberately foreign alert (another service's)
                assert labels == {"alertname": labels["alertname"], **rule["labels"]}, (case["name"], labels)


def test_an_annotation_a_playbook_reads_is_one_its_rules_set() -> None:
    defined = rules()
    pset, _ = load_paths([PLAYBOOKS])
    read = 0
    for pb in pset.playbooks:
        steps = json.dumps([s.to_json() for s in pb.steps + pb.on_failure])
        names = [m.value for m in pb.match.matchers if m.name == "alertname"]
        for annotation in re.findall(r"annotations\.(\w+)", steps):
            read += 1
            assert all(annotation in defined[n].get("annotations", {}) for n in names), (pb.name, annotation)
    assert read > 0
