"""Playbooks from a ConfigMap volume: the kubelet's layout loads each playbook once, an atomic
``..data`` swap reloads, a bad or empty set never replaces a good one, and a daemon with no
valid playbooks refuses to start (``file:line``, non-zero) without consuming any alert."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from remediator.clock import SystemClock
from remediator.core.alerts import validate_payload
from remediator.core.errors import ConfigError
from remediator.playbook_files import PlaybookRepository, playbook_files
from remediator.ports import ReceivedAlert
from remediator.runtime import open_runtime
from remediator.store.sqlite import SQLiteStore
from tests.deployed.kubelet import DATA, write_configmap
from tests.payloads import T0, alert_json, payload

GOOD = (
    "name: {name}\nmatch: {{alertname: X}}\ntarget: {{kind: Deployment, namespace: shop, name: web}}\n"
    "steps: [{{action: restart}}]\n"
)


def names(repo: PlaybookRepository) -> list[str]:
    return sorted(p.name for p in repo().playbooks)


def test_the_kubelet_layout_loads_each_playbook_once(tmp_path: Path) -> None:
    root = tmp_path / "playbooks"
    version = write_configmap(root, {"restart.yaml": GOOD.format(name="restart"),
                                     "scale.yml": GOOD.format(name="scale"), "README.md": "not a playbook"})
    (root / ".hidden.yaml").write_text("not: [valid")  # dot-entries are never read
    assert (root / DATA).is_symlink() and version.name.startswith("..") and (root / "restart.yaml").is_symlink()
    assert [f.name for f in playbook_files([root])] == ["restart.yaml", "scale.yml"]
    repo = PlaybookRepository([str(root)])
    assert repo.reload() and names(repo) == ["restart", "scale"]
    assert not repo.changed()


def test_an_atomic_swap_of_data_reloads(tmp_path: Path) -> None:
    root = tmp_path / "playbooks"
    write_configmap(root, {"a.yaml": GOOD.format(name="a"), "b.yaml": GOOD.format(name="b")})
    repo = PlaybookRepository([str(root)])
    assert repo.reload()
    write_configmap(root, {"a.yaml": GOOD.format(name="a2"), "c.yaml": GOOD.format(name="c")})  # b removed
    assert repo.changed()
    assert repo.reload() and names(repo) == ["a2", "c"]
    write_configmap(root, {"a.yaml": GOOD.format(name="a2"), "c.yaml": GOOD.format(name="c")})  # same content
    assert repo.changed()  # new files behind ..data: read again, same set
    assert repo.reload() and names(repo) == ["a2", "c"]


def test_a_bad_or_empty_swap_keeps_the_last_good_set(tmp_path: Path) -> None:
    root = tmp_path / "playbooks"
    write_configmap(root, {"a.yaml": GOOD.format(name="a")})
    repo = PlaybookRepository([str(root)])
    assert repo.reload()
    with structlog.testing.capture_logs() as logs:
        write_configmap(root, {"a.yaml": GOOD.format(name="a") + "  oops: [\n"})
        assert not repo.reload() and names(repo) == ["a"]
        assert str(repo.last_problems[0]).startswith(f"{root / 'a.yaml'}:5:")
        write_configmap(root, {})
        assert not repo.reload() and names(repo) == ["a"]
        assert [str(p) for p in repo.last_problems] == [f"{root}:1: no playbooks found here"]
    assert [e["event"] for e in logs] == ["playbook reload rejected: keeping the last good set"] * 2


def test_without_a_good_set_the_log_does_not_claim_to_keep_one(tmp_path: Path) -> None:
    repo = PlaybookRepository([str(tmp_path / "nowhere")])
    with structlog.testing.capture_logs() as logs:
        assert not repo.reload() and repo().playbooks == ()
    assert [e["event"] for e in logs] == ["playbooks rejected: none loaded"]
    assert [str(p) for p in repo.last_problems] == [f"{tmp_path / 'nowhere'}:1: no such file or directory"]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({}, "{root}:1: no playbooks found here"),
        ({"a.yaml": GOOD.format(name="a"), "b.yaml": "name: b\nmatch: {alertname: X}\nsteps: nope\n"},
         "{root}/b.yaml:1:"),
        ({"a.yaml": GOOD.format(name="a") + "---\n" + GOOD.format(name="a")}, "{root}/a.yaml:6: "),
    ],
    ids=["empty", "invalid", "duplicate"],
)
async def test_the_runtime_refuses_to_start_without_a_valid_set(
    tmp_path: Path, settings_factory: Callable[..., Any], files: dict[str, str], problem: str
) -> None:
    root = tmp_path / "playbooks"
    write_configmap(root, files)
    with pytest.raises(ConfigError) as err:
        async with open_runtime(settings_factory(playbooks=str(root)), start_worker=False):
            pass
    assert str(err.value).startswith("no valid playbooks, not starting: " + problem.format(root=root))


def test_serve_exits_non_zero_naming_file_and_line_and_consumes_no_alert(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()

    async def record() -> None:
        store = await SQLiteStore.open(data / "remediator.db", SystemClock())
        alerts = validate_payload(payload(alert_json({"alertname": "X"}))).alerts
        await store.record_alerts([ReceivedAlert(a, T0) for a in alerts])
        await store.close()

    async def pending() -> int:
        store = await SQLiteStore.open(data / "remediator.db", SystemClock())
        try:
            return len(await store.claim_alerts("test", 10, 60.0))
        finally:
            await store.close()

    asyncio.run(record())
    root = tmp_path / "playbooks"
    write_configmap(root, {"broken.yaml": "name: broken\nmatch: {alertname: X}\nsteps: [{action: explode}]\n"})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")},
           "REMEDIATOR_WEBHOOK_TOKENS": "t1"}
    done = subprocess.run([sys.executable, "-m", "remediator", "serve", "--dry-run", "--playbooks", str(root),
                           "--data-dir", str(data), "--listen", "127.0.0.1:1"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    err = done.stderr
    assert done.returncode == 2, err
    assert f"{root / 'broken.yaml'}:3:" in err and "no valid playbooks, not starting" in err
    assert asyncio.run(pending()) == 1  # still there for the daemon that starts with good playbooks
