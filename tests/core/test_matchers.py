"""Label matchers mean exactly what they mean in Alertmanager.

The cases are ported, as data, from Alertmanager's ``pkg/labels`` tests
(``matcher_test.go``, ``parse_test.go``), ``matcher/parse/parse_test.go`` and the
documented examples at https://prometheus.io/docs/alerting/latest/configuration/#matcher,
plus the places where Python's ``re`` reads RE2 syntax differently.
"""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest

from remediator.core.alerts import Alert, Status
from remediator.core.errors import MatcherError
from remediator.core.matchers import Matcher, Op, matches_all, parse_matcher, parse_matchers
from remediator.core.playbooks import Match, MatchStatus

# (matcher as written in a playbook, the alert's labels, does it select the alert?)
MATCH_TABLE: list[tuple[str, dict[str, str], bool]] = [
    # every operator (pkg/labels TestMatcher)
    ('foo="bar"', {"foo": "bar"}, True),
    ('foo="bar"', {"foo": "foo-bar"}, False),
    ('foo!="bar"', {"foo": "bar"}, False),
    ('foo!="bar"', {"foo": "foo-bar"}, True),
    ('foo=~"bar"', {"foo": "bar"}, True),
    ('foo=~"bar"', {"foo": "foo-bar"}, False),
    ('foo=~".*bar"', {"foo": "foo-bar"}, True),
    ('foo!~"bar"', {"foo": "bar"}, False),
    ('foo!~"bar"', {"foo": "foo-bar"}, True),
    ('foo!~".*bar"', {"foo": "foo-bar"}, False),
    ('foo=~"foo.bar"', {"foo": "foo-bar"}, True),
    ('foo=~"foo\\\\.bar"', {"foo": "foo-bar"}, False),
    ('foo=~"foo\\\\.bar"', {"foo": "foo.bar"}, True),
    ('foo="foo\\nbar"', {"foo": "foo\nbar"}, True),
    ('foo=~"foo.bar"', {"foo": "foo\nbar"}, False),
    ('foo=~"(?s)foo.bar"', {"foo": "foo\nbar"}, True),
    ('foo="~!=\\""', {"foo": '~!="'}, True),
    # full anchoring: ^(?:re)$, for every alternative
    ('foo=~"foo"', {"foo": "foobar"}, False),
    ('foo=~"foo"', {"foo": "xfoo"}, False),
    ('foo=~"foo|bar"', {"foo": "foo"}, True),
    ('foo=~"foo|bar"', {"foo": "bar"}, True),
    ('foo=~"foo|bar"', {"foo": "foobar"}, False),
    ('foo=~"foo|bar"', {"foo": "xbar"}, False),
    ('foo=~"foo|bar"', {"foo": "foox"}, False),
    ('foo!~"foo|bar"', {"foo": "foobar"}, True),
    ('statuscode=~"5.."', {"statuscode": "503"}, True),
    ('statuscode=~"5.."', {"statuscode": "5030"}, False),
    # a missing label is the empty string
    ('a=""', {}, True),
    ('a=""', {"a": ""}, True),
    ('a=""', {"a": "x"}, False),
    ('a!=""', {}, False),
    ('a!=""', {"a": "x"}, True),
    ('a=~".*"', {}, True),
    ('a=~".+"', {}, False),
    ('a!~".+"', {}, True),
    ('a=~""', {}, True),
    ('a!="x"', {}, True),
    ('a="x"', {"b": "x"}, False),
    # quoting and escaping (OpenMetrics rules: \" \\ \n; other backslashes are literal)
    ('a="x\\"y"', {"a": 'x"y'}, True),
    ('a="back\\\\slash"', {"a": "back\\slash"}, True),
    ('a="tab\\t"', {"a": "tab\\t"}, True),
    ('a="tab\\t"', {"a": "tab\t"}, False),
    ("a=plain", {"a": "plain"}, True),
    ("a=~x|y", {"a": "y"}, True),
    ("a=bar\\n", {"a": "bar\n"}, True),
    ('a="🙂"', {"a": "🙂"}, True),
    ('  a   =~   "x"  ', {"a": "x"}, True),
    # a trailing newline in the value: RE2's $ is the end of the text, never "before a final newline"
    ('a=~"foo"', {"a": "foo\n"}, False),
    ('a=~"foo$"', {"a": "foo\n"}, False),
    ('a=~"foo$"', {"a": "foo"}, True),
    ('a=~"foo$\\\\n"', {"a": "foo\n"}, False),
    ('a=~"foo\\n?"', {"a": "foo\n"}, True),
    ('a=~"(?m)foo$\\\\n"', {"a": "foo\n"}, True),
    ('a=~"foo\\\\z"', {"a": "foo"}, True),
    ('a=~"foo\\\\z"', {"a": "foo\n"}, False),
    ('a="foo"', {"a": "foo\n"}, False),
    # RE2 syntax that Python's re reads differently
    ('a=~"(?i)critical"', {"a": "CRITICAL"}, True),
    ('a=~"critical"', {"a": "CRITICAL"}, False),
    ('a=~"warning|(?i)critical"', {"a": "Critical"}, True),
    ('a=~"warning|(?i)critical"', {"a": "WARNING"}, False),
    ('a=~"x(?i)y|z"', {"a": "Z"}, True),
    ('a=~"x(?i)y|z"', {"a": "XY"}, False),
    ('a=~"(?i:x)y"', {"a": "XY"}, False),
    ('a=~"[[:upper:]]+"', {"a": "ABC"}, True),
    ('a=~"[[:upper:]]+"', {"a": "AbC"}, False),
    ('a=~"x{,3}"', {"a": "x{,3}"}, True),
    ('a=~"x{,3}"', {"a": "xx"}, False),
    ('a=~"x{2,3}"', {"a": "xxx"}, True),
    ('a=~"\\\\d+"', {"a": "\u0661\u0662"}, False),
    ('a=~"\\\\d+"', {"a": "12"}, True),
    ('a=~"\\\\Q1.5\\\\E"', {"a": "1.5"}, True),
    ('a=~"\\\\Q1.5\\\\E"', {"a": "125"}, False),
    ('a=~"\\\\x{41}"', {"a": "A"}, True),
    ('a=~"[]x]"', {"a": "]"}, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH_TABLE, ids=[f"{t}~{ls}" for t, ls, _ in MATCH_TABLE])
def test_matcher_selects_exactly_what_alertmanager_selects(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


def test_the_table_is_large_and_covers_every_operator() -> None:
    assert len(MATCH_TABLE) >= 30
    assert {parse_matcher(t).op for t, _, _ in MATCH_TABLE} == set(Op)
    assert {e for _, _, e in MATCH_TABLE} == {True, False}


# (input of parse_matchers, the matchers it means)
PARSE_TABLE: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("{}", []),
    ("", []),
    ("{foo='}", [("foo", "=", "'")]),
    ("{foo=`}", [("foo", "=", "`")]),
    ('{foo=\\"}', [("foo", "=", '"')]),
    ("{foo=bar}", [("foo", "=", "bar")]),
    ('{foo="bar"}', [("foo", "=", "bar")]),
    ("{foo=~bar.*}", [("foo", "=~", "bar.*")]),
    ('{foo=~"bar.*"}', [("foo", "=~", "bar.*")]),
    ("{foo!=bar}", [("foo", "!=", "bar")]),
    ('{foo!="bar"}', [("foo", "!=", "bar")]),
    ("{foo!~bar.*}", [("foo", "!~", "bar.*")]),
    ('{foo!~"bar.*"}', [("foo", "!~", "bar.*")]),
    ('{foo="bar", baz!="quux"}', [("foo", "=", "bar"), ("baz", "!=", "quux")]),
    ('{foo="bar",baz!~".*quux", derp="wat"}', [("foo", "=", "bar"), ("baz", "!~", ".*quux"), ("derp", "=", "wat")]),
    ('{foo=""}', [("foo", "=", "")]),
    ('{foo="bar,quux", job="job1"}', [("foo", "=", "bar,quux"), ("job", "=", "job1")]),
    ('{foo = "bar", dings != "bums", }', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
    ("foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
    ('{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}',
     [("quote", "=", "She said: \"Hi, ladies! That's gender-neutral…\"")]),
    ('statuscode=~"5.."', [("statuscode", "=~", "5..")]),
    ("tricky=~~~", [("tricky", "=~", "~~")]),
    ('trickier==\\\\=\\=\\"', [("trickier", "=", '=\\=\\="')]),
    ('contains_quote != "\\"" , contains_comma !~ "foo,bar" , ',
     [("contains_quote", "!=", '"'), ("contains_comma", "!~", "foo,bar")]),
    ("{foo=bar\\t}", [("foo", "=", "bar\\t")]),
    ("{foo=bar\\n}", [("foo", "=", "bar\n")]),
    ("{foo=bar\\}", [("foo", "=", "bar\\")]),
    ("{foo=bar\\\\}", [("foo", "=", "bar\\")]),
    ('{foo=bar\\"}', [("foo", "=", 'bar"')]),
    ("job=", [("job", "=", "")]),
    ('{alertname="Watchdog", severity=~"warning|critical",}',
     [("alertname", "=", "Watchdog"), ("severity", "=~", "warning|critical")]),
    ('{\n   alertname = "Watchdog",\n   severity =~ "warning|critical",\n}',
     [("alertname", "=", "Watchdog"), ("severity", "=~", "warning|critical")]),
    # quoted label names are Alertmanager's UTF-8 syntax: values after them are Go string literals
    ('{"foo"="bar"}', [("foo", "=", "bar")]),
    ('{"foo!"!="bar"}', [("foo!", "!=", "bar")]),
    ('{"foo"=~"\\\\d+"}', [("foo", "=~", "\\d+")]),
    ('{"foo"="bar\\t"}', [("foo", "=", "bar\t")]),
    ('{"foo"="\\xf0\\x9f\\x99\\x82"}', [("foo", "=", "🙂")]),
    ('{"foo"="\\U0001f642"}', [("foo", "=", "🙂")]),
    ('"foo"="bar",', [("foo", "=", "bar")]),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_TABLE, ids=[t for t, _ in PARSE_TABLE])
def test_parse_matchers_reads_the_alertmanager_syntax(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert [(m.name, m.op.value, m.value) for m in parse_matchers(text)] == expected


# (input, a fragment of the reason)
ERROR_TABLE: list[tuple[str, str]] = [
    (",", "empty matcher"),
    ("{,}", "empty matcher"),
    ("a=1,,b=2", "empty matcher"),
    ('job="value', "unterminated quoted value"),
    ('job=value"', "unescaped double quote"),
    ('trickier==\\\\=\\=\\""', "unescaped double quote"),
    ('contains_unescaped_quote = foo"bar', "unescaped double quote"),
    ('{invalid-name = "valid label"}', "expected a label name"),
    ('{foo=~"invalid[regexp"}', "invalid regex"),
    ('"{foo=\\"bar"}', "unexpected closing brace"),
    ('"foo=\\"bar"', "expected a label name"),
    ("{{foo=", "missing closing brace"),
    ('{alertname="Watchdog", severity=~"warning|critical"', "missing closing brace"),
    ('alertname="Watchdog", severity=~"warning|critical"}', "unexpected closing brace"),
    ('{{alertname="Watchdog", severity=~"warning|critical",}}', "expected a label name"),
    ('{"foo"=bar\\n}', "must be double-quoted"),
    ('{"foo"="\\xf0\\x9f"}', "not valid UTF-8"),
    ('{foo="bar"', "missing closing brace"),
]


@pytest.mark.parametrize(("text", "reason"), ERROR_TABLE, ids=[t for t, _ in ERROR_TABLE])
def test_parse_matchers_rejects_what_alertmanager_rejects(text: str, reason: str) -> None:
    with pytest.raises(MatcherError, match=reason):
        parse_matchers(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # bad operators
        ('severity=="critical"', "the operator must be one of = != =~ !~"),
        ('severity~="critical"', "one of = != =~ !~"),
        ('severity:"critical"', "one of = != =~ !~"),
        ('severity "critical"', "one of = != =~ !~"),
        ('="critical"', "expected a label name"),
        ('""="x"', "empty label name"),
        # unterminated quotes
        ('a="b', "unterminated quoted value"),
        ('a="b\\"', "unterminated quoted value"),
        ('a="b"c"', "unescaped double quote"),
        # invalid regexes, with the regex named
        ('a=~"("', "invalid regex '\\('"),
        ('a=~"x)"', "invalid regex 'x\\)'"),
        ('a=~"["', "invalid regex '\\['"),
        ('a=~"[z-a]"', "invalid regex"),
        ('a=~"*"', "invalid regex"),
        ('a=~"x{1001}"', "repeat count"),
        ('a=~"[[:nope:]]"', "unknown character class"),
        # valid for Python, not for Alertmanager's RE2
        ('a=~"x(?=y)"', "look-ahead, which Alertmanager's RE2 does not support"),
        ('a=~"x(?!y)"', "negative look-ahead"),
        ('a=~"(?<=x)y"', "look-behind"),
        ('a=~"(?<!x)y"', "negative look-behind"),
        ('a=~"(x)\\\\1"', "back-reference"),
        ('a=~"(?P<n>x)(?P=n)"', "named back-reference"),
        ('a=~"x*+"', "possessive or nested"),
        ('a=~"(?>x)"', "atomic group"),
        ('a=~"(?(1)x|y)"', "conditional"),
        ('a=~"x\\\\Z"', "\\\\z for the end of the text"),
        ('a=~"\\\\u0041"', "escape \\\\u"),
        ('a=~"(?x)a b"', "unknown flag"),
    ],
)
def test_parse_matcher_errors_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(MatcherError, match=reason):
        parse_matcher(text)


def test_an_escaped_parenthesis_is_not_mistaken_for_look_ahead() -> None:
    """``\\(?=`` is an optional literal parenthesis followed by ``=``: valid RE2."""
    m = parse_matcher('a=~"x\\\\(?=y"')
    assert m.matches({"a": "x(=y"}) and m.matches({"a": "x=y"}) and not m.matches({"a": "xy"})
    assert parse_matcher('a=~"\\\\\\\\1"').matches({"a": "\\1"})  # an escaped backslash, then "1"


@pytest.mark.parametrize(
    "text",
    ['a="plain"', 'a!="with \\"quotes\\""', 'a=~"back\\\\slash|x"', 'a!~"new\\nline"', '"ütf"="v"', '"a b"!~"x|y"'],
)
def test_str_renders_a_matcher_that_parses_back_to_itself(text: str) -> None:
    m = parse_matcher(text)
    assert parse_matcher(str(m)) == m


def test_matcher_create_validates_like_the_parser() -> None:
    assert Matcher.create("severity", "=~", "warning|critical").matches({"severity": "critical"})
    assert not Matcher.create("severity", Op.NRE, "warning|critical").matches({"severity": "critical"})
    with pytest.raises(ValueError):
        Matcher.create("severity", "==", "x")
    with pytest.raises(MatcherError, match="look-ahead"):
        Matcher.create("severity", Op.RE, "(?=x)")


def test_all_matchers_must_match() -> None:
    ms = parse_matchers('{alertname="Watchdog", severity=~"warning|critical"}')
    assert matches_all(ms, {"alertname": "Watchdog", "severity": "critical"})
    assert not matches_all(ms, {"alertname": "Watchdog", "severity": "none"})
    assert matches_all((), {"anything": "goes"})


def _alert(status: Status, **labels: str) -> Alert:
    return Alert(fingerprint="f" * 16, status=status, labels=MappingProxyType(labels))


@pytest.mark.parametrize(
    ("status", "firing", "resolved"),
    [("firing", True, False), ("resolved", False, True), ("any", True, True)],
)
def test_match_selects_by_status(status: MatchStatus, firing: bool, resolved: bool) -> None:
    match = Match(parse_matchers('alertname="ServiceDown", namespace!~"kube-.*"'), status)
    assert match.selects(_alert("firing", alertname="ServiceDown", namespace="shop")) is firing
    assert match.selects(_alert("resolved", alertname="ServiceDown", namespace="shop")) is resolved
    # the status is never enough on its own: the matchers still have to agree
    assert not match.selects(_alert("firing", alertname="ServiceDown", namespace="kube-system"))
    assert not match.selects(_alert("resolved", alertname="ServiceDown", namespace="kube-system"))


def test_match_defaults_to_firing() -> None:
    match = Match(parse_matchers('alertname="X"'))
    assert match.selects(_alert("firing", alertname="X"))
    assert not match.selects(_alert("resolved", alertname="X"))


@pytest.mark.parametrize(("regex", "value", "matches"), [
    (r"(\w+-?)+-canary", "checkout-frontend-7d9f8b6c5d-x2x4z", False),  # 33 s on Python's engine
    (r"(\w+-?)+-canary", "web-" * 1000 + "x", False),  # a label of 4,001 characters
    (r"(\w+-?)+-canary", "web-api-canary", True),
    (r"(a|a)*b", "a" * 4000, False),
    (r".*a.*a.*a.*b", "a" * 4000, False),
])
def test_a_regex_that_would_backtrack_is_matched_in_linear_time_as_alertmanager_does(
        regex: str, value: str, matches: bool) -> None:
    """Alertmanager's RE2 takes linear time; Python's re backtracks, exponentially on a repeated
    group: an ordinary-looking matcher held the event loop for seconds on an ordinary pod name.
    Without the linear engine these do not finish within the test timeout."""
    m = parse_matcher(f'pod=~"{regex}"')
    assert m.matches({"pod": value}) is matches


def test_patterns_that_cannot_backtrack_keep_pythons_faster_engine() -> None:
    from remediator.core.regex import compile_re2

    for regex in ("shop|payments|checkout", "web-.+", ".*-canary", "[a-z]+", "api(-v2)?"):
        assert isinstance(compile_re2(regex), re.Pattern), regex
    for regex in (r"(\w+-?)+-canary", "(a|a)*b", ".*a.*b"):
        assert not isinstance(compile_re2(regex), re.Pattern), regex
