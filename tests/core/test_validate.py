"""``remediator validate`` names every playbook problem as ``path:line: message``.

Each fixture under ``data/playbooks_bad`` holds one kind of mistake (its header
comment says which) on a line this table pins down; the line is where a person
has to look to fix it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.core.playbooks import parse_playbooks
from remediator.core.schema import ACTIONS
from tests.payloads import PLAYBOOKS, ROOT

DATA = Path(__file__).parent / "data"
BAD = DATA / "playbooks_bad"
DUP = DATA / "playbooks_dup"
# the project's interpreter, as an operator would run it
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
CONTEXT = "available: annotations, fingerprint, generatorURL, labels, startsAt, status"

# file -> the (line, message) problems validate must report for it, in order
EXPECTED: dict[str, list[tuple[int, str]]] = {
    "yaml_syntax.yaml": [(5, "invalid YAML: mapping values are not allowed here")],
    "duplicate_key.yaml": [(9, "duplicate key 'cooldown'")],
    "unknown_field.yaml": [
        (6, "guardrail: unknown field; expected one of name, description, match, target, guardrails, steps, "
            "on_failure, notify, approval"),
    ],
    "missing_field.yaml": [(3, "playbook: 'target' is a required property")],
    "unknown_action.yaml": [(8, f"steps.1.action: unknown action 'wait_healty'; expected one of {', '.join(ACTIONS)}")],
    "bad_duration.yaml": [(8, "guardrails.cooldown: invalid duration '10 minutes': expected e.g. 30s, 10m, 1h30m")],
    "bad_regex.yaml": [(7, "match.matchers.1: invalid regex '(warning|critical': missing closing )")],
    "bad_matcher.yaml": [
        (6, "match.matchers.0: bad matcher 'severity==\"critical\"': unescaped double quote in the value "
            "(the operator must be one of = != =~ !~)"),
    ],
    "re2_unsupported.yaml": [
        (6, "match.matchers.0: regex 'High(?!Latency).*' uses negative look-ahead, which Alertmanager's RE2 "
            "does not support"),
    ],
    "template_unknown_name.yaml": [
        (8, f"target.name: template '{{{{ lables.deployment }}}}' uses unknown name(s) lables; {CONTEXT}"),
    ],
    "template_syntax.yaml": [(7, "target.namespace: template '{{ labels.namespace }': unexpected '}'")],
    "unknown_filter.yaml": [
        (8, "target.name: template '{{ labels.deployment | lowercase }}': No filter named 'lowercase'."),
    ],
    "wrong_type.yaml": [(8, "guardrails.rate_limit.max: 'three' is not of type 'integer'")],
    "scale_to_and_by.yaml": [(7, "steps.0: give exactly one of to, by, factor (got to, by)")],
    "min_above_max.yaml": [(9, "steps.0: min (10) is greater than max (4)")],
    "namespace_not_allowed.yaml": [(7, "target.namespace: 'kube-system' is not in guardrails.namespaces")],
    "empty_namespace_allowlist.yaml": [(11, "guardrails.namespaces: [] should be non-empty")],
    "invalid_status.yaml": [(5, "match.status: 'firng' is not one of ['firing', 'resolved', 'any']")],
    "invalid_kind.yaml": [(6, "target.kind: 'DaemonSet' is not one of ['Deployment', 'StatefulSet']")],
    "unknown_step_field.yaml": [
        (7, "steps.0: give exactly one of to, by, factor (got none)"),
        (8, "steps.0.replicas: unknown field of action 'scale'; expected one of action, description, to, by, "
            "factor, min, max, min_healthy_replicas, approval"),
    ],
    "second_document.yaml": [(14, "steps.1.timeout: must be positive")],
    "invalid_static_name.yaml": [
        (7, "steps.0: resize_pool.container 'API' is not a valid container name (DNS-1123 label: lowercase "
            "letters, digits and '-', at most 63 characters)"),
    ],
    "zero_lock_ttl.yaml": [(6, "guardrails.lock_ttl: must be positive (the lock is renewed every third of it)")],
    "several_problems.yaml": [
        (7, "match.matchers.0: 42 is not of type 'string'"),
        (8, "match.matchers.1: regex '(?=critical)' uses look-ahead, which Alertmanager's RE2 does not support"),
        (12, "target.name: template '{{ labels.deploymnet | nosuchfilter }}': No filter named 'nosuchfilter'."),
        (14, "guardrails.cooldown: invalid duration '1m1h': expected e.g. 30s, 10m, 1h30m"),
    ],
}


def expected_lines(path: Path) -> list[str]:
    return [f"{path}:{line}: {message}" for line, message in EXPECTED[path.name]]


def run_validate(capsys: pytest.CaptureFixture[str], *paths: Path | str) -> tuple[int, list[str], str]:
    code = main(["validate", *map(str, paths)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validate also checks ./remediator.yaml when present: run where there is none."""
    monkeypatch.chdir(tmp_path)


