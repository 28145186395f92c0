"""Manifests and small helpers shared by the fake's tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException


def deployment(
    name: str = "web",
    namespace: str = "shop",
    *,
    replicas: int = 3,
    image: str = "registry.example/web:1.0",
    env: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if env is not None:
        container["env"] = env
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            **spec,
        },
    }


def statefulset(name: str = "db", namespace: str = "shop", *, replicas: int = 3,
                image: str = "registry.example/db:1.0") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "db", "image": image}]}},
        },
    }


def lease(name: str = "remediator-leader", namespace: str = "remediator", holder: str = "pod-a") -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status body of a failed call, as clients must parse it."""
    body: dict[str, Any] = json.loads(exc.body)
    return body


def with_image(manifest: dict[str, Any], image: str) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    out["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return out
