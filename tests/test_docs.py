"""The documentation stays true and self-contained.

docs/configuration.md is what :mod:`remediator.docgen` generates from the settings (so it
cannot drift: `make docs` regenerates it), every setting has a description, and the
defaults it shows load back as the defaults.  Every Markdown link in README.md and docs/
resolves to a file of the repository (and to a heading or anchor in it): a reader of the
project has nothing else, so nothing may point outside it.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from remediator import docgen
from remediator.core.playbooks import parse_playbooks
from remediator.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
AUTOLINK = re.compile(r"<((?:https?|ftp|file)://[^>\s]+)>")
ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans, where a link is a link."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).replace("`", "").strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(h) for h in HEADING.findall(text)} | set(ANCHOR.findall(text))


def link_problems(page: Path, text: str) -> list[str]:
    """What is wrong with each link of ``text`` (the contents of ``page``): empty when all resolve."""
    body = prose(text)
    targets = INLINE_LINK.findall(body) + REFERENCE_LINK.findall(body) + AUTOLINK.findall(body)
    problems = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            problems.append(f"{target}: leaves the repository (write an outside address as plain text)")
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading or anchor #{fragment} in {resolved.relative_to(ROOT)}")
    return problems


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    written = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert written == docgen.render(), "docs/configuration.md is stale: run `make docs`"


def test_the_generator_writes_the_file(tmp_path: Path) -> None:
    assert docgen.main(["--output", str(tmp_path / "out" / "configuration.md")]) == 0
    assert (tmp_path / "out" / "configuration.md").read_text(encoding="utf-8") == docgen.render()


def test_every_setting_is_in_the_reference_with_a_description() -> None:
    keys = [k for s in docgen.sections() for k in s.keys]
    paths = {k.path for k in keys}
    for f in dataclasses.fields(Settings):
        if dataclasses.is_dataclass(f.default):
            assert {f"{f.name}.{sub.name}" for sub in dataclasses.fields(f.default)} <= paths
        elif f.name == "channels":
            assert any(p.startswith("channels.<name>.") for p in paths)
        else:
            assert f.name in paths
    assert [k.path for k in keys if not k.description] == [], "describe these settings (docgen.DESCRIPTIONS)"


def test_docgen_understands_every_constraint_the_settings_declare() -> None:
    """A new kind of range in settings.py must show up in the reference, not vanish from it."""
    def classes(cls: type) -> list[type]:
        out = [cls]
        for tp in typing.get_type_hints(cls).values():
            for inner in (tp, *typing.get_args(tp)):
                if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                    out += classes(inner)
        return out

    declared = {key for cls in classes(Settings) for f in dataclasses.fields(cls) for key in f.metadata}
    assert declared <= docgen.KNOWN_METADATA, f"docgen does not show {sorted(declared - docgen.KNOWN_METADATA)}"
    assert {"min", "choices", "above"} <= declared  # what settings.py uses today: the check is not empty


def test_docgen_describes_no_setting_that_does_not_exist() -> None:
    stale = set(docgen.DESCRIPTIONS) - docgen.documented_paths()
    assert stale == set(), f"docgen.DESCRIPTIONS names settings that no longer exist: {sorted(stale)}"


def test_the_documented_defaults_and_variables_load_back_as_the_defaults() -> None:
    """Each variable the reference names, set to the default it shows, is accepted and changes nothing."""
    defaults = Settings()
    for section in docgen.sections():
        for key in section.keys:
            if not key.env or not key.default.startswith("`") or key.kind.startswith("list"):
                continue
            shown = key.default.strip("`")
            value = "" if shown == '""' else shown
            loaded = load_settings(None, env={key.env: value})
            assert loaded == defaults, f"{key.env}={value!r} (the default docs/configuration.md shows)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_stays_in_the_repository_and_resolves(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert link_problems(page, text) == []
    assert "../shared" not in text  # not even as text: a user of the project does not have it


def test_the_link_check_can_fail() -> None:
    page = DOCS / "operations.md"
    bad = (
        "[a](../../shared/spec/interface.md) [b](nowhere.md) [c](https://example.com) "
        "[d](configuration.md#no-such-key) [e](#kill-switch-nope)\n"
        "`[f](ignored.md)`\n```\n[g](ignored-too.md)\n```\n[h](configuration.md#guardrails)\n"
    )
    found = link_problems(page, bad)
    assert len(found) == 5, found
    assert "outside the repository" in found[0] and "no such file" in found[1] and "leaves" in found[2]


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    readme = prose((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in INLINE_LINK.findall(readme) if t.startswith("docs/")}
    assert set(DOCS.glob("*.md")) <= linked


def test_the_playbook_examples_in_the_docs_are_valid_playbooks() -> None:
    """Every complete playbook shown (a YAML block with name, match, target and steps) loads without a problem."""
    examples = [
        (page, block)
        for page in PAGES
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
        if all(re.search(rf"^{key}:", block, re.M) for key in ("name", "match", "target", "steps"))
    ]
    assert len(examples) >= 3
    for page, block in examples:
        playbooks, problems = parse_playbooks(block, str(page.relative_to(ROOT)))
        assert problems == [] and len(playbooks) == 1, (page.name, [str(p) for p in problems])
