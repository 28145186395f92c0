"""YAML loading that remembers where every value came from.

Error messages must say ``file:line``, so documents are composed into nodes and
converted by hand, recording the line of each JSON path.  Duplicate keys, which
PyYAML silently lets the last one win, are reported as errors here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]
#: Values a document may expand to through aliases: far above any real file, far below a "billion laughs".
MAX_NODES = 100_000


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, printable as ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Document:
    """One YAML document's data and the line of every path inside it."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    start_line: int = 1

    def line(self, path: Sequence[str | int]) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), self.start_line)


#: libyaml's parser when PyYAML was built with it: composing a thousand playbooks is most of a
#: reload's CPU, and the C parser does it several times faster.  Its error messages differ from the
#: pure-Python parser's, so a document it refuses is parsed again by the latter, for the message
#: (what an author reads stays the same whichever PyYAML is installed).
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def load_documents(text: str, source: str) -> tuple[list[Document], list[Problem]]:
    """Parse every YAML document in ``text``; problems carry ``source`` and a line."""
    if _FAST_LOADER is not None:
        docs, problems = _load(_FAST_LOADER, text, source)
        if not any(p.message.startswith("invalid YAML") for p in problems):
            return docs, problems
    return _load(yaml.SafeLoader, text, source)


def _load(loader_type: type[yaml.SafeLoader], text: str, source: str) -> tuple[list[Document], list[Problem]]:
    problems: list[Problem] = []
    docs: list[Document] = []
    loader = loader_type(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Document(data=None, start_line=node.start_mark.line + 1)
            try:
                doc.data = _Converter(loader, doc, source, problems).convert(node, ())
            except _TooLarge:
                problems.append(
                    Problem(source, doc.start_line, f"document expands to more than {MAX_NODES} values through aliases")
                )
                continue
            docs.append(doc)
    except RecursionError:  # nested deeper than Python's stack (thousands of [ ): no playbook is
        problems.append(Problem(source, 1, "invalid YAML: nested too deeply"))
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(exc, source))
    except yaml.YAMLError as exc:
        problems.append(Problem(source, 1, f"invalid YAML: {exc}"))
    finally:
        loader.dispose()
    return docs, problems


def _syntax_problem(exc: yaml.MarkedYAMLError, source: str) -> Problem:
    """Where the parser gave up, and (when elsewhere) where the construct it was reading began."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    message = f"invalid YAML: {exc.problem or exc.context}"
    if exc.problem and exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
        message += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
    return Problem(source, line, message)


class _Converter:
    """Turns composed nodes into data, recording lines, duplicate keys and alias abuse."""

    def __init__(self, loader: yaml.SafeLoader, doc: Document, source: str, problems: list[Problem]) -> None:
        self.loader, self.doc, self.source, self.problems = loader, doc, source, problems
        self.active: set[int] = set()  # nodes being converted: meeting one again is a recursive alias
        self.count = 0

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooLarge
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.active:
            self.problems.append(Problem(self.source, node.start_mark.line + 1, "recursive YAML alias"))
            return None
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            try:
                return self._mapping(node, path)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            try:
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        """The node's value; a value its tag cannot make (``!!int api``, ``2026-02-30`` read as a date,
        a 5,000-digit integer) is a problem at its line, not an exception out of the loader."""
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            message = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            self.problems.append(Problem(self.source, node.start_mark.line + 1, f"invalid value: {message}"))
            return None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        # Keys written here, as opposed to merged in (<<: *anchor): YAML lets an explicit key override a
        # merged one, and an earlier merge source a later one (flatten_mapping orders them so that the
        # winner comes last); only a key written twice here is a duplicate.
        written = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        explicit: set[str] = set()
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                if isinstance(key, bool | int | float):
                    key = str(key)
                else:
                    self.problems.append(Problem(self.source, key_line, "mapping keys must be strings"))
                    continue
            if key in out and key in explicit and id(key_node) in written:
                self.problems.append(Problem(self.source, key_line, f"duplicate key {key!r}"))
            if id(key_node) in written:
                explicit.add(key)
            self.doc.lines[(*path, key)] = key_line
            out[key] = self.convert(value_node, (*path, key))
            self.doc.lines[(*path, key)] = key_line
        return out
