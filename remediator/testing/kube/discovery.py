"""Discovery documents (``/version``, ``/api``, ``/apis``, ``/apis/{group}/{version}``).

Clients and kubectl read these before anything else; they are derived from the
resource table so they always list exactly what the fake serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from remediator.testing.kube import resources as r

VERSION_INFO: Mapping[str, str] = MappingProxyType({
    "major": "1", "minor": "36", "gitVersion": "v1.36.2-remediator-fake",
    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0", "compiler": "gc", "platform": "linux/amd64",
})


def document(path: str, host: str) -> dict[str, Any] | None:
    """The discovery document served at ``path``, or None when ``path`` is not a discovery path."""
    if path == "/version":
        return dict(VERSION_INFO)
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]}
    groups = [(g, v) for g, v in r.group_versions() if g]
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group(g, v) for g, v in groups]}
    for group, version in groups:
        if path == f"/apis/{group}":
            return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, version)}
    for group, version in r.group_versions():
        if path == (f"/apis/{group}/{version}" if group else f"/api/{version}"):
            return _api_resource_list(group, version)
    return None


def _api_group(group: str, version: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def _api_resource_list(group: str, version: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for res in r.RESOURCES:
        if (res.group, res.version) != (group, version):
            continue
        entry: dict[str, Any] = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                                 "kind": res.kind, "verbs": sorted(res.verbs)}
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        entries.append(entry)
        if res.scale:
            entries.append({"name": f"{res.plural}/scale", "singularName": "", "namespaced": True,
                            "group": "autoscaling", "version": "v1", "kind": "Scale",
                            "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": entries}
