"""Alertmanager label matchers, with Alertmanager's exact semantics.

Semantics mirrored from Alertmanager's ``pkg/labels``:

* operators ``=``, ``!=``, ``=~``, ``!~``;
* regexes are fully anchored (Alertmanager compiles ``^(?:re)$``);
* a missing label is the empty string, so ``foo=""`` selects alerts without ``foo``
  and ``foo!=""`` requires it;
* values may be double-quoted with ``\\"``, ``\\\\`` and ``\\n`` escapes.

Alertmanager uses Go's RE2, so constructs RE2 rejects (look-around, back-references)
are rejected here too: a playbook must mean the same thing in both places.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from remediator.core.errors import MatcherError

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_MATCHER = re.compile(
    r"^\s*(?P<name>" + _NAME + r'|"(?:[^"\\]|\\.)*")\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*$',
    re.DOTALL,
)
# Constructs that Python's re accepts but RE2 does not.
_NOT_RE2 = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]|\(\?P=|\(\?\(|\\[Z]")


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, op: Op | str, value: str) -> Matcher:
        op = Op(op)
        regex = None
        if op in (Op.RE, Op.NRE):
            if _NOT_RE2.search(value):
                raise MatcherError(
                    f"regex {value!r} uses a construct Alertmanager's RE2 does not support "
                    "(look-around or back-reference)"
                )
            try:
                regex = re.compile(f"(?:{value})")
            except re.error as exc:
                raise MatcherError(f"invalid regex {value!r}: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op is Op.EQ:
            return actual == self.value
        if self.op is Op.NE:
            return actual != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op is Op.RE else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{escaped}"'


def _unquote(raw: str, what: str) -> str:
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        inner = raw[1:-1]
        out: list[str] = []
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\":
                if i + 1 >= len(inner):
                    raise MatcherError(f"{what} ends with a lone backslash")
                nxt = inner[i + 1]
                out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                raise MatcherError(f"{what} contains an unescaped double quote")
            out.append(ch)
            i += 1
        return "".join(out)
    if '"' in raw:
        raise MatcherError(f"{what} contains an unescaped double quote")
    return raw


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as ``severity=~"warning|critical"``."""
    m = _MATCHER.match(text)
    if not m:
        raise MatcherError(
            f'bad matcher {text!r}: expected name, one of = != =~ !~, and a value, e.g. severity="critical"'
        )
    name = m.group("name")
    if name.startswith('"'):
        name = _unquote(name, "label name")
        if not name:
            raise MatcherError(f"bad matcher {text!r}: empty label name")
    value = _unquote(m.group("value"), f"value of matcher {text!r}")
    return Matcher.create(name, m.group("op"), value)


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Parse a comma-separated list, optionally in braces: ``{a="1", b=~"x|y"}``."""
    s = text.strip()
    if s.startswith("{"):
        if not s.endswith("}"):
            raise MatcherError(f"bad matchers {text!r}: missing closing brace")
        s = s[1:-1]
    parts: list[str] = []
    buf: list[str] = []
    in_quotes = False
    escaped = False
    for ch in s:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if ch == "\\":
            buf.append(ch)
            escaped = True
            continue
        if ch == '"':
            in_quotes = not in_quotes
        if ch == "," and not in_quotes:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if in_quotes:
        raise MatcherError(f"bad matchers {text!r}: unterminated quoted value")
    if "".join(buf).strip():
        parts.append("".join(buf))
    return tuple(parse_matcher(p) for p in parts if p.strip())


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
