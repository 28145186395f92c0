"""The api-service runbook, automated, end to end with the real monitoring stack (issue 15, item 6).

Debian's real Prometheus scrapes a service the test controls (:class:`ApiService`) and
evaluates ``examples/runbooks/rules/*.rules.yaml``; its alerts go to Debian's real
Alertmanager, which routes them to a real ``remediator serve`` (live, a subprocess)
running ``examples/runbooks/playbooks``; the daemon acts on a cluster (the real control
plane when its binaries are installed, else the fake Kubernetes API as a process) and
its ``prometheus_check`` asks the same Prometheus.  Its ``oncall`` webhook channel
posts to the service, which keeps every (signature-checked) delivery.

* Recovery: the error rate goes up, HighErrorRate fires, ``api-high-error-rate-rollback``
  sets the image to the last good version (the rule's ``rollback_version`` annotation,
  which Prometheus fills from ``release_last_good_info``), the service recovers,
  verification passes, on-call is told it worked, and the alert resolves.
* Failure: the rollback does not help, ``prometheus_check`` fails at its timeout, ``undo``
  puts back exactly the image that was there, and on-call is told to take over.

What is changed for speed, and only that, in copies made per test: every rule's
``for:`` (5m, 10m, 1m) becomes 1s, with every expression, label and annotation as
shipped; the two checks' ``for``/``timeout``/``interval`` are shortened, and the
``http_check`` URL's host (the cluster DNS name ``api-service.production.svc:8080``,
which does not resolve here) becomes the test service's, its path kept.  Prometheus
scrapes and evaluates every 500ms and Alertmanager sends at once (group_wait 0s).

The service's recovery is a burst of good requests (10000/s, no 5xx) after a few
seconds at 10/s with half of them 5xx: the shipped queries take their ratio over a
``[2m]`` and ``[5m]`` window, so only good traffic that outweighs the window's errors a
hundredfold brings the ratio under 1 % within seconds rather than minutes.

Everything here runs on real time, and every wait is bounded polling on a process.
"""

from __future__ import annotations

import os
import secrets
import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.testing.control_plane import ControlPlane, find_assets
from tests.e2e.clusters import Cluster, FakeCluster, RealCluster, wait_rolled_out
from tests.e2e.monitoring import ApiService, Notification, Prometheus, Traffic
from tests.e2e.processes import ROOT, Alertmanager, Daemon, wait_for

pytestmark = pytest.mark.e2e

RUNBOOKS = ROOT / "examples" / "runbooks"
PLAYBOOK = "api-high-error-rate-rollback"
NAMESPACE, NAME, CONTAINER = "production", "api-service", "api-service"
LAST_GOOD = "1.4.2"
BROKEN_IMAGE = "registry.example.com/api-service:1.5.0"
GOOD_IMAGE = f"registry.example.com/api-service:{LAST_GOOD}"

MANIFEST = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {NAME}, namespace: {NAMESPACE}, labels: {{app: {NAME}}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {NAME}}}}}
  template:
    metadata: {{labels: {{app: {NAME}}}}}
    spec:
      containers:
        - name: {CONTAINER}
          image: {BROKEN_IMAGE}
          env: [{{name: JAVA_OPTS, value: "-Xms1g -Xmx2g"}}]
