"""Alertmanager label matchers, with Alertmanager's exact semantics.

Semantics mirrored from Alertmanager's ``pkg/labels`` (its "classic" parser, which
its default fallback mode uses whenever both parsers accept an input):

* operators ``=``, ``!=``, ``=~``, ``!~``;
* regexes are fully anchored (Alertmanager compiles ``^(?:re)$``) and use RE2 syntax,
  translated by :mod:`remediator.core.regex`;
* a missing label is the empty string, so ``foo=""`` selects alerts without ``foo``
  and ``foo!=""`` requires it;
* values may be double-quoted; in quoted and unquoted values alike ``\\"``, ``\\\\`` and
  ``\\n`` are escapes and any other backslash is literal;
* a double-quoted label name (Alertmanager's UTF-8 syntax, which only its new parser
  accepts) is a Go string literal, and so is a quoted value after it.

A playbook must mean the same thing here and in Alertmanager, so constructs RE2
rejects (look-around, back-references) are rejected here too.
"""

from __future__ import annotations

import enum
import functools
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from remediator.core.errors import MatcherError
from remediator.core.regex import Regex, compile_re2

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_MATCHER = re.compile(
    r"^\s*(?P<name>" + _NAME + r'|"(?:[^"\\]|\\.)*")\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*$',
    re.DOTALL,
)
_GO_ESCAPE = re.compile(r'\\(?:([abfnrtv\\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))')
_GO_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
# Characters an unquoted UTF-8 matcher token may not contain.
_RESERVED = re.compile(r"[\s{}!=~,\\\"'`]")


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
    _regex: Regex | None = field(default=None, compare=False, repr=False)
    # What the operator asks of a label's value, chosen once: every alert asks every candidate playbook's matchers.
    _test: Callable[[str], bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_test", _test(self.op, self.value, self._regex))

    @classmethod
    def create(cls, name: str, op: Op | str, value: str) -> Matcher:
        op = Op(op)
        regex = compile_re2(value) if op in (Op.RE, Op.NRE) else None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self._test(labels.get(self.name, ""))

    @property
    def test(self) -> Callable[[str], bool]:
        """Whether a label's value (``""`` when absent) satisfies this matcher."""
        return self._test

    def __str__(self) -> str:
        """Alertmanager's own rendering, which parses back to an equal matcher."""
        if not re.fullmatch(_NAME, self.name):
            name, value = (json.dumps(v, ensure_ascii=False) for v in (self.name, self.value))
            return f"{name}{self.op.value}{value}"
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{escaped}"'


def _test(op: Op, value: str, regex: Regex | None) -> Callable[[str], bool]:
    if op is Op.EQ:
        return functools.partial(operator.eq, value)
    if op is Op.NE:
        return functools.partial(operator.ne, value)
    assert regex is not None
    fullmatch = regex.fullmatch
    if op is Op.RE:
        return lambda actual: fullmatch(actual) is not None
    return lambda actual: fullmatch(actual) is None


def _classic_value(raw: str, text: str) -> str:
    """Unescape a value as Alertmanager's classic parser does (quoted or not)."""
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i < len(body) - 1:
            nxt = body[i + 1]
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if ch == '"':
            if not quoted or i < len(body) - 1:
                hint = " (the operator must be one of = != =~ !~)" if raw[:1] in ("=", "~", "!") else ""
                raise MatcherError(f"bad matcher {text!r}: unescaped double quote in the value{hint}")
            quoted = False
        else:
            out.append(ch)
        i += 1
    if quoted:
        raise MatcherError(f"bad matcher {text!r}: unterminated quoted value (missing closing \")")
    return "".join(out)


def _go_string(token: str, text: str) -> str:
    """A double-quoted Go string literal, as Alertmanager's UTF-8 parser reads it."""
    body = token[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch in '"\n':
            what = "a raw newline" if ch == "\n" else "an unescaped quote"
            raise MatcherError(f"bad matcher {text!r}: {what} in {token!r}")
        if ch != "\\":
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
            continue
        m = _GO_ESCAPE.match(body, i)
        if m is None:
            raise MatcherError(f"bad matcher {text!r}: invalid escape {body[i:i + 2]!r} in {token!r}")
        simple, hexa, octal, short, long = m.groups()
        if simple:
            out.append(_GO_SIMPLE[simple])
        elif hexa or octal:
            code = int(hexa, 16) if hexa else int(octal, 8)
            if code > 255:
                raise MatcherError(f"bad matcher {text!r}: invalid escape {m.group(0)!r} in {token!r}")
            out.append(code)
        else:
            code = int(short or long, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise MatcherError(f"bad matcher {text!r}: invalid escape {m.group(0)!r} in {token!r}")
            out += chr(code).encode()
        i = m.end()
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise MatcherError(f"bad matcher {text!r}: {token!r} is not valid UTF-8") from None


def _utf8_value(raw: str, text: str) -> str:
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        return _go_string(raw, text)
    if not raw or _RESERVED.search(raw):
        raise MatcherError(f"bad matcher {text!r}: after a quoted label name the value must be double-quoted")
    return raw


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as ``severity=~"warning|critical"``."""
    m = _MATCHER.match(text)
    if not m:
        raise MatcherError(
            f'bad matcher {text!r}: expected a label name, one of = != =~ !~, and a value, e.g. severity="critical"'
        )
    name, raw = m.group("name"), m.group("value")
    if name.startswith('"'):
        name = _go_string(name, text)
        if not name:
            raise MatcherError(f"bad matcher {text!r}: empty label name")
        value = _utf8_value(raw, text)
    else:
        value = _classic_value(raw, text)
    return Matcher.create(name, m.group("op"), value)


def _split(body: str) -> list[str]:
    """Split on commas outside double quotes (a backslash escapes the next character).

    Unbalanced quotes are left for :func:`parse_matcher` to explain, token by token.
    """
    parts: list[str] = []
    buf: list[str] = []
    in_quotes = escaped = False
    for ch in body:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == "," and not in_quotes:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return parts


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Parse a comma-separated list, optionally in braces: ``{a="1", b=~"x|y"}``.

    As Alertmanager documents: braces come in pairs or not at all, and one trailing
    comma is allowed.
    """
    s = text.strip()
    opened, closed = s.startswith("{"), s.endswith("}")
    if opened != closed:
        raise MatcherError(f"bad matchers {text!r}: {'missing closing' if opened else 'unexpected closing'} brace")
    if opened:
        s = s[1:-1]
    if not s.strip():
        return ()
    parts = _split(s)
    if len(parts) > 1 and not parts[-1].strip():
        parts.pop()  # the one trailing comma
    if any(not p.strip() for p in parts):
        raise MatcherError(f"bad matchers {text!r}: empty matcher between commas")
    return tuple(parse_matcher(p) for p in parts)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
