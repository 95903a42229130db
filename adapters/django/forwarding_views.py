"""The Forwarding page (``{mount}/forwarding``, name ``audit_middleware:forwarding``): routing and rendering
only; the logic is :mod:`audit_middleware.forwarding.page`. Same access rule as the other admin views; POSTs
go through Django's CSRF protection (``csrf_protect``, whatever the project's middleware)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from audit_middleware.errors import InvalidFilterError
from audit_middleware.forwarding.page import apply_forwarding_form, build_forwarding_page

from .outbox import get_outbox
from .views import _error, _secure, _viewer, can_view


@csrf_protect
@require_http_methods(["GET", "POST"])
def forwarding(request: HttpRequest) -> HttpResponseBase:
    if not can_view(request):
        return _secure(_error(request, 403, "Access denied", "Only the workspace's owners can see its audit trail."))
    outbox = get_outbox()
    if outbox is None:
        return _secure(render(request, "audit_middleware/forwarding.html", {"page": None}))
    workspace = _viewer(request).workspace_id
    message = None
    if request.method == "POST":
        try:
            message = apply_forwarding_form(outbox, workspace, dict(request.POST.lists()))
        except InvalidFilterError as error:
            return _secure(_error(request, 400, "Invalid form", f"{error.parameter}: {error.message}",
                                  error.parameter))
    page = build_forwarding_page(outbox, workspace, message)
    return _secure(render(request, "audit_middleware/forwarding.html", {"page": page}))
