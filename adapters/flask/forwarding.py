"""The Forwarding page of the admin blueprint: ``GET/POST {prefix}/forwarding``.

Routing and rendering only; the logic is :mod:`audit_middleware.forwarding.page`. Access and CSRF are checked
by the blueprint's ``before_request`` like every other admin route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, render_template, request

from audit_middleware.forwarding.page import apply_forwarding_form, build_forwarding_page

if TYPE_CHECKING:
    from .extension import AuditTrail


def add_forwarding_routes(blueprint: Blueprint, audit: AuditTrail) -> None:
    @blueprint.route("/forwarding", methods=["GET", "POST"])
    def forwarding() -> Any:
        outbox = audit.auditor.outbox
        if outbox is None:
            return render_template("audit_trail/forwarding.html", page=None), 200
        _scoped, workspace = audit.viewer_workspace()
        message = None
        if request.method == "POST":
            # An InvalidFilterError (a field that was wrong) becomes the blueprint's 400 page.
            message = apply_forwarding_form(outbox, workspace, request.form.to_dict(flat=False))
        return render_template("audit_trail/forwarding.html", page=build_forwarding_page(outbox, workspace, message))