"""

HEALTHY = Traffic(rps=10, error_ratio=0.0)
FAILING = Traffic(rps=10, error_ratio=0.5)
RECOVERED = Traffic(rps=10_000, error_ratio=0.0)

#: The shipped rules' ``for:``, for speed (see the module docstring).
RULE_FOR = "1s"
#: ``prometheus_check``'s timeout in the copy (seconds): it bounds the failing scenario.
VERIFY_TIMEOUT = 12
#: The shipped checks' timings, for speed.
CHECK_TIMINGS: dict[str, dict[str, str]] = {
    "http_check": {"for": "1s", "timeout": "20s", "interval": "250ms"},
    "prometheus_check": {"for": "2s", "timeout": f"{VERIFY_TIMEOUT}s", "interval": "500ms"},
}
#: As in tests/conftest.py (conftest modules are not imported from one another): counts the test with the
#: control plane's in the session summary, since it asks for ``control_plane`` through a module fixture.
ON_CONTROL_PLANE = ("control_plane", "requested")
#: Bound on each wait for something the stack does (an alert firing, an execution ending).
STEP_TIMEOUT = 45.0


def require_monitoring() -> tuple[str, str, str]:
    """prometheus, alertmanager and amtool; one line to skip on (or, in CI, fail) when one is missing."""
    found = [shutil.which(n) or (shutil.which("alertmanager") if n == "prometheus-alertmanager" else None)
             for n in ("prometheus", "prometheus-alertmanager", "amtool")]
    if None in found:
        reason = ("Debian's prometheus and prometheus-alertmanager are not installed "
                  "(`make test` installs them: targets lint and alertmanager)")
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must have them")
        pytest.skip(reason)
    prometheus, alertmanager, amtool = (str(path) for path in found)
    return prometheus, alertmanager, amtool


def copy_rules(dest: Path) -> Path:
    """The shipped rule files with every ``for:`` at :data:`RULE_FOR` and nothing else changed."""
    dest.mkdir()
    for src in sorted((RUNBOOKS / "rules").glob("*.rules.yaml")):
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = RULE_FOR
        (dest / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def copy_playbooks(dest: Path, service_url: str) -> Path:
    """The shipped playbooks, the checks timed by :data:`CHECK_TIMINGS`, ``http_check`` asking ``service_url``."""
    dest.mkdir()
    for src in sorted((RUNBOOKS / "playbooks").glob("*.yaml")):
        doc = yaml.safe_load(src.read_text())
        for playbook in doc["playbooks"]:
            for step in playbook["steps"]:
                step.update(CHECK_TIMINGS.get(step["action"], {}))
                if step["action"] == "http_check":
                    step["url"] = service_url + urllib.parse.urlsplit(step["url"]).path
        (dest / src.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


# -- the stack --------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def binaries() -> tuple[str, str, str]:
    """Looked up first (autouse), so a machine without them skips before anything is started."""
    return require_monitoring()


@pytest.fixture(scope="module")
def real_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane | None]:
    """The session's real control plane with namespace ``production`` run by its kubelet; None without binaries."""
    if find_assets() is None:
        yield None
        return
    plane: ControlPlane = request.getfixturevalue("control_plane")
    admin = RealCluster(plane)
    admin.ensure_namespace(NAMESPACE)
    kubelet = plane.kubelet()
    kubelet.manage(NAMESPACE)
    try:
        yield plane
    finally:
        kubelet.release(NAMESPACE)
        admin.delete_namespace(NAMESPACE)


