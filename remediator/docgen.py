"""The configuration reference, docs/configuration.md, generated from :mod:`remediator.settings`.

A hand-written reference drifts the day someone adds a setting.  This one is read off the
settings dataclasses themselves: every key, its type, its default, its range (the field
metadata ``min``/``max``/``above``/``choices`` that settings check at load time) and its
environment variable (``settings.env_names``).  Descriptions come, in this order, from a
field's ``doc`` metadata, :data:`DESCRIPTIONS` below, or the comment on the field's line
in settings.py; tests/test_docs.py fails when docs/configuration.md differs from
what this module generates, and when :data:`DESCRIPTIONS` names a key that no longer exists.

``python -m remediator.docgen --output docs/configuration.md`` (``make docs``) rewrites it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from remediator import settings as settings_module
from remediator.settings import Settings, env_names

#: Descriptions for keys whose field carries neither ``doc`` metadata nor a comment.  Keyed by the
#: dotted path as it is written in the YAML (``channels.<name>.url``, ``guardrails.budgets[].max``).
DESCRIPTIONS: dict[str, str] = {
    # sections whose class has no docstring
    "kubernetes": "The cluster the executor acts on. With a cluster, dry-run is server-side.",
    "guardrails": "Limits shared by every playbook, over all replicas (with `redis_url`). A playbook adds "
    "its own (`guardrails:` in the playbook: allowlist, rate limit, cooldown, ...).",
    "channels.<name>": "Notification channels, by name; playbooks name them in `notify:` and `notify` steps.",
    "worker": "The decision loop and the execution queue.",
    "log": "Logs go to standard error.",
    "listen": "`host:port` the HTTP server binds: webhook, API, `/metrics`, `/healthz`, `/readyz`.",
    "dry_run": "Plan every execution and change nothing: with a cluster each mutation is sent with "
    "`dryRun=All` (server-side dry-run), without one the plan is recorded. Absolute: a playbook's "
    "`guardrails.dry_run` can add dry-run to a live daemon, never lift it.",
    "playbooks": "File or directory of playbooks (`*.yaml`, `*.yml`; `tests/` folders skipped). "
    "Reloaded when it changes; an invalid set is refused and the last good one kept.",
    "data_dir": "Folder of the embedded store (SQLite, which also holds the guardrail state) and, with "
    "`database_url` but no `redis_url`, of the guardrail state file.",
    "database_url": "PostgreSQL DSN (`postgresql://user:password@host:5432/db`), shared by all replicas. "
    "Empty: the embedded SQLite store under `data_dir` (one replica).",
    "redis_url": "Redis URL (`redis://host:6379/0`) of the shared guardrail state: locks, rate limits, "
    "cooldowns, budgets, breakers, kill switch. Empty: embedded (one replica): rows of the embedded store, "
    "changed in the same transaction as the decisions, or a state file under `data_dir` beside PostgreSQL.",
    "public_url": "Base URL people reach the daemon at; notifications link to "
    "`<public_url>/api/v1/executions/<id>`.",
    "webhook.tokens": "Tokens Alertmanager posts alerts with (several at once during a rotation). "
    "They may post alerts and nothing else.",
    "webhook.tokens_file": "File of webhook tokens, one per line (or comma-separated); re-read when it "
    "changes, for rotation.",
    "webhook.max_body_bytes": "Largest webhook body accepted (after decompression); a larger one gets 413.",
    "webhook.insecure_no_auth": "Turn off every token check (also `--insecure-no-auth`). Local experiments only.",
    "api.read_tokens": "Tokens of the read API (`/api/v1/executions`, `/api/v1/decisions`, "
    "`/api/v1/alerts/<fingerprint>`, `/api/v1/guardrails`) and the web UI.",
    "api.read_tokens_file": "File of read tokens, one per line; re-read when it changes.",
    "api.admin_tokens": "Tokens that may also pause and resume (`/api/v1/pause`, `/api/v1/resume`), and read.",
    "api.admin_tokens_file": "File of admin tokens, one per line; re-read when it changes.",
    "api.metrics": "`open`: `/metrics` needs no token (for scrapers); `read`: a read or admin token.",
    "kubernetes.mode": "`auto`: the pod's service account when running in a pod, else `KUBECONFIG`, else "
    "`~/.kube/config`, else no cluster. `incluster` / `kubeconfig`: exactly that, or refuse to start. "
    "`none`: no cluster (dry-run plans only).",
    "kubernetes.kubeconfig": "Kubeconfig path(s), `:`-separated; default `$KUBECONFIG`, then `~/.kube/config`.",
    "kubernetes.context": "Kubeconfig context; default the file's `current-context`.",
    "kubernetes.request_timeout": "Bound on each Kubernetes API call; a hung apiserver is retried, never "
    "waited on forever.",
    "kubernetes.retries": "Attempts per step for 429 (after its `Retry-After`), 5xx and timeouts; 409s and a "
    "controller still catching up are routine and have a budget of their own (10).",
    "prometheus.url": "Base URL of the Prometheus that `prometheus_check` steps query (`http://prometheus:9090`; "
    "a path prefix is kept). Empty: a playbook with a `prometheus_check` is refused at start.",
    "prometheus.timeout": "Bound on one query; a slower answer is a failed attempt, retried at the step's "
    "`interval`.",
    "prometheus.bearer_token_file": "File holding a bearer token sent with every query (re-read at each "
    "check, for rotation). Empty: no `Authorization` header.",
    "guardrails.budgets": "Action budgets shared by all playbooks (below). An execution needs room in every "
    "budget whose scope is `*` or its namespace.",
    "guardrails.budgets[].scope": "`*` (every namespace together) or one namespace.",
    "guardrails.budgets[].max": "Executions allowed in the window.",
    "guardrails.budgets[].per": "The sliding window.",
    "guardrails.max_running": "Executions running at once, over all replicas; `0`: no limit.",
    "guardrails.max_running_per_namespace": "Executions running at once in one namespace; `0`: no limit.",
    "guardrails.breaker_threshold": "Consecutive failed executions of a playbook that open its circuit breaker.",
    "guardrails.breaker_cooloff": "How long an open breaker refuses the playbook before one trial execution "
    "(half-open).",
    "guardrails.paused": "Engage the kill switch at start (recorded in the store and the guardrail state).",
    "channels.<name>.type": "The kind of channel: `webhook` (signed JSON), `slack` (incoming webhook), "
    "`pagerduty` (Events API v2).",
    "channels.<name>.url": "Where to send (webhook, slack). Prefer `url_file`: a Slack URL is a secret.",
    "channels.<name>.url_file": "File holding the URL.",
    "channels.<name>.secret": "HMAC-SHA256 signing secret (webhook); prefer `secret_file`.",
    "channels.<name>.secret_file": "File holding the signing secret.",
    "channels.<name>.routing_key": "Events API v2 routing key (pagerduty); prefer `routing_key_file`.",
    "channels.<name>.routing_key_file": "File holding the routing key.",
    "channels.<name>.events": "Events sent to this channel: `started`, `succeeded`, `failed`, `superseded`, "
    "`dry_run`, `resolved`, the approval gate's `approval_requested`, `approval_denied`, `approval_expired` "
    "and `approval_refused` (docs/playbooks.md, Approval), and the opt-in `skipped`.",
    "channels.<name>.template": "Sandboxed Jinja template of the message text (README, Notifications); "
    "empty: the default text.",
    "channels.<name>.request_timeout": "Bound on one delivery attempt.",
    "channels.<name>.on_started": "PagerDuty: what `started` does. `acknowledge` (the default): nothing is "
    "sent; the daemon never acknowledges an incident (README, Notifications). `trigger`: the execution's "
    "incident opens, and pages, as soon as automation acts.",
    "channels.<name>.max_attempts": "Delivery attempts (connection errors, timeouts, 408, 5xx) before "
    "a routine message is counted as failed. A page (a PagerDuty trigger, a `failed` or an "
    "`approval_requested`) is retried at least this many times and until 10 minutes after it was queued "
    "(backoff 1 s doubling, at most a minute). A throttled answer (429, or 503 with `Retry-After`) does not "
    "count: it is retried for up to 10 minutes from when the message was queued.",
    "worker.poll_interval": "How often the decision and execution loops look for work when nothing woke them.",
    "worker.batch": "Alerts claimed per decision round.",
    "worker.lease": "How long a claimed alert or execution stays a replica's without renewal; a dead "
    "replica's work is taken over after it.",
    "worker.shutdown_timeout": "On SIGTERM, running executions get this long, then are handed over "
    "(another replica resumes them). The whole stop must fit the pod's `terminationGracePeriodSeconds`: "
    "this plus about 15 s (handover, notifications, store close; the HTTP drain runs beside it).",
    "worker.step_timeout": "Bound on one step (a waiting step's own `timeout` plus a minute, when that is "
    "longer: `wait_healthy`, `http_check`, `prometheus_check`, `wait_resolved`).",
    "worker.retention": "Finished audit older than this is deleted (`90d`); alerts whose episode has not "
    "ended are kept however old. `0` keeps everything.",
    "worker.retention_interval": "How often retention runs.",
    "worker.max_tries": "An alert whose processing raised this many times is parked: set aside, never retried.",
    "worker.max_executions": "Executions this replica runs at once (the guardrails bound them over all "
    "replicas too).",
    "worker.max_backlog": "Undecided alerts above which the webhook answers 503 with `Retry-After` (Alertmanager "
    "keeps the alerts and retries), so intake never buries deciding; 0: no bound.",
    "worker.decide_share": "The least share of the event loop deciding keeps while webhooks are being taken in: "
    "after each batch it gives way to deliveries in progress for at most the batch's time * (1 - share) / share; "
    "with none in progress it goes on at once. 1: never gives way.",
    "log.format": "`json` (one object per line), `console`, or `auto` (console on a terminal, else json).",
    "log.level": "The least severe level logged.",
}


#: The field metadata this generator turns into the reference's columns (tests/test_docs.py
#: fails when settings.py declares a constraint outside this set, which would go unshown).
KNOWN_METADATA = frozenset({"doc", "min", "max", "above", "choices"})


@dataclass(frozen=True)
class Key:
    """One row of the reference."""

    path: str
    kind: str
    default: str
    allowed: str
    env: str
    description: str


@dataclass(frozen=True)
class Section:
    title: str
    path: str
    intro: str
    keys: tuple[Key, ...]


def _duration_fields() -> frozenset[str]:
    """Field names settings parse as durations (``30s``, ``10m``): a private table of settings.py."""
    return frozenset(getattr(settings_module, "_DURATION_FIELDS", ()))


def format_duration(seconds: float) -> str:
    """``3600.0`` -> ``1h``, ``90.0`` -> ``1m30s``, ``0.5`` -> ``500ms``: the way settings are written."""
    if seconds == 0:
        return "0"
    out, rest = "", round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def _is_settings_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _kind(name: str, tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        return "list of mappings" if _is_settings_class(inner) else "list of strings"
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if tp is float:
        return "duration" if name in _duration_fields() else "number"
    return "string"


def _value(name: str, tp: Any, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "[]"
    if tp is float and name in _duration_fields():
        return format_duration(float(value))
    if isinstance(value, float):
        return f"{value:g}"
    return '""' if value == "" else str(value)


def _default(f: dataclasses.Field[Any], tp: Any) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_value(f.name, tp, f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        return "`{}`" if isinstance(made, Mapping) and not made else f"`{_value(f.name, tp, made)}`"
    return "required"


def _allowed(f: dataclasses.Field[Any], tp: Any) -> str:
    meta = f.metadata
    show = (lambda v: _value(f.name, tp, v)) if tp is float else str
    parts = []
    if "choices" in meta:
        parts.append(", ".join(f"`{c}`" for c in meta["choices"]))
    if "min" in meta and "max" in meta:
        parts.append(f"{show(meta['min'])} to {show(meta['max'])}")
    elif "min" in meta:
        parts.append(f"≥ {show(meta['min'])}")
    elif "max" in meta:
        parts.append(f"≤ {show(meta['max'])}")
    if "above" in meta:
        parts.append(f"> {show(meta['above'])}")
    return "; ".join(parts)


def _comments(cls: type) -> dict[str, str]:
    """The comment on each field's line in the class source (``name: type = default  # comment``)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names: dict[int, str] = {}
    comments: dict[int, str] = {}
    previous: tokenize.TokenInfo | None = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.OP and token.string == ":" and previous is not None \
                and previous.type == tokenize.NAME and previous.start[0] not in names:
            names[previous.start[0]] = previous.string
        elif token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            previous = token
    return {names[line]: text for line, text in comments.items() if line in names}


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def _env_names() -> dict[str, str]:
    """Dotted setting -> environment variable, exactly as settings maps them when loading."""
    return {setting: variable for variable, setting in env_names().items()}


