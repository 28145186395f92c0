"""Replay's input: a history file read as events in time order (see :mod:`remediator.replay`
for the format, the ordering window and the errors).

Apart from the engine so that reading needs only the core: a long history is read by a second
process (:mod:`remediator.replay_feed`), which imports this and not the daemon's pipeline,
store and executors (half the memory, and 0.15 s of imports instead of 0.55 s).
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Literal

import msgspec

from remediator.core.alerts import (
    Alert,
    WebhookPayload,
    _taking_what_can_be_taken,
    format_time,
    parse_time,
)
from remediator.core.errors import PayloadError
from remediator.core.frozen import fast_frozen
from remediator.core.payload_codec import PayloadDecoder
from remediator.ports import ReceivedAlert

Control = Literal["pause", "resume"]
DEFAULT_REORDER_WINDOW = 300.0


class ReplayInputError(Exception):
    """An input line that cannot be replayed; printed as ``path:line: reason``."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@fast_frozen
@dataclass(frozen=True)
class Event:
    at: datetime
    line: int
    alerts: tuple[ReceivedAlert, ...] = ()
    control: Control | None = None
    #: ``at`` is only the earliest the payload can have been sent: a bare payload's newest alert
    #: time (a wrapped one's ``received_at``, a control line's ``at`` are exact).  Alertmanager
    #: re-sends a still-firing group at every ``repeat_interval`` with nothing newer in it, so
    #: such a line may come hours after its time; :func:`read_events` then moves it later.
    at_least: bool = False
    #: The delivery's alerts not taken, each as the reason the webhook refuses it with
    #: (``body.alerts[1].startsAt: ...``): live, the webhook takes the others and refuses these
    #: alone, so replay does too, and says so (``path:line: reason``) rather than stop.
    refused: tuple[str, ...] = ()

    def moved_to(self, at: datetime) -> Event:
        """The event received at ``at`` instead (a bare payload's time is a lower bound)."""
        return Event(at, self.line, tuple(ReceivedAlert(r.alert, at, r.receiver, r.group_key, r.external_url)
                                          for r in self.alerts), self.control, self.at_least, self.refused)


# -- input ---------------------------------------------------------------------------


def _event_time(alerts: tuple[Alert, ...]) -> datetime | None:
    """When a bare payload was sent: no earlier than its newest alert start or end."""
    return max((a.ends_at if a.status == "resolved" and a.ends_at else a.starts_at for a in alerts), default=None)


def parse_event(obj: Any, line: int) -> Event | None:
    """One decoded input line as an event (None for a bare payload with no alerts).

    Raises PayloadError with the reason; the caller adds ``path:line``.
    """
    if not isinstance(obj, dict):
        raise PayloadError("expected a JSON object (a webhook payload, a wrapped payload or a control line)")
    if "control" in obj:
        control = obj["control"]
        if control not in ("pause", "resume"):
            raise PayloadError(f"control must be 'pause' or 'resume', not {control!r}")
        if not isinstance(obj.get("at"), str):
            raise PayloadError('a control line needs "at": an RFC 3339 time')
        return Event(parse_time(obj["at"]), line, control=control)
    body, stamp = (obj["payload"], obj.get("received_at")) if "payload" in obj else (obj, None)
    if stamp is not None and not isinstance(stamp, str):
        raise PayloadError("received_at must be an RFC 3339 string")
    # As the webhook takes a delivery: its good alerts, refusing a bad one alone; and only the
    # payload is checked for bad Unicode, the rest of the line (ignored keys) may hold anything.
    return _payload_event(_taking_what_can_be_taken(body, unicode=True), stamp, line)


def _payload_event(payload: WebhookPayload, stamp: str | None, line: int) -> Event | None:
    at = parse_time(stamp) if stamp is not None else _event_time(payload.alerts)
    if at is None:
        return None
    received = (ReceivedAlert(a, at, payload.receiver, payload.group_key, payload.external_url) for a in payload.alerts)
    return Event(at, line, tuple(received), at_least=stamp is None, refused=payload.refused)


