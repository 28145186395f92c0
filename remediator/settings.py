"""Daemon settings: one YAML file, ``REMEDIATOR_<SECTION>_<KEY>`` env overrides.

Settings are frozen dataclasses handed explicitly to whoever needs them (as kopf
does).  Unknown keys are errors with ``file:line``, because a typo in a safety
setting must not silently fall back to a default.  Secrets may come from env vars
or files so that they never have to live in the YAML.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediator.core.durations import parse_duration
from remediator.core.errors import ConfigError, DurationError
from remediator.core.yamllines import Document, load_documents


@dataclass(frozen=True)
class WebhookSettings:
    tokens: tuple[str, ...] = ()
    tokens_file: str = ""
    max_body_bytes: int = 1024 * 1024
    insecure_no_auth: bool = False


@dataclass(frozen=True)
class ApiSettings:
    """Credentials of the read API (``/api/v1/executions``, ``/api/v1/guardrails``).

    Until tokens have roles, every webhook token is accepted there too; ``read_tokens``
    lets a reader (a dashboard, a person) in without the token that can feed alerts.
    """

    read_tokens: tuple[str, ...] = ()
    read_tokens_file: str = ""


@dataclass(frozen=True)
class KubernetesSettings:
    mode: str = "none"  # none | auto | kubeconfig | incluster
    kubeconfig: str = ""
    context: str = ""
    request_timeout: float = 30.0
    retries: int = 5


@dataclass(frozen=True)
class BudgetSettings:
    scope: str = "*"
    max: int = 20
    per: float = 3600.0


@dataclass(frozen=True)
class GuardrailSettings:
    budgets: tuple[BudgetSettings, ...] = ()
    max_running: int = 0
    max_running_per_namespace: int = 0
    breaker_threshold: int = 3
    breaker_cooloff: float = 600.0
    paused: bool = False


@dataclass(frozen=True)
class ChannelSettings:
    type: str = "webhook"  # slack | webhook | pagerduty
    url: str = ""
    url_file: str = ""
    secret: str = ""
    secret_file: str = ""
    routing_key: str = ""
    routing_key_file: str = ""
    events: tuple[str, ...] = ("started", "succeeded", "failed", "superseded", "dry_run", "resolved")
    template: str = ""
    request_timeout: float = 10.0
    max_attempts: int = 5
    on_started: str = "acknowledge"  # pagerduty: acknowledge | trigger


@dataclass(frozen=True)
class WorkerSettings:
    poll_interval: float = 1.0
    batch: int = 50
    lease: float = 300.0
    shutdown_timeout: float = 30.0
    step_timeout: float = 900.0
    retention: float = 0.0  # keep finished audit this long (e.g. 90d); 0 keeps everything
    retention_interval: float = 3600.0
    max_tries: int = 5  # an alert whose processing raised this many times is parked, never retried
    max_executions: int = 64  # executions this replica runs at once (the guardrails bound them too)


@dataclass(frozen=True)
class LogSettings:
    format: str = "auto"  # auto | json | console
    level: str = "info"


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
    kubernetes: KubernetesSettings = KubernetesSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    channels: Mapping[str, ChannelSettings] = field(default_factory=dict)
    worker: WorkerSettings = WorkerSettings()
    log: LogSettings = LogSettings()

    def webhook_tokens(self) -> tuple[str, ...]:
        """All accepted tokens (several at once, for rotation), from config, env and file."""
        tokens = list(self.webhook.tokens)
        if self.webhook.tokens_file:
            tokens += read_secret_lines(self.webhook.tokens_file)
        return tuple(t for t in dict.fromkeys(tokens) if t)

    def read_tokens(self) -> tuple[str, ...]:
        """Tokens the read API accepts: ``api.read_tokens`` (config, env, file) and every webhook token."""
        tokens = list(self.api.read_tokens)
        if self.api.read_tokens_file:
            tokens += read_secret_lines(self.api.read_tokens_file)
        tokens += self.webhook_tokens()
        return tuple(t for t in dict.fromkeys(tokens) if t)


def read_secret_lines(path: str) -> list[str]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def read_secret(value: str, file: str) -> str:
    if file:
        lines = read_secret_lines(file)
        return lines[0] if lines else ""
    return value


_DURATION_FIELDS = {
    "per",
    "breaker_cooloff",
    "poll_interval",
    "lease",
    "shutdown_timeout",
    "step_timeout",
    "request_timeout",
    "retention",
    "retention_interval",
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


def _build(cls: Any, raw: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(
                f"{where + '.' if where else ''}{key}: unknown setting; known: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where + '.' if where else ''}{key}")
    return cls(**kwargs)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    top = {f.name: f for f in dataclasses.fields(Settings)}
    sections = {name for name, f in top.items() if dataclasses.is_dataclass(f.default)}
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith("REMEDIATOR_"):
            continue
        rest = name[len("REMEDIATOR_") :].lower()
        if rest in top and rest not in sections and rest != "channels":
            out[rest] = value
            continue
        section, _, key = rest.partition("_")
        if section in sections and key:
            out.setdefault(section, {})[key] = value
            continue
        raise ConfigError(f"environment variable {name}: no such setting (expected REMEDIATOR_<SECTION>_<KEY>)")
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
    merged = _merge(_merge(raw, _env_overrides(env)), overrides or {})
    settings: Settings = _build(Settings, merged, "")
    if settings.kubernetes.mode not in ("none", "auto", "kubeconfig", "incluster"):
        raise ConfigError(
            f"kubernetes.mode: expected none, auto, kubeconfig or incluster, got {settings.kubernetes.mode!r}"
        )
    for name, ch in settings.channels.items():
        if ch.type not in ("slack", "webhook", "pagerduty"):
            raise ConfigError(f"channels.{name}.type: expected slack, webhook or pagerduty, got {ch.type!r}")
    if settings.log.format not in ("auto", "json", "console"):
        raise ConfigError(f"log.format: expected auto, json or console, got {settings.log.format!r}")
    if settings.worker.max_tries < 1:
        raise ConfigError(f"worker.max_tries: expected at least 1, got {settings.worker.max_tries}")
    if settings.worker.max_executions < 1:
        raise ConfigError(f"worker.max_executions: expected at least 1, got {settings.worker.max_executions}")
    return settings
