"""``POST {mount}/events/<id>/revert`` (name ``audit_middleware:revert``): routing and rendering only; the
work is :func:`audit_middleware.adapters.django.revert.revert`. Access: who may view, and, when
``AUDIT_TRAIL["CAN_REVERT"]`` (``request -> bool``) is set, only those it allows. POSTs go through Django's
CSRF protection whatever the project's middleware. A conflict answers 409 with the fields that changed since
and a "Revert anyway" button; reverting a Created event (a deletion) asks for confirmation first."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from audit_middleware.revert import RevertConflict, RevertError, RevertNeedsConfirmation

from . import conf
from .revert import ANY_WORKSPACE, revert
from .views import _error, _secure, _viewer, can_view

_ID = re.compile(r"[0-9a-f-]{36}")


def revert_notice(request: HttpRequest) -> str:
    """The line the events page shows after a revert (ids only: nothing else from the query is echoed)."""
    reverted = request.GET.get("reverted", "")
    return f"Event {reverted} was reverted." if _ID.fullmatch(reverted) else ""


def can_revert(request: HttpRequest) -> bool:
    check = conf.can_revert()
    return can_view(request) and (check is None or bool(check(request)))


@csrf_protect
@require_POST
def revert_event(request: HttpRequest, event_id: str) -> HttpResponseBase:
    if not can_view(request):
        return _secure(_error(request, 403, "Access denied", "Only the workspace's owners can see its audit trail."))
    if not can_revert(request):
        return _secure(_error(request, 403, "Access denied",
                              "You may view this audit trail but not revert its events."))
    viewer = _viewer(request)
    workspace = viewer.workspace_id if viewer.scoped else ANY_WORKSPACE
    try:
        revert(event_id, force=request.POST.get("force") == "1", confirm=request.POST.get("confirm") == "1",
               workspace_id=workspace)
    except RevertConflict as conflict:
        return _secure(render(request, "audit_middleware/revert.html", {
            "event_id": event_id, "plan": conflict.plan, "event": conflict.plan.event, "reason": "conflict",
            "message": str(conflict)}, status=409))
    except RevertNeedsConfirmation as needed:
        return _secure(render(request, "audit_middleware/revert.html", {
            "event_id": event_id, "plan": needed.plan, "event": needed.plan.event, "reason": "confirm",
            "message": str(needed)}))
    except RevertError as error:
        status = 404 if str(error).startswith("no audit event") else 400
        return _secure(_error(request, status, "Cannot revert", str(error)))
    return _secure(HttpResponseRedirect(f"{reverse('audit_middleware:index')}?reverted={event_id}", status=303))
