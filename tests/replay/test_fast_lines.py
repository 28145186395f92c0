"""Replay's compiled line decoder leaves to ``json`` what msgspec would read differently: an
escape of a UTF-16 surrogate and a number too long for ``int()``, wherever in the line they are
(here in the wrapper, outside the payload, which its own decoder checks again)."""

from __future__ import annotations

import json

from remediator.replay_input import _FastLines, parse_event

PAYLOAD = {"version": "4", "status": "firing", "receiver": "r", "alerts": [
    {"status": "firing", "labels": {"alertname": "Down"}, "startsAt": "2026-11-01T00:00:00Z"}]}


def _line(**wrapper: object) -> bytes:
    return json.dumps({"received_at": "2026-11-01T00:00:05Z", "payload": PAYLOAD, **wrapper}).encode()


def test_an_escape_of_a_surrogate_anywhere_in_the_line_goes_to_json() -> None:
    fast = _FastLines()
    assert fast.decode(_line(note="\U0001f600"), 1) is False  # json.dumps writes it as \ud83d\ude00
    assert fast.decode(_line(note="\udc00"), 1) is False


def test_a_number_too_long_for_int_anywhere_in_the_line_goes_to_json() -> None:
    fast = _FastLines()
    huge = _line()[:-1] + b', "n": ' + b"7" * 4300 + b"}"
    assert fast.decode(huge, 1) is False
    assert fast.decode(_line()[:-1] + b', "n": ' + b"7" * 4299 + b"}", 1) == parse_event(json.loads(_line()), 1)


def test_other_escapes_are_decided_on_the_compiled_path_as_json_decides_them() -> None:
    fast = _FastLines()
    raw = _line(note="caf\u00e9 \u2603")  # \u00e9 and \u2603: escapes, not surrogates
    assert b"\\u00e9" in raw
    event = fast.decode(raw, 3)
    assert event is not False and event == parse_event(json.loads(raw), 3)
