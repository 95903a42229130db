"""The core's :class:`~audit_middleware.store.EventStore` on the Django ORM, and the raw insert capture uses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from itertools import islice
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Q

from audit_middleware.commit_pipeline import can_pipeline, send_with_commit
from audit_middleware.events import AuditEvent
from audit_middleware.export import EXPORT_COLUMNS
from audit_middleware.integrity import PURGE_SETTING
from audit_middleware.query import ACTOR_MATCHES, EventQuery, Page, newest_first, page_from_rows
from audit_middleware.store import EVENT_COLUMNS, STORED_COLUMNS, event_from_row, stored_rows

from . import conf
from .models import AuditEvent as AuditEventRow

_TIME = STORED_COLUMNS.index("occurred_at")


def db_time(moment: datetime) -> datetime:
    """A naive-UTC moment as the DateTimeField expects it (aware UTC when ``USE_TZ``)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(tzinfo=timezone.utc) if settings.USE_TZ else moment


_SQL: dict[tuple[str, int], str] = {}


def _insert_sql(connection: Any, rows: int) -> str:
    key = (connection.vendor, rows)
    sql = _SQL.get(key)
    if sql is None:
        table = connection.ops.quote_name(AuditEventRow._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in STORED_COLUMNS)
        marks = "(" + ", ".join(["%s"] * len(STORED_COLUMNS)) + ")"
        # Identifiers are the model's own, quoted by the backend; every value is a bound parameter.
        sql = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([marks] * rows)  # noqa: S608
        if len(_SQL) < 64:
            _SQL[key] = sql
    return sql


def _rows_per_statement(connection: Any) -> int:
    # SQLite: 60-row statements (older builds bind at most 999 parameters), its fastest; PostgreSQL: one row
    # per statement in an executemany (psycopg's pipeline costs half the CPU of a 500-row statement); MySQL
    # drivers rewrite an executemany of an INSERT into multi-row statements themselves.
    return 60 if connection.vendor == "sqlite" else 1


def insert_events(connection: Any, events: Sequence[AuditEvent], *, forward: bool = True) -> None:
    """Write events on ``connection`` in its current transaction, and their forwarding delivery rows when
    destinations are configured. No model instances are built: this is the per-save hot path. One event is
    one plain INSERT (one round trip; an executemany of one row would cost psycopg a pipeline); more are one
    executemany, or on SQLite one multi-row INSERT per 60 events."""
    if not events:
        return
    rows = _stored_rows(connection, events)
    step = _rows_per_statement(connection)
    with connection.cursor() as cursor:
        if len(rows) == 1:
            cursor.execute(_insert_sql(connection, 1), rows[0])
        elif step == 1:
            cursor.executemany(_insert_sql(connection, 1), rows)
        else:
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                cursor.execute(_insert_sql(connection, len(chunk)), [v for values in chunk for v in values])
    if forward:  # the transactional outbox: delivery rows in the same transaction as the events
        from .outbox import get_outbox

        outbox = get_outbox(connection.alias)
        if outbox is not None:
            outbox.write(connection, events)


def _stored_rows(connection: Any, events: Sequence[AuditEvent]) -> list[list[Any]]:
    adapt = connection.ops.adapt_datetimefield_value
    rows = stored_rows(events, conf.signer())
    for values in rows:
        values[_TIME] = adapt(db_time(values[_TIME]))
    return rows


def commit_with_events(connection: Any, events: Sequence[AuditEvent]) -> bool:
    """Write ``events`` and COMMIT ``connection``'s transaction in one round trip (psycopg 3 only, see
    :mod:`audit_middleware.commit_pipeline`); Django's own commit then has nothing left to send. Returns
    False, having sent nothing, where that cannot be done (another driver, or forwarding configured: the
    outbox reads before it writes): the caller writes the events and commits as usual."""
    driver_connection = connection.connection
    if connection.vendor != "postgresql" or not can_pipeline(driver_connection):
        return False
    from .outbox import configured_forwarding

    if configured_forwarding() is not None:
        return False
    send_with_commit(driver_connection, [(_insert_sql(connection, 1), _stored_rows(connection, events))])
    return True


