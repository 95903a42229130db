"""The core's :class:`~audit_middleware.store.EventStore` on the Django ORM, and the raw insert capture uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from itertools import islice
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import CharField, F, Func, Q, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast
from django.db.models.lookups import Exact, In

from audit_middleware.commit_pipeline import can_pipeline, send_with_commit
from audit_middleware.copy_rows import COPY_MIN_ROWS, can_copy, copy_rows, copy_statement, rows_in_chunks
from audit_middleware.events import AuditEvent
from audit_middleware.export import EXPORT_COLUMNS, iter_postgresql_csv, postgresql_csv_copy
from audit_middleware.integrity import PURGE_SETTING
from audit_middleware.query import (
    TIME_PARAMETERS,
    EventQuery,
    Page,
    actor_matches_for_rows,
    actor_matches_of,
    held_from_distinct,
    member_parameters,
    page_from_rows,
    page_parameters,
    page_shape,
    per_workspace,
    per_workspace_for_rows,
    plans_each_page,
    read_by_id,
    read_laterally,
    without_workspace,
    workspace_parameter,
)
from audit_middleware.store import (
    EVENT_COLUMNS,
    ROWS_PER_CHUNK,
    STORED_COLUMNS,
    event_from_row,
    event_insert,
    stored_rows,
)

from . import conf
from .models import AuditEvent as AuditEventRow

_TIME = STORED_COLUMNS.index("occurred_at")


def db_time(moment: datetime) -> datetime:
    """A naive-UTC moment as the DateTimeField expects it (aware UTC when ``USE_TZ``)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.replace(tzinfo=timezone.utc) if settings.USE_TZ else moment


_SQL: dict[tuple[str, int, str], str] = {}
_SQL_SELECTED: dict[str, str] = {}  # by vendor: with_event_rows' INSERT of one row selected from the UPDATE's


def _insert_sql(connection: Any, rows: int, mark: str = "%s") -> str:
    """The INSERT of ``rows`` events' rows, its parameters marked ``%s`` (Django's cursor) or ``?`` (the
    sqlite3 driver's own)."""
    key = (connection.vendor, rows, mark)
    sql = _SQL.get(key)
    if sql is None:
        table = connection.ops.quote_name(AuditEventRow._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in STORED_COLUMNS)
        marks = "(" + ", ".join([mark] * len(STORED_COLUMNS)) + ")"
        # Identifiers are the model's own, quoted by the backend; every value is a bound parameter.
        sql = event_insert(f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([marks] * rows),  # noqa: S608
                           connection.vendor, rows)
        if len(_SQL) < 64:
            _SQL[key] = sql
    return sql


def _rows_per_statement(connection: Any) -> int:
    # SQLite: 60-row statements (older builds bind at most 999 parameters), its fastest, as INSERT OR FAIL (see
    # event_insert); PostgreSQL: one row per statement in an executemany (psycopg's pipeline costs half the CPU
    # of a 500-row statement); MySQL drivers rewrite an executemany of an INSERT into multi-row statements.
    return 60 if connection.vendor == "sqlite" else 1


def insert_events(connection: Any, events: Sequence[AuditEvent], *, forward: bool = True) -> None:
    """Write events on ``connection`` in its current transaction, and their forwarding delivery rows when
    destinations are configured. No model instances are built: this is the per-save hot path. One event is
    one plain INSERT (one round trip; an executemany of one row would cost psycopg a pipeline); more are an
    executemany per 1,000 events, on SQLite one multi-row INSERT per 60 events, and on psycopg 3 from
    ``COPY_MIN_ROWS`` on one COPY."""
    if not events:
        return
    if len(events) >= COPY_MIN_ROWS and _copy_unwatched(connection, events):
        pass  # written
    elif _unwatched_sqlite(connection):
        with connection.wrap_database_errors:  # the driver's errors raised as Django's, as its cursor does
            _execute_inserts(connection.connection, connection, events, "?")  # sqlite3.Connection.execute
    else:
        with connection.cursor() as cursor:
            _execute_inserts(cursor, connection, events, "%s")
    _write_outbox(connection, events, forward)


