"""A ConfigMap volume laid out as the kubelet lays it out, for tests that mount playbooks.

This follows the kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go): the files of
one version go into a fresh ``..<UTC timestamp>.<random>`` directory, every visible name is
a symlink through ``..data``, and an update swaps ``..data`` with a single rename of a
``..data_tmp`` link, then removes names no longer in the payload and the old directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


def write_configmap(root: Path, files: Mapping[str, str]) -> Path:
    """Write (or atomically replace) the volume's contents with ``files``; return the new version's directory."""
    root.mkdir(parents=True, exist_ok=True)
    old = os.readlink(root / DATA) if (root / DATA).is_symlink() else None
    version = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=root))
    version.chmod(0o755)
    for name, text in files.items():
        (version / name).parent.mkdir(parents=True, exist_ok=True)
        (version / name).write_text(text)
    for top in {name.split("/", 1)[0] for name in files}:
        if not (root / top).is_symlink():
            (root / top).symlink_to(Path(DATA) / top)
    (root / "..data_tmp").symlink_to(version.name)
    os.rename(root / "..data_tmp", root / DATA)  # the one atomic step: readers see the old or the new set
    keep = {name.split("/", 1)[0] for name in files}
    for entry in root.iterdir():
        if not entry.name.startswith("..") and entry.name not in keep:
            entry.unlink()
    if old is not None:
        shutil.rmtree(root / old)
    return version
