"""deploy/kubernetes/rbac.yaml grants exactly the verbs the executor uses: derived from the requests it sends.

Every action (live and server-side dry-run, Deployments and StatefulSets, wait_healthy
included) runs against the fake; each request is mapped to its RBAC (group, resource,
verb) the way the apiserver's authorizer does.  A verb the executor needs but the role
lacks would fail in production with 403; a granted verb nothing uses is privilege to remove.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from remediator.clock import VirtualClock
from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.faults import RecordedRequest
from remediator.testing.kube.harness import running_fake_kube
from tests.executor.harness import NS, db, open_harness, playbook, web
from tests.payloads import T0

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
                  r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$")

EVERY_ACTION = (
    '- action: delete_pod\n  pod: "{{ labels.pod }}"\n  min_healthy_replicas: 1\n'
    "- action: restart\n"
    "- action: wait_healthy\n  timeout: 5m\n"
    "- action: scale\n  by: 1\n"
    "- action: resize_pool\n  container: app\n  env: DB_POOL_MAX_SIZE\n  to: 30\n"
    "- action: set_image\n  container: app\n  image: registry.example/web:2.1\n"
    "- action: set_env\n  container: app\n  name: JAVA_OPTS\n  value: -Xmx2g\n"
    "- action: set_resources\n  container: app\n  limits: {memory: {to: 1Gi}}\n"
    "- action: scale\n  by: -1\n  min_healthy_replicas: 1\n"
    "- action: rollback\n"
)
STATEFULSET_ACTIONS = "- action: restart\n- action: wait_healthy\n  timeout: 5m\n- action: scale\n  by: 1\n" \
                      "- action: rollback\n"


def rbac_of(r: RecordedRequest) -> tuple[str, str, str]:
    m = PATH.match(r.path)
    assert m is not None, r.path
    resource = m["resource"] + (f"/{m['sub']}" if m["sub"] else "")
    if r.method == "GET":
        verb = "get" if m["name"] else ("watch" if r.watch else "list")
    else:
        verb = {"PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}[r.method]
    return m["group"] or "", resource, verb


def granted() -> set[tuple[str, str, str]]:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text()))
    return {
        (g, res, verb)
        for d in docs if d["kind"] in ("ClusterRole", "Role")
        for rule in d["rules"] for g in rule["apiGroups"] for res in rule["resources"] for verb in rule["verbs"]
    }


async def test_the_role_grants_exactly_what_the_executor_uses(
    tmp_path: Path, settings_factory: Callable[..., Any]
) -> None:
    pbs = {
        "deploy": playbook(EVERY_ACTION, name="deploy", alertname="D"),
        "sts": playbook(STATEFULSET_ACTIONS, name="sts", alertname="S", kind="StatefulSet"),
    }
    used: set[tuple[str, str, str]] = set()
    for dry_run in (False, True):
        clock = VirtualClock(T0)
        cluster = FakeCluster(clock=lambda c=clock: c.now().timestamp())  # type: ignore[misc]
        cluster.apply(web(env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        cluster.apply(web(image="registry.example/web:2.0", env=[{"name": "DB_POOL_MAX_SIZE", "value": "20"}]))
        cluster.apply(db())
        cluster.apply(db(image="registry.example/db:2.0"))
        pod = cluster.pods_of(NS, "web")[0]["metadata"]["name"]
        cluster.ready_delay = 5  # so wait_healthy watches the rollouts
        async with running_fake_kube(cluster) as kube, open_harness(
            tmp_path / str(dry_run), settings_factory, clock, kube, pbs, dry_run=dry_run
        ) as h:
            # one after the other: each wait_healthy then watches its own unfinished rollout (run
            # concurrently, one's watch lets the cluster settle and the other finds its rollout done)
            await h.record("web", alertname="D", pod=pod)
            await h.until_done(h.rt.worker.drain())
            await h.record("db", alertname="S")
            await h.until_done(h.rt.worker.drain())
            statuses = {e["playbook"]: e["status"] for e in await h.rt.store.list_executions()}
        assert statuses == dict.fromkeys(pbs, "dry_run" if dry_run else "succeeded")
        used |= {rbac_of(r) for r in cluster.requests}
    assert used == granted()