def _keys(cls: type, prefix: str, env: Mapping[str, str]) -> Iterator[Key]:
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        if _is_settings_class(tp) or typing.get_origin(tp) in (Mapping, dict):
            continue  # a section of its own
        description = f.metadata.get("doc") or DESCRIPTIONS.get(path) or comments.get(f.name, "")
        kind = _kind(f.name, tp)
        variable = "" if kind == "list of mappings" else env.get(path, "")  # a mapping cannot be one string
        yield Key(path, kind, _default(f, tp), _allowed(f, tp), variable, _sentence(str(description)))
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None
        if inner is not None and _is_settings_class(inner):
            yield from _keys(inner, f"{path}[].", env)


def _intro(cls: type, path: str) -> str:
    doc = inspect.getdoc(cls) or ""
    # a dataclass without a docstring gets its signature as __doc__: that is no introduction
    if doc.startswith(cls.__name__ + "("):
        doc = DESCRIPTIONS.get(path, "")
    return " ".join(doc.replace("``", "`").split())


def sections() -> list[Section]:
    """The reference's sections, in the order of the fields of :class:`Settings`."""
    env = _env_names()
    hints = typing.get_type_hints(Settings)
    out = [Section("Top level", "", "", tuple(_keys(Settings, "", env)))]
    for f in dataclasses.fields(Settings):
        tp = hints[f.name]
        if _is_settings_class(tp):
            out.append(Section(f"`{f.name}`", f.name, _intro(tp, f.name), tuple(_keys(tp, f"{f.name}.", env))))
        elif typing.get_origin(tp) in (Mapping, dict):
            inner = typing.get_args(tp)[1]
            out.append(Section(f"`{f.name}.<name>`", f"{f.name}.<name>", _intro(inner, f"{f.name}.<name>"),
                               tuple(_keys(inner, f"{f.name}.<name>.", env))))
    return out


