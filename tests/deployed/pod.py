"""What the Deployment in deploy/kubernetes gives its container, rebuilt in a directory.

The manifests are read as written: the Deployment (found by ``kind``, wherever the YAML
files put it), its container's args and env, its volumes (ConfigMaps from the files or
from kustomize's ``configMapGenerator``, Secrets, emptyDirs) laid out as the kubelet lays
them out, and the variables Kubernetes injects for the Service named ``remediator``.

A pod has its own filesystem and network; a test process does not.  So every path the
container sees is found under ``root`` (``/etc/remediator/...`` is ``<root>/etc/remediator/...``,
in args, env values and the mounted files alike), and the one listening port is a free one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.deployed.kubelet import write_configmap

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
#: What the cluster would give the Service ``remediator``.
CLUSTER_IP = "10.96.23.7"


def documents(directory: Path = KUBE) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(directory.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "kind" in doc:
                yield path, doc


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {KUBE}, found {len(found)}"
    return found[0]


def configmap_files(name: str) -> dict[str, str]:
    """A ConfigMap's data, from a manifest or from a kustomization's ``configMapGenerator``."""
    for _, doc in documents():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == name:
            return {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
    for path, doc in documents():
        if doc["kind"] != "Kustomization":
            continue
        for generator in doc.get("configMapGenerator") or []:
            if generator["name"] == name:
                files = {}
                for entry in generator.get("files") or []:
                    key, _, source = entry.rpartition("=")
                    files[key or Path(source).name] = (path.parent / source).read_text()
                return files
    raise AssertionError(f"no ConfigMap {name} in {KUBE}")


def service_links(service: Mapping[str, Any], ip: str = CLUSTER_IP) -> dict[str, str]:
    """The variables the kubelet injects for ``service`` (pkg/kubelet/envvars), for every pod of the namespace."""
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    ports = service["spec"]["ports"]
    first = ports[0]
    env = {f"{prefix}_SERVICE_HOST": ip, f"{prefix}_SERVICE_PORT": str(first["port"]),
           f"{prefix}_PORT": f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"}
    for port in ports:
        proto = port.get("protocol", "TCP")
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        link = f"{prefix}_PORT_{port['port']}_{proto}"
        env[link] = f"{proto.lower()}://{ip}:{port['port']}"
        env.update({f"{link}_PROTO": proto.lower(), f"{link}_PORT": str(port["port"]), f"{link}_ADDR": ip})
    return env


@dataclass
class Pod:
    """The container's view: args, env and mounted files, under ``root``."""

    root: Path
    secrets: Mapping[tuple[str, str], str]  # (Secret, key) -> value, for env and secret volumes
    deployment: dict[str, Any] = field(default_factory=lambda: one("Deployment"))
    mounts: dict[str, Path] = field(default_factory=dict)  # volume name -> where it is on this machine

    @property
    def container(self) -> dict[str, Any]:
        containers = self.deployment["spec"]["template"]["spec"]["containers"]
        return next((c for c in containers if c["name"] == "remediator"), containers[0])

    def path(self, text: str) -> str:
        """A container path as it is found here; anything else unchanged."""
        for mount in self.container.get("volumeMounts", []):
            where = mount["mountPath"].rstrip("/")
            if text == where or text.startswith(where + "/"):
                return str(self.root) + text
        return text

    def rewrite(self, text: str) -> str:
        """Every container path in a mounted file's text, as it is found here (one pass, whole path
        components only: ``/tmp`` is a mount, and so is not ``/tmpfoo``, nor the ``/tmp`` of ``root``)."""
        mounts = sorted((m["mountPath"].rstrip("/") for m in self.container.get("volumeMounts", [])), key=len,
                        reverse=True)
        pattern = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, mounts)) + r")(?=/|$|[\s\"',\]}])", re.M)
        return pattern.sub(lambda m: str(self.root) + m.group(1), text)

    def args(self) -> list[str]:
        command = self.container.get("command") or []
        assert command in ([], ["remediator"]), f"the test runs `remediator <args>`, not {command}"
        return [self.path(a) for a in self.container.get("args") or ["serve"]]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = self.path(str(var["value"]))
                continue
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            assert ref, f"env {var['name']}: only values and secretKeyRef are supplied by this test"
            env[var["name"]] = self.secrets[(ref["name"], ref["key"])]
        return env

    def mount(self) -> None:
        """Lay out every volume the container mounts, as the kubelet does."""
        volumes = {v["name"]: v for v in self.deployment["spec"]["template"]["spec"].get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            where = self.root / mount["mountPath"].lstrip("/")
            self.mounts[mount["name"]] = where
            if "configMap" in volume:
                files = configmap_files(volume["configMap"]["name"])
                write_configmap(where, {k: self.rewrite(v) for k, v in files.items()})
            elif "secret" in volume:
                name = volume["secret"]["secretName"]
                write_configmap(where, {key: value for (secret, key), value in self.secrets.items() if secret == name})
            elif "emptyDir" in volume:
                where.mkdir(parents=True, exist_ok=True)
            else:
                raise AssertionError(f"volume {mount['name']}: a kind this test does not lay out: {volume}")

    def secret_keys(self, secret: str) -> list[str]:
        """The keys of ``secret`` the container reads: files its env points at under the secret's mount."""
        volumes = {v["name"]: v for v in self.deployment["spec"]["template"]["spec"].get("volumes", [])}
        keys = []
        for mount in self.container.get("volumeMounts", []):
            if volumes[mount["name"]].get("secret", {}).get("secretName") != secret:
                continue
            for var in self.container.get("env", []):
                value = str(var.get("value", ""))
                if value.startswith(mount["mountPath"].rstrip("/") + "/"):
                    keys.append(value[len(mount["mountPath"].rstrip("/")) + 1:])
        return keys
