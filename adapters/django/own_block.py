"""The transaction around an audited write made outside any ``atomic`` block: begun in one round trip on MySQL,
and cheaply on SQLite.

An audited save (or bulk operation) outside a transaction runs in ``transaction.atomic(savepoint=False)``
(:func:`own_block`), so the change and its event rows commit together; an audited delete runs in the block
Django's delete collector opens. On MySQL and MariaDB Django's ``atomic()`` begins a transaction by turning
autocommit off (``SET autocommit=0``, a round trip) and, after the ``COMMIT``, turns it on again
(``SET autocommit=1``, another): with the change and its event rows, five round trips where the unaudited save
takes one.

Here those blocks begin with ``BEGIN`` instead, through the hook Django's ``set_autocommit`` offers backends
whose transactions begin under autocommit (``_start_transaction_under_autocommit``, which its SQLite backend
defines). :func:`arm_begin` puts a one-shot hook on the connection just before the block is entered, and the hook
takes itself away when Django calls it (:func:`disarm_begin` takes it away if the block was never entered). The
server's autocommit never changes, so turning it back on after the ``COMMIT`` or ``ROLLBACK`` sends nothing
(PyMySQL and mysqlclient compare with the server's status first): an audited save takes four round trips, and
an audited delete too (an unaudited one takes one, or four where the collector opens its block). Django's
bookkeeping is the same as with any ``atomic()`` block: it holds autocommit off until the block ends, runs
``on_commit`` callbacks after the ``COMMIT``, and nested blocks are savepoints of that transaction. Blocks the
app opens itself begin as Django begins them.

Should the server's autocommit be off when Django believes it on (turned off on the driver, past Django), the
block begins as Django's would (a ``BEGIN`` would commit what that transaction holds); so it does with a driver
other than PyMySQL and mysqlclient (MySQL Connector/Python, say: no ``get_autocommit()`` and ``begin()``).

On SQLite Django's backend already begins its blocks so, with a ``BEGIN`` sent through a Django cursor made for
it; the adapter's own block sends it with the sqlite3 connection's ``execute`` instead (``BEGIN IMMEDIATE`` or
``EXCLUSIVE`` where ``OPTIONS["transaction_mode"]`` asks, as Django does): about 20,000 fewer instructions an
audited autocommit save. Where the connection's queries are watched (``DEBUG``'s query log, ``CaptureQueriesContext``,
an execute wrapper) it goes through Django's cursor as before, as the event rows do then.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.backends.utils import debug_transaction

from .store import unwatched

HOOK = "_start_transaction_under_autocommit"


def own_block(connection: Any, using: str) -> Any:
    """``transaction.atomic(using=using, savepoint=False)``, beginning with ``BEGIN`` on MySQL and MariaDB, and
    on SQLite with the driver's own ``execute``."""
    block = transaction.atomic(using=using, savepoint=False)
    vendor = connection.vendor
    if vendor == "mysql" or vendor == "sqlite":
        return _BeginUnderAutocommit(block, connection)
    return block


def arm_begin(connection: Any) -> None:
    """The next transaction Django begins on ``connection`` (a MySQL or SQLite connection outside any block)
    begins with ``BEGIN``, the server's autocommit left on (SQLite: straight through the driver)."""
    begin = _begin_sqlite if connection.vendor == "sqlite" else _begin
    connection.__dict__[HOOK] = lambda: begin(connection)  # called without arguments, as Django's SQLite method


def disarm_begin(connection: Any) -> None:
    connection.__dict__.pop(HOOK, None)


class _BeginUnderAutocommit:
    """``block``, entered with the hook armed."""

    __slots__ = ("block", "connection")

    def __init__(self, block: Any, connection: Any) -> None:
        self.block = block
        self.connection = connection

    def __enter__(self) -> Any:
        arm_begin(self.connection)
        try:
            return self.block.__enter__()
        finally:
            disarm_begin(self.connection)

    def __exit__(self, *exc_info: Any) -> Any:
        return self.block.__exit__(*exc_info)


def _begin(connection: Any) -> None:
    disarm_begin(connection)
    driver = connection.connection
    get_autocommit = getattr(driver, "get_autocommit", None)
    begin = getattr(driver, "begin", None)
    if get_autocommit is None or begin is None or not get_autocommit():
        # A driver other than PyMySQL and mysqlclient (whose turning autocommit on may not look at the server's
        # status first), or the server's autocommit off already: begin as Django does.
        with debug_transaction(connection, "BEGIN"):
            connection._set_autocommit(False)
        return
    with debug_transaction(connection, "BEGIN"), connection.wrap_database_errors:
        begin()


def _begin_sqlite(connection: Any) -> None:
    """What Django's SQLite backend does (``BEGIN``, or ``BEGIN IMMEDIATE`` and the like where
    ``OPTIONS["transaction_mode"]`` asks), sent with the sqlite3 connection's ``execute`` rather than through a
    Django cursor made for it (1.3 instead of 6.8 µs), where nobody watches the connection's queries (no query
    log, no execute wrapper: as the event rows, see ``store.unwatched``); watched, as Django sends it."""
    disarm_begin(connection)
    if not unwatched(connection):
        type(connection)._start_transaction_under_autocommit(connection)
        return
    mode = getattr(connection, "transaction_mode", None)  # Django 5.1+
    with connection.wrap_database_errors:
        connection.connection.execute(f"BEGIN {mode}" if mode else "BEGIN")