def with_event_rows(connection: Any, update_sql: str, events: Sequence[AuditEvent]) -> tuple[str, list[Any]]:
    """One statement (PostgreSQL) that runs ``update_sql`` (an UPDATE, its parameters ``%s``) and inserts the
    rows of ``events`` once for every row it changed, and the rows' parameters, to follow the UPDATE's: a
    data-modifying WITH query, each event row a ``SELECT`` of its values from the UPDATE's ``RETURNING``, the
    last one the statement's own, so its row count is the UPDATE's. Each value is a bound parameter; a
    ``SELECT`` list's untyped ones PostgreSQL takes as their columns' types, as in ``INSERT ... VALUES`` (a
    ``VALUES`` list in a subquery would make them text, which a time column refuses)."""
    insert = _SQL_SELECTED.get(connection.vendor)
    if insert is None:
        table = connection.ops.quote_name(AuditEventRow._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(c) for c in STORED_COLUMNS)
        marks = ", ".join(["%s"] * len(STORED_COLUMNS))
        # the model's identifiers, quoted by the backend; every value is a bound parameter
        insert = _SQL_SELECTED[connection.vendor] = f"INSERT INTO {table} ({columns}) SELECT {marks} FROM changed"  # noqa: S608
    rows = _stored_rows(connection, events)
    statement = (f"WITH changed AS ({update_sql} RETURNING 1)"
                 + "".join(f", event_{n} AS ({insert})" for n in range(len(rows) - 1)) + " " + insert)
    return statement, [value for row in rows for value in row]


def _execute_inserts(executor: Any, connection: Any, events: Sequence[AuditEvent], mark: str) -> None:
    """The INSERTs of ``events`` through ``executor`` (a cursor, or anything with its ``execute`` and
    ``executemany``), their parameters marked ``mark``."""
    step = _rows_per_statement(connection)
    if len(events) == 1:
        executor.execute(_insert_sql(connection, 1, mark), _stored_rows(connection, events)[0])
        return
    size = step if step > 1 else ROWS_PER_CHUNK
    for start in range(0, len(events), size):  # the rows of one statement (or executemany) at a time
        rows = _stored_rows(connection, events[start:start + size])
        if step == 1:
            executor.executemany(_insert_sql(connection, 1, mark), rows)
        else:
            executor.execute(_insert_sql(connection, len(rows), mark), [v for values in rows for v in values])


def unwatched(connection: Any) -> bool:
    """Whether ``connection`` is open and nobody watches its queries (no query log: ``DEBUG`` off and no
    ``CaptureQueriesContext``; no ``execute_wrapper``): only then may event rows go past Django's cursor to
    the driver; watched, they go through it as any query does."""
    return connection.connection is not None and not connection.queries_logged and not connection.execute_wrappers


def _unwatched_sqlite(connection: Any) -> bool:
    """Whether the event rows can go straight to the sqlite3 driver (:func:`unwatched`). Django's SQLite cursor
    turns every statement's ``%s`` into ``?`` with a regular expression (about 43,000 instructions an event
    INSERT, a tenth of what auditing adds to a save)."""
    return connection.vendor == "sqlite" and unwatched(connection)


def _copy_unwatched(connection: Any, events: Sequence[AuditEvent]) -> bool:
    """Write ``events`` with one COPY (:mod:`audit_middleware.copy_rows`) where the connection is psycopg 3's
    and nobody watches its queries (:func:`unwatched`), their rows made a chunk at a time as the server stores
    the ones before (:func:`~audit_middleware.copy_rows.rows_in_chunks`); False, having sent nothing, elsewhere.
    The driver's error is raised as Django's."""
    if connection.vendor != "postgresql" or not unwatched(connection) or not can_copy(connection.connection):
        return False
    copy = copy_statement(_insert_sql(connection, 1))
    if copy is None:
        return False
    with connection.wrap_database_errors:
        copy_rows(connection.connection, copy, rows_in_chunks(events, lambda chunk: _stored_rows(connection, chunk)))
    return True


def _write_outbox(connection: Any, events: Sequence[AuditEvent], forward: bool) -> None:
    if forward and conf.get("DESTINATIONS"):  # the transactional outbox: delivery rows in the same transaction
        from .outbox import get_outbox  # imported only then: forwarding's HTTP modules are not cheap to load

        outbox = get_outbox(connection.alias)
        if outbox is not None:
            outbox.write(connection, events)


