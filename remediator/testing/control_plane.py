"""A real Kubernetes control plane for tests, the way controller-runtime's envtest provides one.

The project's fake (:mod:`remediator.testing.kube`) is fast and deterministic, but it is
our own reading of the apiserver.  Claims that matter for safety (above all that a
server-side dry-run changes nothing) must also be proved against the real thing, so
this module runs etcd, kube-apiserver and kube-controller-manager as local processes on
loopback ports, with a throw-away PKI, and hands out credentials for them.

There is no real kubelet and no scheduler: pods stay Pending and unbound unless a test
marks them ready once with :func:`mark_pods_ready`, or runs the project's stand-in
:class:`Kubelet` (``ControlPlane.kubelet()`` gives the session's one) for the namespaces
it names: it binds pods to a Node, reports them Ready or NotReady through the status
subresource, and finishes graceful deletes, so rollouts, progress deadlines and
Terminating pods happen as on a real cluster.

Binaries follow envtest's convention: ``$KUBEBUILDER_ASSETS`` names a folder holding
``kube-apiserver`` and ``kube-controller-manager`` (``make kube-assets`` fills
``.kube-assets/``); etcd is taken from that folder or from ``PATH`` (Debian's
``etcd-server``).  Starting is synchronous (plain subprocesses, readiness polled with
urllib) so that a session-wide pytest fixture needs no event loop; the API helpers are
async and use kubernetes-asyncio like the daemon does.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import yaml
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.clock import SystemClock
from remediator.ports import Clock

ASSETS_ENV = "KUBEBUILDER_ASSETS"
REQUIRED_BINARIES = ("kube-apiserver", "kube-controller-manager")
ADMIN_USER = "remediator-admin"
#: A second user with no RBAC bindings at all: tests grant it exactly what they mean to test.
UNPRIVILEGED_USER = "remediator-tester"
LOG_TAIL_LINES = 40

T = TypeVar("T")


class ControlPlaneError(RuntimeError):
    """A control-plane process failed to start or to become ready (the message carries its log's tail)."""


def find_etcd(assets: Path | None = None) -> Path | None:
    """etcd from the assets folder (as envtest ships it) or else from ``PATH`` (Debian's etcd-server)."""
    if assets is not None and os.access(assets / "etcd", os.X_OK):
        return assets / "etcd"
    found = shutil.which("etcd")
    return Path(found) if found else None


def find_assets() -> Path | None:
    """The folder named by ``$KUBEBUILDER_ASSETS`` if it holds everything a control plane needs, else None.

    None (rather than an error) lets a test suite skip cleanly on machines without the
    binaries; the folder must hold kube-apiserver and kube-controller-manager, and etcd
    must be found there or on ``PATH``.
    """
    value = os.environ.get(ASSETS_ENV, "").strip()
    if not value:
        return None
    folder = Path(value).expanduser()
    if not all(os.access(folder / name, os.X_OK) for name in REQUIRED_BINARIES):
        return None
    return folder if find_etcd(folder) is not None else None


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it; a race with others is unlikely)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{done.stderr.strip()}")


