"""The core-purity contract: remediator.core does no I/O and reads no clock.

Replay's promise (same decisions as live, on virtual time) depends on it, so it is
checked on every test run rather than trusted to review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "remediator" / "core"

ALLOWED_STDLIB = {
    "__future__", "typing", "dataclasses", "enum", "re", "json", "hashlib", "datetime", "math",
    "collections", "types", "itertools", "functools", "contextlib", "string", "copy", "operator",
}
ALLOWED_THIRD_PARTY = {"yaml", "jinja2", "jsonschema", "msgspec", "re2"}  # parsing, validating, matching: no I/O
FORBIDDEN_CALLS = ("datetime.now", "datetime.utcnow", "time.time", "time.monotonic", "open(", "date.today")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


CORE_FILES = sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_only_pure_modules(path: Path) -> None:
    bad = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if module.startswith("remediator."):
            if not module.startswith("remediator.core"):
                bad.append(f"{path.name}:{line}: imports {module} (core may import only remediator.core)")
        elif top not in ALLOWED_STDLIB | ALLOWED_THIRD_PARTY:
            bad.append(f"{path.name}:{line}: imports {module}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_reads_no_clock_and_no_files(path: Path) -> None:
    text = path.read_text()
    assert not [c for c in FORBIDDEN_CALLS if c in text]


def test_the_contract_sees_every_core_module() -> None:
    assert {p.name for p in CORE_FILES} >= {"alerts.py", "matchers.py", "playbooks.py", "planning.py", "guardrails.py"}


def test_the_contract_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\nfrom remediator.store import sqlite\n")
    names = [m for _, m in _imports(bad)]
    assert "socket" in names and "remediator.store" in names


REMEDIATOR = CORE.parent
#: Components that use one role of the store each: they name the role, never the whole Store.
ROLE_USERS = ("pipeline.py", "hold.py", "queue.py", "worker.py", "replay.py", "killswitch.py")
#: Observed through PipelineEvents (replay) or wrapped by composition, never subclassed.
NOT_TO_SUBCLASS = {"Pipeline", "SQLiteStore", "PostgresStore", "Worker", "ExecutionQueue"}


def _names_imported_from(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == module
            for alias in node.names}


def _subclassed(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {base.id for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            for base in node.bases if isinstance(base, ast.Name)}


@pytest.mark.parametrize("name", ROLE_USERS)
def test_components_depend_on_a_store_role_not_on_the_whole_store(name: str) -> None:
    assert "Store" not in _names_imported_from(REMEDIATOR / name, "remediator.ports")


def test_nothing_subclasses_the_pipeline_or_a_store_to_observe_it() -> None:
    found = [f"{p.relative_to(REMEDIATOR)}: {sorted(_subclassed(p) & NOT_TO_SUBCLASS)}"
             for p in sorted(REMEDIATOR.rglob("*.py")) if _subclassed(p) & NOT_TO_SUBCLASS]
    assert not found, "\n".join(found)


def test_the_seam_contracts_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from remediator.ports import Store\nclass Tap(Pipeline):\n    pass\n")
    assert "Store" in _names_imported_from(bad, "remediator.ports")
    assert _subclassed(bad) & NOT_TO_SUBCLASS == {"Pipeline"}


def test_reading_a_history_needs_only_the_core() -> None:
    """Replay's reading process (remediator.replay_feed) imports the core and the ports, not the
    daemon's pipeline, stores, executors or HTTP: half the memory, a quarter of the imports' time."""
    import subprocess
    import sys

    code = "import sys, remediator.replay_feed; print(' '.join(m for m in sys.modules if m.startswith('remediator')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REMEDIATOR.parent).stdout.split()
    allowed = {"remediator", "remediator.core", "remediator.ports", "remediator.replay_input", "remediator.replay_feed"}
    assert "remediator.replay_feed" in loaded
    assert sorted(m for m in loaded if m not in allowed and not m.startswith("remediator.core.")) == []
