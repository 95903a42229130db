"""Revert from the admin view: ``POST {prefix}/events/<id>/revert`` (CSRF-checked by the blueprint).

Routing and rendering only: the work is ``auditor.revert()`` (:mod:`audit_middleware.revert` plans it). A
conflict answers 409 with a page listing the fields that changed since the event and a "Revert anyway" button;
reverting a Created event (a deletion) first asks for confirmation. Access: whoever may view, and, when the
app passes ``AuditTrail(can_revert=...)`` or sets ``AUDIT_TRAIL_CAN_REVERT`` (a ``() -> bool``), only those
it allows.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from audit_middleware.revert import (
    REVERTIBLE_ACTIONS,
    RevertConflict,
    RevertError,
    RevertNeedsConfirmation,
)

if TYPE_CHECKING:
    from .extension import AuditTrail

_ID = re.compile(r"[0-9a-f-]{36}")


def add_revert_routes(blueprint: Blueprint, audit: AuditTrail) -> None:
    def can_revert() -> bool:
        check = audit.can_revert or current_app.config.get("AUDIT_TRAIL_CAN_REVERT")
        return True if check is None else bool(check())

    @blueprint.context_processor
    def revert_helpers() -> dict[str, Any]:
        allowed = functools.cache(can_revert)  # asked once per page, when the first revertible row asks

        def revertible(row: Any) -> bool:
            return bool(row.resource_type and row.resource_id and row.action in REVERTIBLE_ACTIONS
                        and allowed())

        def revert_notice() -> str:
            reverted = request.args.get("reverted", "")
            if not _ID.fullmatch(reverted):
                return ""
            recorded = [e for e in request.args.get("recorded", "").split(",") if _ID.fullmatch(e)]
            return f"Event {reverted} was reverted" + (
                f"; the revert is recorded as event {', '.join(recorded)}." if recorded else ".")

        return {"revertible": revertible, "revert_notice": revert_notice}

    @blueprint.route("/events/<event_id>/revert", methods=["POST"])
    def revert(event_id: str) -> Any:
        if not can_revert():
            return render_template("audit_trail/error.html", status=403, title="Access denied",
                                   message="You may view this audit trail but not revert its events.",
                                   parameter=None), 403
        scoped, workspace = audit.viewer_workspace()
        options: dict[str, Any] = {"workspace_id": workspace} if scoped else {}
        force, confirm = request.form.get("force") == "1", request.form.get("confirm") == "1"
        try:
            result = audit.auditor.revert(event_id, force=force, confirm=confirm, **options)
        except RevertConflict as conflict:
            return render_template("audit_trail/revert.html", event_id=event_id, plan=conflict.plan,
                                   reason="conflict", message=str(conflict)), 409
        except RevertNeedsConfirmation as needed:
            return render_template("audit_trail/revert.html", event_id=event_id, plan=needed.plan,
                                   reason="confirm", message=str(needed)), 200
        except RevertError as error:
            status = 404 if str(error).startswith("no audit event") else 400
            return render_template("audit_trail/error.html", status=status, title="Cannot revert",
                                   message=str(error), parameter=None), status
        recorded = ",".join(e.id for e in result.recorded)
        return redirect(url_for("audit_trail.index", reverted=event_id, recorded=recorded), 303)
