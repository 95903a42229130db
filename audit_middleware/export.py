"""CSV export: DESIGN.md's columns, streamed row by row, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

from .events import AuditEvent, utc_iso
from .values import dumps

CSV_COLUMNS: tuple[str, ...] = (
    "occurred_at", "event", "category", "actor_type", "actor_id", "actor_name", "resource_type",
    "resource_id", "resource_name", "workspace_id", "changes", "ip", "user_agent", "request_id", "id",
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """Prefix a cell a spreadsheet would execute as a formula (``= + - @``, tab, CR) with a quote."""
    if cell and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_row(event: AuditEvent) -> list[str]:
    context = event.context
    values: list[Any] = [
        utc_iso(event.occurred_at), event.event, event.category, event.actor.type, event.actor.id,
        event.actor.name, event.resource_type, event.resource_id, event.resource_name, event.workspace_id,
        dumps(event.changes) if event.changes else "", context.get("ip"), context.get("user_agent"),
        context.get("request_id"), event.id,
    ]
    return [neutralise("" if v is None else str(v)) for v in values]


class _Line:
    """A file-like sink that hands back what csv.writer wrote for one row."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def iter_csv(events: Iterable[AuditEvent], *, header: bool = True) -> Iterator[str]:
    """The CSV text, one row per chunk, in constant memory."""
    line = _Line()
    writer = csv.writer(line.buffer, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
        yield line.take()
    for event in events:
        writer.writerow(csv_row(event))
        yield line.take()


def export_filename(today: str) -> str:
    """``audit-trail-2026-11-25.csv``."""
    return f"audit-trail-{today}.csv"
