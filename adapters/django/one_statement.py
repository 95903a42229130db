"""An audited save of a changed row outside any transaction, as one statement with its event rows (PostgreSQL).

Outside an ``atomic`` block Django saves a changed row with one UPDATE, committed at once: one round trip. An
audited save needs its event rows in the same transaction, and the block the adapter opens around it takes two
round trips on psycopg 3 (``BEGIN; UPDATE ...``, then the event rows with the COMMIT: ``folded_begin``,
``commit_pipeline``) and Django's transaction handling besides: on PostgreSQL more than the per-write target
before any event is made (``benchmarks/RESULTS.md``, *What the transaction alone costs*). Here the UPDATE and
its event rows go as one statement, which PostgreSQL runs atomically, as any statement in autocommit::

    WITH changed AS (UPDATE "app_warehouse" SET ... WHERE "app_warehouse"."id" = %s RETURNING 1)
    INSERT INTO "audit_events" (...) SELECT %s, %s, ... FROM changed

The event rows are inserted once for each row the UPDATE changed, so not at all if it changed none, and the
statement's row count, which Django reads to learn whether the row exists, is the UPDATE's.

How: :func:`one_statement_save` gives a :class:`OneStatementSave` for a save that can go so (PostgreSQL on
psycopg 3, autocommit, an instance loaded from or saved to the database, a model without multi-table
parents, no forwarding destinations: their delivery rows go through the outbox), which the adapter enters
instead of its block. It puts itself among Django's ``execute_wrappers`` (its public hook) for the save:

* Reads before the UPDATE (a ``pre_save`` receiver's, ``select_on_save``'s) run as they are; a text that
  also holds another statement is no read (django-pghistory's execute wrapper puts ``SELECT set_config(...);``
  before a write).
* The save's UPDATE (``UPDATE <table> SET ... WHERE <table>.<pk> = %s`` with this instance's key, nothing
  returned) gets the events of the change, made then (``DjangoCapture.modified_events``), and goes out with
  their rows as above. Once the row is changed its events are recorded: ``post_save`` makes none, and
  ``event_recorded`` is sent when the save returns, the commit done. A change with no event is sent as it
  is (and where it finds no row, the INSERT that follows opens the block, as below). Where the statement fails, nothing of it was done: the save goes on as every audited save does (the
  block below), sending the UPDATE alone, so a database error is the one an unaudited save gets, and an
  event row the database refuses is an ``AuditWriteError`` at the commit.
* Any other statement (a write before the UPDATE, or the INSERT Django sends where the UPDATE found no row)
  opens the adapter's block around the rest of the save, as if it had been opened at its start: the change
  and its events then commit together at the end of the save, as they do in the block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from audit_middleware.commit_pipeline import is_psycopg3
from audit_middleware.recorder import logger
from audit_middleware.signals import event_recorded

from .own_block import own_block
from .store import forwarding_configured, with_event_rows

if TYPE_CHECKING:
    from audit_middleware.events import AuditEvent

    from .capture import DjangoCapture, ModelInfo


def one_statement_save(capture: DjangoCapture, info: ModelInfo, obj: Any, using: str, connection: Any,
                       args: tuple[Any, ...], kwargs: dict[str, Any]) -> OneStatementSave | None:
    """The one-statement save of ``obj`` (``Model.save_base(*args, **kwargs)`` on ``connection``, outside any
    block), or None where it must go in the adapter's block."""
    if connection.vendor != "postgresql" or obj._state.adding or obj.__dict__.get(info.pk) is None:
        return None
    raw = kwargs.get("raw", args[0] if args else False)
    force_insert = kwargs.get("force_insert", args[1] if len(args) > 1 else False)
    if raw or force_insert or type(obj)._meta.concrete_model._meta.parents:
        return None
    if connection.connection is None:
        connection.ensure_connection()
    driver = connection.connection
    if not is_psycopg3(driver) or not driver.autocommit or not connection.get_autocommit():
        return None
    if forwarding_configured():
        return None
    update_fields = kwargs.get("update_fields", args[4] if len(args) > 4 else None)
    return OneStatementSave(capture, info, obj, using, connection, update_fields)


_UPDATE_ENDS: dict[type, tuple[str, str]] = {}