def _stored_rows(connection: Any, events: Sequence[AuditEvent]) -> list[list[Any]]:
    adapt = _time_adapter(connection)
    rows = stored_rows(events, conf.signer())
    for values in rows:
        values[_TIME] = adapt(values[_TIME])
    return rows


_TIME_ADAPTER = "_audit_time_adapter"
_PROBES = (datetime(2001, 1, 2, 3, 4, 5, 678901), datetime(2001, 7, 2, 3, 4, 5))  # winter and summer


def _time_adapter(connection: Any) -> Callable[[datetime], Any]:
    """How ``connection`` takes a stored time (naive UTC): as Django passes a DateTimeField's value (``db_time``,
    then the backend's ``adapt_datetimefield_value``), or plain ``str`` where that is what Django's way gives,
    winter and summer (SQLite and MySQL in UTC): 7 µs less a row. Checked again when ``USE_TZ`` or the
    connection's time zone changes."""
    key = (settings.USE_TZ, connection.timezone_name)
    cached = connection.__dict__.get(_TIME_ADAPTER)
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    adapt = connection.ops.adapt_datetimefield_value

    def djangos_way(moment: datetime) -> Any:
        return adapt(db_time(moment))

    chosen = str if all(djangos_way(p) == str(p) for p in _PROBES) else djangos_way
    connection.__dict__[_TIME_ADAPTER] = (key, chosen)
    return chosen


def forwarding_configured() -> bool:
    """Whether forwarding destinations are configured: an event's delivery rows then go through the outbox,
    which reads before it writes, so its rows cannot travel in one text with others."""
    if not conf.get("DESTINATIONS"):
        return False
    from .outbox import configured_forwarding

    return configured_forwarding() is not None


def commit_with_events(connection: Any, events: Sequence[AuditEvent]) -> bool:
    """Write ``events`` and COMMIT ``connection``'s transaction in one round trip (psycopg 3 only, see
    :mod:`audit_middleware.commit_pipeline`); Django's own commit then has nothing left to send. Returns
    False, having sent nothing, where that cannot be done (another driver, or forwarding configured: the
    outbox reads before it writes) or is not worth it (more than 1,000 events: their rows are better made
    and sent a chunk at a time): the caller writes the events and commits as usual."""
    driver_connection = connection.connection
    if connection.vendor != "postgresql" or not can_pipeline(driver_connection):
        return False
    if len(events) > ROWS_PER_CHUNK:  # written in chunks instead; one round trip is nothing next to them
        return False
    if forwarding_configured():
        return False
    send_with_commit(driver_connection, [(_insert_sql(connection, 1), _stored_rows(connection, events))])
    return True


def filters_of(query: EventQuery, actor_match: str | None = None, values: Mapping[str, Any] | None = None, *,
               event_unindexed: bool = False) -> Q:
    """The filter of ``query``; ``actor_match`` keeps one of the actor filter's two matches (see
    :data:`~audit_middleware.query.ACTOR_MATCHES`), the ``name`` one leaving out rows whose id matches. The
    values come from ``values`` (``query``'s :func:`~audit_middleware.query.page_parameters` by default).
    ``event_unindexed`` compares the event as an expression (``event || ''``), as the SQLAlchemy store does on
    SQLite: it keeps SQLite's planner on the actor's index, in time order, instead of the event's."""
    v = page_parameters(query) if values is None else values
    q = Q()
    if query.workspace_filtered:
        q &= Q(workspace_id__isnull=True) if query.workspace_id is None else Q(workspace_id=v["f_workspace"])
    if query.events:
        if event_unindexed:
            event = _Unindexed(F("event"))
            q &= Q(Exact(event, v["f_event"])) if len(query.events) == 1 else Q(In(event, v["f_events"]))
        else:
            q &= Q(event=v["f_event"]) if len(query.events) == 1 else Q(event__in=v["f_events"])
    if query.category is not None:
        q &= Q(category=v["f_category"])
    if query.actor is not None:
        actor = v["f_actor"]
        if actor_match == "id":
            q &= Q(actor_id=actor)
        elif actor_match == "name":
            q &= Q(actor_name=actor) & ~Q(actor_id=actor)
        else:
            q &= Q(actor_id=actor) | Q(actor_name=actor)
    if query.actor_type is not None:
        q &= Q(actor_type=v["f_actor_type"])
    if query.resource_type is not None:
        q &= Q(resource_type=v["f_resource_type"])
    if query.resource_id is not None:
        q &= Q(resource_id=v["f_resource_id"])
    if query.since is not None:
        q &= Q(occurred_at__gte=db_time(v["f_since"]))
    if query.until is not None:
        q &= Q(occurred_at__lt=db_time(v["f_until"]))
    if query.cursor is not None:
        at = db_time(v["f_at"])
        q &= Q(occurred_at__lt=at) | Q(occurred_at=at, id__lt=v["f_last_id"])
    return q


