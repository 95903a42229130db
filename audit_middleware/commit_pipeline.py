"""Event rows sent with the COMMIT: on psycopg, one round trip to PostgreSQL instead of two.

A write's events are known before its transaction commits, and nothing reads them before. So where it is
safe, an adapter keeps the rows until the commit and sends them with it: ``INSERT ...; COMMIT`` travel
together in one query text, and the server runs them in order, so a failing INSERT aborts the transaction
(the change is not saved either) and a failing COMMIT loses both. Many rows (a long transaction's) go as one
COPY instead, then the COMMIT: more round trips, 40% less time for the rows.
The driver's own ``commit()`` then finds the transaction closed and sends nothing. Loopback PostgreSQL
answers in 23 to 107 µs on the benchmark machine, depending on the day: that is the round trip this saves
on every audited transaction.

The adapters decide when it is safe (an explicit transaction at its outermost level, no forwarding outbox,
whose delivery rows need a SELECT first); this module only talks to the driver connection, duck-typed, so
the core imports no driver (psycopg's quoting is imported once a psycopg connection is handed in). The rows
bypass the framework's SQL logging and cursor events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

Statements = Sequence[tuple[str, Sequence[Sequence[Any]]]]
"""``[(sql, rows), ...]``: each SQL text with the parameter rows to run it with, in order."""

_SUPPORTED: dict[type, bool] = {}
_PSYCOPG3: dict[type, bool] = {}

IDLE = 0
"""libpq's ``PQTRANS_IDLE`` (``psycopg.pq.TransactionStatus.IDLE``): no transaction open at the server."""
INTRANS = 2
"""libpq's ``PQTRANS_INTRANS``: a transaction open at the server, no statement of it failed."""
COMMAND_OK = 1
"""libpq's ``PGRES_COMMAND_OK`` (``psycopg.pq.ExecStatus.COMMAND_OK``): a command that returns no rows succeeded."""


def is_psycopg3(driver_connection: Any) -> bool:
    """Whether ``driver_connection`` is a psycopg 3 connection (checked once per class)."""
    kind = type(driver_connection)
    psycopg3 = _PSYCOPG3.get(kind)
    if psycopg3 is None:
        psycopg3 = _PSYCOPG3[kind] = kind.__module__.split(".")[0] == "psycopg" and hasattr(kind, "pipeline")
    return psycopg3


def can_pipeline(driver_connection: Any) -> bool:
    """Whether ``driver_connection`` is a psycopg 3 connection whose libpq has pipeline mode, in an explicit
    transaction: not autocommit, or autocommit with a transaction the server has open (one whose BEGIN went
    with its first statement, see ``adapters/django/folded_begin.py``)."""
    kind = type(driver_connection)
    supported = _SUPPORTED.get(kind)
    if supported is None:
        supported = _SUPPORTED[kind] = is_psycopg3(driver_connection) and _libpq_pipeline()
    return supported and (not driver_connection.autocommit
                          or driver_connection.pgconn.transaction_status == INTRANS)


def _libpq_pipeline() -> bool:
    try:
        from psycopg import capabilities  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - psycopg older than 3.2
        return False
    return bool(capabilities.has_pipeline())


ONE_QUERY_ROWS = 16
"""Up to this many rows go as one query text with the COMMIT; more go as a COPY (or, for a statement a COPY
cannot stand for, in a pipeline: prepared once, not parsed row by row)."""


def send_with_commit(driver_connection: Any, statements: Statements) -> None:
    """Run ``statements`` and COMMIT: in one round trip up to :data:`ONE_QUERY_ROWS` rows (or in the app's own
    pipeline); more rows go as a COPY (:mod:`audit_middleware.copy_rows`), then the COMMIT. On failure the
    transaction is rolled back (or the connection is gone) and the driver's error is raised."""
    try:
        rows_sent = sum(len(rows) for _, rows in statements)
        if driver_connection.pgconn.pipeline_status:  # the app's own pipeline: the rows join it
            _send_in_pipeline(driver_connection, statements)
        elif rows_sent <= ONE_QUERY_ROWS:
            _send_as_one_query(driver_connection, statements)
        else:
            from .copy_rows import copy_rows, copy_statement  # copy_rows imports this module

            copies = [(copy, rows) for sql, rows in statements if (copy := copy_statement(sql)) is not None]
            if len(copies) < len(statements):
                _send_in_pipeline(driver_connection, statements)
                return
            for copy, rows in copies:  # one COPY per table, then the COMMIT: three round trips, not one,
                copy_rows(driver_connection, copy, [rows])  # but 40% less time for the rows
            _execute(driver_connection, b"COMMIT")
    except Exception:
        # The framework ends its transaction whether or not the commit succeeds, and would take the
        # connection back as clean: end the aborted transaction here.
        if not driver_connection.closed:
            driver_connection.rollback()
        raise


def _send_in_pipeline(driver_connection: Any, statements: Statements) -> None:
    """The INSERTs and the COMMIT in a psycopg pipeline: prepared once, sent together, one round trip."""
    with driver_connection.pipeline(), driver_connection.cursor() as cursor:
        for sql, rows in statements:
            if len(rows) == 1:  # a pipelined executemany costs psycopg more than an execute
                cursor.execute(sql, rows[0])
            else:
                cursor.executemany(sql, rows)
        cursor.execute("COMMIT")


