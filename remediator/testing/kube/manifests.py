"""Reading ``kubectl apply -f`` style manifests: multi-document YAML, ``kind: List`` expanded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ManifestError(ValueError):
    """A manifest that does not parse or is not a Kubernetes object; the message names where."""


def parse_manifests(text: str, source: str = "<manifest>") -> list[dict[str, Any]]:
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ManifestError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    objects: list[dict[str, Any]] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise ManifestError(f"{source}: document {index} is not a Kubernetes object (needs apiVersion and kind)")
        if doc["kind"] == "List" or (doc["kind"].endswith("List") and isinstance(doc.get("items"), list)):
            objects.extend(item for item in doc.get("items") or [] if isinstance(item, dict))
        else:
            objects.append(doc)
    return objects


def load_manifest_file(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ManifestError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_manifests(text, str(p))
