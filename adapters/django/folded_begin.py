"""BEGIN sent with the first statement of an audited write's transaction (PostgreSQL on psycopg 3).

Outside a transaction Django saves or deletes a row in one round trip: the connection autocommits. An audited
write needs its event rows in the same transaction, so it runs in an ``atomic`` block (the adapter opens one
around a save, Django's collector one around a delete), and psycopg then sends ``BEGIN`` on a round trip of
its own before the first statement. With the event rows going with the COMMIT
(:mod:`audit_middleware.commit_pipeline`) that made three round trips where the unaudited write takes one;
``write_floor.py`` puts the two extra trips at 250 µs of a 290 µs save on loopback.

Here the ``BEGIN`` travels in the same query text as the block's first statement (``BEGIN; INSERT ...``), as
one message of PostgreSQL's simple query protocol, which runs the two in order: two round trips for an
audited autocommit write. How:

* :func:`fold_begin` arms, inside an outermost block that will commit (Django entered it from autocommit)
  whose transaction has not begun at the server: it adds a one-shot wrapper to Django's ``execute_wrappers``
  (its public hook, the one django-pghistory uses to prefix statements too).
* The wrapper takes the block's first statement run through Django's cursor and removes itself; it turns the
  psycopg connection's own ``autocommit`` back on for that statement (so psycopg sends no BEGIN of its own;
  Django's bookkeeping still says the block is open), prefixes ``BEGIN; `` and moves the cursor past BEGIN's
  result (``nextset()``) to the statement's rows and row count. From then on the server is in the
  transaction, so psycopg sends every statement as it is, in it; Django's COMMIT or ROLLBACK at the block's
  end goes out as before (psycopg sends one whenever a transaction is open), and Django's turning autocommit
  back on finds it already on. psycopg's autocommit is on only while the server has the transaction open, or
  during that one statement: a statement sent past Django's cursor before it (a ``callproc``, a ``COPY``)
  still gets psycopg's own BEGIN, and the wrapper then finds the transaction begun and leaves the statement
  as it is.
* Nothing is folded, psycopg sending its own BEGIN as without this module, where the first statement is an
  ``executemany``, is not text, or goes through a cursor that binds on the server
  (``OPTIONS["server_side_binding"]``: one statement per message), or fails before BEGIN reached the server
  (psycopg's autocommit is turned off again); where the connection sets an isolation level, read-only or
  deferrable transactions (psycopg's BEGIN carries them) nothing is armed. A block that ends before any
  statement ran disarms (``_atomic_exit`` calls :func:`disarm`).
"""

from __future__ import annotations

from typing import Any

from audit_middleware.commit_pipeline import IDLE, is_psycopg3

ARMED = "_audit_fold_begin"  # on a DatabaseWrapper: True while the wrapper waits for the block's first statement


def fold_begin(connection: Any) -> None:
    """Arm ``connection`` so that its transaction's BEGIN goes with the first statement, where it can."""
    if connection.vendor != "postgresql" or not connection.in_atomic_block or not connection.commit_on_exit:
        return
    state = connection.__dict__
    driver = connection.connection
    if state.get(ARMED) or driver is None or driver.autocommit or not _plain_begin(driver):
        return
    if driver.pgconn.transaction_status != IDLE:  # the transaction has begun: a statement already ran
        return
    state[ARMED] = True
    connection.execute_wrappers.append(_begin_with_first_statement)


def disarm(connection: Any) -> None:
    """Take the wrapper away (the block ended without a statement through Django's cursor)."""
    if connection.__dict__.pop(ARMED, False):
        try:
            connection.execute_wrappers.remove(_begin_with_first_statement)
        except ValueError:  # pragma: no cover - removed by someone else
            pass


def _begin_with_first_statement(execute: Any, sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    connection = context["connection"]
    disarm(connection)
    driver = connection.connection
    if (many or not isinstance(sql, str) or not connection.in_atomic_block or driver.autocommit
            or driver.pgconn.transaction_status != IDLE or not _client_side(context["cursor"].cursor)):
        return execute(sql, params, many, context)
    driver.autocommit = True  # psycopg sends no BEGIN of its own; the server's open transaction keeps the rest in it
    try:
        result = execute("BEGIN; " + sql, params, many, context)
    except BaseException:
        if not driver.closed and driver.pgconn.transaction_status == IDLE:  # BEGIN never reached the server
            driver.autocommit = False  # psycopg begins before the block's next statement, as without this module
        raise
    context["cursor"].cursor.nextset()  # past BEGIN's result, to the statement's
    return result


def _plain_begin(driver: Any) -> bool:
    """A psycopg 3 connection whose BEGIN is a bare ``BEGIN`` (no isolation level, read-only or deferrable)."""
    return (is_psycopg3(driver) and driver.isolation_level is None and driver.read_only is None
            and driver.deferrable is None)


def _client_side(cursor: Any) -> bool:
    """Whether ``cursor`` merges parameters into the text (psycopg's ClientCursor, Django's default), which
    psycopg sends as one simple-protocol message that may hold several statements."""
    kind = type(cursor)
    client_side = _CLIENT_SIDE.get(kind)
    if client_side is None:
        from psycopg import ClientCursor  # type: ignore[import-not-found,unused-ignore]

        client_side = _CLIENT_SIDE[kind] = issubclass(kind, ClientCursor)
    return client_side


_CLIENT_SIDE: dict[type, bool] = {}

