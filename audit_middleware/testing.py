"""Helpers for the test suites of apps that use audit-middleware, and an in-memory store."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from .events import AuditEvent, utc_naive
from .query import EventQuery, Page, page_from_rows
from .signals import event_recorded


class MemoryStore:
    """An :class:`~audit_middleware.store.EventStore` in a list, for tests. Not shared between processes."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def append(self, events: Sequence[AuditEvent]) -> None:
        with self._lock:
            self.events.extend(events)

    def query(self, query: EventQuery) -> Page:
        with self._lock:
            matching = [e for e in self.events if query.matches(e)]
        matching.sort(key=lambda e: (utc_naive(e.occurred_at), e.id), reverse=True)
        return page_from_rows(matching[: query.limit + 1], query.limit)

    def get(self, event_id: str) -> AuditEvent | None:
        with self._lock:
            return next((e for e in self.events if e.id == event_id), None)

    def purge(self, before: datetime, batch_size: int = 1000) -> int:
        with self._lock:
            keep = [e for e in self.events if utc_naive(e.occurred_at) >= before]
            removed = len(self.events) - len(keep)
            self.events = keep
        return removed


class CapturedEvents(list[AuditEvent]):
    """The events committed while :func:`capture_events` was active, in order."""

    def names(self) -> list[str]:
        return [e.event for e in self]

    def named(self, name: str) -> list[AuditEvent]:
        return [e for e in self if e.event == name]


@contextmanager
def capture_events(sender: Any = None) -> Iterator[CapturedEvents]:
    """Collect every event committed inside the block (from any auditor, or only ``sender``'s).

    ::

        with capture_events() as events:
            client.post("/warehouses/1/disable")
        assert events.names() == ["Warehouse Disabled"]
    """
    captured = CapturedEvents()
    lock = threading.Lock()

    def receive(_sender: Any, events: Sequence[AuditEvent], **_: Any) -> None:
        if sender is None or _sender is sender:
            with lock:
                captured.extend(events)

    event_recorded.connect(receive, weak=False)
    try:
        yield captured
    finally:
        event_recorded.disconnect(receive)
