"""The event store on SQLAlchemy Core: works on SQLite, PostgreSQL and MariaDB/MySQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    inspect,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from audit_middleware.copy_rows import (
    COPY_MIN_ROWS,
    CopyStream,
    can_copy,
    copy_rows,
    copy_statement,
    rows_in_chunks,
)
from audit_middleware.events import AuditEvent
from audit_middleware.export import EXPORT_COLUMNS, iter_postgresql_csv, postgresql_csv_copy
from audit_middleware.integrity import Signer
from audit_middleware.query import (
    TIME_PARAMETERS,
    EventQuery,
    HeldWorkspaces,
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
    ROWS_PER_CHUNK,
    STORED_COLUMNS,
    event_from_row,
    event_insert,
    stored_rows,
)

from .integrity import SQLAlchemyIntegrity, allow_purge
from .schema import audit_events, tables_of

EngineSource = Engine | Callable[[], Engine]


# The signing key belongs to the trail (the table), not to one caller: every path that inserts into a table
# (capture, record, the outbox's test event, the CLI) signs with the key its auditor or store registered.
_SIGNERS: dict[Table, Signer] = {}


def set_signer(table: Table, signer: Signer) -> None:
    """Sign rows inserted into ``table`` with ``signer`` (done by ``track()`` and :class:`SQLAlchemyStore`)."""
    _SIGNERS[table] = signer


def signer_for(table: Table) -> Signer:
    return _SIGNERS.get(table) or Signer.from_config()


def insert_events(connection: Connection, events: Sequence[AuditEvent], table: Table = audit_events) -> None:
    """Write events on ``connection``, in its current transaction. This is the per-flush hot path: the
    statement text is made once per table and dialect, and the values go to the driver as they are (after
    the dialect's bind processors). One event is one plain INSERT; more are one executemany (psycopg sends
    them in a pipeline, PyMySQL as multi-row statements) per 1,000 events, or on SQLite one multi-row INSERT
    per 60 events, the fastest there; on psycopg 3, from ``COPY_MIN_ROWS`` events on, one COPY where nobody
    watches the statements."""
    if not events:
        return
    insert = driver_insert(table, connection.dialect)
    if insert is None:  # a driver whose placeholders are not ``?`` or ``%s``: the compiled Core statement
        rows = stored_rows(events, signer_for(table))
        connection.execute(_core_insert(table), [dict(zip(STORED_COLUMNS, r, strict=True)) for r in rows])
        return
    step = insert.rows_per_statement
    size = step if step > 1 else ROWS_PER_CHUNK  # the rows of one statement (or executemany) at a time
    if len(events) >= COPY_MIN_ROWS and _copy_unwatched(connection, table, insert, events):
        return
    execute = _unwatched_sqlite(connection) or connection.exec_driver_sql
    for start in range(0, len(events), size):
        rows = driver_rows(events[start:start + size], table, insert)
        if len(rows) == 1:
            execute(insert.sql(1), rows[0])
        elif step == 1:
            connection.exec_driver_sql(insert.sql(1), rows)
        else:
            execute(insert.sql(len(rows)), tuple(v for values in rows for v in values))


def _unwatched(connection: Connection) -> bool:
    """Whether nobody watches ``connection``'s statements: no SQLAlchemy engine, connection or dialect event
    listener (an APM agent's, a statement counter's) and no echo. Only then may event rows go past SQLAlchemy
    to the driver; watched, they go through SQLAlchemy as any statement, so the listeners and the log see
    them."""
    return not (connection._has_events or connection.engine._has_events or connection.dialect._has_events
                or connection._echo)


def _unwatched_sqlite(connection: Connection) -> Callable[[str, Sequence[Any]], Any] | None:
    """``execute`` of the sqlite3 connection under ``connection`` when nobody watches its statements
    (:func:`_unwatched`); else None. Sent there, an event INSERT skips SQLAlchemy's execution context, cursor
    and result. A failure raises what SQLAlchemy would have (sqlite3's error wrapped as
    ``sqlalchemy.exc.OperationalError`` and the like), which the caller turns into an ``AuditWriteError``; the
    transaction is left to be rolled back, as after any failed statement."""
    dialect = connection.dialect
    if dialect.driver != "pysqlite" or not _unwatched(connection):
        return None
    driver_execute = connection.connection.driver_connection.execute  # type: ignore[union-attr]

    driver_error = dialect.loaded_dbapi.Error

    def execute(sql: str, parameters: Sequence[Any]) -> Any:  # per audited write: no context manager here
        try:
            return driver_execute(sql, parameters)
        except driver_error as error:
            raise _as_sqlalchemy_error(connection, sql, parameters, error) from error

    return execute


def _copy_unwatched(connection: Connection, table: Table, insert: DriverInsert, events: Sequence[AuditEvent]
                    ) -> bool:
    """Write ``events`` with one COPY (:mod:`audit_middleware.copy_rows`) where ``connection`` is psycopg 3's
    and nobody watches its statements; their rows are made a chunk at a time
    (:func:`~audit_middleware.copy_rows.rows_in_chunks`). False, having sent nothing, elsewhere. A failure
    raises what SQLAlchemy would have, as :func:`_unwatched_sqlite`'s does."""
    copy = _copy_sql(connection, table, insert)
    if copy is None:
        return False
    chunks = rows_in_chunks(events, lambda chunk: driver_rows(chunk, table, insert))
    try:
        copy_rows(connection.connection.driver_connection, copy, chunks)
    except connection.dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemy_error(connection, copy, (), error) from error
    return True