def _update_ends(model: type, connection: Any) -> tuple[str, str]:
    """How the UPDATE Django makes for a save of ``model`` starts and ends (made once a model)."""
    ends = _UPDATE_ENDS.get(model)
    if ends is None:
        quote = connection.ops.quote_name
        meta = model._meta.concrete_model._meta  # type: ignore[attr-defined]
        table = quote(meta.db_table)
        ends = _UPDATE_ENDS[model] = (
            f"UPDATE {table} SET ",  # noqa: S608  (compared with the SQL Django made, never sent)
            f" WHERE {table}.{quote(meta.pk.column)} = %s")
    return ends


class OneStatementSave:
    """One save's execute wrapper and, where it came to that, the block it opened (see the module)."""

    __slots__ = ("capture", "info", "obj", "using", "connection", "update_fields", "prefix", "suffix", "armed",
                 "update_expected", "block", "recorded")

    def __init__(self, capture: DjangoCapture, info: ModelInfo, obj: Any, using: str, connection: Any,
                 update_fields: Any) -> None:
        self.capture = capture
        self.info = info
        self.obj = obj
        self.using = using
        self.connection = connection
        self.update_fields = update_fields
        self.prefix, self.suffix = _update_ends(type(obj), connection)
        self.armed = False
        self.update_expected = True
        self.block: Any = None
        # Once the UPDATE went out: its events (none where the change had none), so post_save has none to make
        self.recorded: list[AuditEvent] | None = None

    def __enter__(self) -> OneStatementSave:
        self.connection.execute_wrappers.append(self)
        self.armed = True
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> Any:
        self._disarm()
        if self.recorded and event_recorded.has_receivers_for(self.capture.auditor):
            try:  # committed with the UPDATE, whatever the rest of the save did
                event_recorded.send(self.capture.auditor, events=self.recorded)
            except Exception as failure:  # the commit is done; a receiver's bug must not look like a failed save
                logger.exception("an event_recorded receiver failed: %s", failure)
        if self.block is not None:
            return self.block.__exit__(kind, error, traceback)
        return False

    def _disarm(self) -> None:
        if self.armed:
            self.armed = False
            try:
                self.connection.execute_wrappers.remove(self)
            except ValueError:  # pragma: no cover - removed by someone else
                pass

    def __call__(self, execute: Any, sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if self.connection.in_atomic_block:  # a block opened since (a receiver's): the save goes on in it
            self._disarm()
            return execute(sql, params, many, context)
        if not many and isinstance(sql, str):
            if sql.startswith("SELECT ") and ";" not in sql:  # a read (not one prefixed to a write: pghistory's)
                return execute(sql, params, many, context)
            if (self.update_expected and sql.startswith(self.prefix) and sql.endswith(self.suffix)
                    and params and params[-1] == self.obj.pk):
                return self._update(execute, sql, params, context)
        self._open_block()
        return execute(sql, params, many, context)

    def _open_block(self) -> None:
        """The rest of the save in the adapter's block, begun now (its first statement is the one at hand)."""
        self._disarm()
        block = own_block(self.connection, self.using)
        block.__enter__()
        self.block = block

    def _update(self, execute: Any, sql: str, params: Any, context: dict[str, Any]) -> Any:
        capture, info, obj = self.capture, self.info, self.obj
        events: list[AuditEvent] = []
        changed: dict[str, Any] = {}
        with capture.auditor.recorder.guard(capture.auditor, info.options.must_record):
            events, changed = capture.modified_events(info, obj, self.update_fields)
        if not events:  # nothing to record: the UPDATE as it is
            result = execute(sql, params, False, context)
        else:
            statement, rows = with_event_rows(self.connection, sql, events)
            try:
                result = execute(statement, [*params, *rows], False, context)
            except DatabaseError:
                # One statement in autocommit: nothing of it was done. The save goes on in the block, the UPDATE
                # alone, and its events are made and written as in any block (post_save, the commit).
                self._open_block()
                return execute(sql, params, False, context)
        if context["cursor"].rowcount > 0:
            self._disarm()
            capture.remember(obj, changed)
            self.recorded = events
        else:  # no such row: Django inserts it next, and that INSERT opens the block
            self.update_expected = False
        return result
