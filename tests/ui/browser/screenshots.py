"""``make screenshots``: a PNG of each page of the web UI, taken by headless chromium on a real daemon.

The daemon, its fake cluster and their data are the browser tests' (``stack.py``, ``conftest.seed``),
plus a cooldown refusal, so the pictures show what the tests check.  To add a page, add a
:class:`Shot` to :data:`SHOTS`: its address (from what was seeded), and optionally what to do on the
page before the picture (fill a form).  Usage: ``python -m tests.ui.browser.screenshots DIR``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.processes import PYTHON
from tests.payloads import alert_json, db_pool_alert
from tests.ui.browser.conftest import Seeded, seed
from tests.ui.browser.stack import PLAYBOOKS, Stack, chromium, missing_browser, sign_in, started

#: Width of every picture; the height is the page's own (up to :data:`MAX_HEIGHT`).
WIDTH = 1280
MAX_HEIGHT = 2400


@dataclass(frozen=True)
class Context:
    """What a shot may use: the daemon, what was seeded, a scratch directory for files to upload."""

    stack: Stack
    seeded: Seeded
    scratch: Path
    awaiting: str  # an execution waiting for a person's approval


@dataclass(frozen=True)
class Shot:
    """One picture: ``docs/screenshots/<name>.png`` of ``path``, after ``act`` (if any) ran on the page;
    ``signed_in`` False takes it signed out (the login page)."""

    name: str
    path: Callable[[Context], str]
    act: Callable[[Any, Context], None] | None = None
    signed_in: bool = True


def replay_with_compare(driver: Any, ctx: Context) -> None:
    """Upload the daemon's own history (``remediator export``) and compare its playbooks with a set
    that also allows kube-public: the report shows what would have changed."""
    from selenium.webdriver.common.by import By

    export = ctx.scratch / "history.jsonl"
    subprocess.run([str(PYTHON if PYTHON.exists() else sys.executable), "-m", "remediator", "export",
                    "--data-dir", str(ctx.stack.daemon.data_dir), "--output", str(export)], check=True,
                   cwd=ctx.scratch, capture_output=True, timeout=60)
    after = ctx.scratch / "after"
    after.mkdir(exist_ok=True)
    for name, text in PLAYBOOKS.items():
        (after / name).write_text(text.replace("[shop, payments]", "[shop, payments, kube-public]"))
    driver.find_element(By.NAME, "export").send_keys(str(export))
    driver.find_element(By.NAME, "after").send_keys("\n".join(str(p) for p in sorted(after.iterdir())))
    driver.find_element(By.CSS_SELECTOR, "form.replay button[type=submit]").click()
    driver.find_element(By.CSS_SELECTOR, "p.changes")  # the report is there


#: Every page, in the README's order.
SHOTS = (
    Shot("timeline", lambda ctx: "/ui"),
    Shot("execution", lambda ctx: f"/ui/executions/{ctx.seeded.pool['execution_id']}"),
    Shot("approval", lambda ctx: f"/ui/executions/{ctx.awaiting}"),
    Shot("guardrails", lambda ctx: "/ui/guardrails"),
    Shot("playbooks", lambda ctx: "/ui/playbooks"),
    Shot("replay", lambda ctx: "/ui/replay", replay_with_compare),
    Shot("login", lambda ctx: "/ui/login", signed_in=False),
)


def take(driver: Any, out: Path, shot: Shot, ctx: Context) -> Path:
    """The page at ``WIDTH``, as tall as its content: the viewport itself is resized (a window's size
    would include chromium's own frame, and cut the page's bottom off)."""
    viewport = {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", viewport)
    driver.get(ctx.stack.base + shot.path(ctx))
    if shot.act is not None:
        shot.act(driver, ctx)
    height = int(driver.execute_script("return Math.ceil(document.body.getBoundingClientRect().bottom) + 16;"))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {**viewport, "height": min(max(height, 400), MAX_HEIGHT)})
    target = out / f"{shot.name}.png"
    if not driver.save_screenshot(str(target)):
        raise RuntimeError(f"chromium took no screenshot of {shot.path(ctx)}")
    return target


def main(argv: list[str]) -> int:
    reason = missing_browser()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    out = Path(argv[0] if argv else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="remediator-screenshots-") as tmp, started(Path(tmp)) as stack:
        seeded = seed(stack)
        later = db_pool_alert()
        later["startsAt"] = "2026-11-22T11:00:00Z"  # the same alert firing again: within the cooldown
        stack.post_alerts(later, alert_json({"alertname": "HighLatency", "severity": "critical",
                                             "namespace": "default", "deployment": "api"}))
        stack.wait_decided(5)
        stack.post_alerts(alert_json({"alertname": "KubeDeploymentCrashLooping", "severity": "critical",
                                      "namespace": "shop", "deployment": "web"}))
        [awaiting] = stack.wait_decided(6)[:1]
        assert awaiting["decision"] == "awaiting_approval", awaiting
        ctx = Context(stack, seeded, Path(tmp), awaiting["execution_id"])
        with chromium() as driver:
            sign_in(driver, stack.base, stack.admin_token)
            for shot in SHOTS:
                if not shot.signed_in:
                    driver.delete_all_cookies()
                print(take(driver, out, shot, ctx))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
