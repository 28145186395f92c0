"""`remediator test`: playbook test cases pass, fail with a readable diff, and bad files name their line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from remediator.cli import main
from tests.payloads import PLAYBOOKS
from tests.replay.history import write_playbooks

CASE = """\
start: 2026-11-22T10:00:00Z
cases:
  - name: cooldown after the first resize
    alerts:
      - {at: 0s, labels: &a {alertname: PoolHigh, namespace: shop, deployment: orders}}
      - {at: 2m, labels: *a}
      - {at: 3m, status: resolved, labels: *a}
      - {at: 4m, control: pause}
      - {at: 5m, labels: {alertname: PoolHigh, namespace: shop, deployment: cart}}
      - {at: 6m, labels: {alertname: Other}}
    expect:
      - {playbook: pool, decision: executed, at: 0s, target: Deployment/shop/orders,
         steps: [{action: resize_pool, by: 10}]}
      - {playbook: pool, decision: cooldown, at: 2m, reason: cooldown}
      - {playbook: pool, decision: paused, at: 5m}
      - {decision: no_match, playbook: null, alertname: Other}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["test", *argv])
    return code, capsys.readouterr().out


def make_repo(tmp_path: Path, case: str = CASE) -> Path:
    repo = write_playbooks(tmp_path / "pb")
    (repo / "tests").mkdir()
    (repo / "tests" / "pool.test.yaml").write_text(case)
    return repo


def test_the_shipped_playbooks_pass_their_shipped_tests(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(PLAYBOOKS))
    assert code == 0, out
    assert out.splitlines()[-1] == "4 passed, 0 failed"


def test_a_passing_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path)
    code, out = run(capsys, str(repo))
    assert code == 0, out
    assert out == f"ok    {repo / 'tests' / 'pool.test.yaml'}:3: cooldown after the first resize\n1 passed, 0 failed\n"


def test_a_failing_case_prints_a_diff_of_expected_and_actual(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    wrong = CASE.replace("decision: cooldown, at: 2m", "decision: executed, at: 2m").replace("by: 10", "by: 5")
    repo = make_repo(tmp_path, wrong)
    code, out = run(capsys, str(repo / "tests" / "pool.test.yaml"))
    assert code == 1
    assert out.splitlines()[1:] == [
        "      --- expected",
        "      +++ actual",
        "      -playbook=pool decision=executed at=+0s target=Deployment/shop/orders steps=[resize_pool(by=5)]",
        '      -playbook=pool decision=executed at=+2m reason~"cooldown"',
        "      +playbook=pool decision=executed at=+0s target=Deployment/shop/orders steps=[resize_pool(by=10)]",
        '      +playbook=pool decision=cooldown at=+2m reason~"cooldown"',
        "       playbook=pool decision=paused at=+5m",
        "       playbook=- decision=no_match alertname=Other",
        "0 passed, 1 failed",
    ]


def test_missing_and_extra_decisions_show_in_the_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fewer = CASE.replace("      - {playbook: pool, decision: paused, at: 5m}\n", "")
    code, out = run(capsys, str(make_repo(tmp_path, fewer)))
    assert code == 1
    assert out.splitlines()[1:] == [
        "      --- expected",
        "      +++ actual",
        "       playbook=pool decision=executed at=+0s target=Deployment/shop/orders steps=[resize_pool(by=10)]",
        '       playbook=pool decision=cooldown at=+2m reason~"cooldown"',
        "      +playbook=pool decision=paused at=+5m target=Deployment/shop/cart steps=[resize_pool]",
        "       playbook=- decision=no_match alertname=Other",
        "0 passed, 1 failed",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cases:\n  - name: x\n    alerts: []\n    expect: []\n", ":3: cases.0.alerts: [] should be non-empty"),
        ("cases:\n  - name: x\n    alerts:\n      - {at: soon, labels: {a: b}}\n    expect: []\n",
         ":4: invalid RFC 3339 timestamp 'soon'"),
        ("cases:\n  - name: x\n    alerts: [{at: 0s, labels: {a: b}}]\n    expect:\n      - {decision: done}\n",
         ":5: cases.0.expect.0.decision: 'done' is not one of"),
        ("cases: [\n", ":2: invalid YAML"),
    ],
)
def test_a_broken_test_file_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                           message: str) -> None:
    repo = make_repo(tmp_path, text)
    code, out = run(capsys, str(repo))
    assert code == 1
    assert out.startswith(f"ERROR {repo / 'tests' / 'pool.test.yaml'}{message}"), out


def test_no_test_files_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(PLAYBOOKS, tmp_path / "pb", ignore=shutil.ignore_patterns("tests"))
    code, out = run(capsys, str(tmp_path / "pb"))
    assert code == 1 and "no test files" in out