def _copy_sql(connection: Connection, table: Table, insert: DriverInsert) -> str | None:
    """The ``COPY ... FROM STDIN`` for ``insert`` where ``connection`` is psycopg 3's, nobody watches its
    statements (:func:`_unwatched`) and it can run a COPY now; else None."""
    if connection.dialect.driver != "psycopg" or not _unwatched(connection):
        return None
    copy = copy_statement(insert.sql(1))
    return copy if copy is not None and can_copy(connection.connection.driver_connection) else None


class EventCopy:
    """A COPY of event rows into ``table`` kept open on a connection while events come (see
    :class:`~audit_middleware.copy_rows.CopyStream`): a large flush's events are written as they are made, and
    the server stores them meanwhile. Nothing else may run on the connection until :meth:`finish` or
    :meth:`abort`. Failures raise what SQLAlchemy would have (``sqlalchemy.exc.IntegrityError`` and the like)."""

    __slots__ = ("_connection", "_table", "_insert", "_sql", "_stream")

    def __init__(self, connection: Connection, table: Table, insert: DriverInsert, sql: str) -> None:
        self._connection, self._table, self._insert, self._sql = connection, table, insert, sql
        self._stream: CopyStream | None = None
        with self._driver_errors():
            self._stream = CopyStream(connection.connection.driver_connection, sql)

    @property
    def count(self) -> int:
        """Rows written so far."""
        return self._stream.count if self._stream is not None else 0

    def write(self, events: Sequence[AuditEvent]) -> None:
        """Send the rows of ``events``, made a chunk at a time (the server stores each while the next is made)."""
        stream = self._stream
        assert stream is not None, "the COPY is over"
        table, insert = self._table, self._insert
        with self._driver_errors():
            for rows in rows_in_chunks(events, lambda chunk: driver_rows(chunk, table, insert)):
                stream.write(rows)

    def finish(self) -> int:
        """End the COPY and wait for the server to store its rows; returns how many."""
        stream, self._stream = self._stream, None
        if stream is None:
            return 0
        with self._driver_errors():
            return stream.finish()

    def abort(self, error: BaseException) -> None:
        """End the COPY because of ``error``: nothing of it is stored, and the transaction fails (a no-op once
        it is over)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort(error)

    @contextmanager
    def _driver_errors(self) -> Iterator[None]:  # per chunk of rows, not per row
        try:
            yield
        except self._connection.dialect.loaded_dbapi.Error as error:
            raise _as_sqlalchemy_error(self._connection, self._sql, (), error) from error


def open_event_copy(connection: Connection, table: Table) -> EventCopy | None:
    """An open :class:`EventCopy` into ``table`` where a COPY can be used (:func:`_copy_sql`); else None,
    having sent nothing."""
    insert = driver_insert(table, connection.dialect)
    copy = _copy_sql(connection, table, insert) if insert is not None else None
    return EventCopy(connection, table, insert, copy) if insert is not None and copy is not None else None


def _as_sqlalchemy_error(connection: Connection, sql: str, parameters: Sequence[Any], error: Exception
                         ) -> BaseException:
    """The driver's ``error`` as SQLAlchemy wraps it (``sqlalchemy.exc.IntegrityError`` and the like)."""
    dialect = connection.dialect
    return DBAPIError.instance(sql, parameters, error, dialect.loaded_dbapi.Error, dialect=dialect,
                               hide_parameters=connection.engine.hide_parameters, ismulti=False)


