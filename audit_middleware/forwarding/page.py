"""The Forwarding page's logic, shared by the Flask and Django admin views: what it shows and what its
forms do. Adapters only route, check access and CSRF, and render.

Form fields (POST to the page): ``action`` is ``save`` (with ``destination`` and ``enabled`` = ``on`` when the
toggle is On), ``retry`` (with ``delivery`` ids, repeatable, or none for every dead delivery of
``destination``), or ``test`` (with ``destination``: sends a test event to that destination only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from ..context import current_actor, current_context
from ..errors import InvalidFilterError
from ..events import AuditEvent, utc_iso
from ..ids import new_event_id
from .outbox import Forwarding

TEST_EVENT = "Forwarding Test Sent"
MAX_RETRY_IDS = 500


@dataclass(frozen=True, slots=True)
class DestinationState:
    """One destination's On/Off and delivery state in one workspace."""

    name: str
    kind: str
    title: str
    enabled: bool
    disabled_reason: str | None
    backlog: int
    paused: int
    dead: int
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None

    @property
    def last_success_text(self) -> str:
        return utc_iso(self.last_success_at) if self.last_success_at is not None else "never"

    @property
    def last_error_text(self) -> str:
        if not self.last_error:
            return "none"
        when = utc_iso(self.last_error_at) if self.last_error_at is not None else ""
        return f"{when}: {self.last_error}" if when else self.last_error


class ForwardingControl(Protocol):
    """What the page needs from an outbox (``SQLAlchemyOutbox`` implements it)."""

    forwarding: Forwarding

    def states(self, workspace_id: str | None) -> list[DestinationState]: ...

    def dead(self, workspace_id: str | None, destination: str | None = None, limit: int = 50
             ) -> list[dict[str, Any]]: ...

    def set_enabled(self, workspace_id: str | None, destination: str, enabled: bool) -> None: ...

    def retry(self, workspace_id: str | None, delivery_ids: Sequence[int] | None = None,
              destination: str | None = None) -> int: ...

    def send_test(self, event: AuditEvent, destination: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadRow:
    id: int
    destination: str
    event: str
    event_id: str
    attempts: int
    answer: str
    created_at: str


@dataclass(frozen=True, slots=True)
class ForwardingPage:
    workspace_id: str | None
    destinations: tuple[DestinationState, ...]
    dead: tuple[DeadRow, ...]
    message: str | None = None

    @staticmethod
    def when(moment: datetime | None) -> str:
        return utc_iso(moment) if moment is not None else "never"


def build_forwarding_page(control: ForwardingControl, workspace_id: str | None, message: str | None = None
                          ) -> ForwardingPage:
    dead = tuple(
        DeadRow(int(row["id"]), row["destination"], row.get("event") or "(purged event)", row["event_id"],
                int(row["attempts"]),
                " ".join(p for p in (f"HTTP {row['last_status']}" if row.get("last_status") else "",
                                     row.get("last_error") or "") if p),
                utc_iso(row["created_at"]))
        for row in control.dead(workspace_id)
    )
    return ForwardingPage(workspace_id, tuple(control.states(workspace_id)), dead, message)


def _one(form: Mapping[str, Sequence[str]], key: str) -> str:
    values = form.get(key) or []
    return values[0] if values else ""


def make_test_event(workspace_id: str | None, destination: str) -> AuditEvent:
    """The event the "Send test event" button records (it appears in the trail too)."""
    return AuditEvent(
        id=new_event_id(), occurred_at=datetime.now(timezone.utc), event=TEST_EVENT, category="Forwarding",
        action="test_sent", actor=current_actor(), resource_type="Destination", resource_id=destination,
        resource_name=destination, workspace_id=workspace_id, context=current_context(),
    )


def apply_forwarding_form(control: ForwardingControl, workspace_id: str | None,
                          form: Mapping[str, Sequence[str]]) -> str:
    """Carry out one POST of the page; returns the message to show. Raises
    :class:`~audit_middleware.errors.InvalidFilterError` (a 400) naming the field that was wrong."""
    action = _one(form, "action")
    name = _one(form, "destination")
    if action not in ("save", "retry", "test"):
        raise InvalidFilterError("action", f"expected save, retry or test, got {action!r}")
    if name and name not in control.forwarding.destinations:
        raise InvalidFilterError("destination", f"no destination named {name!r}; configured: "
                                 f"{', '.join(sorted(control.forwarding.destinations))}")
    if action == "save":
        if not name:
            raise InvalidFilterError("destination", "choose a destination")
        enabled = _one(form, "enabled") in ("on", "1", "true")
        control.set_enabled(workspace_id, name, enabled)
        return f"Saved: forwarding to {name} is {'On' if enabled else 'Off'}."
    if action == "retry":
        raw = form.get("delivery") or []
        if len(raw) > MAX_RETRY_IDS:
            raise InvalidFilterError("delivery", f"at most {MAX_RETRY_IDS} deliveries at once")
        try:
            ids = [int(v) for v in raw]
        except ValueError:
            raise InvalidFilterError("delivery", "delivery ids are whole numbers") from None
        if any(not 1 <= i < 2**63 for i in ids):  # beyond a BIGINT the database itself would fail
            raise InvalidFilterError("delivery", "not a delivery id")
        count = control.retry(workspace_id, ids or None, name or None)
        return f"{count} dead deliver{'y' if count == 1 else 'ies'} queued again."
    if not name:
        raise InvalidFilterError("destination", "choose a destination")
    control.send_test(make_test_event(workspace_id, name), name)
    return f"Test event queued for {name}; it is sent by the next relay round."
