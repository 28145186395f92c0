"""`remediator replay --kube`: server-side dry-run against a cluster (here a minimal API server fake)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from remediator.playbook_files import load_paths
from remediator.replay import Entry, read_events, replay
from remediator.settings import load_settings
from tests.payloads import payload
from tests.replay.history import firing, write_playbooks

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "generation": 3},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "app", "image": "web:1"}]}},
    },
    "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
               "availableReplicas": 2},
}


def api_server(requests: list[tuple[str, str, str]]) -> web.Application:
    """Deployment shop/web exists and never changes (every write is a dry run); anything else is 404."""

    async def deployment(request: web.Request) -> web.Response:
        requests.append((request.method, request.path, request.query_string))
        if request.match_info["ns"] != "shop" or request.match_info["name"] != "web":
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                      "message": "deployments.apps not found", "code": 404}, status=404)
        return web.json_response(DEPLOYMENT)

    app = web.Application()
    path = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"
    app.router.add_get(path, deployment)
    app.router.add_patch(path, deployment)
    return app


async def test_kube_replay_validates_each_step_server_side_and_changes_nothing(tmp_path: Path) -> None:
    requests: list[tuple[str, str, str]] = []
    async with TestServer(api_server(requests)) as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": str(server.make_url("")).rstrip("/")}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
        }))
        settings = load_settings(None, env={}, overrides={
            "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig), "retries": 1}})
        history = tmp_path / "h.jsonl"
        history.write_text(json.dumps(payload(firing("ServiceDown", "web", 0), firing("ServiceDown", "ghost", 0))))
        pset, problems = load_paths([write_playbooks(tmp_path / "pb")])
        assert not problems
        entries: list[Entry] = []

        class Collect:
            def decision(self, entry: Entry) -> None:
                entries.append(entry)

            def alert_done(self, alert_key: str, entries: list[Entry]) -> None:
                return None

        with history.open("rb") as fh:
            await replay(read_events(fh, str(history)), [pset], settings, [Collect()], kube=True)

    def brief(e: dict[str, Any]) -> tuple[Any, ...]:
        return (e["target"]["name"], e["decision"], e["execution"],
                [(r["action"], r["status"]) for r in e.get("results", [])])

    assert [brief(e) for e in entries] == [
        ("web", "executed", "dry_run", [("restart", "planned"), ("wait_healthy", "planned")]),
        ("ghost", "executed", "failed", [("restart", "failed")]),
    ]
    assert entries[0]["results"][0]["message"].startswith("dry-run (server-side): would have restarted")
    patches = [r for r in requests if r[0] == "PATCH"]
    assert patches == [("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web",
                        "dryRun=All&fieldManager=remediator")]