def test_every_fixture_has_its_expectation() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)
    kinds = {"yaml_syntax", "duplicate_key", "unknown_field", "missing_field", "unknown_action", "bad_duration",
             "bad_regex", "bad_matcher", "template_unknown_name", "template_syntax", "wrong_type", "scale_to_and_by",
             "min_above_max", "namespace_not_allowed", "invalid_status", "invalid_kind"}
    assert {f"{k}.yaml" for k in kinds} <= set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_validate_reports_the_problem_on_its_line(capsys: pytest.CaptureFixture[str], name: str) -> None:
    path = BAD / name
    code, out, _ = run_validate(capsys, path)
    assert code == 1
    assert out == expected_lines(path)


def test_duplicate_names_across_files_point_at_the_second(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_validate(capsys, DUP)
    assert code == 1
    assert out == [f"{DUP / 'b.yaml'}:9: duplicate playbook name 'restart-api' (first defined at {DUP / 'a.yaml'}:2)"]


def test_a_directory_reports_every_file_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_validate(capsys, BAD, DUP)
    assert code == 1
    expected = [line for name in sorted(EXPECTED) for line in expected_lines(BAD / name)]
    expected.append(f"{DUP / 'b.yaml'}:9: duplicate playbook name 'restart-api' (first defined at {DUP / 'a.yaml'}:2)")
    assert out == expected


def test_validate_as_a_subprocess(tmp_path: Path) -> None:
    """The installed entry point behaves like the in-process one: stdout lines and exit 1."""
    proc = subprocess.run(
        [PYTHON, "-m", "remediator", "validate", str(BAD / "bad_regex.yaml"), str(DUP),
         str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{tmp_path / 'missing.yaml'}:1: no such file or directory",
        *expected_lines(BAD / "bad_regex.yaml"),
        f"{DUP / 'b.yaml'}:9: duplicate playbook name 'restart-api' (first defined at {DUP / 'a.yaml'}:2)",
    ]


def test_the_shipped_playbooks_validate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_validate(capsys, PLAYBOOKS)
    assert (code, out) == (0, [])
    assert err.strip() == f"ok: {len(list(PLAYBOOKS.glob('*.yaml')))} playbook(s) valid"


def test_the_shipped_playbooks_validate_as_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [PYTHON, "-m", "remediator", "validate", str(PLAYBOOKS)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr


def test_a_nonexistent_path_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    code, out, _ = run_validate(capsys, missing)
    assert (code, out) == (1, [f"{missing}:1: no such file or directory"])
    code, out, _ = run_validate(capsys, PLAYBOOKS, missing)  # one bad path fails the whole run
    assert (code, out) == (1, [f"{missing}:1: no such file or directory"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an alias loop must be a problem, not a crash
        ("name: &x [*x]\n", (1, "recursive YAML alias")),
        # a "billion laughs" must be refused quickly, not expanded
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)),
         (1, "document expands to more than 100000 values through aliases")),
        # where an unclosed quote started, not only where the file ended
        ('name: "never closed\nmatch: {alertname: X}\n',
         (3, "invalid YAML: found unexpected end of stream (while scanning a quoted scalar that starts on line 1)")),
        ("name: a\n\tmatch: x\n", (2, "invalid YAML: found character '\\t' that cannot start any token")),
    ],
)
def test_hostile_yaml_is_a_problem_with_a_line(text: str, expected: tuple[int, str]) -> None:
    playbooks, problems = parse_playbooks(text, "x.yaml")
    assert playbooks == []
    assert (problems[0].line, problems[0].message) == expected


def test_an_unreadable_file_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, out, _ = run_validate(capsys, path)
    assert code == 1 and len(out) == 1 and out[0].startswith(f"{path}:1: cannot read: ")


MERGED = """- name: a
  match: {alertname: A}
  target: {kind: Deployment, namespace: shop, name: api}
  guardrails: &shared
    cooldown: 10m
    lock_ttl: 5m
  steps: [{action: restart}]
- name: b
  match: {alertname: B}
  target: {kind: Deployment, namespace: shop, name: web}
  guardrails:
    <<: *shared
    cooldown: 30m
  steps: [{action: restart}]
- name: c
  match: {alertname: C}
  target: {kind: Deployment, namespace: shop, name: db}
  guardrails:
    <<: *shared
    cooldown: 30m
    cooldown: 40m
  steps: [{action: restart}]
"""


def test_a_key_merged_in_and_written_again_overrides_it_as_yaml_says_and_one_written_twice_is_refused() -> None:
    """Sharing guardrails through an anchor and overriding one of them is ordinary YAML (the merge key's
    rule: an explicit key wins); it was refused as a duplicate key.  Written twice is still a duplicate."""
    playbooks, problems = parse_playbooks(MERGED, "f.yaml")
    assert [(p.line, p.message) for p in problems] == [(21, "duplicate key 'cooldown'")]
    b = next(p for p in playbooks if p.name == "b")
    assert b.guardrails.cooldown == 1800 and b.guardrails.lock_ttl == 300
