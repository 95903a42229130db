"""The admin blueprint: routing and rendering only; the logic is in :mod:`audit_middleware.admin_view`.

Routes under the mount point: ``/`` (the events page), ``/events.json``, ``/export.csv``, and the stylesheet
at ``/static/admin.css``. Templates live in ``audit_trail/`` and can be overridden by the app's own
``templates/audit_trail/events.html`` (or ``base.html``, ``error.html``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request, stream_with_context

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

from .csrf import csrf_token, validate_csrf
from .forwarding import add_forwarding_routes
from .revert import add_revert_routes

if TYPE_CHECKING:
    from .extension import AuditTrail

BLUEPRINT_NAME = "audit_trail"


def _wants_json() -> bool:
    return request.path.endswith(".json")


def make_blueprint(audit: AuditTrail) -> Blueprint:
    """The admin view's blueprint for one :class:`AuditTrail` (routes added by later features go here too;
    every non-GET request to it must carry the CSRF token)."""
    blueprint = Blueprint(
        BLUEPRINT_NAME, __name__, template_folder="templates",
        static_folder=str(STYLESHEET.parent), static_url_path="/static",
    )

    def error(status: int, title: str, message: str, parameter: str | None = None) -> Any:
        if _wants_json():
            return jsonify({"error": {"parameter": parameter, "message": message}}), status
        if request.path.endswith(".csv"):
            text = f"{title}: {message}\n"
            return Response(text, status=status, mimetype="text/plain")
        return render_template(
            "audit_trail/error.html", status=status, title=title, message=message, parameter=parameter
        ), status

    @blueprint.before_request
    def guard() -> Any:
        if request.endpoint == f"{BLUEPRINT_NAME}.static":
            return None
        if not audit.allowed():
            return error(403, "Access denied", "Only the workspace's owners can see its audit trail.")
        problem = validate_csrf()
        if problem is not None:
            return error(400, "Request refused", problem)
        return None

    @blueprint.after_request
    def headers(response: Response) -> Response:
        cacheable = request.endpoint == f"{BLUEPRINT_NAME}.static"
        for name, value in security_headers(cacheable=cacheable).items():
            response.headers.setdefault(name, value)
        return response

    @blueprint.context_processor
    def template_helpers() -> dict[str, Any]:
        return {"csrf_token": csrf_token}

    def admin_request() -> AdminRequest:
        scoped, workspace = audit.viewer_workspace()
        viewer = Viewer(workspace, True) if scoped else Viewer.unscoped()
        audit.auditor.capture.discover()  # models mapped after init_app still appear in the event filter
        return parse_request(
            request.args.to_dict(flat=False),
            catalog=audit.catalog,
            viewer=viewer,
            retention_days=int(current_app.config["AUDIT_TRAIL_RETENTION_DAYS"]),
            default_limit=int(current_app.config["AUDIT_TRAIL_PAGE_SIZE"]),
        )

    @blueprint.errorhandler(InvalidFilterError)
    def invalid_filter(exc: InvalidFilterError) -> Any:
        if _wants_json():
            return jsonify(error_body(exc)), 400
        return error(400, "Invalid filter", f"{exc.parameter}: {exc.message}", exc.parameter)

    @blueprint.route("/")
    def index() -> Any:
        page = build_page(audit.store, audit.catalog, admin_request())
        return render_template("audit_trail/events.html", page=page)

    @blueprint.route("/events.json")
    def events_json() -> Any:
        return jsonify(json_body(audit.store, admin_request()))

    @blueprint.route("/export.csv")
    def export_csv() -> Any:
        admin = admin_request()
        body = csv_body(audit.store, admin)
        response = Response(stream_with_context(body), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="{csv_filename(admin)}"'
        return response

    add_forwarding_routes(blueprint, audit)
    add_revert_routes(blueprint, audit)
    return blueprint
