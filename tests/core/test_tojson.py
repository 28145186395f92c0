"""``tojson`` quotes a label for a PromQL string (docs/playbooks.md): what it writes must be a
string PromQL's lexer accepts (tests/e2e/test_prometheus_check.py asks the real Prometheus)."""

from __future__ import annotations

import json

from remediator.core.templates import render


def test_tojson_writes_printable_characters_as_they_are_and_escapes_the_rest() -> None:
    value = "api-\U0001F680 café \"q\" \\ <&>' \u2028\u200b\n"
    out = render("{{ labels.job | tojson }}", {"labels": {"job": value}})
    assert out == '"api-\U0001F680 café \\"q\\" \\\\ \\u003c\\u0026\\u003e\\u0027 \\u2028\\u200b\\n"'
    assert json.loads(out) == value  # still JSON, for any other use
    assert "\\ud83d" not in out  # no surrogate pair: PromQL refuses one (HTTP 400)
