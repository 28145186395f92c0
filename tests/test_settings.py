"""Settings: YAML + env overrides, clear errors for unknown or bad keys, secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.core.errors import ConfigError
from remediator.settings import load_settings


def test_defaults_need_nothing() -> None:
    s = load_settings(None, env={})
    assert s.database_url == "" and s.redis_url == "" and s.data_dir == "var"


def test_yaml_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text("dry_run: false\nworker:\n  poll_interval: 5s\nwebhook:\n  max_body_bytes: 1000\n")
    s = load_settings(str(cfg), env={"REMEDIATOR_WORKER_POLL_INTERVAL": "2s", "REMEDIATOR_DRY_RUN": "true"},
                      overrides={"data_dir": "/x"})
    assert s.dry_run is True and s.worker.poll_interval == 2.0
    assert s.webhook.max_body_bytes == 1000 and s.data_dir == "/x"


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "remediator.yaml"
    cfg.write_text("dry_run: true\nworker:\n  poll_intervall: 5s\n")
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg), env={})
    assert str(err.value).startswith(f"{cfg}:3: worker.poll_intervall: unknown setting")


@pytest.mark.parametrize(
    ("yaml_text", "line", "fragment"),
    [
        ("dry_run: maybe\n", 1, "expected true or false"),
        ("\nworker:\n  batch: lots\n", 3, "expected an integer"),
        ("worker:\n  lease: soon\n", 2, "expected a duration"),
        ("webhook: [1]\n", 1, "expected a mapping"),
    ],
)
def test_bad_values_are_clear(tmp_path: Path, yaml_text: str, line: int, fragment: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg), env={})
    assert str(err.value).startswith(f"{cfg}:{line}:") and fragment in str(err.value)


def test_unknown_env_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="REMEDIATOR_WEBHOK_TOKENS"):
        load_settings(None, env={"REMEDIATOR_WEBHOK_TOKENS": "x"})


def test_tokens_from_env_and_file_for_rotation(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("new-token\nold-token\n")
    s = load_settings(None, env={"REMEDIATOR_WEBHOOK_TOKENS": "env-a,env-b", "REMEDIATOR_WEBHOOK_TOKENS_FILE": str(f)})
    assert s.webhook_tokens() == ("env-a", "env-b", "new-token", "old-token")


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    s = load_settings(None, env={"REMEDIATOR_WEBHOOK_TOKENS_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="cannot read secret file"):
        s.webhook_tokens()


async def test_webhook_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    from remediator.runtime import open_runtime

    s = load_settings(None, env={}, overrides={"data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="--insecure-no-auth"):
        async with open_runtime(s, start_worker=False):
            pass


@pytest.mark.parametrize(("value", "seconds"), [("5", 5.0), ("0.5", 0.5), (" 30 ", 30.0), ("1m30s", 90.0)])
def test_env_durations_may_be_bare_seconds(value: str, seconds: float) -> None:
    s = load_settings(None, env={"REMEDIATOR_WORKER_POLL_INTERVAL": value})
    assert s.worker.poll_interval == seconds


@pytest.mark.parametrize("value", ["-5", "5 s", "five", "5x", "1.5m"])
def test_bad_env_durations_are_refused_with_the_variable_named(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"REMEDIATOR_WORKER_POLL_INTERVAL": value})
    assert "REMEDIATOR_WORKER_POLL_INTERVAL" in str(err.value) or "poll_interval" in str(err.value)
