"""Daemon settings: one YAML file, ``REMEDIATOR_<SECTION>_<KEY>`` env overrides.

Settings are frozen dataclasses handed explicitly to whoever needs them (as kopf
does).  Unknown keys are errors with ``file:line``, because a typo in a safety
setting must not silently fall back to a default.  Secrets may come from env vars
or files so that they never have to live in the YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediator.core.durations import parse_duration
from remediator.core.errors import ConfigError, DurationError
from remediator.core.yamllines import Document, load_documents


def _at_least(low: float, default: Any) -> Any:
    """A field whose value must be ``>= low``: checked (and named) when settings are loaded."""
    return field(default=default, metadata={"min": low})


def _one_of(default: str, *others: str) -> Any:
    """A field that takes one of a few words."""
    return field(default=default, metadata={"choices": (default, *others)})


def _above(low: float, default: Any) -> Any:
    """A field whose value must be ``> low`` (durations that cannot be zero)."""
    return field(default=default, metadata={"above": low})


@dataclass(frozen=True)
class WebhookSettings:
    """The Alertmanager webhook: its tokens may post alerts and do nothing else."""

    tokens: tuple[str, ...] = ()
    tokens_file: str = ""
    # 16 MiB: MAX_ALERTS (10,000) alerts of up to some 1.6 KiB each (docs/operations.md, "Large alert groups")
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata={"min": 256, "max": 1024 * 1024 * 1024})
    insecure_no_auth: bool = False


@dataclass(frozen=True)
class ApiSettings:
    """Credentials by role.  Read tokens read the audit (``/api/v1/executions``,
    ``/api/v1/guardrails``); admin tokens also pause and resume.  A webhook token does
    neither, so Alertmanager's credential can never switch remediation off.
    ``metrics: read`` puts ``/metrics`` behind a read token (default ``open``, for scrapers).
    """

    read_tokens: tuple[str, ...] = ()
    read_tokens_file: str = ""
    admin_tokens: tuple[str, ...] = ()
    admin_tokens_file: str = ""
    metrics: str = _one_of("open", "read")


@dataclass(frozen=True)
class HttpSettings:
    """Bounds on each request, so a slow client or a frozen store cannot hold a handler."""

    read_timeout: float = _above(0, 30.0)  # a client that has not sent its whole request by then is cut off
    store_timeout: float = _above(0, 5.0)  # a store call on the request path: 503 after this long


@dataclass(frozen=True)
class KubernetesSettings:
    mode: str = _one_of("auto", "none", "kubeconfig", "incluster")
    kubeconfig: str = ""
    context: str = ""
    request_timeout: float = _above(0, 30.0)
    retries: int = _at_least(0, 5)


@dataclass(frozen=True)
class PrometheusSettings:
    """The Prometheus that ``prometheus_check`` steps query (its HTTP API, ``/api/v1/query``)."""

    url: str = ""
    timeout: float = _above(0, 10.0)
    bearer_token_file: str = ""


@dataclass(frozen=True)
class BudgetSettings:
    scope: str = "*"
    max: int = _at_least(1, 20)
    per: float = _above(0, 3600.0)


@dataclass(frozen=True)
class GuardrailSettings:
    budgets: tuple[BudgetSettings, ...] = ()
    max_running: int = _at_least(0, 0)
    max_running_per_namespace: int = _at_least(0, 0)
    breaker_threshold: int = _at_least(1, 3)
    breaker_cooloff: float = _above(0, 600.0)
    paused: bool = False
    max_clock_skew: float = field(default=10.0, metadata={"min": 0.0, "doc": (
        "How far this replica's clock may be off the guardrail state's (Redis `TIME`, measured every 10 s). "
        "Beyond it nothing is admitted and no lock renewed, as when Redis is unreachable, until the clock is "
        "back: guardrail times (lock expiries, cooldowns, windows) are each replica's own clock's. Keep it under "
        "a third of the smallest `lock_ttl`. `0`: not measured. Only with `redis_url` "
        "([operations.md](operations.md#clocks))."
    )})


@dataclass(frozen=True)
class ChannelSettings:
    type: str = _one_of("webhook", "slack", "pagerduty")
    url: str = ""
    url_file: str = ""
    secret: str = ""
    secret_file: str = ""
    routing_key: str = ""
    routing_key_file: str = ""
    events: tuple[str, ...] = ("started", "succeeded", "failed", "superseded", "dry_run", "resolved",
                               "approval_requested", "approval_denied", "approval_expired", "approval_refused")
    template: str = ""
    request_timeout: float = _above(0, 10.0)
    max_attempts: int = _at_least(1, 5)
    on_started: str = "acknowledge"  # pagerduty: acknowledge | trigger (checked with the channel)


@dataclass(frozen=True)
class WorkerSettings:
    poll_interval: float = _above(0, 1.0)
    batch: int = field(default=500, metadata={"min": 1, "max": 10_000})  # one commit (fsync) per batch
    lease: float = field(default=300.0, metadata={"min": 1.0})  # renewed every third of it: under 1s would thrash
    shutdown_timeout: float = 30.0
    step_timeout: float = _above(0, 900.0)
    retention: float = 0.0  # keep finished audit this long (e.g. 90d); 0 keeps everything
    retention_interval: float = _above(0, 3600.0)
    max_tries: int = _at_least(1, 5)  # an alert whose processing raised this many times is parked, never retried
    max_executions: int = _at_least(1, 64)  # executions this replica runs at once (the guardrails bound them too)
    # Undecided alerts above which the webhook answers 503 with Retry-After (Alertmanager retries): intake
    # must never bury the decision loop under a backlog that grows without bound.  0: no bound.
    max_backlog: int = _at_least(0, 50_000)
    # While webhooks are being taken in, deciding gives way to them after each batch but keeps at least
    # this share of the event loop (worker.Pacer); with none in progress it goes on at once.  1: never gives way.
    decide_share: float = field(default=0.34, metadata={"above": 0.0, "max": 1.0})


@dataclass(frozen=True)
class LogSettings:
    format: str = _one_of("auto", "json", "console")
    level: str = _one_of("info", "debug", "warning", "error", "critical")


@dataclass(frozen=True)
class Settings:
    listen: str = "0.0.0.0:8080"
    dry_run: bool = False
    playbooks: str = "playbooks"
    data_dir: str = "var"
    database_url: str = ""
    redis_url: str = ""
    public_url: str = ""
    webhook: WebhookSettings = WebhookSettings()
    api: ApiSettings = ApiSettings()
    http: HttpSettings = HttpSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    channels: Mapping[str, ChannelSettings] = field(default_factory=dict)
    worker: WorkerSettings = WorkerSettings()
    log: LogSettings = LogSettings()

    def webhook_tokens(self) -> tuple[str, ...]:
        """All accepted tokens (several at once, for rotation), from config, env and file."""
        return _tokens(self.webhook.tokens, self.webhook.tokens_file)

    def read_tokens(self) -> tuple[str, ...]:
        """Tokens the read API accepts: ``api.read_tokens`` (config, env, file).  Webhook tokens are not among them."""
        return _tokens(self.api.read_tokens, self.api.read_tokens_file)

    def admin_tokens(self) -> tuple[str, ...]:
        """Tokens that may pause and resume (and read): ``api.admin_tokens`` (config, env, file)."""
        return _tokens(self.api.admin_tokens, self.api.admin_tokens_file)


def _tokens(listed: tuple[str, ...], file: str) -> tuple[str, ...]:
    tokens = list(listed)
    if file:
        tokens += read_secret_lines(file)
    return tuple(t for t in dict.fromkeys(tokens) if t)


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None


def read_secret_lines(path: str) -> list[str]:
    """A file of several secrets (webhook tokens): one per line or comma-separated."""
    text = _read_secret_file(path)
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def read_secret(value: str, file: str) -> str:
    """One secret (a URL, a key, an HMAC secret), from ``file`` when one is given: its first non-empty
    line, stripped.  Commas are the secret's own: reading it as a list cut ``a,b`` to ``a`` (a signing
    secret every receiver then refused, a URL that lost the rest of its query)."""
    if file:
        return next((line.strip() for line in _read_secret_file(file).splitlines() if line.strip()), "")
    return value


_DURATION_FIELDS = {
    "per",
    "breaker_cooloff",
    "max_clock_skew",
    "poll_interval",
    "lease",
    "shutdown_timeout",
    "step_timeout",
    "request_timeout",
    "timeout",
    "retention",
    "retention_interval",
    "read_timeout",
    "store_timeout",
}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        return _build(tp, value, where)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or origin is getattr(types, "MappingProxyType", None):
        _, inner = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        return {str(k): _coerce(v, inner, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is float:
        try:
            return parse_duration(value) if where.rsplit(".", 1)[-1] in _DURATION_FIELDS else float(value)
        except (DurationError, ValueError, TypeError):
            raise ConfigError(f"{where}: expected a duration such as 30s, got {value!r}") from None
    if tp is int:
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        except (ValueError, TypeError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported setting type")


def _suggest(name: str, known: Iterable[str]) -> str:
    """``; did you mean X?`` for the closest known name, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _check_range(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    meta = f.metadata
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{where}: must be at least {_show(meta['min'])}, got {_show(value)}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{where}: must be at most {_show(meta['max'])}, got {_show(value)}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: expected one of {', '.join(meta['choices'])}, got {value!r}")
    if "above" in meta and value <= meta["above"]:
        raise ConfigError(f"{where}: must be more than {_show(meta['above'])}, got {_show(value)}")


def _show(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _build(cls: Any, raw: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{where + '.' if where else ''}{key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown setting; known: {', '.join(sorted(fields))}{_suggest(key, fields)}")
        kwargs[key] = _coerce(value, hints[key], path)
        _check_range(fields[key], kwargs[key], path)
    return cls(**kwargs)


#: The variables Kubernetes injects into every pod for a Service named ``remediator``
#: (docker links style): ``REMEDIATOR_SERVICE_HOST``, ``REMEDIATOR_SERVICE_PORT``,
#: ``REMEDIATOR_SERVICE_PORT_<PORT NAME>``, ``REMEDIATOR_PORT`` and
#: ``REMEDIATOR_PORT_<port>_<PROTOCOL>[_PROTO|_PORT|_ADDR]``.  They are not settings, and a
#: pod must start with them (``enableServiceLinks`` defaults to true).
SERVICE_LINK = re.compile(
    r"REMEDIATOR_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT|PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)"
)


def env_names() -> dict[str, str]:
    """Every environment variable that sets something, to its dotted setting name."""
    names: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        if dataclasses.is_dataclass(f.default):
            for sub in dataclasses.fields(f.default):
                names[f"REMEDIATOR_{f.name}_{sub.name}".upper()] = f"{f.name}.{sub.name}"
        elif f.name != "channels":
            names[f"REMEDIATOR_{f.name}".upper()] = f.name
    return names


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    known = env_names()
    sections = {f.name for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(f.default)}
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("REMEDIATOR_") or SERVICE_LINK.fullmatch(name):
            continue
        setting = known.get(name)
        if setting is None:
            section, _, key = name[len("REMEDIATOR_") :].lower().partition("_")
            what = f"{section}.{key}: unknown setting" if key and section in sections else "no such setting"
            raise ConfigError(
                f"environment variable {name}: {what} (expected REMEDIATOR_<SECTION>_<KEY>){_suggest(name, known)}"
            )
        section, _, key = setting.partition(".")
        if key:
            out.setdefault(section, {})[key] = value
        else:
            out[section] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def load_settings(
    path: str | None, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Defaults < YAML file < environment < command-line ``overrides``."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    doc: Document | None = None
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        docs, problems = load_documents(text, path)
        if problems:
            raise ConfigError(str(problems[0]))
        if docs and docs[0].data is not None:
            doc = docs[0]
            if not isinstance(doc.data, dict):
                raise ConfigError(f"{path}:{doc.start_line}: the configuration must be a mapping")
            raw = doc.data
    try:
        _build(Settings, raw, "")
    except ConfigError as exc:
        if doc is not None:
            key_path = str(exc).split(":", 1)[0]
            parts = tuple(int(p) if p.isdigit() else p for p in key_path.replace("[", ".").replace("]", "").split("."))
            raise ConfigError(f"{path}:{doc.line(parts)}: {exc}") from None
        raise
    from_env = _env_overrides(env)
    try:
        _build(Settings, from_env, "")
    except ConfigError as exc:
        setting = str(exc).split(":", 1)[0]
        variable = next((n for n, s in env_names().items() if s == setting), "")
        raise ConfigError(f"environment variable {variable}: {exc}" if variable else str(exc)) from None
    merged = _merge(_merge(raw, from_env), overrides or {})
    settings: Settings = _build(Settings, merged, "")
    _check_listen(settings.listen)
    return settings


def _check_listen(listen: str) -> None:
    """``host:port`` with a port a socket can bind: a bad one is named now, not as a traceback later."""
    _host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"listen: expected host:port with a port from 1 to 65535, got {listen!r}")
