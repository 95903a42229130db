"""Events whose text a CSV export must quote, neutralise or keep as it is, in every column, and the checks
every store's export of them must pass (the same bytes as the CSV of the events themselves)."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from audit_middleware import Actor, EventQuery
from audit_middleware.events import AuditEvent
from audit_middleware.export import CSV_COLUMNS, CsvExport, iter_csv
from audit_middleware.ids import new_event_id
from audit_middleware.store import iter_events

AWKWARD_TEXTS = [
    "=1+2", "+x", "-x", "@SUM(A1)", "\tx", "\rx", "a,b", 'say "hi"', '"', ",", "line\nbreak", "cr\r\nlf", "\r",
    "", "\\.", "\\N", " leading space", "trailing ", "é ü 日本 🙂", "'already quoted", "%s %(name)s %%",
]
CONTEXTS: list[dict[str, Any]] = [
    {"ip": "=1", "user_agent": 'a,"b"\nc', "request_id": ""},
    {"ip": 5, "user_agent": True, "request_id": {"b": [1, "é"], "a": None}},
    {"ip": 2.5, "user_agent": "nul\x00here", "request_id": None, "path": "/x"},
    {},
]


def awkward_events(workspace: str) -> list[AuditEvent]:
    """One event per awkward text, in every text column the export writes (empty text where a column must
    not be empty gets a plain value), and context values that are not text or hold a NUL."""
    whole_second = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    return [
        AuditEvent(
            new_event_id(), whole_second - timedelta(minutes=n, microseconds=n * 7), text or "Warehouse Created",
            text or "Warehouses", "created", Actor.user(text or "7", text or None), resource_type=text or None,
            resource_id=text, resource_name=text, workspace_id=workspace,
            changes={text: [text, None]} if n % 3 else None, context=CONTEXTS[n % len(CONTEXTS)],
        )
        for n, text in enumerate(AWKWARD_TEXTS)
    ]


def assert_exports_the_awkward_events(store: Any, query: EventQuery) -> None:
    """``store``'s export of :func:`awkward_events` is the CSV of its events, byte for byte, and reads back
    as the documented cells: formulas quoted, context values that are not text as JSON, NUL as U+FFFD."""
    export = CsvExport(store, query, rows_per_chunk=4)
    exported = "".join(export)
    assert exported == "".join(iter_csv(iter_events(store, query)))
    assert export.rows == len(AWKWARD_TEXTS)
    rows = list(csv.reader(io.StringIO(exported, newline="")))
    assert rows[0] == list(CSV_COLUMNS) and len(rows) == len(AWKWARD_TEXTS) + 1
    cells = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [r["resource_name"] for r in cells] == [
        "'" + t if t[:1] in ("=", "+", "-", "@", "\t", "\r") else t for t in AWKWARD_TEXTS]
    assert {(r["ip"], r["user_agent"], r["request_id"]) for r in cells} == {
        ("'=1", 'a,"b"\nc', ""), ("5", "true", '{"a":null,"b":[1,"é"]}'), ("2.5", "nul\ufffdhere", ""), ("", "", "")}
    assert all(r["occurred_at"].endswith("Z") and len(r["occurred_at"]) == 27 for r in cells)
    for text in ("'already quoted", "%s %(name)s %%", 'say "hi"', "\\N", "a,b"):  # filter values, bound
        by_actor = replace(query, actor=text)
        exported = "".join(CsvExport(store, by_actor))
        assert exported == "".join(iter_csv(iter_events(store, by_actor)))
        assert [row[CSV_COLUMNS.index("actor_id")] for row in csv.reader(io.StringIO(exported, newline=""))][1:] == [
            "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text]
