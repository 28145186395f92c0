"""The test list of docs/playbooks.md ("How each action and check is tested") stays true.

Every test it names exists (a test function of that name in that file), and every
action and check it lists has a test for each of the five properties the acceptance
asks for: a renamed or deleted test, or a property left without one, fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "playbooks.md"
PROPERTIES = ("live", "dry-run", "crash-resume", "bounds and guards", "bad parameters refused")
SUBJECTS = ("set_image", "set_env", "set_resources", "undo", "scale to zero and back", "http_check",
            "prometheus_check", "wait_resolved")
REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def section() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index('<a id="tested"></a>')
    end = text.find("\n## ", text.index("## ", start) + 3)
    return text[start:] if end < 0 else text[start:end]


def tables() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """subject -> property -> the (file, test) pairs of its row."""
    found: dict[str, dict[str, list[tuple[str, str]]]] = {}
    subject = ""
    for line in section().splitlines():
        if heading := re.fullmatch(r"\*\*(.+)\*\*", line.strip()):
            subject = heading.group(1)
            found[subject] = {}
        elif subject and line.startswith("| ") and "::" in line:
            prop = line.split("|")[1].strip()
            found[subject][prop] = REF.findall(line)
    return found


def functions_of(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_named_test_exists() -> None:
    refs = {ref for rows in tables().values() for pairs in rows.values() for ref in pairs}
    assert len(refs) > 40
    missing = sorted(f"{path}::{name}" for path, name in refs
                     if not (ROOT / path).is_file() or name not in functions_of(path))
    assert missing == []


def test_every_action_and_check_has_a_test_for_every_property() -> None:
    found = tables()
    assert [s for s in SUBJECTS if not any(name.startswith(s) for name in found)] == []
    gaps = [f"{subject}: {prop}" for subject, rows in found.items() for prop in PROPERTIES
            if not any(row.startswith(prop) and pairs for row, pairs in rows.items())]
    assert gaps == []


def test_the_check_fails_on_a_missing_test() -> None:
    assert "test_no_such_test" not in functions_of("tests/executor/test_undo.py")
    assert REF.findall("| live | `tests/executor/test_undo.py::test_no_such_test` |") == [
        ("tests/executor/test_undo.py", "test_no_such_test")]
