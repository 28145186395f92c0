"""Query-parameter and body parsing with the apiserver's rules (strconv.ParseBool, dryRun=All only)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from remediator.testing.kube import status as st

#: strconv.ParseBool, which the apiserver uses for boolean query parameters.
TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key)
    if value is None or value == "":
        return False
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise st.bad_request(f"invalid value {value!r} for boolean query parameter {key!r}")


def integer(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise st.bad_request(f"invalid value {value!r} for integer query parameter {key!r}") from None


def dry_run(request: web.Request, body: Any = None) -> bool:
    """``dryRun`` from the query (or a DeleteOptions body); "All" is the only value the apiserver knows."""
    values = list(request.query.getall("dryRun", []))
    if isinstance(body, dict) and isinstance(body.get("dryRun"), list):
        values += [str(v) for v in body["dryRun"]]
    for value in values:
        if value != "All":
            raise st.bad_request(f'Invalid dryRun value: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def decode(raw: bytes) -> Any:
    """A body as JSON when it is JSON, else as text (the request log keeps whatever was sent)."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