class _Unindexed(Func):
    """``<text> || ''``: the same text, as an expression no index answers."""

    template = "(%(expressions)s || '')"
    output_field = CharField()


class PageStatement:
    """The first (or next) page's SQL for one shape of query, compiled by the ORM once and run with each
    query's values: compiling the two actor matches through the ORM costs more than running them.

    It is compiled with ``markers`` in place of the values (see :func:`_markers`); ``sources`` says, for each
    of its parameters in order, which :func:`~audit_middleware.query.page_parameters` value goes there (a
    constant the ORM added stays as it is). ``reusable`` is False when some marker was not found among the
    compiled parameters (a backend that binds values differently): then only these values are right for it.
    The rows go through the ORM's own converters (``compiler``). Several ``parts`` (each a queryset of the
    values or markers it is given: an actor filter's two matches; each workspace's rows, see
    :func:`~audit_middleware.query.per_workspace`) are one statement: each part's newest rows, merged newest
    first. Given ``rows`` (the events' queryset), the parts are of times and ids only, and the statement reads
    the rows of the ids the merge chose (see :data:`~audit_middleware.query.KEYED_MERGES`). ``lateral`` parts
    (PostgreSQL) are read once for each workspace ``over`` names (the parameters of those workspaces): one
    member joined laterally to the list of workspaces, whose workspace they compare with :data:`_LATERAL_WORKSPACE`.
    The store reads so the pages :func:`~audit_middleware.query.read_laterally` names (an actor's or a
    resource's over several workspaces)."""

    __slots__ = ("sql", "sources", "compiler", "reusable")

    def __init__(self, connection: Any, parts: Sequence[Callable[[Mapping[str, Any]], Any]],
                 markers: Mapping[str, Any], limit: int, rows: Any = None,
                 lateral: Sequence[Callable[[Mapping[str, Any]], Any]] = (), over: Sequence[str] = ()) -> None:
        by_bound = {_bound(connection, name, marker): (name, None) for name, marker in markers.items()
                    if not isinstance(marker, list)}
        by_bound.update({item: (name, i) for name, marker in markers.items() if isinstance(marker, list)
                         for i, item in enumerate(marker)})
        quote = connection.ops.quote_name
        statements: list[str] = []
        params: list[Any] = []
        if lateral:
            params += [markers[name] for name in over]
            read = []
            for part in lateral:
                self.compiler = part(markers).query.get_compiler(connection=connection)
                sql, part_params = self.compiler.as_sql()
                read.append(f"({sql})")
                params += part_params
            workspaces = ", ".join(["(%s)"] * len(over))
            # The ORM's own SQL (values bound), joined to a list of %s marks; names are quoted.
            statements.append(f"SELECT {quote('m')}.* FROM (VALUES {workspaces}) {quote('w')} ({quote('ws')}) "  # noqa: S608
                              f"CROSS JOIN LATERAL ({' UNION ALL '.join(read)}) {quote('m')}")
        for part in parts:
            compiler = part(markers).query.get_compiler(connection=connection)
            sql, part_params = compiler.as_sql()
            statements.append(sql)
            params += part_params
            self.compiler = compiler
        if len(statements) == 1 and not lateral:
            self.sql = statements[0]
        else:
            members = " UNION ALL SELECT * FROM ".join(
                f"({sql}) {quote(f'm{i}')}" for i, sql in enumerate(statements))
            # The members are the ORM's own SQL (values bound); names are quoted and the limit is an int.
            self.sql = (f"SELECT * FROM {members} ORDER BY {quote('occurred_at')} DESC, {quote('id')} DESC "  # noqa: S608
                        f"LIMIT {int(limit)}")
            if rows is not None:  # the page's rows, by the ids the merge chose
                chosen = RawSQL(f"SELECT {quote('id')} FROM ({self.sql}) {quote('k')}", params)  # noqa: S608
                self.compiler = (rows.filter(id__in=chosen).order_by("-occurred_at", "-id").values(*EVENT_COLUMNS)
                                 .query.get_compiler(connection=connection))
                self.sql, params = self.compiler.as_sql()
        self.sources: list[tuple[str, int | None] | tuple[None, Any]] = [
            by_bound.get(p, (None, p)) if _hashable(p) else (None, p) for p in params]
        self.reusable = set(by_bound.values()) <= {source for source in self.sources if source[0] is not None}

    def parameters(self, connection: Any, values: Mapping[str, Any]) -> list[Any]:
        bound: list[Any] = []
        for name, where in self.sources:
            if name is None:
                bound.append(where)
            else:
                value = values[name] if where is None else values[name][where]
                bound.append(_bound(connection, name, value))
        return bound

    def rows(self, cursor_rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        converted = self.compiler.results_iter(results=[cursor_rows])
        return [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in converted]


_LATERAL = "lateral"  # the workspace of a lateral part: the one of the list it is joined to
_LATERAL_WORKSPACE = RawSQL('"w"."ws"', [], output_field=CharField())  # PostgreSQL's quoting of PageStatement's names


def _markers(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A value per parameter that nothing else in a compiled statement can equal."""
    markers: dict[str, Any] = {}
    for n, (name, value) in enumerate(parameters.items()):
        if name in TIME_PARAMETERS:
            markers[name] = _MARKER_TIME + timedelta(seconds=n)
        elif isinstance(value, list):
            markers[name] = [f"\x1faudit-middleware {name} {i}\x1f" for i in range(len(value))]
        else:
            markers[name] = f"\x1faudit-middleware {name}\x1f"
    return markers


_MARKER_TIME = datetime(1971, 2, 3, 4, 5, 6, 789012)


def _bound(connection: Any, name: str, value: Any) -> Any:
    """A value as the ORM binds it (a time through the DateTimeField, as its lookups do; text as it is)."""
    if name in TIME_PARAMETERS:
        return _OCCURRED_AT.get_db_prep_value(db_time(value), connection, prepared=False)
    return value


def _driver_connection(connection: Any) -> Any:
    """The DB-API connection under Django's ``connection``, connected if it was not yet."""
    connection.ensure_connection()
    return connection.connection


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_OCCURRED_AT = AuditEventRow._meta.get_field("occurred_at")
_PAGES: dict[tuple[Any, ...], PageStatement] = {}
_HELD: dict[tuple[str, str], str] = {}  # (alias, vendor): the SQL listing the trail's workspaces


class DjangoStore:
    """:class:`~audit_middleware.store.EventStore` over the ``audit_events`` table of database ``using``."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using or router.db_for_write(AuditEventRow)

    def _rows(self) -> Any:
        return AuditEventRow.objects.using(self.using)

    def append(self, events: Sequence[AuditEvent]) -> None:
        with transaction.atomic(using=self.using):
            insert_events(connections[self.using], events)

    def workspaces_held(self, at_most: int) -> list[str | None]:
        """The trail's workspaces, at most ``at_most + 1``, then None if some event has none (the probe
        :func:`~audit_middleware.query.per_workspace` and ``within_only_workspace`` decide by): one index seek
        each (a recursive query asking for the lowest workspace above the last one; on MariaDB, whose recursive
        query scans the index at each step, its loose index scan of the distinct workspaces), in one statement."""
        connection = connections[self.using]
        if connection.vendor == "mysql":
            distinct = self._rows().order_by("workspace_id").values_list("workspace_id", flat=True).distinct()
            return held_from_distinct(list(distinct[: at_most + 2]), at_most)
        key = (self.using, connection.vendor)
        sql = _HELD.get(key)
        if sql is None:
            quote = connection.ops.quote_name
            table, workspace = quote(AuditEventRow._meta.db_table), quote("workspace_id")
            # quote_name()d identifiers and one %s mark
            sql = _HELD[key] = (
                f"WITH RECURSIVE held (workspace, n) AS (SELECT MIN({workspace}), 1 FROM {table} "  # noqa: S608
                f"UNION ALL SELECT (SELECT MIN({workspace}) FROM {table} WHERE {workspace} > held.workspace), "
                f"n + 1 FROM held WHERE held.workspace IS NOT NULL AND n <= %s) SELECT workspace FROM held "
                f"WHERE workspace IS NOT NULL UNION ALL SELECT NULL "
                f"WHERE EXISTS (SELECT 1 FROM {table} WHERE {workspace} IS NULL)")
        with connection.cursor() as cursor:
            cursor.execute(sql, [at_most])
            return [row[0] for row in cursor.fetchall()]

    def query(self, query: EventQuery) -> Page:
        connection = connections[self.using]
        members = per_workspace(query, self.workspaces_held)
        values = member_parameters(members)
        vendor = connection.vendor
        planned_each_time = plans_each_page(members, vendor, lambda: _driver_connection(connection))
        key = (self.using, vendor, len(members), planned_each_time, *page_shape(members[0], values))
        statement = _PAGES.get(key)
        if statement is None:
            named = read_laterally(members, planned_each_time) if vendor == "postgresql" else []
            keyed = read_by_id(members, vendor, named)
            columns = ("occurred_at", "id") if keyed else EVENT_COLUMNS
            over = [workspace_parameter(members, i) for i in named]
            lateral = [self._member_rows(members[named[0]], match, _LATERAL, vendor, columns)
                       for match in actor_matches_of(members[0])] if named else []
            parts = [self._member_rows(member, match, workspace_parameter(members, i), vendor, columns)
                     for i, member in enumerate(members) if i not in named for match in actor_matches_of(member)]
            rows = self._rows() if keyed else None
            statement = PageStatement(connection, parts, _markers(values), query.limit + 1, rows, lateral, over)
            if not statement.reusable:  # compiled for this query's own values, not kept
                statement = PageStatement(connection, parts, values, query.limit + 1, rows, lateral, over)
            elif len(_PAGES) < 256:
                _PAGES[key] = statement
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, statement.parameters(connection, values))
            rows = statement.rows(cursor.fetchall())
        return page_from_rows([event_from_row(r) for r in rows], query.limit)

    def _member_rows(self, member: EventQuery, match: str | None, workspace: str, vendor: str,
                     columns: Sequence[str]) -> Callable[[Mapping[str, Any]], Any]:
        """One member of a page statement: ``member``'s rows (their ``columns``) matching the actor's ``match``,
        newest first, as a queryset of the values (or markers) it is given, its workspace's among them named
        ``workspace``."""
        # IS NULL: PostgreSQL sees the index's order only with the workspace in the ORDER BY
        order = ("-workspace_id", "-occurred_at", "-id") if without_workspace(member) else ("-occurred_at", "-id")
        unindexed = match is not None and vendor == "sqlite"

        def rows(values: Mapping[str, Any]) -> Any:
            if workspace == _LATERAL:
                values = {**values, "f_workspace": _LATERAL_WORKSPACE}
            elif workspace in values:
                values = {**values, "f_workspace": values[workspace]}
            return (self._rows().filter(filters_of(member, match, values, event_unindexed=unindexed))
                    .order_by(*order).values(*columns)[: member.limit + 1])
        return rows

    def get(self, event_id: str) -> AuditEvent | None:
        if "\x00" in event_id or len(event_id) > 64:  # no event has such an id (and PostgreSQL refuses NUL)
            return None
        row = self._rows().filter(id=event_id).values(*EVENT_COLUMNS).first()
        return event_from_row(row) if row is not None else None

    def iter_export_batches(self, query: EventQuery, batch_size: int = 2000) -> Iterator[Sequence[Sequence[Any]]]:
        """Every matching row's :data:`~audit_middleware.export.EXPORT_COLUMNS` values as stored, newest
        first, in lists of up to ``batch_size`` rows, without building model instances: what CSV export reads
        where the database does not write the CSV itself (a server-side cursor on PostgreSQL). On SQLite the
        rows come from the driver's cursor as they are, the time as its stored text: no per-row conversion by
        the ORM, no datetime parsed only to be formatted again (twice as fast)."""
        filters = self._matching(query)
        if connections[self.using].vendor == "sqlite":
            parts = [self._rows().filter(f).order_by().annotate(occurred_at_text=Cast("occurred_at", TextField()))
                     .values_list("occurred_at_text", *EXPORT_COLUMNS[1:]) for f in filters]
            # per workspace: the stored time text sorts as the time does (the same text either way on SQLite)
            stored = (parts[0].order_by("-occurred_at", "-id") if len(parts) == 1
                      else parts[0].union(*parts[1:], all=True).order_by("-occurred_at_text", "-id"))
            compiler = stored.query.get_compiler(using=self.using)
            sql, params = compiler.as_sql()
            # Django before 5.2 selects annotations after the fields, whatever the values_list order (its own
            # iterator puts them back): the time column is found where the compiler put it.
            at = [alias for _, _, alias in compiler.select].index("occurred_at_text")
            order = None if at == 0 else itemgetter(at, *(i for i in range(len(compiler.select)) if i != at))
            return self._driver_batches(sql, params, batch_size, order)
        parts = [self._rows().filter(f).order_by().values_list(*EXPORT_COLUMNS) for f in filters]
        queryset = (parts[0] if len(parts) == 1 else parts[0].union(*parts[1:], all=True)).order_by("-occurred_at", "-id")
        stream = queryset.iterator(chunk_size=batch_size)
        return iter(lambda: list(islice(stream, batch_size)), [])

    def _matching(self, query: EventQuery) -> list[Q]:
        """The filters of the rows matching ``query``: one, or for an actor's or a resource's rows over a trail
        of several workspaces one per workspace, the rows of each read apart (see
        :func:`~audit_middleware.query.per_workspace_for_rows`; an actor's id and name matched together, as the
        indexes of both answer an OR without reading the rows, or apart: see
        :data:`~audit_middleware.query.ACTOR_MATCHES_APART`)."""
        members = per_workspace_for_rows(query, self.workspaces_held)
        if len(members) == 1:
            return [filters_of(members[0])]
        vendor = connections[self.using].vendor
        return [filters_of(member, match) for member in members for match in actor_matches_for_rows(member, vendor)]

    def _driver_batches(self, sql: str, params: Sequence[Any], batch_size: int,
                        order: Callable[[Sequence[Any]], Sequence[Any]] | None) -> Iterator[Sequence[Sequence[Any]]]:
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(batch_size):
                yield batch if order is None else list(map(order, batch))

    def iter_csv_chunks(self, query: EventQuery, rows_per_chunk: int = 200) -> Iterator[tuple[str, int]] | None:
        """The CSV rows of every matching event, newest first, written by PostgreSQL itself (one COPY, one
        snapshot; see :func:`~audit_middleware.export.postgresql_csv_copy`), in chunks of ``rows_per_chunk``
        rows with their counts.

        The COPY runs on a connection of its own, opened for the export and closed after it, so the thread's
        connection stays free for other queries between chunks. That connection cannot see a transaction
        still open on this thread, so inside an ``atomic`` block, on other databases and on psycopg2 this
        gives None: the export formats :meth:`iter_export_batches`' rows instead, to the same bytes."""
        connection = connections[self.using]
        if connection.vendor != "postgresql" or connection.in_atomic_block or not connection.get_autocommit():
            return None
        from django.db.backends.postgresql.psycopg_any import is_psycopg3

        return self._copy_csv(query, rows_per_chunk) if is_psycopg3 else None

    def _copy_csv(self, query: EventQuery, rows_per_chunk: int) -> Iterator[tuple[str, int]]:
        parts = [self._rows().filter(f).order_by().values_list(*EXPORT_COLUMNS).query.get_compiler(using=self.using)
                 .as_sql() for f in self._matching(query)]
        # joined here, not by the ORM's union(): Django 4.2 names a union's columns col1, col2, ...
        sql = parts[0][0] if len(parts) == 1 else " UNION ALL ".join(f"({part})" for part, _ in parts)
        params = [value for _, values in parts for value in values]
        statement = postgresql_csv_copy(sql, time_zone_aware=True)
        connection = connections.create_connection(self.using)
        try:
            connection.ensure_connection()
            with connection.connection.cursor() as cursor:
                yield from iter_postgresql_csv(cursor, statement, params, rows_per_chunk)
        finally:
            connection.close()

    def count(self, query: EventQuery | None = None) -> int:
        rows = self._rows()
        if query is None:
            return int(rows.count())
        parts = [rows.filter(f).order_by().values("id") for f in self._matching(query)]
        return int(parts[0].count() if len(parts) == 1 else parts[0].union(*parts[1:], all=True).count())

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