def documented_paths() -> set[str]:
    """Every key and section path the reference has a row or a heading for."""
    return {path for s in sections() for path in (s.path, *(k.path for k in s.keys)) if path}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


HEADER = """<!-- Generated by `make docs` (python -m remediator.docgen) from remediator/settings.py. Do not edit:
     tests/test_docs.py fails when this file differs from what the generator writes. -->
# Configuration reference

Settings come from one YAML file (`remediator serve --config remediator.yaml`; `remediator.yaml`
in the working directory when present), then from the environment, then from command-line flags,
each overriding the one before. An unknown key is an error naming its `file:line` (with the
closest known key), and so is an unknown `REMEDIATOR_*` variable, except those Kubernetes injects
for a Service named `remediator` (`REMEDIATOR_SERVICE_HOST`, `REMEDIATOR_PORT_8080_TCP`, ...),
which are ignored. A value outside its range is an error at start, naming the key.

- **Environment**: `REMEDIATOR_<SECTION>_<KEY>` in upper case, e.g. `REMEDIATOR_WORKER_BATCH=100`.
  Lists are comma-separated (`REMEDIATOR_WEBHOOK_TOKENS=a,b`). `channels` and `guardrails.budgets`
  have no variables: write them in the file.
- **Durations**: `30s`, `10m`, `1h30m`, `7d` (units from the largest to the smallest: `y w d h m s ms`),
  or a number of seconds.
- **Secrets**: every token, and every channel's URL, secret or key, has a `*_file` variant read from
  a file (one value per line), so none has to be written in the YAML. Token files are re-read when
  they change. `database_url` and `redis_url` may carry passwords: set them in the environment
  (from a Secret in Kubernetes) rather than in the file.

See [operations.md](operations.md) for how these settings play together in production and
[deploy.md](deploy.md) for the Kubernetes manifests.
"""


def render() -> str:
    out = [HEADER]
    for section in sections():
        out.append(f"\n## {section.title}\n")
        if section.intro:
            out.append(f"\n{section.intro}\n")
        out.append("\n| key | type | default | allowed | environment | description |\n")
        out.append("|---|---|---|---|---|---|\n")
        for k in section.keys:
            env = f"`{k.env}`" if k.env else "—"
            out.append(f"| `{k.path}` | {k.kind} | {_cell(k.default)} | {_cell(k.allowed)} | {env} | "
                       f"{_cell(k.description)} |\n")
    return "".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remediator.docgen", description=__doc__.split("\n")[0])
    parser.add_argument("--output", "-o", type=Path, help="write here (default: standard output)")
    args = parser.parse_args(argv)
    text = render()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
