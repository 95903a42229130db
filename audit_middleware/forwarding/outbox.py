"""Which delivery rows an event gets: the part of the transactional outbox every store shares."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..events import AuditEvent
from .base import Destination


def workspace_key(workspace_id: str | None) -> str:
    """The workspace column value of forwarding rows: events without a workspace use ``""``."""
    return workspace_id or ""


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """One delivery row to write with an event: ``status`` is ``pending``, or ``dead`` with ``error`` when
    the destination can never take the event (a Segment item over 32 KB)."""

    event_id: str
    destination: str
    workspace_id: str
    status: str = "pending"
    error: str | None = None


class Forwarding:
    """The configured destinations, by name.

    ``Forwarding([SegmentDestination(...), WebhookDestination(...)])``; names must be unique, since the
    database refers to destinations by name.
    """

    def __init__(self, destinations: Iterable[Destination]) -> None:
        self.destinations: dict[str, Destination] = {}
        for destination in destinations:
            if not isinstance(destination, Destination):
                raise TypeError(f"a forwarding destination must be a SegmentDestination, WebhookDestination, "
                                f"SlackDestination or other Destination, not {type(destination).__name__}")
            if destination.name in self.destinations:
                raise ValueError(f"two destinations are named {destination.name!r}; give each a unique name=")
            self.destinations[destination.name] = destination

    def __bool__(self) -> bool:
        return bool(self.destinations)

    def __iter__(self) -> Iterator[Destination]:
        return iter(self.destinations.values())

    def get(self, name: str) -> Destination:
        try:
            return self.destinations[name]
        except KeyError:
            raise KeyError(f"no destination named {name!r} is configured; configured: "
                           f"{sorted(self.destinations)}") from None

    def plan(self, events: Sequence[AuditEvent], enabled: set[tuple[str, str]]) -> list[PlannedDelivery]:
        """The delivery rows for ``events``, given the ``(workspace, destination)`` pairs that are on."""
        rows: list[PlannedDelivery] = []
        for event in events:
            workspace = workspace_key(event.workspace_id)
            for name, destination in self.destinations.items():
                if (workspace, name) not in enabled or not destination.accepts(event):
                    continue
                reason = destination.refuse(event)
                rows.append(PlannedDelivery(event.id, name, workspace, "dead" if reason else "pending", reason))
        return rows
