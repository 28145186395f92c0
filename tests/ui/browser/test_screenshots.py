"""``make screenshots``' pictures are committed, one per page it takes, and the README shows each."""

from __future__ import annotations

import struct
from pathlib import Path

from tests.ui.browser.screenshots import SHOTS, WIDTH

ROOT = Path(__file__).resolve().parents[3]


def test_every_page_has_a_committed_screenshot_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for shot in SHOTS:
        png = ROOT / "docs" / "screenshots" / f"{shot.name}.png"
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG: run make screenshots"
        width, height = struct.unpack(">II", head[16:24])
        assert width == WIDTH and height >= 300, (png, width, height)
        assert f"(docs/screenshots/{shot.name}.png)" in readme, f"README.md does not show {png.name}"
