"""The store protocol every backend implements, and the row mapping they share."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .actors import Actor
from .events import AuditEvent, utc_naive
from .query import Cursor, EventQuery, Page
from .values import dumps, loads

if TYPE_CHECKING:
    from .integrity import Signer

EVENT_COLUMNS: tuple[str, ...] = (
    "id", "occurred_at", "event", "category", "action", "actor_type", "actor_id", "actor_name",
    "resource_type", "resource_id", "resource_name", "workspace_id", "changes", "context", "details",
)

STORED_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "row_hash")
"""The columns an insert writes, in this order: the event's, then its row hash (tamper evidence)."""
ROWS_PER_CHUNK = 1000
"""How many events' rows an adapter makes and hands to the driver at a time: a large flush never holds all its
rows at once, which would make the garbage collector walk the heap again and again while they pile up."""
NAME_LENGTH = 255
"""Actor and resource ids and names are stored cut to this many characters (the column width)."""
_CAPPED = tuple(EVENT_COLUMNS.index(name) for name in ("actor_id", "actor_name", "resource_id", "resource_name"))
_OCCURRED_AT = EVENT_COLUMNS.index("occurred_at")


@runtime_checkable
class EventStore(Protocol):
    """Where events live. Capture writes inside the host's transaction through the adapter; these methods
    serve reading, exporting, purging and app verbs recorded outside any transaction."""

    def append(self, events: Sequence[AuditEvent]) -> None:
        """Write events in a transaction of their own."""

    def query(self, query: EventQuery) -> Page:
        """One page, newest first, after ``query.cursor``."""

    def get(self, event_id: str) -> AuditEvent | None:
        """One event by id."""

    def purge(self, before: datetime, batch_size: int = 1000) -> int:
        """Delete events that happened before ``before``, in batches; returns how many."""


def event_to_row(event: AuditEvent) -> dict[str, Any]:
    """The column values of an event (JSON fields encoded as text, time as naive UTC)."""
    actor = event.actor
    return {
        "id": event.id,
        "occurred_at": utc_naive(event.occurred_at),
        "event": event.event,
        "category": event.category,
        "action": event.action,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "resource_name": event.resource_name,
        "workspace_id": event.workspace_id,
        "changes": dumps(event.changes) if event.changes else None,
        "context": dumps(event.context) if event.context else None,
        "details": dumps(event.details) if event.details else None,
    }


def stored_rows(events: Sequence[AuditEvent], signer: Signer) -> list[list[Any]]:
    """The values to insert for each event, in :data:`STORED_COLUMNS` order: names cut to
    :data:`NAME_LENGTH`, time as naive UTC, JSON fields as text, and last the row hash over those values.

    This is the per-write hot path of every adapter: no dict per row, and each JSON field encoded once. A
    flush's events share their time and context objects (see :class:`~audit_middleware.recorder.EventOrigin`):
    each is converted once.
    """
    from .integrity import canonical_time  # integrity imports this module

    rows: list[list[Any]] = []
    last_time: Any = None
    stored_time: Any = None
    hashed_time = ""
    last_context: Any = None
    context_text: str | None = None
    for event in events:
        actor = event.actor
        if event.occurred_at is not last_time:
            last_time, stored_time = event.occurred_at, utc_naive(event.occurred_at)
            hashed_time = canonical_time(stored_time)
        if event.context is not last_context:
            last_context, context_text = event.context, _context_text(event.context)
        values: list[Any] = [
            event.id, stored_time, event.event, event.category, event.action,
            actor.type, actor.id, actor.name, event.resource_type, event.resource_id, event.resource_name,
            event.workspace_id,
            dumps(event.changes) if event.changes else None,
            context_text,
            dumps(event.details) if event.details else None,
        ]
        for index in _CAPPED:
            value = values[index]
            if value is not None and len(value) > NAME_LENGTH:
                values[index] = value[:NAME_LENGTH]
        hashed = values.copy()
        hashed[_OCCURRED_AT] = hashed_time
        values.append(signer.values_hash(hashed))
        rows.append(values)
    return rows


def event_insert(insert_sql: str, database: str, rows: int) -> str:
    """The statement to send for ``insert_sql`` (``INSERT INTO ...`` of ``rows`` event rows) on ``database`` (a
    Django vendor or SQLAlchemy dialect name): on SQLite, several rows go as ``INSERT OR FAIL INTO ...``; anything
    else goes as it is.

    Inside a transaction, SQLite keeps a statement journal for every statement that writes several rows and
    may stop part way with its changes undone (``ABORT``, the default on a constraint): a temporary file of
    each page the statement changes that the transaction had changed before, 96 MB for the 60-row INSERTs of
    a 10,000-row transaction (``benchmarks/RESULTS.md``). ``FAIL`` stops the statement without undoing its
    earlier rows, so SQLite needs none; an event INSERT that fails still fails the whole change (the adapters
    roll the transaction back, or mark it for rollback), so no row of it can commit; a full disk part way ends
    SQLite's whole transaction instead, with the same outcome. A trigger on the table that may abort brings the
    statement journal back, as SQLite needs it then."""
    if not insert_sql.startswith("INSERT INTO "):
        raise ValueError(f"not an INSERT INTO statement: {insert_sql[:40]!r}")
    if rows > 1 and database == "sqlite":
        return "INSERT OR FAIL INTO " + insert_sql[len("INSERT INTO "):]
    return insert_sql


_last_context: tuple[dict[str, Any], str] = ({}, "")
"""The last request context encoded (a copy) and its text."""


def _context_text(context: dict[str, Any]) -> str | None:
    """``dumps(context)``, or None for an empty one. Every write of a request, and every request from the same
    client and route, records the same context: its text is kept, and reused for an equal context. Only a
    context whose keys and values are all text is kept (``1 == 1.0 == True`` would otherwise stand for three
    encodings; the keys are sorted, so their order does not matter)."""
    global _last_context
    if not context:
        return None
    seen, text = _last_context
    if context == seen:
        return text
    text = dumps(context)
    if all(type(key) is str and type(value) is str for key, value in context.items()):
        _last_context = (dict(context), text)  # one tuple: a thread never pairs one's dict with another's text
    return text


def event_from_row(row: Mapping[str, Any]) -> AuditEvent:
    occurred_at = row["occurred_at"]
    if isinstance(occurred_at, str):
        occurred_at = datetime.fromisoformat(occurred_at)
    return AuditEvent(
        id=row["id"],
        occurred_at=utc_naive(occurred_at).replace(tzinfo=timezone.utc),
        event=row["event"],
        category=row["category"],
        action=row["action"],
        actor=Actor(row["actor_type"], row["actor_id"], row["actor_name"]),
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        resource_name=row["resource_name"],
        workspace_id=row["workspace_id"],
        changes=loads(row["changes"]) or {},
        context=loads(row["context"]) or {},
        details=loads(row["details"]) or {},
    )


def iter_events(store: EventStore, query: EventQuery, batch_size: int = 500) -> Iterator[AuditEvent]:
    """Every event matching ``query``, newest first, fetched page by page (constant memory)."""
    query = EventQuery(**{**_fields(query), "limit": min(batch_size, 500)})
    while True:
        page = store.query(query)
        yield from page.events
        if page.next_cursor is None:
            return
        query = query.with_cursor(Cursor.after(page.events[-1]))


def _fields(query: EventQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in query.__dataclass_fields__}


def retention_cutoff(retention_days: int, now: datetime | None = None) -> datetime:
    """The naive UTC moment before which events are out of retention."""
    now = now or datetime.now(timezone.utc)
    return utc_naive(now) - timedelta(days=retention_days)
