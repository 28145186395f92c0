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


def load_documents(text: str, source: str) -> tuple[list[Document], list[Problem]]:
    """Parse every YAML document in ``text``; problems carry ``source`` and a line."""
    problems: list[Problem] = []
    docs: list[Document] = []
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Document(data=None, start_line=node.start_mark.line + 1)
            doc.data = _convert(loader, node, (), doc, source, problems)
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problems.append(Problem(source, line, f"invalid YAML: {exc.problem or exc.context}"))
    except yaml.YAMLError as exc:
        problems.append(Problem(source, 1, f"invalid YAML: {exc}"))
    finally:
        loader.dispose()
    return docs, problems


def _convert(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, doc: Document, source: str, problems: list[Problem]
) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                if isinstance(key, bool | int | float):
                    key = str(key)
                else:
                    problems.append(Problem(source, key_node.start_mark.line + 1, "mapping keys must be strings"))
                    continue
            if key in out:
                problems.append(Problem(source, key_node.start_mark.line + 1, f"duplicate key {key!r}"))
            doc.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _convert(loader, value_node, (*path, key), doc, source, problems)
            doc.lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, (*path, i), doc, source, problems) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
