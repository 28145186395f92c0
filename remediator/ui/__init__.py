"""The web UI at ``/ui``: server-rendered pages over the audit, for people rather than scripts.

Pages (read token, through the login form's session cookie or a bearer header): the timeline
of decisions and executions with filters and live updates (``/ui``, ``/ui/events``), one
execution (``/ui/executions/<id>``), the guardrails panel (``/ui/guardrails``), whose
pause/resume buttons need an admin session, a CSRF token and a confirmation, the playbooks
(``/ui/playbooks``: the loaded set, load errors, a week of decisions each) and replay
(``/ui/replay``: an uploaded export through the replay engine, ``--compare`` included).  No build step and
no network beyond the daemon: the templates (Jinja, autoescaped) and the CSS and script are
package data, served from ``/ui/static/``, and every page forbids inline script (CSP).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from aiohttp import web

from remediator.ui import approval, stream, views
from remediator.ui.render import environment

#: The CSS and script, shipped in the package (``pyproject.toml``'s package data).
STATIC = Path(str(files("remediator.ui") / "static"))


def routes(app: web.Application) -> None:
    """Add the UI's routes and its per-application state (templates, open streams) to ``app``."""
    env = environment()
    app[views.UI] = views.UiState(env)
    app.on_shutdown.append(stream.close_streams)
    app.on_shutdown.append(_stop_replays)
    app.router.add_get("/ui", views.timeline)
    app.router.add_get("/ui/events", stream.events)
    app.router.add_get("/ui/executions/{id}", views.execution)
    app.router.add_get("/ui/guardrails", views.guardrails)
    app.router.add_get("/ui/playbooks", views.playbooks)
    app.router.add_get("/ui/replay", views.replay_form)
    app.router.add_post("/ui/replay", views.replay_run)
    app.router.add_get("/ui/guardrails/{action:pause|resume}", views.confirm)
    app.router.add_post("/ui/guardrails/{action:pause|resume}", views.act)
    approval.routes(app)
    app.router.add_get("/ui/login", views.login_form)
    app.router.add_post("/ui/login", views.login)
    app.router.add_post("/ui/logout", views.logout)
    assets = app.router.add_static("/ui/static", STATIC, name="ui-static", append_version=True)

    def static(name: str) -> str:
        """An asset's URL with its content hash: a new release's browser never runs an old script."""
        return str(assets.url_for(filename=name))

    env.globals["static"] = static


async def _stop_replays(app: web.Application) -> None:
    """``on_shutdown``: a replay under way stops at its next event, rather than hold the shutdown
    until its deadline, and none starts (see :attr:`remediator.ui.replay.ReplayLimits.stopping`)."""
    app[views.UI].replay.stopping.set()
