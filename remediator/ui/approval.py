"""The execution page's Approve and Deny buttons, for an execution awaiting approval.

The kill switch's pattern (:func:`remediator.ui.views.confirm` and ``act``): a button leads to a
confirmation page; its form posts, same-origin, with the signed-in admin session's CSRF token.
The answer goes through :func:`remediator.http.answer_approval`, as the API's does, so the page
and ``POST /api/v1/executions/<id>/approve|deny`` refuse alike (approvers, guardrails, races).
"""

from __future__ import annotations

from aiohttp import web

from remediator.http import answer_approval, who
from remediator.runtime import ADMIN, Runtime
from remediator.ui import auth
from remediator.ui.render import page
from remediator.ui.views import UiState, _error, confirmed_form, viewed

#: What each button does, in the words of the confirmation page and the error title.
ACTIONS = {"approve": True, "deny": False}


@viewed(ADMIN, session=True)
async def confirm(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """The confirmation step: what approving or denying does, and the form that does it."""
    return page(ui.env, "approval_confirm.html", viewer=viewer, action=request.match_info["action"],
                execution_id=request.match_info["id"])


@viewed(ADMIN, session=True)
async def act(request: web.Request, rt: Runtime, ui: UiState, viewer: auth.Viewer) -> web.Response:
    """Approve or deny, confirmed; back to the execution page, which shows what it came to."""
    action, did = request.match_info["action"], request.match_info["id"]
    refused = await confirmed_form(request, ui, viewer, "execution")
    if refused is not None:
        return refused
    status, body = await answer_approval(rt, did, approve=ACTIONS[action], by=who(viewer.token) + " (web UI)",
                                         presented=viewer.token)
    if status != 200:
        return _error(ui, viewer, status, "Not approved" if action == "approve" else "Not denied", body["error"])
    raise web.HTTPSeeOther(f"/ui/executions/{did}")


#: An execution id as :func:`remediator.core.decisions.execution_id` makes them.  The confirmation page
#: builds its form's action from the id in its path (which aiohttp hands over decoded): anything
#: else there (``..%2Fguardrails%2Fpause%23``) made a "Yes, deny" button post to another action,
#: with the admin's CSRF token.
EXECUTION_ID = r"ex-[0-9a-f]{1,64}"


def routes(app: web.Application) -> None:
    app.router.add_get(f"/ui/executions/{{id:{EXECUTION_ID}}}/{{action:approve|deny}}", confirm)
    app.router.add_post(f"/ui/executions/{{id:{EXECUTION_ID}}}/{{action:approve|deny}}", act)
