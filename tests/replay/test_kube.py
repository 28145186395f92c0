"""`remediator replay --kube`: server-side dry-run against a cluster (the project's fake API server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from remediator.playbook_files import load_paths
from remediator.replay import Entry, read_events, replay
from remediator.settings import load_settings
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.harness import running_fake_kube
from tests.kube_fake.helpers import deployment
from tests.payloads import payload
from tests.replay.history import firing, write_playbooks


async def kube_replay(history: Path, pset: Any, settings: Any) -> list[Entry]:
    """Every entry ``replay --kube`` reports for ``history``."""
    entries: list[Entry] = []

    class Collect:
        def decision(self, entry: Entry) -> None:
            entries.append(entry)

        def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
            return None

    with history.open("rb") as fh:
        await replay(read_events(fh, str(history)), [pset], settings, [Collect()], kube=True)
    return entries


async def test_kube_replay_validates_each_step_server_side_and_changes_nothing(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.apply(deployment("web", "shop", replicas=2))
    before = cluster.resource_version
    async with running_fake_kube(cluster) as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        settings = load_settings(None, env={}, overrides={
            "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig), "retries": 1}})
        history = tmp_path / "h.jsonl"
        history.write_text(json.dumps(payload(firing("ServiceDown", "web", 0), firing("ServiceDown", "ghost", 0))))
        pset, problems = load_paths([write_playbooks(tmp_path / "pb")])
        assert not problems
        entries = await kube_replay(history, pset, settings)

    def brief(e: dict[str, Any]) -> tuple[Any, ...]:
        return (e["target"]["name"], e["decision"], e["execution"],
                [(r["action"], r["status"]) for r in e.get("results", [])])

    assert [brief(e) for e in entries] == [
        ("web", "executed", "dry_run", [("restart", "planned"), ("wait_healthy", "planned")]),
        ("ghost", "executed", "failed", [("restart", "failed")]),
    ]
    assert entries[0]["results"][0]["message"].startswith("dry-run (server-side): would have restarted")
    [patch] = cluster.requests.matching("PATCH")
    assert patch.path == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert patch.query == {"dryRun": "All", "fieldManager": "remediator"}
    assert cluster.resource_version == before  # nothing changed on the cluster


async def test_kube_replay_plans_verification_steps_and_sends_them_nowhere(tmp_path: Path) -> None:
    cluster = FakeCluster()
    cluster.apply(deployment("web", "shop", replicas=2))
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "verify.yaml").write_text("""
name: verify
match: {alertname: ServiceDown, matchers: ['deployment=~".+"']}
target: {kind: Deployment, namespace: shop, name: "{{ labels.deployment }}"}
steps:
  - {action: restart}
  - {action: http_check, url: "http://127.0.0.1:9/healthz", timeout: 1m}
""")
    async with running_fake_kube(cluster) as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        settings = load_settings(None, env={}, overrides={
            "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig), "retries": 1}})
        history = tmp_path / "h.jsonl"
        history.write_text(json.dumps(payload(firing("ServiceDown", "web", 0))))
        pset, problems = load_paths([tmp_path / "pb"])
        assert not problems
        entries = await kube_replay(history, pset, settings)

    [entry] = entries
    assert [(r["action"], r["status"]) for r in entry["results"]] == [("restart", "planned"), ("http_check", "planned")]
    assert entry["results"][1]["message"].startswith("dry-run: would check that GET http://127.0.0.1:9/healthz")
