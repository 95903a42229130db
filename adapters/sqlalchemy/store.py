"""The event store on SQLAlchemy Core: works on SQLite, PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, delete, insert, or_, select
from sqlalchemy.sql.elements import ColumnElement

from audit_middleware.events import AuditEvent
from audit_middleware.query import EventQuery, Page, page_from_rows
from audit_middleware.store import event_from_row, event_to_row

from .schema import NAME_LENGTH, audit_events, tables_of

EngineSource = Engine | Callable[[], Engine]


def _cap(value: str | None) -> str | None:
    return value[:NAME_LENGTH] if value is not None and len(value) > NAME_LENGTH else value


def rows_for(events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
    rows = []
    for event in events:
        row = event_to_row(event)
        for key in ("actor_id", "actor_name", "resource_id", "resource_name"):
            row[key] = _cap(row[key])
        rows.append(row)
    return rows


def insert_events(connection: Connection, events: Sequence[AuditEvent], table: Table = audit_events) -> None:
    """Write events on ``connection``, in its current transaction, with one executemany."""
    if events:
        connection.execute(_insert_statement(table), rows_for(events))


_INSERTS: dict[Table, Any] = {}


def _insert_statement(table: Table) -> Any:
    statement = _INSERTS.get(table)
    if statement is None:
        statement = _INSERTS[table] = insert(table)
    return statement


def filters_of(query: EventQuery, table: Table) -> list[ColumnElement[bool]]:
    c = table.c
    clauses: list[ColumnElement[bool]] = []
    if query.workspace_filtered:
        clauses.append(c.workspace_id.is_(None) if query.workspace_id is None else c.workspace_id == query.workspace_id)
    if query.events:
        clauses.append(c.event == query.events[0] if len(query.events) == 1 else c.event.in_(query.events))
    if query.category is not None:
        clauses.append(c.category == query.category)
    if query.actor is not None:
        clauses.append(or_(c.actor_id == query.actor, c.actor_name == query.actor))
    if query.actor_type is not None:
        clauses.append(c.actor_type == query.actor_type)
    if query.resource_type is not None:
        clauses.append(c.resource_type == query.resource_type)
    if query.resource_id is not None:
        clauses.append(c.resource_id == query.resource_id)
    if query.since is not None:
        clauses.append(c.occurred_at >= query.since)
    if query.until is not None:
        clauses.append(c.occurred_at < query.until)
    if query.cursor is not None:
        at, last_id = query.cursor.occurred_at, query.cursor.id
        clauses.append(or_(c.occurred_at < at, and_(c.occurred_at == at, c.id < last_id)))
    return clauses


class SQLAlchemyStore:
    """:class:`~audit_middleware.store.EventStore` over an engine (or a callable returning one)."""

    def __init__(self, engine: EngineSource, table: Table = audit_events) -> None:
        self._engine = engine
        self.table = table
        self._owns_engine = False

    @classmethod
    def from_url(cls, url: str, table: Table = audit_events) -> SQLAlchemyStore:
        """A store on its own engine; :meth:`close` disposes of it."""
        from sqlalchemy import create_engine

        store = cls(create_engine(url), table)
        store._owns_engine = True
        return store

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def create_tables(self) -> None:
        tables = tables_of(self.table)
        assert self.table.metadata is not None
        self.table.metadata.create_all(self.engine, [tables.events, tables.deliveries, tables.forwarding])
        # Indexes are created with the table; nothing else to do.

    def append(self, events: Sequence[AuditEvent]) -> None:
        with self.engine.begin() as connection:
            insert_events(connection, events, self.table)

    def query(self, query: EventQuery) -> Page:
        c = self.table.c
        statement = (
            select(self.table)
            .where(*filters_of(query, self.table))
            .order_by(c.occurred_at.desc(), c.id.desc())
            .limit(query.limit + 1)
        )
        with self.engine.connect() as connection:
            rows = [event_from_row(row._mapping) for row in connection.execute(statement)]
        return page_from_rows(rows, query.limit)

    def iter_stored_rows(self, query: EventQuery, batch_size: int = 2000) -> Iterator[Mapping[str, Any]]:
        """Every matching row as stored, newest first: what CSV export reads. One query streamed with a
        server-side cursor (``batch_size`` rows in memory at a time), so the export is one consistent
        snapshot on PostgreSQL and MariaDB."""
        c = self.table.c
        statement = (
            select(self.table)
            .where(*filters_of(query, self.table))
            .order_by(c.occurred_at.desc(), c.id.desc())
        )
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(statement)
            yield from result.mappings()

    def get(self, event_id: str) -> AuditEvent | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(self.table).where(self.table.c.id == event_id)).first()
        return event_from_row(row._mapping) if row is not None else None

    def count(self, query: EventQuery | None = None) -> int:
        from sqlalchemy import func

        statement = select(func.count()).select_from(self.table)
        if query is not None:
            statement = statement.where(*filters_of(query, self.table))
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def purge(self, before: datetime, batch_size: int = 1000) -> int:
        """Delete events older than ``before`` in batches of ``batch_size``, each in its own transaction,
        so a purge of millions of rows never holds one long lock."""
        c = self.table.c
        removed = 0
        while True:
            with self.engine.begin() as connection:
                ids = list(connection.execute(
                    select(c.id).where(c.occurred_at < before).order_by(c.occurred_at).limit(batch_size)
                ).scalars())
                if not ids:
                    return removed
                connection.execute(delete(self.table).where(c.id.in_(ids)))
            removed += len(ids)
            if len(ids) < batch_size:
                return removed
