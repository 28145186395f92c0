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


def test_a_single_secret_from_a_file_keeps_its_commas(tmp_path: Path) -> None:
    # Read as a list of tokens, a signing secret "Zk3#p,9Lq" became "Zk3#p" (every signed notice
    # refused with a 401, never retried) and a URL lost the rest of its query after a comma.
    from remediator.settings import read_secret

    secret, url = tmp_path / "secret", tmp_path / "url"
    secret.write_text("Zk3#p,9Lq!v2@Xw8\n")
    url.write_text("\n  https://hooks.example/x?tags=team-a,team-b  \nignored\n")
    assert read_secret("", str(secret)) == "Zk3#p,9Lq!v2@Xw8"
    assert read_secret("", str(url)) == "https://hooks.example/x?tags=team-a,team-b"
    assert read_secret("inline", "") == "inline"
    tokens = tmp_path / "tokens"  # a token list still splits on commas and lines
    tokens.write_text("a,b\nc\n")
    assert load_settings(None, env={"REMEDIATOR_WEBHOOK_TOKENS_FILE": str(tokens)}).webhook_tokens() == ("a", "b", "c")


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


# -- what a pod's environment holds -------------------------------------------------------------

#: What Kubernetes injects into every pod of the namespace for a Service named ``remediator``
#: with ports ``http`` (8080/TCP) and ``metrics`` (9090/TCP), as the kubelet names them.
SERVICE_LINKS = {
    "REMEDIATOR_SERVICE_HOST": "10.96.12.34",
    "REMEDIATOR_SERVICE_PORT": "8080",
    "REMEDIATOR_SERVICE_PORT_HTTP": "8080",
    "REMEDIATOR_SERVICE_PORT_METRICS": "9090",
    "REMEDIATOR_SERVICE_PORT_HTTP_ALT": "8081",
    "REMEDIATOR_PORT": "tcp://10.96.12.34:8080",
    "REMEDIATOR_PORT_8080_TCP": "tcp://10.96.12.34:8080",
    "REMEDIATOR_PORT_8080_TCP_PROTO": "tcp",
    "REMEDIATOR_PORT_8080_TCP_PORT": "8080",
    "REMEDIATOR_PORT_8080_TCP_ADDR": "10.96.12.34",
    "REMEDIATOR_PORT_9090_UDP_ADDR": "10.96.12.34",
    "REMEDIATOR_PORT_5060_SCTP": "sctp://10.96.12.34:5060",
}


def test_a_services_link_variables_are_not_settings() -> None:
    s = load_settings(None, env={**SERVICE_LINKS, "REMEDIATOR_WORKER_BATCH": "7"})
    assert s.worker.batch == 7 and s.listen == "0.0.0.0:8080"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("REMEDIATOR_WEBHOK_TOKENS", "no such setting (expected REMEDIATOR_<SECTION>_<KEY>); "
                                     "did you mean REMEDIATOR_WEBHOOK_TOKENS?"),
        ("REMEDIATOR_WORKER_BACTH", "worker.bacth: unknown setting (expected REMEDIATOR_<SECTION>_<KEY>); "
                                    "did you mean REMEDIATOR_WORKER_BATCH?"),
        ("REMEDIATOR_DRYRUN", "no such setting (expected REMEDIATOR_<SECTION>_<KEY>); "
                              "did you mean REMEDIATOR_DRY_RUN?"),
        ("REMEDIATOR_SERVICE_HOSTS", "no such setting"),  # near a link variable, but not one
        ("REMEDIATOR_PORT_8080", "no such setting"),
        ("REMEDIATOR_PORT_8080_TCP_HOST", "no such setting"),
    ],
)
def test_a_typo_is_still_refused_naming_the_closest_setting(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={**SERVICE_LINKS, name: "x"})
    assert str(err.value).startswith(f"environment variable {name}: {message}")


def test_a_yaml_typo_suggests_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("worker:\n  max_executoins: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:2: worker\.max_executoins: unknown setting; .*"
                                          r"did you mean max_executions\?$"):
        load_settings(str(cfg), env={})


@pytest.mark.parametrize(
    ("yaml_text", "line", "message"),
    [
        ("worker:\n  batch: 0\n", 2, "worker.batch: must be at least 1, got 0"),
        ("worker:\n  batch: 100000\n", 2, "worker.batch: must be at most 10000, got 100000"),
        ("worker:\n  lease: 0.5\n", 2, "worker.lease: must be at least 1, got 0.5"),
        ("worker:\n  poll_interval: 0s\n", 2, "worker.poll_interval: must be more than 0, got 0"),
        ("webhook:\n  max_body_bytes: -1\n", 2, "webhook.max_body_bytes: must be at least 256, got -1"),
        ("guardrails:\n  budgets:\n  - {scope: x, max: 0}\n", 3, "guardrails.budgets[0].max: must be at least 1"),
        ("guardrails:\n  breaker_threshold: 0\n", 2, "guardrails.breaker_threshold: must be at least 1, got 0"),
        ("kubernetes:\n  mode: cluster\n", 2,
         "kubernetes.mode: expected one of auto, none, kubeconfig, incluster, got 'cluster'"),
        ("api:\n  metrics: closed\n", 2, "api.metrics: expected one of open, read, got 'closed'"),
        ("log:\n  level: loud\n", 2, "log.level: expected one of info, debug, warning, error, critical, got 'loud'"),
        ("http:\n  store_timeout: 0\n", 2, "http.store_timeout: must be more than 0, got 0"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_key(tmp_path: Path, yaml_text: str, line: int,
                                                         message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(str(cfg), env={})
    assert str(err.value).startswith(f"{cfg}:{line}: {message}")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REMEDIATOR_WORKER_BATCH": "0"}, "environment variable REMEDIATOR_WORKER_BATCH: worker.batch: "
                                           "must be at least 1, got 0"),
        ({"REMEDIATOR_LISTEN": "0.0.0.0:80800"}, "listen: expected host:port with a port from 1 to 65535"),
        ({"REMEDIATOR_LISTEN": "8080"}, "listen: expected host:port"),
        ({"REMEDIATOR_LISTEN": ":http"}, "listen: expected host:port"),
    ],
)
def test_env_values_out_of_range_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, env=env)
    assert str(err.value).startswith(message)


def test_kubernetes_mode_is_auto_by_default() -> None:
    assert load_settings(None, env={}).kubernetes.mode == "auto"