def driver_rows(events: Sequence[AuditEvent], table: Table, insert: DriverInsert) -> list[tuple[Any, ...]]:
    """The parameters of ``insert`` for each event: the stored values after the dialect's bind processors."""
    rows = stored_rows(events, signer_for(table))
    for index, process in insert.processors:
        last: Any = None
        done: Any = None
        for values in rows:
            value = values[index]
            if value is not None:
                if value is not last:  # a flush's events share their time: processed once
                    last, done = value, process(value)
                values[index] = done
    return [tuple(values) for values in rows]


class DriverInsert:
    """A table's INSERT in one dialect's driver SQL: the text for n rows, and the bind processors to apply."""

    def __init__(self, table: Table, dialect: Any, mark: str) -> None:
        quote = dialect.identifier_preparer.quote
        columns = [table.c[name] for name in STORED_COLUMNS]
        self._head = (  # identifiers are the table's own, quoted by the dialect; every value is a parameter
            f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "  # noqa: S608
            f"({', '.join(quote(c.name) for c in columns)}) VALUES "
        )
        self._row = "(" + ", ".join([mark] * len(columns)) + ")"
        self._texts: dict[int, str] = {}
        self.processors = [
            (index, process) for index, column in enumerate(columns)
            if (process := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]
        # SQLite: 60 rows per statement (older builds bind at most 999 parameters), INSERT OR FAIL (see
        # event_insert); elsewhere executemany
        self._database = dialect.name
        self.rows_per_statement = 60 if dialect.name == "sqlite" else 1

    def sql(self, rows: int) -> str:
        text = self._texts.get(rows)
        if text is None:
            text = self._texts[rows] = event_insert(self._head + ", ".join([self._row] * rows), self._database, rows)
        return text


_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_DRIVER_INSERTS: dict[tuple[Table, str, str], DriverInsert | None] = {}
_CORE_INSERTS: dict[Table, Any] = {}


def driver_insert(table: Table, dialect: Any) -> DriverInsert | None:
    """The table's INSERT in the driver's SQL for ``dialect``, made once; None for a driver whose placeholders
    are not ``?`` or ``%s``."""
    key = (table, dialect.name, dialect.driver)
    try:
        return _DRIVER_INSERTS[key]
    except KeyError:
        mark = _MARKS.get(dialect.paramstyle)
        insert_ = _DRIVER_INSERTS[key] = DriverInsert(table, dialect, mark) if mark else None
        return insert_


def _core_insert(table: Table) -> Any:
    statement = _CORE_INSERTS.get(table)
    if statement is None:
        statement = _CORE_INSERTS[table] = insert(table)
    return statement


def filters_of(
    query: EventQuery, table: Table, actor_match: str | None = None, *, event_unindexed: bool = False,
    workspace_parameter: str | ColumnElement[Any] = "f_workspace",
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``query``. The actor filter matches the actor's id or name; ``actor_match``
    (``"id"`` or ``"name"``, see :data:`~audit_middleware.query.ACTOR_MATCHES`) keeps one of the two, the
    ``name`` one leaving out rows whose id matches. ``event_unindexed`` compares the event as an expression
    (``event || ''``), which keeps SQLite's planner off the event index: with an actor filter, the actor's
    index in time order, with the event checked in it, is 3 to 5 times faster than the planner's choice.
    ``workspace_parameter`` names the workspace's parameter (see :func:`~audit_middleware.query.member_parameters`),
    or is the column of a list of workspaces the clauses are joined to laterally.
    """
    c = table.c
    # Every value is a named parameter, its value from page_parameters (the one place that reads them), so
    # one statement serves every query of a shape.
    p = {
        name: bindparam(name, value, expanding=name == "f_events",
                        type_=c.occurred_at.type if name in TIME_PARAMETERS else None)
        for name, value in page_parameters(query).items()
    }
    clauses: list[ColumnElement[bool]] = []
    if query.workspace_filtered:
        workspace = (bindparam(workspace_parameter, query.workspace_id) if isinstance(workspace_parameter, str)
                     else workspace_parameter)
        clauses.append(c.workspace_id.is_(None) if query.workspace_id is None else c.workspace_id == workspace)
    if query.events:
        event = (c.event + "") if event_unindexed else c.event
        clauses.append(event == p["f_event"] if len(query.events) == 1 else event.in_(p["f_events"]))
    if query.category is not None:
        clauses.append(c.category == p["f_category"])
    if query.actor is not None:
        actor = p["f_actor"]
        if actor_match == "id":
            clauses.append(c.actor_id == actor)
        elif actor_match == "name":
            clauses.append(and_(c.actor_name == actor, or_(c.actor_id != actor, c.actor_id.is_(None))))
        else:
            clauses.append(or_(c.actor_id == actor, c.actor_name == actor))
    if query.actor_type is not None:
        clauses.append(c.actor_type == p["f_actor_type"])
    if query.resource_type is not None:
        clauses.append(c.resource_type == p["f_resource_type"])
    if query.resource_id is not None:
        clauses.append(c.resource_id == p["f_resource_id"])
    if query.since is not None:
        clauses.append(c.occurred_at >= p["f_since"])
    if query.until is not None:
        clauses.append(c.occurred_at < p["f_until"])
    if query.cursor is not None:
        at, last_id = p["f_at"], p["f_last_id"]
        clauses.append(or_(c.occurred_at < at, and_(c.occurred_at == at, c.id < last_id)))
    return clauses


class SQLAlchemyStore:
    """:class:`~audit_middleware.store.EventStore` over an engine (or a callable returning one)."""

    def __init__(self, engine: EngineSource, table: Table = audit_events, signer: Signer | None = None) -> None:
        self._engine = engine
        self.table = table
        self._owns_engine = False
        self._pages: dict[tuple[Any, ...], Any] = {}
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
        """Create the audit tables and their indexes where they do not exist, including an index a later
        release added to a table an earlier one created, and build again an index of ours whose columns a
        later release changed (on a large table, do that with Alembic first: ``CREATE INDEX`` blocks writes
        to the table while it runs)."""
        tables = tables_of(self.table)
        assert self.table.metadata is not None
        every = [tables.events, tables.deliveries, tables.forwarding] + (
            [tables.digests] if tables.digests is not None else [])
        self.table.metadata.create_all(self.engine, every)
        with self.engine.begin() as connection:  # create_all skips the indexes of a table that exists
            inspector = inspect(connection)
            for table in every:
                present = {i["name"]: i["column_names"]
                           for i in inspector.get_indexes(table.name, schema=table.schema)}
                for index in table.indexes:
                    columns = present.get(str(index.name))
                    if columns is not None and list(columns) != [c.name for c in index.columns]:
                        index.drop(connection)  # an earlier release's columns under the same name
                        columns = None
                    if columns is None:
                        index.create(connection)

    def append(self, events: Sequence[AuditEvent]) -> None:
        with self.engine.begin() as connection:
            insert_events(connection, events, self.table)

    def _reading(self) -> Connection:
        """A connection for one read statement. On PostgreSQL it runs in autocommit: no BEGIN before the
        statement and no ROLLBACK when the connection goes back to the pool (two round trips fewer), and the
        driver may keep the statement prepared across pages (psycopg forgets its prepared statements at every
        ROLLBACK), so a repeated page query is not planned again. One statement sees one snapshot either way.
        """
        connection = self.engine.connect()
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")  # undone when it returns to the pool
        return connection

    def workspaces_held(self, connection: Connection, at_most: int) -> list[str | None]:
        """The trail's workspaces, at most ``at_most + 1``, then None if some event has none (the probe
        :func:`~audit_middleware.query.per_workspace` and ``within_only_workspace`` decide by): one index seek
        each (a recursive query asking for the lowest workspace above the last one; on MariaDB, whose recursive
        query scans the index at each step, its loose index scan of the distinct workspaces), in one statement."""
        if connection.dialect.name in ("mysql", "mariadb"):
            distinct = connection.execute(self._distinct_statement, {"listed": at_most + 2})
            return held_from_distinct([row[0] for row in distinct], at_most)
        return [row[0] for row in connection.execute(self._listing_statement, {"at_most": at_most})]

    @cached_property
    def _distinct_statement(self) -> Any:
        c = self.table.c
        return select(c.workspace_id).distinct().order_by(c.workspace_id).limit(bindparam("listed", type_=Integer))

    @cached_property
    def _listing_statement(self) -> Any:
        c = self.table.c
        held = select(func.min(c.workspace_id).label("workspace"), literal(1, Integer).label("n")).cte(
            "held", recursive=True)
        following = select(
            select(func.min(c.workspace_id)).where(c.workspace_id > held.c.workspace).scalar_subquery(),
            held.c.n + 1,
        ).where(held.c.workspace.is_not(None), held.c.n <= bindparam("at_most", type_=Integer))
        held = held.union_all(following)
        return union_all(
            select(held.c.workspace).where(held.c.workspace.is_not(None)),
            select(null()).where(exists().where(c.workspace_id.is_(None))),
        )

    def _matching(self, query: EventQuery, connection: Connection, columns: Sequence[Any]) -> Any:
        """The ``columns`` of every row matching ``query``, unordered: one SELECT, or for an actor's or a
        resource's rows over a trail of several workspaces a UNION ALL of one SELECT per workspace (see
        :func:`~audit_middleware.query.per_workspace_for_rows`; an actor's id and name matched together, as the
        indexes of both answer an OR without reading the rows, or apart: see
        :data:`~audit_middleware.query.ACTOR_MATCHES_APART`)."""
        members = per_workspace_for_rows(query, self._listed(connection))
        if len(members) == 1:
            return select(*columns).where(*filters_of(members[0], self.table))
        return union_all(*(
            select(*columns).where(*filters_of(member, self.table, match,
                                               workspace_parameter=workspace_parameter(members, i)))
            for i, member in enumerate(members)
            for match in actor_matches_for_rows(member, connection.dialect.name)))

    def _listed(self, connection: Connection) -> HeldWorkspaces:
        """The trail's workspaces as the core's probes ask for them (:meth:`workspaces_held` on ``connection``)."""
        return lambda at_most: self.workspaces_held(connection, at_most)

    def query(self, query: EventQuery) -> Page:
        with self._reading() as connection:
            members = per_workspace(query, self._listed(connection))
            parameters = member_parameters(members)
            dialect = connection.dialect.name
            planned_each_time = plans_each_page(members, dialect, lambda: connection.connection.driver_connection)
            statement = self._page_statement(members, parameters, dialect, planned_each_time)
            result = connection.execute(statement, parameters)
            rows = [event_from_row(row._mapping) for row in result]
        return page_from_rows(rows, query.limit)

    def _page_statement(self, members: Sequence[EventQuery], parameters: dict[str, Any], dialect: str,
                        planned_each_time: bool) -> Any:
        """The statement of a first (or next) page, built once per shape of query (which parameters it has,
        whether it is filtered to no workspace, the page size, how many workspaces it is read in: see
        :func:`~audit_middleware.query.per_workspace`; whether the driver has it planned at each run: see
        :func:`~audit_middleware.query.plans_each_statement`) and reused with new values: building the actor
        filter's UNION ALL costs more than running it."""
        key = (dialect, len(members), planned_each_time, *page_shape(members[0], parameters))
        statement = self._pages.get(key)
        if statement is not None:
            return statement
        c = self.table.c
        sqlite = dialect == "sqlite"
        # The page size written into the statement, not bound: PostgreSQL plans a prepared statement once for
        # every value (a generic plan) only when that plan costs about what a plan for the values would, and
        # without the LIMIT it prices the page for a tenth of the rows and plans it again at each run.
        limit = literal_column(str(int(members[0].limit + 1)))
        lateral = read_laterally(members, planned_each_time) if dialect == "postgresql" else []
        keyed = read_by_id(members, dialect, lateral)

        def part(member: EventQuery, match: str | None, workspace: str | ColumnElement[Any]) -> Any:
            order = [c.occurred_at.desc(), c.id.desc()]
            if without_workspace(member):  # IS NULL: PostgreSQL sees the index's order only with it in ORDER BY
                order.insert(0, c.workspace_id.desc())
            filters = filters_of(member, self.table, match, event_unindexed=sqlite and match is not None,
                                 workspace_parameter=workspace)
            rows = select(c.occurred_at, c.id) if keyed else select(self.table)
            return rows.where(*filters).order_by(*order).limit(limit)

        # one time-ordered index scan per workspace and actor match, merged in one statement
        parts = [part(member, match, workspace_parameter(members, i))
                 for i, member in enumerate(members) if i not in lateral for match in actor_matches_of(member)]
        if len(parts) == 1 and not lateral:
            statement = parts[0]
        else:
            merging = [select(p.subquery()) for p in parts]
            if lateral:  # one member per actor match, read for each workspace of a list (see read_laterally)
                listed = union_all(*(select(bindparam(workspace_parameter(members, i), type_=String).label("ws"))
                                     for i in lateral)).subquery("w")
                read = [part(members[lateral[0]], match, listed.c.ws) for match in actor_matches_of(members[0])]
                each = (read[0] if len(read) == 1 else union_all(*read)).lateral("m")
                merging.insert(0, select(each).select_from(listed.join(each, true())))
            merged = union_all(*merging).subquery()
            statement = select(merged).order_by(merged.c.occurred_at.desc(), merged.c.id.desc()).limit(limit)
            if keyed:  # the page's ids from the indexes alone, then its 51 rows
                statement = (select(self.table).where(c.id.in_(select(statement.subquery().c.id)))
                             .order_by(c.occurred_at.desc(), c.id.desc()))
        if len(self._pages) < 256:
            self._pages[key] = statement
        return statement

    def iter_export_batches(self, query: EventQuery, batch_size: int = 2000) -> Iterator[Sequence[Sequence[Any]]]:
        """Every matching row's :data:`~audit_middleware.export.EXPORT_COLUMNS` values as stored, newest
        first, in lists of up to ``batch_size`` rows: what CSV export reads where the database does not write
        the CSV itself (:meth:`iter_csv_chunks`). One query streamed with a server-side cursor, so the export
        is one consistent snapshot on PostgreSQL and MariaDB; on SQLite the time comes back as its stored text
        (formatting it needs no parse)."""
        c = self.table.c
        with self.engine.connect() as connection:
            raw_time = connection.dialect.name == "sqlite"
            columns = [
                type_coerce(c.occurred_at, String()).label("occurred_at") if raw_time and name == "occurred_at"
                else c[name]
                for name in EXPORT_COLUMNS
            ]
            rows = self._matching(query, connection, columns)
            if isinstance(rows, Select):
                statement = rows.order_by(c.occurred_at.desc(), c.id.desc())
            else:  # per workspace: SQLite's stored time text sorts as the time does (SQLAlchemy writes it whole)
                merged = rows.subquery()
                statement = select(merged).order_by(merged.c.occurred_at.desc(), merged.c.id.desc())
            if raw_time:
                # Every column comes back as the driver's own text, nothing for SQLAlchemy to convert: the
                # driver's rows are read as they are, without a Row built around each.
                result = connection.execute(statement)
                fetch = result.cursor.fetchmany
                batches: Iterator[Sequence[Sequence[Any]]] = iter(lambda: fetch(batch_size), [])
            else:
                result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(statement)
                batches = result.partitions()
            try:
                yield from batches
            finally:  # also when the reader stops early: the (server-side) cursor is closed, not left to GC
                result.close()

    def iter_csv_chunks(self, query: EventQuery, rows_per_chunk: int = 200) -> Iterator[tuple[str, int]] | None:
        """The CSV rows of every matching event, newest first, written by PostgreSQL itself (one COPY, one
        snapshot; see :func:`~audit_middleware.export.postgresql_csv_copy`), in chunks of ``rows_per_chunk``
        rows with their counts. None on other databases and drivers: the export formats
        :meth:`iter_export_batches`' rows instead, to the same bytes."""
        dialect = self.engine.dialect
        if dialect.name != "postgresql" or dialect.driver != "psycopg":
            return None
        return self._copy_csv(query, rows_per_chunk)

    def _copy_csv(self, query: EventQuery, rows_per_chunk: int) -> Iterator[tuple[str, int]]:
        c = self.table.c
        with self._reading() as connection:
            rows = self._matching(query, connection, [c[name] for name in EXPORT_COLUMNS])
            compiled = rows.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
            statement = postgresql_csv_copy(compiled.string, time_zone_aware=False)
            with connection.connection.driver_connection.cursor() as cursor:
                yield from iter_postgresql_csv(cursor, statement, compiled.params, rows_per_chunk)

    def get(self, event_id: str) -> AuditEvent | None:
        if "\x00" in event_id or len(event_id) > 64:  # no event has such an id (and PostgreSQL refuses NUL)
            return None
        with self._reading() as connection:
            row = connection.execute(select(self.table).where(self.table.c.id == event_id)).first()
        return event_from_row(row._mapping) if row is not None else None

    def count(self, query: EventQuery | None = None) -> int:
        statement = select(func.count()).select_from(self.table)
        with self._reading() as connection:
            if query is not None:
                rows = self._matching(query, connection, [self.table.c.id])
                if not isinstance(rows, Select):
                    statement = select(func.count()).select_from(rows.subquery())
                elif rows.whereclause is not None:
                    statement = statement.where(rows.whereclause)
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
