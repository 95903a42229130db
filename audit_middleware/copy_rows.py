"""Many event rows into PostgreSQL with one ``COPY ... FROM STDIN`` (psycopg 3) instead of an INSERT a row.

An executemany, even in psycopg's pipeline, has the server parse, bind and run one INSERT per row; a COPY
streams the rows into the table as one statement. For the events of a large flush or of a long transaction
(from :data:`COPY_MIN_ROWS` rows on) it takes 40% less time than an executemany (24 against 40 µs a row, see
``benchmarks/RESULTS.md``, *PostgreSQL: many event rows as one COPY*). Adapters use it where nobody watches their statements (a
statement log, an APM hook): a COPY goes past the framework's cursor, as the rows sent with the COMMIT do
(see :mod:`audit_middleware.commit_pipeline`). It runs in the connection's open transaction, so a row that
cannot be stored fails the COPY and the transaction with it, as a failing INSERT would.

Like :mod:`audit_middleware.commit_pipeline`, this module talks to the driver connection duck-typed: the core
imports no driver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from .commit_pipeline import ONE_QUERY_ROWS, is_psycopg3

COPY_MIN_ROWS = ONE_QUERY_ROWS + 1
"""From this many rows on, a COPY (its two round trips and the statement) costs less than an INSERT a row;
up to :data:`~audit_middleware.commit_pipeline.ONE_QUERY_ROWS` rows go with the COMMIT in one query text."""

COPY_CHUNK = 200
"""How many rows an adapter makes (:func:`~audit_middleware.store.stored_rows`) and sends into a COPY at a time.
psycopg sends a COPY's rows as its 32 KiB buffer fills (about 60 event rows), so the server stores one chunk
while the next is made, on the other core; rows made 1,000 at a time left the server idle while each thousand
was made, then the caller idle while it stored them (Django's batch on PostgreSQL: 37 against 26 µs a row in
the flush, see ``benchmarks/RESULTS.md``)."""

Item = TypeVar("Item")


def rows_in_chunks(items: Sequence[Item], make_rows: Callable[[Sequence[Item]], Sequence[Sequence[Any]]]
                   ) -> Iterator[Sequence[Sequence[Any]]]:
    """The rows of ``items`` (events), made by ``make_rows`` :data:`COPY_CHUNK` items at a time as a COPY takes
    them: what :func:`copy_rows` and :meth:`CopyStream.write` are given, so the server stores each chunk while
    the next is made."""
    for start in range(0, len(items), COPY_CHUNK):
        yield make_rows(items[start:start + COPY_CHUNK])


_ONE_ROW_INSERT = re.compile(r"INSERT INTO (?P<table>\S+) \((?P<columns>[^()]+)\) VALUES \(%s(?:, %s)*\)", re.S)
_COPIES: dict[str, str | None] = {}


def copy_statement(insert_sql: str) -> str | None:
    """The ``COPY <table> (<columns>) FROM STDIN`` that loads what ``insert_sql`` (an adapter's one-row
    ``INSERT INTO <table> (<columns>) VALUES (%s, ...)``, identifiers already quoted) inserts; None for any
    other text, which is then run as it is."""
    try:
        return _COPIES[insert_sql]
    except KeyError:
        pass
    match = _ONE_ROW_INSERT.fullmatch(insert_sql)
    copy = None
    if match is not None and insert_sql.count("%s") == len(match["columns"].split(",")):
        copy = f"COPY {match['table']} ({match['columns']}) FROM STDIN"
    if len(_COPIES) < 64:
        _COPIES[insert_sql] = copy
    return copy


def can_copy(driver_connection: Any) -> bool:
    """Whether ``driver_connection`` is a psycopg 3 connection that can run a COPY now (not in pipeline mode,
    where psycopg refuses one)."""
    return is_psycopg3(driver_connection) and not driver_connection.pgconn.pipeline_status


class CopyStream:
    """One COPY kept open while rows come: the server stores the rows it has been sent while the caller makes
    the next ones (on another core), instead of waiting for a whole chunk, then storing it while the caller
    waits. Nothing else may run on the connection until :meth:`finish` (which waits for the server to store
    the last rows and raises its error, if any) or :meth:`abort` (which ends the COPY with an error, failing
    the transaction as a failed INSERT would)."""

    __slots__ = ("_cursor", "_context", "_write_row", "count")

    def __init__(self, driver_connection: Any, copy_sql: str) -> None:
        self._cursor = driver_connection.cursor()
        try:
            self._context = self._cursor.copy(copy_sql)
            self._write_row = self._context.__enter__().write_row
        except BaseException:
            self._cursor.close()
            raise
        self.count = 0
        """Rows written so far."""

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        """Send ``rows``, values quoted by psycopg for COPY's text format (sent as its buffer fills)."""
        write_row = self._write_row
        for row in rows:
            write_row(row)
            self.count += 1

    def finish(self) -> int:
        """End the COPY and wait for the server; returns the number of rows. The driver's error is raised."""
        try:
            self._context.__exit__(None, None, None)
        finally:
            self._cursor.close()
        return self.count

    def abort(self, error: BaseException) -> None:
        """End the COPY because of ``error`` (raised by the caller): the server stores nothing of it and the
        transaction fails."""
        try:
            self._context.__exit__(type(error), error, error.__traceback__)
        finally:
            self._cursor.close()


def copy_rows(driver_connection: Any, copy_sql: str, chunks: Iterable[Iterable[Sequence[Any]]]) -> int:
    """Run ``copy_sql`` (from :func:`copy_statement`) on ``driver_connection``, streaming the rows of each
    chunk as it comes (a large flush's rows are made a chunk at a time), values quoted by psycopg for COPY's
    text format. Returns the number of rows; the driver's error is raised (the transaction is then failed)."""
    stream = CopyStream(driver_connection, copy_sql)
    try:
        for chunk in chunks:
            stream.write(chunk)
    except BaseException as error:
        stream.abort(error)
        raise
    return stream.finish()