def _send_as_one_query(driver_connection: Any, statements: Statements) -> None:
    """The INSERTs and the COMMIT as one query text: one message in PostgreSQL's simple query protocol, run in
    order in the open transaction, the rest skipped after a failing statement (so COMMIT never runs after a
    failed INSERT). It spares psycopg's pipeline machinery: 30 to 60 µs of CPU and 55 to 75 µs of wall time
    less per audited Django save on PostgreSQL, in process. The values are quoted by libpq
    (:func:`_literal_text`), or where that is not used by psycopg's own client-side binding
    (``ClientCursor.mogrify``, what Django sends every query with). The text goes through libpq's
    ``PQexec`` (``pgconn.exec_``, psycopg's public libpq wrapper, which lets other threads run while it waits)
    rather than a psycopg cursor: a cursor's execute would make the cursor, parse and hash the text for its
    prepared-statement cache and wait through psycopg's own loop, twice the CPU for a text it runs once (51
    against 23 µs for a ``SELECT 1`` on loopback, in process)."""
    encoding = driver_connection.info.encoding
    text = _literal_text(driver_connection, statements, encoding)
    if text is None:  # a value libpq's quoting is not used for here: psycopg quotes the lot (and refuses a NUL)
        from psycopg import ClientCursor  # type: ignore[import-not-found,unused-ignore]  # psycopg 3

        quoting = ClientCursor(driver_connection)
        parts = [quoting.mogrify(sql, row) for sql, rows in statements for row in rows]
        parts.append("COMMIT")
        text = "; ".join(parts).encode(encoding)
    _execute(driver_connection, text)


def _execute(driver_connection: Any, text: bytes) -> None:
    """Run ``text`` through libpq's ``PQexec``; raise psycopg's error for the failing statement (nothing after
    it ran) or for a lost connection."""
    with driver_connection.lock:  # what a psycopg cursor holds while it talks to the server
        result = driver_connection.pgconn.exec_(text)
    if result.status == COMMAND_OK:
        return
    from psycopg import errors  # type: ignore[import-not-found,unused-ignore]  # psycopg 3

    encoding = driver_connection.info.encoding
    if driver_connection.closed:  # the server went away: psycopg's own error for a lost connection
        raise errors.OperationalError(result.error_message.decode(encoding, "replace").strip())
    raise errors.error_from_result(result, encoding=encoding)  # the failing statement's; nothing after it ran


def _literal_text(driver_connection: Any, statements: Statements, encoding: str) -> bytes | None:
    """The INSERTs and the COMMIT as one query text, each value written as a literal by libpq's own quoting
    (``PQescapeLiteral``, which psycopg's client-side binding uses for text too): text escaped for the
    connection's encoding and ``standard_conforming_strings``, times in ISO format (the column's type reads
    them, as it reads psycopg's), ``NULL``; a third of ``ClientCursor.mogrify``'s CPU (3 against 10 µs for an
    event row). None, for psycopg's quoting instead, where a value is of any other type, text holds a NUL
    (which libpq's quoting would cut there, and psycopg refuses) or does not encode, a statement's ``%s``
    marks do not match its values, or libpq cannot quote (a closed connection): psycopg's path then raises
    what it raises."""
    escape = _escaping(driver_connection.pgconn).escape_literal
    parts: list[bytes] = []
    try:
        for sql, rows in statements:
            pieces = _pieces(sql, encoding)
            if pieces is None:
                return None
            for row in rows:
                if len(row) != len(pieces) - 1:
                    return None
                out = [pieces[0]]
                for value, piece in zip(row, pieces[1:], strict=True):
                    kind = type(value)
                    if value is None:
                        out.append(b"NULL")
                    elif kind is str:
                        if "\x00" in value:
                            return None
                        out.append(escape(value.encode(encoding)))
                    elif kind is datetime:
                        out.append(b"'" + value.isoformat(" ").encode() + b"'")  # digits, -, :, ., +, space
                    else:
                        return None
                    out.append(piece)
                parts.append(b"".join(out))
    except Exception:  # noqa: BLE001  (text that does not encode; a connection libpq cannot quote for)
        return None
    parts.append(b"COMMIT")
    return b"; ".join(parts)


_PIECES: dict[tuple[str, str], list[bytes] | None] = {}


def _pieces(sql: str, encoding: str) -> list[bytes] | None:
    """``sql``'s text around its ``%s`` marks, encoded (made once per statement and encoding: an adapter sends
    the same few); None for a text with other marks (``%%``, ``%(name)s``), which libpq's quoting is not used
    for."""
    key = (sql, encoding)
    try:
        return _PIECES[key]
    except KeyError:
        pass
    pieces = None if "%%" in sql or "%(" in sql else [piece.encode(encoding) for piece in sql.split("%s")]
    if len(_PIECES) < 64:
        _PIECES[key] = pieces
    return pieces


_ESCAPING: list[Any] = []


def _escaping(pgconn: Any) -> Any:
    """libpq's quoting for ``pgconn`` (``psycopg.pq.Escaping``, imported once: the core imports no driver until a
    psycopg connection is handed in)."""
    if not _ESCAPING:
        from psycopg.pq import Escaping  # type: ignore[import-not-found,unused-ignore]

        _ESCAPING.append(Escaping)
    return _ESCAPING[0](pgconn)
