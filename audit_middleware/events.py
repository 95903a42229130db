"""The audit event record and its JSON shape (the same in the JSON endpoint, exports and webhooks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .actors import Actor


def utc_iso(moment: datetime) -> str:
    """``2026-11-25T19:07:41.123456Z``: always UTC, always microseconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_naive(moment: datetime) -> datetime:
    """The naive UTC datetime stored in the database (every backend keeps it the same way)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


@dataclass(slots=True)
class AuditEvent:
    """One recorded event."""

    id: str
    occurred_at: datetime
    event: str
    category: str
    action: str
    actor: Actor
    resource_type: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    workspace_id: str | None = None
    changes: dict[str, list[Any]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (see DESIGN.md)."""
        data: dict[str, Any] = {
            "id": self.id,
            "occurred_at": utc_iso(self.occurred_at),
            "event": self.event,
            "category": self.category,
            "action": self.action,
            "resource": {"type": self.resource_type, "id": self.resource_id, "name": self.resource_name},
            "actor": self.actor.as_dict(),
            "workspace_id": self.workspace_id,
            "changes": self.changes,
            "context": self.context,
        }
        if self.details:
            data["details"] = self.details
        return data
