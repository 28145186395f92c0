"""Go RE2 regular expressions, as Alertmanager compiles them, translated to Python ``re``.

A playbook matcher must select exactly the alerts that the same matcher selects in
Alertmanager, but Python's ``re`` reads some RE2 syntax differently:

* ``$`` (without ``(?m)``) is the end of the text in RE2; Python also lets it match
  before a trailing newline.  RE2's ``\\z`` is spelled ``\\Z`` in Python.
* RE2 allows flag groups such as ``(?i)`` anywhere; Python only at the very start.
* ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only in RE2.
* ``[[:alpha:]]``, ``\\Q...\\E``, ``\\x{...}``, octal ``\\12`` and ``(?<name>...)`` exist only in RE2;
  ``x{,3}`` is a literal in RE2 but a repeat in Python.

Constructs RE2 rejects (look-around, back-references, possessive or atomic groups,
conditionals) are rejected here too, so a playbook never means something Alertmanager
cannot express.  What Python cannot express (``\\pL``, ``(?U)``) fails to compile and is
reported as an invalid regex: stricter, never different.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import re2  # type: ignore[import-untyped]

from remediator.core.errors import MatcherError

_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_GROUP_NAME = re.compile(r"\(\?P?<([A-Za-z0-9_]+)>")
_HEX_BRACED = re.compile(r"\\x\{([0-9A-Fa-f]{1,8})\}")
_OCTAL = re.compile(r"\\(0[0-7]{0,2}|[1-7][0-7]{1,2})")
_SHORTHAND = "dDwWsSbB"
_PYTHON_ONLY_ESCAPES = {"Z": "use \\z for the end of the text", "u": "", "U": "", "N": ""}
_MAX_REPEAT = 1000


def _unsupported(regex: str, what: str) -> MatcherError:
    return MatcherError(f"regex {regex!r} uses {what}, which Alertmanager's RE2 does not support")


@dataclass
class _Frame:
    """One group level: its RE2 flags and the Python scoped-flag groups opened in it."""

    multiline: bool
    pending: list[str] = field(default_factory=list)


def _literal(ch: str) -> str:
    return re.escape(ch)


def _class(regex: str, i: int) -> tuple[str, int]:
    """Translate the character class starting at ``regex[i] == '['``; return it and the index after."""
    out = ["["]
    j = i + 1
    if regex.startswith("^", j):
        out.append("^")
        j += 1
    first = True
    shorthand = False
    while j < len(regex):
        ch = regex[j]
        if ch == "]" and not first:
            out.append("]")
            text = "".join(out)
            return (f"(?a:{text})" if shorthand else text), j + 1
        first = False
        end = regex.find(":]", j + 2) if regex.startswith("[:", j) else -1
        if end != -1:
            name = regex[j + 2 : end]
            if name.startswith("^") and name[1:] in _POSIX:
                raise MatcherError(f"invalid regex {regex!r}: write [^[:{name[1:]}:]] instead of [[:{name}:]] here")
            if name not in _POSIX:
                raise MatcherError(f"invalid regex {regex!r}: unknown character class [:{name}:]")
            out.append(_POSIX[name])
            j = end + 2
            continue
        if ch == "\\" and j + 1 < len(regex):
            nxt = regex[j + 1]
            if nxt in _SHORTHAND:
                shorthand = True
            escape, j = _escape(regex, j, in_class=True)
            out.append(escape)
            continue
        out.append("\\" + ch if ch in "[&~|" else ch)
        j += 1
    raise MatcherError(f"invalid regex {regex!r}: missing closing ]")


def _escape(regex: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """Translate the escape at ``regex[i] == '\\'``."""
    if i + 1 >= len(regex):
        raise MatcherError(f"invalid regex {regex!r}: trailing backslash")
    nxt = regex[i + 1]
    if nxt in _PYTHON_ONLY_ESCAPES:
        hint = _PYTHON_ONLY_ESCAPES[nxt]
        raise _unsupported(regex, f"the escape \\{nxt}" + (f" ({hint})" if hint else ""))
    if nxt in "pP":
        raise MatcherError(f"invalid regex {regex!r}: Unicode classes (\\{nxt}) are not supported here")
    if nxt == "z" and not in_class:
        return r"\Z", i + 2
    if nxt == "Q" and not in_class:
        end = regex.find(r"\E", i + 2)
        text = regex[i + 2 :] if end == -1 else regex[i + 2 : end]
        return "".join(_literal(c) for c in text), len(regex) if end == -1 else end + 2
    if nxt == "x" and (m := _HEX_BRACED.match(regex, i)):
        code = int(m.group(1), 16)
        if code > 0x10FFFF:
            raise MatcherError(f"invalid regex {regex!r}: escape {m.group(0)} is beyond Unicode")
        return _literal(chr(code)), m.end()
    if nxt.isdigit():
        if m := _OCTAL.match(regex, i):
            return _literal(chr(int(m.group(1), 8))), m.end()
        raise _unsupported(regex, f"the back-reference \\{nxt}")
    if nxt in _SHORTHAND and not in_class:
        return f"(?a:\\{nxt})", i + 2
    return regex[i : i + 2], i + 2


def _group(regex: str, i: int, frames: list[_Frame], out: list[str]) -> int:
    """Translate a group opening at ``regex[i] == '('``; return the index after it."""
    top = frames[-1]
    if not regex.startswith("(?", i):
        out.append("(")
        frames.append(_Frame(top.multiline))
        return i + 1
    for prefix, what in (
        ("(?=", "look-ahead"),
        ("(?!", "negative look-ahead"),
        ("(?<=", "look-behind"),
        ("(?<!", "negative look-behind"),
        ("(?P=", "a named back-reference"),
        ("(?(", "a conditional group"),
        ("(?#", "a comment group"),
        ("(?>", "an atomic group"),
    ):
        if regex.startswith(prefix, i):
            raise _unsupported(regex, what)
    if regex.startswith("(?:", i):
        out.append("(?:")
        frames.append(_Frame(top.multiline))
        return i + 3
    if m := _GROUP_NAME.match(regex, i):
        out.append(f"(?P<{m.group(1)}>")
        frames.append(_Frame(top.multiline))
        return m.end()
    m = _FLAGS.match(regex, i)
    if m is None:
        raise MatcherError(f"invalid regex {regex!r}: bad group at position {i}")
    on, off, kind = m.group(1), m.group(2) or "", m.group(3)
    unknown = set(on + off) - set("imsU")
    if unknown:
        raise MatcherError(f"invalid regex {regex!r}: unknown flag(s) {''.join(sorted(unknown))}")
    if "U" in on + off:
        raise MatcherError(f"invalid regex {regex!r}: the ungreedy flag U is not supported here")
    if not on and not off:
        raise MatcherError(f"invalid regex {regex!r}: empty flag group")
    multiline = ("m" in on) or (top.multiline and "m" not in off)
    scoped = f"(?{on}{'-' + off if off else ''}:"
    out.append(scoped)
    if kind == ":":
        frames.append(_Frame(multiline))
    else:  # (?flags) lasts until the end of the enclosing group, across alternatives
        top.pending.append(scoped)
        top.multiline = multiline
    return m.end()


def _repeat(regex: str, i: int) -> tuple[str, int] | None:
    """A valid RE2 ``{n}``, ``{n,}`` or ``{n,m}`` at ``i``, else None (RE2 reads ``{`` literally)."""
    m = _REPEAT.match(regex, i)
    if m is None:
        return None
    counts = [int(m.group(1))] + ([int(m.group(3))] if m.group(3) else [])
    if max(counts) > _MAX_REPEAT:
        raise MatcherError(f"invalid regex {regex!r}: repeat count {m.group(0)} exceeds {_MAX_REPEAT}")
    if len(counts) == 2 and counts[1] < counts[0]:
        raise MatcherError(f"invalid regex {regex!r}: invalid repeat count {m.group(0)}")
    return m.group(0), m.end()


def to_python(regex: str) -> str:
    """Translate RE2 syntax to an equivalent Python pattern, or raise MatcherError."""
    out: list[str] = []
    frames = [_Frame(multiline=False)]
    i = 0
    repeated = 0  # 1 just after a repetition, 2 after its lazy "?": RE2 allows nothing more
    while i < len(regex):
        ch = regex[i]
        repeat = _repeat(regex, i) if ch == "{" else None
        if ch in "*+?" or repeat is not None:
            if repeated == 1 and ch == "?":
                out.append("?")
                i += 1
                repeated = 2
                continue
            if repeated:
                raise _unsupported(regex, f"a repeated repetition (possessive or nested) at position {i}")
            token, i = repeat if repeat is not None else (ch, i + 1)
            out.append(token)
            repeated = 1
            continue
        repeated = 0
        if ch == "\\":
            token, i = _escape(regex, i, in_class=False)
            out.append(token)
        elif ch == "[":
            token, i = _class(regex, i)
            out.append(token)
        elif ch == "(":
            i = _group(regex, i, frames, out)
        elif ch == ")":
            if len(frames) == 1:
                raise MatcherError(f"invalid regex {regex!r}: unexpected ) at position {i}")
            out.append(")" * len(frames.pop().pending) + ")")
            i += 1
        elif ch == "|":
            top = frames[-1]
            out.append(")" * len(top.pending) + "|" + "".join(top.pending))
            i += 1
        elif ch == "$":
            out.append("$" if frames[-1].multiline else r"\Z")
            i += 1
        elif ch == "{":
            out.append(r"\{")
            i += 1
        else:
            out.append(ch)
            i += 1
    if len(frames) > 1:
        raise MatcherError(f"invalid regex {regex!r}: missing closing )")
    out.append(")" * len(frames[0].pending))
    return "".join(out)


class Regex(Protocol):
    """A compiled matcher regex: Python's ``re`` or RE2's own engine, the same API and meaning."""

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, string: str) -> object | None: ...

    def search(self, string: str) -> object | None: ...


# A repeated group, ``(\w+-?)+``, or two unbounded repeats in one pattern: where a backtracking
# engine can take exponential (or high polynomial) time.  Read off the translated pattern loosely
# (an escaped or bracketed ``*`` counts too): a false alarm only costs the slower engine.
_REPEATED_GROUP = re.compile(r"\)(?:[*+]|\{\d*,\})")
_UNBOUNDED = re.compile(r"[*+]|\{\d*,\}")


def compile_re2(regex: str) -> Regex:
    """Compile like Alertmanager does (``^(?:regex)$``); match with ``fullmatch``.

    Python's ``re`` backtracks, where Alertmanager's RE2 takes linear time: an ordinary-looking
    ``pod=~"(\\w+-?)+-canary"`` took 0.7 s on a 29-character pod name and 33 s on another, on the
    event loop.  Such patterns are matched by RE2 itself (google-re2); the rest by ``re``, some 25
    times faster per call (0.3 µs against 7 µs), which the matcher's budget needs.  Both are given
    only what Python can express (see the module's notes): stricter than Alertmanager, never
    different."""
    pattern = to_python(regex)
    try:
        compiled = re.compile(f"(?:{pattern})")
    except re.error as exc:
        raise MatcherError(f"invalid regex {regex!r}: {exc.msg}") from None
    except (OverflowError, RecursionError):
        raise MatcherError(f"invalid regex {regex!r}: too complex") from None
    if not (_REPEATED_GROUP.search(pattern) or len(_UNBOUNDED.findall(pattern)) > 1):
        return compiled
    try:
        linear: Regex = re2.compile(f"(?:{regex})")
    except re2.error as exc:
        raise MatcherError(f"invalid regex {regex!r}: {exc}") from None
    return linear


def compile_search(regex: str) -> Regex:
    """Compile for ``search`` over a large text (an HTTP body, up to 1 MiB): always RE2's engine.

    What :func:`compile_re2` gains with ``re`` (a fraction of a microsecond per short label value)
    is nothing on a body, and there even one unbounded repeat costs ``re`` quadratic time in the
    length of a line: ``.*"status":"UP"`` over a 1 MiB one-line answer held the event loop for
    eleven minutes (no intake, leases lapsing, the liveness probe failing).  Checked as
    :func:`compile_re2` checks (the same errors); searched in linear time."""
    compile_re2(regex)
    try:
        linear: Regex = re2.compile(f"(?:{regex})")
        return linear
    except re2.error as exc:
        raise MatcherError(f"invalid regex {regex!r}: {exc}") from None
