"""Walking a query's pages the way the admin view does: through the encoded cursor each page hands out."""

from __future__ import annotations

from typing import Any

from audit_middleware.query import Cursor, EventQuery


def ids_by_pages(source: Any, query: EventQuery) -> list[str]:
    """The ids of every event ``source.query`` (a store or an auditor) gives for ``query``, page by page."""
    ids: list[str] = []
    while True:
        page = source.query(query)
        ids += [e.id for e in page.events]
        if page.next_cursor is None:
            return ids
        query = query.with_cursor(Cursor.decode(page.next_cursor))