@pytest.fixture
def cluster(real_plane: ControlPlane | None, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Deployment production/api-service at the broken release: on the real control plane, else on the fake.

    Started by :func:`stack`, beside the other processes.
    """
    if real_plane is not None:
        request.node.user_properties.append(ON_CONTROL_PLANE)
        found: Cluster = RealCluster(real_plane, MANIFEST)
    else:
        (tmp_path / "kube").mkdir()
        found = FakeCluster(tmp_path / "kube", MANIFEST)
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture
def service() -> Iterator[ApiService]:
    svc = ApiService(last_good_version=LAST_GOOD, secret=secrets.token_urlsafe(16), traffic=HEALTHY)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def prometheus(binaries: tuple[str, str, str], tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus, its port chosen (the daemon is configured with its URL); started by :func:`stack`."""
    (tmp_path / "prometheus").mkdir()
    server = Prometheus(binaries[0], tmp_path / "prometheus")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def daemon(cluster: Cluster, service: ApiService, prometheus: Prometheus, tmp_path: Path) -> Iterator[Daemon]:
    """A live ``remediator serve`` with the runbook playbooks, its cluster, Prometheus and the ``oncall`` channel.

    Started by :func:`stack`; at the end it must shut down gracefully on SIGTERM.
    """
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    secret_file = workdir / "oncall-secret"
    secret_file.write_text(service.secret + "\n")
    (workdir / "remediator.yaml").write_text(yaml.safe_dump({  # read from the working directory, as documented
        "prometheus": {"url": prometheus.url, "timeout": "2s"},
        "channels": {"oncall": {"type": "webhook", "url": f"{service.url}/oncall",
                                "secret_file": str(secret_file), "request_timeout": "2s"}},
    }))
    kubeconfig = cluster.kubeconfig(workdir / "kubeconfig", NAMESPACE)
    d = Daemon(workdir, dry_run=False, playbooks=copy_playbooks(tmp_path / "playbooks", service.url),
               env={"REMEDIATOR_KUBERNETES_MODE": "kubeconfig", "REMEDIATOR_KUBERNETES_KUBECONFIG": str(kubeconfig)})
    yield d
    if d.proc is not None:
        assert d.stop() == 0, f"the daemon did not shut down gracefully:\n{d.log()}"


@pytest.fixture
def alertmanager(binaries: tuple[str, str, str], daemon: Daemon, tmp_path: Path) -> Iterator[Alertmanager]:
    """Alertmanager routing every alert to ``daemon``; started by :func:`stack`."""
    (tmp_path / "alertmanager").mkdir()
    am = Alertmanager(binaries[1], binaries[2], tmp_path / "alertmanager", daemon)
    try:
        yield am
    finally:
        am.stop()


@dataclass(frozen=True)
class Stack:
    cluster: Cluster
    service: ApiService
    prometheus: Prometheus
    alertmanager: Alertmanager
    daemon: Daemon


def start_together(*starts: Callable[[], None]) -> None:
    """Run each ``start`` (each waits for its own process to be ready) on a thread of its own.

    The processes need only each other's addresses, known before any starts, so they can
    come up at once; the first failure is raised once every start has ended (the fixtures
    stop whatever did start).
    """
    with ThreadPoolExecutor(len(starts)) as pool:
        futures = [pool.submit(start) for start in starts]
    for future in futures:
        future.result()


@pytest.fixture
def stack(cluster: Cluster, service: ApiService, prometheus: Prometheus, alertmanager: Alertmanager,
          daemon: Daemon, tmp_path: Path) -> Stack:
    """Everything started at once; Prometheus scrapes the service and sends its alerts to Alertmanager."""
    config = {
        "global": {"scrape_interval": "500ms", "scrape_timeout": "400ms", "evaluation_interval": "500ms"},
        "rule_files": [str(copy_rules(tmp_path / "rules") / "*.rules.yaml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]},
        "scrape_configs": [{"job_name": "api-service", "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}],
    }
    start_together(cluster.start, daemon.start, alertmanager.start, lambda: prometheus.start(config))
    wait_rolled_out(cluster, NAMESPACE, NAME)
    return Stack(cluster, service, prometheus, alertmanager, daemon)


# -- what the test watches ----------------------------------------------------------------------

ERROR_RATIO = ('sum(rate(http_server_requests_seconds_count{job="api-service",status=~"5.."}[5m]))'
               ' / sum(rate(http_server_requests_seconds_count{job="api-service"}[5m]))')


def image_of(deployment: dict[str, Any]) -> str:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def image(cluster: Cluster) -> str:
    return image_of(cluster.deployment(NAMESPACE, NAME))


def the_execution(daemon: Daemon) -> dict[str, Any] | None:
    executions = daemon.executions()
    assert len(executions) <= 1, f"more than one execution: {executions}"
    return executions[0] if executions else None


def finished(daemon: Daemon) -> dict[str, Any] | None:
    found = the_execution(daemon)
    return found if found is not None and found["status"] not in ("pending", "running") else None


def messages(service: ApiService, count: int) -> list[Notification] | None:
    got = service.notifications()
    return got if len(got) >= count else None


def fire(stack: Stack) -> dict[str, Any]:
    """Healthy traffic first (no alert), then 50 % 5xx: HighErrorRate fires and the rollback starts.

    Returns the execution, once its ``set_image`` has reached the cluster.
    """
    prometheus, daemon = stack.prometheus, stack.daemon
    wait_for(lambda: prometheus.query(ERROR_RATIO) or None, timeout=STEP_TIMEOUT,
             what="Prometheus to have scraped the service twice (an error ratio to evaluate)")
    assert prometheus.query(ERROR_RATIO) == [0.0] and prometheus.alerts() == {}
    stack.service.set_traffic(FAILING)
    wait_for(lambda: True if prometheus.alerts().get("HighErrorRate") == "firing" else None,
             timeout=STEP_TIMEOUT, what="HighErrorRate firing in Prometheus")
    assert set(prometheus.alerts()) == {"HighErrorRate"}, "a rule fired that the service gives no reason to"
    execution = wait_for(lambda: the_execution(daemon), timeout=STEP_TIMEOUT,
                         what="the daemon starting an execution for the alert Alertmanager routed to it")
    assert (execution["playbook"], execution["decision"], execution["dry_run"]) == (PLAYBOOK, "executed", False)
    assert execution["target"] == {"kind": "Deployment", "namespace": NAMESPACE, "name": NAME}
    wait_for(lambda: True if image(stack.cluster) == GOOD_IMAGE else None, timeout=STEP_TIMEOUT,
             what=f"the image set to {GOOD_IMAGE} in the cluster")
    return execution


def results(detail: dict[str, Any], phase: str) -> list[tuple[str, str]]:
    return [(r["action"], r["status"]) for r in detail["results"] if r["phase"] == phase]


def step(detail: dict[str, Any], action: str) -> dict[str, Any]:
    [found] = [r for r in detail["results"] if r["action"] == action]
    return dict(found)


def assert_alert_and_image_step(detail: dict[str, Any]) -> None:
    """The alert as Prometheus sent it (through Alertmanager), and the set_image step it made."""
    alert = detail["alert_payload"]
    assert alert["labels"] == {"alertname": "HighErrorRate", "severity": "critical", "service": "api-service"}
    assert alert["annotations"]["rollback_version"] == LAST_GOOD  # Prometheus' template query of the service
    assert alert["annotations"]["summary"].startswith("api-service answers ")
    set_image = step(detail, "set_image")
    assert (image_of(set_image["before"]), image_of(set_image["after"])) == (BROKEN_IMAGE, GOOD_IMAGE), set_image


def assert_delivered(daemon: Daemon, execution_id: str, count: int) -> None:
    """The audit records each on-call message as sent, at the first attempt."""
    outcomes = daemon.get_json(f"/api/v1/executions/{execution_id}")["notifications"]
    assert [(o["channel"], o["event"], o["result"], o["attempts"]) for o in outcomes] == [
        ("oncall", "message", "sent", 1)] * count, outcomes


# -- the scenarios ------------------------------------------------------------------------------


def test_error_rate_up_rollback_to_last_good_version_verified_and_reported(stack: Stack) -> None:
    execution = fire(stack)
    stack.service.set_traffic(RECOVERED)  # the last good release serves without errors

    done = wait_for(lambda: finished(stack.daemon), timeout=STEP_TIMEOUT, what="the rollback execution to end")
    detail = stack.daemon.get_json(f"/api/v1/executions/{execution['id']}")
    assert done["status"] == "succeeded", detail
    assert results(detail, "main") == [("notify", "ok"), ("set_image", "ok"), ("wait_healthy", "ok"),
                                       ("http_check", "ok"), ("prometheus_check", "ok"), ("notify", "ok")]
    assert results(detail, "on_failure") == []
    assert_alert_and_image_step(detail)
    check = step(detail, "prometheus_check")["details"]
    assert check["samples"] == 1 and check["values"][0]["value"] < 0.01, check
    assert step(detail, "http_check")["details"]["last_status"] == 200

    deployment = wait_rolled_out(stack.cluster, NAMESPACE, NAME)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container == {**container, "image": GOOD_IMAGE, "env": [{"name": "JAVA_OPTS", "value": "-Xms1g -Xmx2g"}]}

    sent = wait_for(lambda: messages(stack.service, 2), timeout=STEP_TIMEOUT, what="two on-call notifications")
    assert [(n.body["event"], n.body["message"]) for n in sent] == [
        ("message", f"HighErrorRate on api-service: rolling back to {LAST_GOOD}"),
        ("message", f"api-service rolled back to {LAST_GOOD}: healthy, error rate under 1 %"),
    ]
    assert all(n.signed and n.body["execution"]["id"] == execution["id"] for n in sent)
    assert_delivered(stack.daemon, execution["id"], len(sent))

    # the alert's own rule sees the recovery too: Prometheus resolves it, Alertmanager tells the daemon
    wait_for(lambda: True if stack.prometheus.alerts() == {} else None, timeout=STEP_TIMEOUT,
             what="HighErrorRate resolved in Prometheus")
    wait_for(lambda: stack.daemon.metric("remediator_alerts_received_total", status="resolved") or None,
             timeout=STEP_TIMEOUT, what="the resolve reaching the daemon through Alertmanager")
    assert [e["id"] for e in stack.daemon.executions()] == [execution["id"]]


def test_rollback_that_does_not_help_is_undone_exactly_and_handed_to_a_person(stack: Stack) -> None:
    before = stack.cluster.deployment(NAMESPACE, NAME)["spec"]["template"]
    execution = fire(stack)  # the service keeps failing: the last good release does not help this time

    done = wait_for(lambda: finished(stack.daemon), timeout=STEP_TIMEOUT, what="the rollback execution to end")
    detail = stack.daemon.get_json(f"/api/v1/executions/{execution['id']}")
    assert done["status"] == "failed", detail
    assert results(detail, "main") == [("notify", "ok"), ("set_image", "ok"), ("wait_healthy", "ok"),
                                       ("http_check", "ok"), ("prometheus_check", "failed")]
    assert results(detail, "on_failure") == [("undo", "ok"), ("notify", "ok")]
    assert_alert_and_image_step(detail)
    verification = step(detail, "prometheus_check")
    check = verification["details"]
    assert check["last"].startswith("1 of 1 samples not < 0.01"), check
    assert f"did not pass within {VERIFY_TIMEOUT}s" in verification["message"], verification["message"]
    undone = step(detail, "undo")["details"]["steps"]
    assert [(u["action"], u["outcome"], u["from"], u["to"]) for u in undone] == [
        ("set_image", "undone", BROKEN_IMAGE, GOOD_IMAGE)], undone

    deployment = wait_rolled_out(stack.cluster, NAMESPACE, NAME)
    assert deployment["spec"]["template"] == before, "undo did not put the pod template back exactly"
    assert image(stack.cluster) == BROKEN_IMAGE

    sent = wait_for(lambda: messages(stack.service, 2), timeout=STEP_TIMEOUT, what="two on-call notifications")
    assert [(n.body["event"], n.body["message"]) for n in sent] == [
        ("message", f"HighErrorRate on api-service: rolling back to {LAST_GOOD}"),
        ("message", "ROLLBACK FAILED, MANUAL INTERVENTION REQUIRED: api-service (HighErrorRate)"),
    ]
    assert all(n.signed and n.body["execution"]["id"] == execution["id"] for n in sent)
    assert_delivered(stack.daemon, execution["id"], len(sent))
    assert stack.prometheus.alerts() == {"HighErrorRate": "firing"}
    assert [e["id"] for e in stack.daemon.executions()] == [execution["id"]]
