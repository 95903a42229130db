"""The admin views: routing and rendering only; the logic is in :mod:`audit_middleware.admin_view`.

Access: ``AUDIT_TRAIL["CAN_VIEW"](request)``, by default ``request.user.has_perm(
"audit_middleware.view_auditevent")``. With ``WORKSPACE_LOADER`` set, a viewer only ever sees the events of
the workspace that loader returns for their request. Templates are ``audit_middleware/events.html``,
``base.html`` and ``error.html`` (override them in the project's templates).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import router
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.template.backends.utils import csrf_input
from django.urls import reverse
from django.views.decorators.http import require_GET

from audit_middleware.admin_view import (
    STYLESHEET,
    AdminRequest,
    Viewer,
    build_page,
    csv_body,
    csv_filename,
    error_body,
    json_body,
    parse_request,
    security_headers,
)
from audit_middleware.errors import InvalidFilterError
from audit_middleware.revert import REVERTIBLE_ACTIONS

from . import conf
from .auditor import get_auditor
from .models import AuditEvent
from .store import DjangoStore

VIEW_PERMISSION = "audit_middleware.view_auditevent"


def can_view(request: HttpRequest) -> bool:
    check = conf.can_view()
    if check is not None:
        return bool(check(request))
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.has_perm(VIEW_PERMISSION))


def _viewer(request: HttpRequest) -> Viewer:
    loader = conf.workspace_loader()
    if loader is None:
        return Viewer.unscoped()
    workspace = loader(request)
    return Viewer(None if workspace is None else str(workspace), True)


def _error(request: HttpRequest, status: int, title: str, message: str, parameter: str | None = None
           ) -> HttpResponse:
    if request.path.endswith(".json"):
        return JsonResponse({"error": {"parameter": parameter, "message": message}}, status=status)
    if request.path.endswith(".csv"):
        return HttpResponse(f"{title}: {message}\n", status=status, content_type="text/plain; charset=utf-8")
    return render(request, "audit_middleware/error.html",
                  {"status": status, "title": title, "message": message, "parameter": parameter}, status=status)


def _secure(response: HttpResponseBase, cache: bool = False) -> HttpResponseBase:
    for name, value in security_headers(cacheable=cache).items():
        response.headers.setdefault(name, value)
    return response


def audit_view(view: Callable[[HttpRequest, AdminRequest], HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Access check, filter validation (400 naming the filter) and security headers around a view."""

    @require_GET
    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponseBase:
        if not can_view(request):
            return _secure(_error(request, 403, "Access denied",
                                  "Only the workspace's owners can see its audit trail."))
        auditor = get_auditor()
        try:
            admin = parse_request(
                dict(request.GET.lists()), catalog=auditor.catalog, viewer=_viewer(request),
                retention_days=auditor.config.retention_days,
            )
            response = view(request, admin)  # an export too large is refused here, before streaming
        except InvalidFilterError as error:
            if request.path.endswith(".json"):
                return _secure(JsonResponse(error_body(error), status=400))
            return _secure(_error(request, 400, "Invalid filter", f"{error.parameter}: {error.message}",
                                  error.parameter))
        return _secure(response)

    return wrapper


def _store() -> DjangoStore:
    return DjangoStore(router.db_for_read(AuditEvent))


_EVENT_ID_MARK = "__event_id__"  # stands for the row's id in the revert URL reversed once per page


@audit_view
def index(request: HttpRequest, admin: AdminRequest) -> HttpResponse:
    page = build_page(_store(), get_auditor().catalog, admin)
    from .revert_views import can_revert, revert_notice

    context: dict[str, Any] = {"page": page, "form": page.form, "revertible_actions": [],
                               "revert_notice": revert_notice(request)}
    if can_revert(request):
        # Each revertible row has a revert form. Its URL and CSRF field are made once here, not by a
        # {% url %} and a {% csrf_token %} per row: 2.3 against 0.7 ms for a page of 50 such rows.
        start, end = reverse("audit_middleware:revert", args=[_EVENT_ID_MARK]).split(_EVENT_ID_MARK, 1)
        context |= {
            "revertible_actions": sorted(REVERTIBLE_ACTIONS), "revert_start": start, "revert_end": end,
            "revert_csrf_input": csrf_input(request),  # what {% csrf_token %} renders
        }
    return render(request, "audit_middleware/events.html", context)


@audit_view
def events_json(request: HttpRequest, admin: AdminRequest) -> JsonResponse:
    return JsonResponse(json_body(_store(), admin))


@audit_view
def export_csv(request: HttpRequest, admin: AdminRequest) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_body(_store(), admin), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{csv_filename(admin)}"'
    return response


@require_GET
def stylesheet(request: HttpRequest) -> HttpResponseBase:
    """The shared stylesheet, served from the package (no collectstatic needed)."""
    response = HttpResponse(STYLESHEET.read_bytes(), content_type="text/css; charset=utf-8")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return _secure(response, cache=True)


