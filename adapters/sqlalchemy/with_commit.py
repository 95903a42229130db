"""Event rows sent with the COMMIT on psycopg (see :mod:`audit_middleware.commit_pipeline`).

Capture holds the rows of a flush for the connection when :func:`can_hold` says it is safe: the psycopg
driver with pipeline mode, an explicit transaction that is not a savepoint or two-phase (their commit is not
the dialect's ``do_commit``). The engine's dialect sends them with the COMMIT in its ``do_commit``, and drops
them in its ``do_rollback`` (which the pool runs too, for a connection given back without a commit). Everywhere
else capture writes at flush.

The dialect's two methods are wrapped, once per dialect, rather than listened to as the engine's ``commit`` and
``rollback`` events: an engine with any event listener makes every statement of every connection check for
listeners (``Connection._has_events``), the SELECTs of every request too.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.base import RootTransaction

from audit_middleware.commit_pipeline import can_pipeline, send_with_commit
from audit_middleware.errors import AuditWriteError
from audit_middleware.events import AuditEvent

from .store import driver_insert, driver_rows

_held: weakref.WeakKeyDictionary[Any, dict[str, list[tuple[Any, ...]]]] = weakref.WeakKeyDictionary()
"""Each psycopg connection's rows waiting for its COMMIT: ``{insert sql: [rows]}``."""
_wrapped: weakref.WeakSet[Dialect] = weakref.WeakSet()
_wrapping = threading.Lock()


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
    dialect = connection.dialect
    if dialect not in _wrapped:
        with _wrapping:
            if dialect not in _wrapped:
                _wrap(dialect)
    driver = connection.connection.driver_connection
    held = _held.get(driver)
    if held is None:
        held = _held[driver] = {}
    held.setdefault(insert.sql(1), []).extend(rows)


def _wrap(dialect: Dialect) -> None:
    """Make ``dialect``'s ``do_commit`` send the rows held for the connection first, and its ``do_rollback``
    drop them."""
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:  # the pool's proxy of the psycopg connection
        held = _held.pop(_driver(dbapi_connection), None)
        if held:
            _send_with_commit(dbapi_connection, held)
        commit(dbapi_connection)  # psycopg finds the transaction closed and sends nothing

    def do_rollback(dbapi_connection: Any) -> None:
        _held.pop(_driver(dbapi_connection), None)
        rollback(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    _wrapped.add(dialect)


def _driver(dbapi_connection: Any) -> Any:
    """The psycopg connection of the pool's proxy (SQLAlchemy hands the dialect its proxy), or itself."""
    return getattr(dbapi_connection, "driver_connection", dbapi_connection)


def _send_with_commit(dbapi_connection: Any, held: dict[str, list[tuple[Any, ...]]]) -> None:
    driver = _driver(dbapi_connection)
    try:
        send_with_commit(driver, list(held.items()))
    except Exception as error:
        if driver is not None and driver.closed and driver is not dbapi_connection:  # the server went away:
            dbapi_connection.invalidate(error)  # the pool must not hand it out again
        count = sum(len(rows) for rows in held.values())
        raise AuditWriteError(
            f"could not write {count} audit event(s) with the commit, so the change was not saved either: "
            f"{type(error).__name__}: {error}"
        ) from error
