"""The event store on SQLAlchemy Core: works on SQLite, PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, delete, insert, or_, select
from sqlalchemy.sql.elements import ColumnElement

from audit_middleware.events import AuditEvent
from audit_middleware.integrity import Signer
from audit_middleware.query import EventQuery, Page, page_from_rows
from audit_middleware.store import event_from_row, event_to_row

from .integrity import SQLAlchemyIntegrity, allow_purge
from .schema import NAME_LENGTH, audit_events, tables_of

EngineSource = Engine | Callable[[], Engine]


def _cap(value: str | None) -> str | None:
    return value[:NAME_LENGTH] if value is not None and len(value) > NAME_LENGTH else value


def rows_for(events: Sequence[AuditEvent], signer: Signer | None = None) -> list[dict[str, Any]]:
    """The rows to insert, each with its ``row_hash`` (see :mod:`audit_middleware.integrity`)."""
    signer = signer or _DEFAULT_SIGNER
    rows = []
    for event in events:
        row = event_to_row(event)
        for key in ("actor_id", "actor_name", "resource_id", "resource_name"):
            row[key] = _cap(row[key])
        row["row_hash"] = signer.row_hash(row)
        rows.append(row)
    return rows


# The signing key belongs to the trail (the table), not to one caller: every path that inserts into a table
# (capture, record, the outbox's test event, the CLI) signs with the key its auditor or store registered.
_SIGNERS: dict[Table, Signer] = {}
_DEFAULT_SIGNER = Signer.from_config()


def set_signer(table: Table, signer: Signer) -> None:
    """Sign rows inserted into ``table`` with ``signer`` (done by ``track()`` and :class:`SQLAlchemyStore`)."""
    _SIGNERS[table] = signer


def signer_for(table: Table) -> Signer:
    return _SIGNERS.get(table) or Signer.from_config()


def insert_events(connection: Connection, events: Sequence[AuditEvent], table: Table = audit_events) -> None:
    """Write events on ``connection``, in its current transaction, with one executemany."""
    if events:
        connection.execute(_insert_statement(table), rows_for(events, signer_for(table)))


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

    def __init__(self, engine: EngineSource, table: Table = audit_events, signer: Signer | None = None) -> None:
        self._engine = engine
        self.table = table
        self._owns_engine = False
        if signer is not None:  # else the key its auditor registered, or $AUDIT_SIGNING_KEY
            set_signer(table, signer)

    @classmethod
    def from_url(cls, url: str, table: Table = audit_events, signer: Signer | None = None) -> SQLAlchemyStore:
        """A store on its own engine; :meth:`close` disposes of it."""
        from sqlalchemy import create_engine

        store = cls(create_engine(url), table, signer)
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
        self.table.metadata.create_all(self.engine, [tables.events, tables.deliveries, tables.forwarding]
                                       + ([tables.digests] if tables.digests is not None else []))
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
        if "\x00" in event_id or len(event_id) > 64:  # no event has such an id (and PostgreSQL refuses NUL)
            return None
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
        integrity = self.integrity(required=False)
        if integrity is not None:  # record the purge in every chain first, so it never reads as tampering
            integrity.before_purge(before)
        while True:
            with self.engine.begin() as connection:
                ids = list(connection.execute(
                    select(c.id).where(c.occurred_at < before).order_by(c.occurred_at).limit(batch_size)
                ).scalars())
                if not ids:
                    break
                allow_purge(connection)
                connection.execute(delete(self.table).where(c.id.in_(ids)))
            removed += len(ids)
            if len(ids) < batch_size:
                break
        if integrity is not None:
            integrity.after_purge(before)
        return removed

    def integrity(self, required: bool = True) -> SQLAlchemyIntegrity | None:
        """Sealing and verification of this trail (None, unless ``required``, when the database has no
        digests table yet)."""
        from sqlalchemy import inspect

        tables = tables_of(self.table)
        if tables.digests is None or not inspect(self.engine).has_table(tables.digests.name,
                                                                        schema=tables.digests.schema):
            if required:
                raise RuntimeError(
                    f"the database has no {tables.digests.name if tables.digests is not None else 'digests'} "
                    "table: create it (create_tables(), or your Alembic migration) before sealing or verifying"
                )
            return None
        return SQLAlchemyIntegrity(self.engine, tables, signer_for(self.table))