def _write_pki(d: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost signed by it, and a service-account key pair.

    Keys are ECDSA P-256: generating three RSA keys takes seconds on a small machine, EC
    keys take milliseconds, and the apiserver accepts them for TLS and for signing
    service-account tokens (ES256).  The extensions are spelled out because TLS clients
    (Python's ssl, Go's crypto/x509) reject a CA without ``CA:TRUE``/``keyCertSign`` or a
    server cert without the SAN it is reached by.  Certificates live one day: long enough
    for any test session.
    """
    if shutil.which("openssl") is None:
        raise ControlPlaneError("openssl is not installed: it generates the control plane's certificates")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=remediator-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=d,
    )
    (d / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver", cwd=d)
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "server.ext", cwd=d,
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


class _Process:
    """One child process whose output goes to ``<workdir>/<name>.log``."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        # A session of its own: a Ctrl-C in the terminal reaches pytest, which stops these in
        # order (controller-manager, apiserver, etcd) instead of all of them dying at once.
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, with admin and unprivileged tokens.

    ``with ControlPlane() as cp:`` (or ``async with``, which starts it in a worker thread,
    or ``start()``/``stop()``).  After start: ``url``, ``ca_file``, ``admin_token``,
    ``user_token`` (user ``remediator-tester``, no RBAC bindings), ``kubeconfig_path``
    (admin) and ``write_kubeconfig(path, token)``.  Logs are ``<workdir>/<process>.log``;
    ``stop()`` ends every process and removes the temp dir.
    """

    def __init__(
        self,
        assets: Path | None = None,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        controller_manager: bool = True,
    ) -> None:
        found = assets or find_assets()
        if found is None:
            raise ControlPlaneError(
                f"no control-plane binaries: set {ASSETS_ENV} to a folder holding "
                f"{' and '.join(REQUIRED_BINARIES)} (etcd there or on PATH), or run `make kube-assets`"
            )
        etcd = find_etcd(found)
        if etcd is None:
            raise ControlPlaneError("etcd not found in the assets folder nor on PATH (apt-get install etcd-server)")
        self.assets = found
        self.etcd_binary = etcd
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.with_controller_manager = controller_manager
        self.admin_token = secrets.token_urlsafe(24)
        self.user_token = secrets.token_urlsafe(24)
        self.user_name = UNPRIVILEGED_USER
        self.workdir: Path | None = None
        self.url = ""
        self.version = ""
        self.startup_seconds = 0.0
        self._processes: list[_Process] = []
        self._kubelet: Kubelet | None = None

    # -- paths, valid once started ------------------------------------------------------

    def _dir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("the control plane is not started")
        return self.workdir

    @property
    def ca_file(self) -> Path:
        return self._dir() / "pki" / "ca.crt"

    @property
    def kubeconfig_path(self) -> Path:
        """A kubeconfig for the admin user (group system:masters), written at start."""
        return self._dir() / "admin.kubeconfig"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd, the apiserver and the controller-manager, each waited for; stop all on any failure."""
        if self.workdir is not None:
            raise ControlPlaneError("the control plane is already started")
        began = time.monotonic()
        # etcd fsyncs every write: on tmpfs that costs nothing, and test data is thrown away anyway.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.workdir = Path(tempfile.mkdtemp(prefix="remediator-kube-", dir=shm))
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _start(self) -> None:
        work = self._dir()
        etcd_client, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        etcd = self._spawn("etcd", [
            str(self.etcd_binary), "--name", "t", "--data-dir", str(work / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"t={peer_url}",
        ])
        pki = work / "pki"
        pki.mkdir()
        _write_pki(pki)
        (pki / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self.user_token},{UNPRIVILEGED_USER},uid-tester\n"
        )

        # The apiserver starts while etcd is still coming up (it retries its connection, as it
        # does when both start together as static pods): that overlaps a second of each startup.
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        apiserver = self._spawn("kube-apiserver", [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--anonymous-auth=false",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
            f"--cert-dir={work / 'apiserver-certs'}",
        ])
        self._wait(etcd, lambda: _http_ok(f"{etcd_url}/health", expect=b'"health":"true"'), "etcd /health")
        tls = ssl.create_default_context(cafile=str(self.ca_file))
        auth = {"Authorization": f"Bearer {self.admin_token}"}
        self._wait(
            apiserver, lambda: _http_ok(f"{self.url}/readyz", context=tls, headers=auth, expect=b"ok"),
            "kube-apiserver /readyz",
        )
        self.write_kubeconfig(self.kubeconfig_path, self.admin_token)
        version = _http_get(f"{self.url}/version", context=tls, headers=auth)
        if version is not None and version[0] == 200:
            self.version = str(yaml.safe_load(version[1]).get("gitVersion", ""))

        if self.with_controller_manager:
            kcm_port = free_port()
            kubeconfig = str(self.kubeconfig_path)
            kcm = self._spawn("kube-controller-manager", [
                str(self.assets / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={kcm_port}", f"--cert-dir={work / 'kcm-certs'}",
                "--leader-elect=false", "--controllers=*",
                f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
            ])
            # Its serving cert is self-signed into --cert-dir at start: nothing to verify it against,
            # and this is our own child on loopback, so the health probe does not verify.
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            self._wait(
                kcm, lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", context=insecure, expect=b"ok"),
                "kube-controller-manager /healthz",
            )

    def _spawn(self, name: str, argv: Sequence[str]) -> _Process:
        process = _Process(name, argv, self._dir())
        self._processes.append(process)
        process.start()
        return process

    def _wait(self, process: _Process, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` (bounded by ``startup_timeout``); fail with the log's tail if the process dies."""
        deadline = time.monotonic() + self.startup_timeout
        while not ready():
            code = process.exited()
            if code is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with code {code} before {what} was ready; its log ended:\n"
                    f"{process.tail()}"
                )
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {self.startup_timeout:g}s; the {process.name} log ended:\n"
                    f"{process.tail()}"
                )
            time.sleep(0.1)

    def kubelet(self) -> Kubelet:
        """The control plane's stand-in kubelet, started (in a thread of its own) on first use.

        One per control plane, shared by every test: each test hands it its namespace with
        :meth:`Kubelet.manage`.  It stops with the control plane.
        """
        if self._kubelet is None:
            self._dir()
            self._kubelet = Kubelet(self.configuration).start_in_thread()
        return self._kubelet

    def stop(self) -> None:
        """Stop the kubelet, then every process (newest first: controller-manager, apiserver, etcd); remove the dir."""
        atexit.unregister(self.stop)
        if self._kubelet is not None:
            self._kubelet.stop()
            self._kubelet = None
        for process in reversed(self._processes):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                process.stop(self.stop_timeout)
        self._processes.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def logs(self, lines: int = LOG_TAIL_LINES) -> str:
        """The tail of every process's log (and the kubelet's latest errors), for a failing test's report."""
        out = [f"--- {p.name} ({p.log_path})\n{p.tail(lines)}" for p in self._processes]
        if self._kubelet is not None and self._kubelet.errors:
            out.append("--- test kubelet (errors it retried past)\n" + "\n".join(list(self._kubelet.errors)[-lines:]))
        return "\n".join(out)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ControlPlane:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- clients ------------------------------------------------------------------------

    def kubeconfig(self, token: str, *, namespace: str = "default", user: str = "user") -> dict[str, Any]:
        """A kubeconfig selecting this control plane as ``token``'s bearer."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
            "current-context": "test",
        }

    def write_kubeconfig(self, path: str | Path, token: str | None = None, *, namespace: str = "default") -> Path:
        """Write a kubeconfig for ``token`` (the admin's by default) to ``path``, for code that loads one itself."""
        target = Path(path)
        target.write_text(yaml.safe_dump(self.kubeconfig(token or self.admin_token, namespace=namespace)))
        return target

    def configuration(self, token: str | None = None) -> Any:
        """A kubernetes-asyncio ``Configuration`` for ``token`` (the admin's by default), verifying the CA."""
        configuration = client.Configuration(host=self.url)
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"BearerToken": token or self.admin_token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return configuration

    def api_client(self, token: str | None = None) -> Any:
        """A new kubernetes-asyncio ``ApiClient`` (close it: ``async with`` or ``await api.close()``)."""
        return client.ApiClient(self.configuration(token))


# -- synchronous probes (startup only) ------------------------------------------------------


def _http_get(
    url: str, *, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes] | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2.0, context=context) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):  # not listening yet, TLS not up yet
        return None


def _http_ok(
    url: str, *, expect: bytes, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> bool:
    got = _http_get(url, context=context, headers=headers)
    return got is not None and got[0] == 200 and expect in got[1]


# -- async helpers for tests ------------------------------------------------------------------


async def poll_until(
    probe: Callable[[], Awaitable[T | None]], *, limit: float, what: str, interval: float = 0.05
) -> T:
    """Await ``probe`` until it returns something other than None; TimeoutError naming ``what`` after ``limit`` s.

    Only for waiting on the real control plane's asynchronous controllers: an external
    process has no clock to advance, so bounded polling is the honest way to wait.  The
    bound covers a probe that hangs, too.
    """
    try:
        async with asyncio.timeout(limit):
            while True:
                value = await probe()
                if value is not None:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        raise TimeoutError(f"timed out after {limit:g}s waiting for {what}") from None


async def read_or_none(read: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T | None:
    """``read(*args)``, or None when the object does not exist (404); other errors propagate."""
    try:
        return await read(*args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def create_namespace(api: Any, name: str, *, limit: float = 30.0) -> None:
    """Create namespace ``name`` and wait for its ``default`` ServiceAccount.

    The controller-manager creates that account a moment after the namespace; until it
    exists the ServiceAccount admission plugin refuses pods (and so ReplicaSets make none).
    """
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    async def account() -> Any:
        return await read_or_none(core.read_namespaced_service_account, "default", name)

    await poll_until(account, limit=limit, what=f"the default ServiceAccount of namespace {name}")


async def delete_namespace(api: Any, name: str) -> None:
    """Delete namespace ``name`` without waiting (the namespace controller empties it in the background)."""
    with contextlib.suppress(ApiException):
        await client.CoreV1Api(api).delete_namespace(name)


def _is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _stamp(clock: Clock) -> str:
    return clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(pod: Mapping[str, Any], *, ready: bool, now: str) -> dict[str, Any]:
    """The status a kubelet reports for ``pod`` once its containers run: Ready, or running but not ready.

    Not ready is what a failing readiness probe (or a crash-looping container) shows: the
    pod is Running, its containers are not ready, and no controller counts it as available.
    """
    flag = "True" if ready else "False"
    containers = (pod.get("spec") or {}).get("containers") or []
    conditions = [{"type": "Initialized", "status": "True", "lastTransitionTime": now}]
    for kind in ("ContainersReady", "Ready"):
        condition = {"type": kind, "status": flag, "lastTransitionTime": now}
        if not ready:
            condition["reason"] = "ContainersNotReady"
        conditions.append(condition)
    return {
        "status": {
            "phase": "Running",
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in containers
            ],
        }
    }


async def mark_pods_ready(api: Any, namespace: str, selector: str | None = None) -> list[str]:
    """Do a kubelet's part once for the pods of ``namespace`` (matching label ``selector``): report them Ready.

    Writes the status subresource (phase Running, Initialized/ContainersReady/Ready True,
    a ready running status per container).  Pods are not bound to a node: the apiserver
    and the Deployment controller count an unbound Ready pod all the same.  Pods being
    deleted or already Ready are left alone.  Returns the names it marked.  For pods that
    come and go during a test, run a :class:`Kubelet` instead.
    """
    core = client.CoreV1Api(api)
    kw: dict[str, Any] = {"label_selector": selector} if selector else {}
    listed = api.sanitize_for_serialization(await core.list_namespaced_pod(namespace, **kw))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    marked: list[str] = []
    for pod in listed.get("items") or []:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or _is_ready(pod):
            continue
        try:
            await core.patch_namespaced_pod_status(meta["name"], namespace, pod_status(pod, ready=True, now=now))
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile (a rollout replaced it): nothing to mark
                continue
            raise
        marked.append(meta["name"])
    return marked


# -- a stand-in kubelet -------------------------------------------------------------------------

#: A pod carrying this label with value ``"true"`` is never reported ready, whatever the policy.
NEVER_READY_LABEL = "kubelet.remediator.test/never-ready"
KUBELET_NODE = "remediator-test-node"


@dataclass(frozen=True)
class PodPolicy:
    """How the test kubelet treats the pods of one namespace.

    ``ready_after``: seconds (on the kubelet's clock) from binding until a pod reports Ready;
    a pod already Ready stays Ready when this grows, so raising it holds back only new pods.
    ``finalize_after``: seconds a deleted pod stays ``Terminating`` before the kubelet
    finishes the delete (``gracePeriodSeconds=0``); ``None`` keeps it Terminating until the
    policy changes.  Pods whose labels include all of ``never_ready_labels`` (a Deployment's
    template labels pick its pods) or that run an image in ``never_ready_images`` (a broken
    release) stay Running but NotReady, and a Ready one is marked NotReady.
    """

    ready_after: float = 0.0
    finalize_after: float | None = 0.0
    never_ready_labels: Mapping[str, str] = field(default_factory=dict)
    never_ready_images: frozenset[str] = frozenset()

    def never_ready(self, pod: Mapping[str, Any]) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(NEVER_READY_LABEL) == "true":
            return True
        if self.never_ready_labels and all(labels.get(k) == v for k, v in self.never_ready_labels.items()):
            return True
        images = {c.get("image") for c in (pod.get("spec") or {}).get("containers") or []}
        return bool(images & self.never_ready_images)


class Kubelet:
    """A small kubelet for a cluster that has none: binds, readies and finalises the pods of chosen namespaces.

    A real control plane without kubelets leaves pods Pending forever and deleted pods
    (once bound) Terminating forever, so no rollout would ever finish.  This loop does the
    kubelet's part of the API conversation and nothing else: it registers a Node (and keeps
    its Ready heartbeat fresh, so the node lifecycle controller never taints it and evicts
    everything), binds every unscheduled pod of a managed namespace to it
    (``pods/binding``), reports the pod Ready or NotReady through ``pods/status`` as the
    namespace's :class:`PodPolicy` says, and finishes a graceful delete after the
    policy's delay.  Pods bound to its node in namespaces no longer managed are finalised
    at once, as a kubelet would, so deleting a test's namespace completes.

    It is an informer: one list, then a watch of every pod, feeding a queue of pod keys that
    one worker reconciles; delays are sleeps on ``clock`` (a :class:`~remediator.clock.VirtualClock`
    makes readiness happen exactly when a test moves time).  ``async with Kubelet(...)``
    runs it on the current loop; :meth:`start_in_thread` / :meth:`stop` run it on a loop of
    its own for synchronous (e.g. session-scoped) fixtures.  :meth:`manage` is thread-safe.
    """

    def __init__(
        self,
        configuration: Callable[[], Any],
        *,
        node: str = KUBELET_NODE,
        clock: Clock | None = None,
        heartbeat: float = 10.0,
        retry: float = 0.2,
    ) -> None:
        self._configuration = configuration
        self.node = node
        self.clock: Clock = clock or SystemClock()
        self.heartbeat = heartbeat
        self.retry = retry
        self._policies: dict[str, PodPolicy] = {}
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._since: dict[tuple[str, str], float] = {}  # (uid, "bound"|"deleting") -> first seen, on the clock
        self._timers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        #: The latest API failures it retried past: a test can show them when something hangs.
        self.errors: collections.deque[str] = collections.deque(maxlen=100)

    # -- configuration, from any thread ------------------------------------------------------

    def manage(self, namespace: str, policy: PodPolicy | None = None) -> None:
        """Run the pods of ``namespace`` under ``policy`` (default: ready at once, deletes finish at once)."""
        with self._lock:
            self._policies[namespace] = policy or PodPolicy()
        self._poke(namespace)

    def release(self, namespace: str) -> None:
        """Stop managing ``namespace``: its pods are no longer bound or readied (deletes still finish)."""
        with self._lock:
            self._policies.pop(namespace, None)
        self._poke(namespace)

    def policy(self, namespace: str) -> PodPolicy | None:
        with self._lock:
            return self._policies.get(namespace)

    def _poke(self, namespace: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._requeue_namespace, namespace)

    def _requeue_namespace(self, namespace: str) -> None:
        for key, timer in list(self._timers.items()):
            if key[0] == namespace:
                timer.cancel()
                self._timers.pop(key, None)
        for key in [k for k in self._pods if k[0] == namespace]:
            self._enqueue(key)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Kubelet:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._synced = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="test-kubelet")
        synced = asyncio.ensure_future(self._synced.wait())
        await asyncio.wait({synced, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not synced.done():
            synced.cancel()
            await self.__aexit__(None, None, None)
            raise ControlPlaneError("the test kubelet stopped before its first sync")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for timer in self._timers.values():
            timer.cancel()
        tasks = [*self._timers.values(), *([self._task] if self._task else [])]
        if self._task is not None:
            self._task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        self._task = None
        self._loop = None

    def start_in_thread(self, timeout: float = 30.0) -> Kubelet:
        """Run on an event loop of its own in a daemon thread (returns once the first list is in)."""
        if self._thread is not None:
            raise ControlPlaneError("the test kubelet is already running")
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._stopping = asyncio.Event()
            try:
                async with self:
                    started.set()
                    await self._stopping.wait()
            except BaseException as exc:  # reported to start_in_thread's caller
                failure.append(exc)
                started.set()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="test-kubelet", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or failure:
            self.stop()
            raise ControlPlaneError(f"the test kubelet did not start: {failure[0] if failure else 'timed out'}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a kubelet started with :meth:`start_in_thread` and wait for its thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        self._thread = None

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        async with client.ApiClient(self._configuration()) as api:
            core = client.CoreV1Api(api)
            await self._register_node(core)
            workers = [
                asyncio.create_task(self._informer(api, core), name="test-kubelet-informer"),
                asyncio.create_task(self._worker(core), name="test-kubelet-worker"),
                asyncio.create_task(self._heartbeat(core), name="test-kubelet-heartbeat"),
            ]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    def _node_status(self) -> dict[str, Any]:
        # Real time, whatever the kubelet's clock: the node lifecycle controller is a real process,
        # and a heartbeat whose time never moves is no heartbeat to it.
        now = _stamp(SystemClock())
        return {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "remediator test kubelet", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        }}

    async def _register_node(self, core: Any) -> None:
        body = {"metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}}}
        try:
            await core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:  # registered by an earlier kubelet of this session: take it over
                raise
        await core.patch_node_status(self.node, self._node_status())

    async def _heartbeat(self, core: Any) -> None:
        """Keep the node Ready: without a heartbeat the node lifecycle controller marks it
        unreachable, marks its pods NotReady and evicts them a few minutes later."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await core.patch_node_status(self.node, self._node_status())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next beat may get through; the controller allows ~50 s
                self.errors.append(f"node heartbeat: {exc}")

    async def _informer(self, api: Any, core: Any) -> None:
        """List then watch every pod into the cache, re-listing whenever the watch breaks or expires."""
        assert self._synced is not None
        while True:
            try:
                listed = api.sanitize_for_serialization(await core.list_pod_for_all_namespaces())
                seen = set()
                for pod in listed.get("items") or []:
                    key = self._store(pod)
                    seen.add(key)
                for key in set(self._pods) - seen:
                    self._forget(key)
                self._synced.set()
                version = listed["metadata"]["resourceVersion"]
                w = watch.Watch(return_type="object")
                async with w.stream(
                    core.list_pod_for_all_namespaces, resource_version=version, timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ) as stream:
                    async for event in stream:
                        if event["type"] == "DELETED":
                            self._forget(_key(event["raw_object"]))
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._store(event["raw_object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken or expired watch: list afresh
                self.errors.append(f"pod watch: {exc}")
                await asyncio.sleep(self.retry)

    def _store(self, pod: dict[str, Any]) -> tuple[str, str]:
        key = _key(pod)
        self._pods[key] = pod
        self._enqueue(key)
        return key

    def _forget(self, key: tuple[str, str]) -> None:
        pod = self._pods.pop(key, None)
        if pod is not None:
            uid = pod["metadata"].get("uid", "")
            self._since.pop((uid, "bound"), None)
            self._since.pop((uid, "deleting"), None)

    def _enqueue(self, key: tuple[str, str]) -> None:
        if self._queue is not None:
            self._queue.put_nowait(key)

    def _later(self, key: tuple[str, str], delay: float) -> None:
        """Reconcile ``key`` again once ``delay`` has passed on the clock (one timer per pod)."""
        if key in self._timers:
            return

        async def fire() -> None:
            await self.clock.sleep(delay)
            self._timers.pop(key, None)
            self._enqueue(key)

        self._timers[key] = asyncio.create_task(fire())

    def _elapsed(self, pod: Mapping[str, Any], what: str) -> float:
        mark = (pod["metadata"].get("uid", ""), what)
        now = self.clock.monotonic()
        return now - self._since.setdefault(mark, now)

    async def _worker(self, core: Any) -> None:
        assert self._queue is not None
        while True:
            key = await self._queue.get()
            pod = self._pods.get(key)
            if pod is None:
                continue
            try:
                await self._reconcile(core, key, pod)
            except ApiException as exc:
                if exc.status not in (404, 409):  # gone, or bound/deleted by someone else meanwhile
                    self.errors.append(f"{key[0]}/{key[1]}: {exc.status} {exc.reason}")
                    self._later(key, self.retry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable apiserver, or a pod we misread: the loop must not die of it
                self.errors.append(f"{key[0]}/{key[1]}: {type(exc).__name__}: {exc}")
                self._later(key, self.retry)

    async def _reconcile(self, core: Any, key: tuple[str, str], pod: dict[str, Any]) -> None:
        namespace, name = key
        meta, spec = pod["metadata"], pod.get("spec") or {}
        policy = self.policy(namespace)
        bound_here = spec.get("nodeName") == self.node
        if meta.get("deletionTimestamp"):
            if not bound_here:
                return  # an unbound pod is deleted at once by the apiserver; another node's is not ours
            if policy is not None:
                if policy.finalize_after is None:
                    return
                left = policy.finalize_after - self._elapsed(pod, "deleting")
                if left > 0:
                    self._later(key, left)
                    return
            options = client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
            )
            await core.delete_namespaced_pod(name, namespace, body=options)
            return
        if policy is None:
            return
        if not spec.get("nodeName"):
            binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}}
            # The generated client cannot read the Status a binding answers with: take the raw response.
            await core.create_namespaced_pod_binding(name, namespace, binding, _preload_content=False)
            return  # the binding's watch event brings the pod back here
        if not bound_here:
            return
        ready, phase = _is_ready(pod), (pod.get("status") or {}).get("phase")
        if policy.never_ready(pod):
            if ready or phase != "Running":
                await self._report(core, pod, ready=False)
            return
        if ready:
            return
        left = policy.ready_after - self._elapsed(pod, "bound")
        if left > 0:
            self._later(key, left)
            return
        await self._report(core, pod, ready=True)

    async def _report(self, core: Any, pod: Mapping[str, Any], *, ready: bool) -> None:
        namespace, name = _key(pod)
        await core.patch_namespaced_pod_status(name, namespace, pod_status(pod, ready=ready, now=_stamp(self.clock)))


def _key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


__all__ = [
    "ASSETS_ENV",
    "KUBELET_NODE",
    "NEVER_READY_LABEL",
    "ControlPlane",
    "ControlPlaneError",
    "Kubelet",
    "PodPolicy",
    "create_namespace",
    "delete_namespace",
    "find_assets",
    "find_etcd",
    "mark_pods_ready",
    "pod_status",
    "poll_until",
    "read_or_none",
]
