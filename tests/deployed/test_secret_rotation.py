"""Tokens from a Secret volume: when the kubelet swaps ``..data`` (a rotation), the next
request is checked against the new tokens, with no restart and no SIGHUP."""

from __future__ import annotations

from pathlib import Path

from remediator.runtime import Credentials
from remediator.settings import load_settings
from tests.deployed.kubelet import write_configmap


def test_a_rotated_secret_volume_is_read_again(tmp_path: Path) -> None:
    volume = tmp_path / "tokens"
    write_configmap(volume, {"webhook-tokens": "hook-1\n", "read-tokens": "read-1\n", "admin-tokens": "admin-1\n"})
    settings = load_settings(None, env={
        "REMEDIATOR_WEBHOOK_TOKENS_FILE": str(volume / "webhook-tokens"),
        "REMEDIATOR_API_READ_TOKENS_FILE": str(volume / "read-tokens"),
        "REMEDIATOR_API_ADMIN_TOKENS_FILE": str(volume / "admin-tokens"),
    })
    credentials = Credentials(settings)
    assert credentials.roles_of("hook-1") == {"webhook"} and credentials.roles_of("admin-1") == {"admin", "read"}
    # the same sizes, maybe the same second: only what the links resolve to tells the change
    write_configmap(volume, {"webhook-tokens": "hook-2\nhook-1\n", "read-tokens": "read-2\n",
                             "admin-tokens": "admin-2\n"})
    credentials.refresh()
    assert credentials.roles_of("hook-2") == {"webhook"} and credentials.roles_of("hook-1") == {"webhook"}
    assert credentials.roles_of("read-1") is None and credentials.roles_of("read-2") == {"read"}
    assert credentials.roles_of("admin-1") is None and credentials.roles_of("admin-2") == {"admin", "read"}
