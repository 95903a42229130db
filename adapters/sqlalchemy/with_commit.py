"""Event rows sent with the COMMIT on psycopg (see :mod:`audit_middleware.commit_pipeline`).

Capture holds the rows of a flush on the connection when :func:`can_hold` says it is safe: the psycopg
driver with pipeline mode, an explicit transaction that is not a savepoint or two-phase (their commit is not
the ``commit`` event's). The engine's ``commit`` listener sends them with the COMMIT; its ``rollback``
listener drops them. Everywhere else capture writes at flush.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.engine.base import RootTransaction

from audit_middleware.commit_pipeline import can_pipeline, send_with_commit
from audit_middleware.errors import AuditWriteError
from audit_middleware.events import AuditEvent

from .store import driver_insert, driver_rows

_HELD = "_audit_held_rows"
"""On a :class:`~sqlalchemy.engine.Connection`: ``{insert sql: [rows]}`` waiting for its COMMIT."""
_listening: weakref.WeakSet[Engine] = weakref.WeakSet()


def can_hold(connection: Connection) -> bool:
    """Whether rows written now on ``connection`` can wait for its COMMIT."""
    if connection.dialect.driver != "psycopg":
        return False
    if type(connection.get_transaction()) is not RootTransaction or connection.in_nested_transaction():
        return False
    return can_pipeline(connection.connection.driver_connection)


def hold(connection: Connection, events: list[AuditEvent], table: Table) -> None:
    """Keep the rows of ``events`` on ``connection`` until its COMMIT (the caller checked :func:`can_hold`).
    The rows are built now, so a value that cannot be stored fails the flush, as a direct write would."""
    insert = driver_insert(table, connection.dialect)
    assert insert is not None  # psycopg's placeholders are %s
    rows = driver_rows(events, table, insert)
    engine = connection.engine
    if engine not in _listening:
        event.listen(engine, "commit", _send_with_commit)
        event.listen(engine, "rollback", _drop)
        _listening.add(engine)
    held: dict[str, list[tuple[Any, ...]]] = connection.__dict__.setdefault(_HELD, {})
    held.setdefault(insert.sql(1), []).extend(rows)


def _send_with_commit(connection: Connection) -> None:
    held: dict[str, list[tuple[Any, ...]]] | None = connection.__dict__.pop(_HELD, None)
    if not held:
        return
    driver = connection.connection.driver_connection
    try:
        send_with_commit(driver, list(held.items()))
    except Exception as error:
        if driver is not None and driver.closed:  # the server went away: the pool must not hand it out again
            connection.invalidate(error)
        count = sum(len(rows) for rows in held.values())
        raise AuditWriteError(
            f"could not write {count} audit event(s) with the commit, so the change was not saved either: "
            f"{type(error).__name__}: {error}"
        ) from error


def _drop(connection: Connection) -> None:
    connection.__dict__.pop(_HELD, None)