class _Line(msgspec.Struct):
    """What tells an input line's kind (an absent key is an empty Raw); the rest is skipped."""

    payload: msgspec.Raw = msgspec.Raw()
    control: msgspec.Raw = msgspec.Raw()
    received_at: Any = None


class _FastLines:
    """The compiled path for a payload line (the webhook's own decoder, :mod:`remediator.core.payload_codec`),
    some 20 times cheaper than ``json`` + jsonschema, which cost a fifth of a long replay.

    As on the webhook, it only ever accepts: a line it does not take (a control line, anything
    invalid, escapes of surrogates or huge numbers, which ``json`` reads differently) goes to
    :func:`parse_event`, which decides and explains it as it always did."""

    _SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
    _HUGE_NUMBER = re.compile(rb"[0-9]{4300}")

    def __init__(self) -> None:
        self._lines = msgspec.json.Decoder(_Line)
        self._payloads = PayloadDecoder()

    def decode(self, raw: bytes, line: int) -> Event | Literal[False] | None:
        """The line's event (None: a bare payload with no alerts), or False: not decided here."""
        # Each searched only where it could be: one regex over every line was a sixth of decoding it
        if (b"\\u" in raw and self._SURROGATE.search(raw)) or (len(raw) >= 4300 and self._HUGE_NUMBER.search(raw)):
            return False
        try:
            head = self._lines.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False
        if len(head.control) or not (head.received_at is None or isinstance(head.received_at, str)):
            return False
        body = bytes(head.payload) if len(head.payload) else raw
        payload = self._payloads.decode(body)
        if payload is None:
            return False
        return _payload_event(payload, head.received_at if len(head.payload) else None, line)


def _decode(raw: bytes, path: str, line: int, fast: _FastLines | None = None) -> Event | None:
    try:
        event = fast.decode(raw, line) if fast is not None else False
        if event is not False:
            return event
        return parse_event(json.loads(raw.rstrip(b"\r\n")), line)
    except UnicodeDecodeError as exc:
        raise ReplayInputError(path, line, f"not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ReplayInputError(path, line, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ReplayInputError(path, line, "JSON nested too deeply") from None
    except PayloadError as exc:
        raise ReplayInputError(path, line, str(exc)) from None


def read_events(
    stream: BinaryIO, path: str, *, reorder_window: float = DEFAULT_REORDER_WINDOW
) -> Iterator[Event]:
    """Stream events in time order, sorting within ``reorder_window`` seconds.

    An exact time (``received_at``, a control line's ``at``) earlier than what was already
    released is an error: deciding it later than it happened would be wrong.  A bare payload's
    time is only a lower bound (see :attr:`Event.at_least`): one later than that bound, at the
    time last released, is as true, and is what it takes to replay a raw capture holding
    Alertmanager's ``repeat_interval`` re-sends (each refused the whole history before).
    """
    window = timedelta(seconds=reorder_window)
    heap: list[tuple[datetime, int, Event]] = []
    released: datetime | None = None
    newest: datetime | None = None
    horizon = datetime.min.replace(tzinfo=UTC)  # newest - window: events up to it are released
    fast = _FastLines()
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        event = _decode(raw, path, number, fast)
        if event is None:
            continue
        if released is not None and event.at < released and event.at_least:
            event = event.moved_to(released)
        elif released is not None and event.at < released:
            raise ReplayInputError(
                path,
                number,
                f"event at {format_time(event.at)} is earlier than {format_time(released)}, already replayed: "
                f"the input may be out of order by at most {reorder_window:.0f}s (sort it, or widen the window)",
            )
        heapq.heappush(heap, (event.at, number, event))
        if newest is None or event.at > newest:
            newest, horizon = event.at, event.at - window
        while heap and heap[0][0] <= horizon:
            released, _, ready = heapq.heappop(heap)
            yield ready
    while heap:
        yield heapq.heappop(heap)[2]