def filters_of(query: EventQuery, actor_match: str | None = None) -> Q:
    """The filter of ``query``; ``actor_match`` keeps one of the actor filter's two matches (see
    :data:`~audit_middleware.query.ACTOR_MATCHES`), the ``name`` one leaving out rows whose id matches."""
    q = Q()
    if query.workspace_filtered:
        q &= Q(workspace_id__isnull=True) if query.workspace_id is None else Q(workspace_id=query.workspace_id)
    if query.events:
        q &= Q(event=query.events[0]) if len(query.events) == 1 else Q(event__in=query.events)
    if query.category is not None:
        q &= Q(category=query.category)
    if query.actor is not None:
        if actor_match == "id":
            q &= Q(actor_id=query.actor)
        elif actor_match == "name":
            q &= Q(actor_name=query.actor) & ~Q(actor_id=query.actor)
        else:
            q &= Q(actor_id=query.actor) | Q(actor_name=query.actor)
    if query.actor_type is not None:
        q &= Q(actor_type=query.actor_type)
    if query.resource_type is not None:
        q &= Q(resource_type=query.resource_type)
    if query.resource_id is not None:
        q &= Q(resource_id=query.resource_id)
    if query.since is not None:
        q &= Q(occurred_at__gte=db_time(query.since))
    if query.until is not None:
        q &= Q(occurred_at__lt=db_time(query.until))
    if query.cursor is not None:
        at = db_time(query.cursor.occurred_at)
        q &= Q(occurred_at__lt=at) | Q(occurred_at=at, id__lt=query.cursor.id)
    return q


class DjangoStore:
    """:class:`~audit_middleware.store.EventStore` over the ``audit_events`` table of database ``using``."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using or router.db_for_write(AuditEventRow)

    def _rows(self) -> Any:
        return AuditEventRow.objects.using(self.using)

    def append(self, events: Sequence[AuditEvent]) -> None:
        with transaction.atomic(using=self.using):
            insert_events(connections[self.using], events)

    def query(self, query: EventQuery) -> Page:
        matches = ACTOR_MATCHES if query.actor is not None else (None,)
        events: list[AuditEvent] = []
        for match in matches:  # an actor filter: one time-ordered index scan per match, merged below
            rows = (
                self._rows().filter(filters_of(query, match)).order_by("-occurred_at", "-id")
                .values(*EVENT_COLUMNS)[: query.limit + 1]
            )
            events += [event_from_row(r) for r in rows]
        if len(matches) > 1:
            events = newest_first(events, query.limit + 1)
        return page_from_rows(events, query.limit)

    def get(self, event_id: str) -> AuditEvent | None:
        if "\x00" in event_id or len(event_id) > 64:  # no event has such an id (and PostgreSQL refuses NUL)
            return None
        row = self._rows().filter(id=event_id).values(*EVENT_COLUMNS).first()
        return event_from_row(row) if row is not None else None

    def iter_export_batches(self, query: EventQuery, batch_size: int = 2000) -> Iterator[Sequence[Sequence[Any]]]:
        """Every matching row's :data:`~audit_middleware.export.EXPORT_COLUMNS` values as stored, newest
        first, in lists of up to ``batch_size`` rows, without building model instances: what CSV export reads
        (a server-side cursor on PostgreSQL)."""
        queryset = self._rows().filter(filters_of(query)).order_by("-occurred_at", "-id")
        rows = queryset.values_list(*EXPORT_COLUMNS).iterator(chunk_size=batch_size)
        return iter(lambda: list(islice(rows, batch_size)), [])

    def count(self, query: EventQuery | None = None) -> int:
        rows = self._rows()
        return int((rows.filter(filters_of(query)) if query is not None else rows).count())

    def purge(self, before: datetime, batch_size: int = 1000) -> int:
        """Delete events older than ``before`` in batches, each in its own transaction (no long locks)."""
        from .integrity import DjangoIntegrity

        removed = 0
        cutoff = db_time(before)
        integrity = DjangoIntegrity(self.using)
        integrity.before_purge(before)  # the purge is recorded in every chain first: not tampering
        while True:
            with transaction.atomic(using=self.using):
                ids = list(
                    self._rows().filter(occurred_at__lt=cutoff).order_by("occurred_at")
                    .values_list("id", flat=True)[:batch_size]
                )
                if not ids:
                    break
                connection = connections[self.using]
                if connection.vendor == "postgresql":  # lets the optional append-only trigger allow it
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT set_config(%s, 'on', true)", [PURGE_SETTING])
                self._rows().filter(id__in=ids).delete()
            removed += len(ids)
            if len(ids) < batch_size:
                break
        integrity.after_purge(before)
        return removed
