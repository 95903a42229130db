"""Session hooks: changes collected at flush, event rows written in the same transaction.

All listeners are installed by :meth:`SessionCapture.listen` and removed by :meth:`SessionCapture.remove`.
``before_flush`` makes sure old values are loaded, ``after_flush`` (where the session still shows its
pre-flush state, and new rows have their primary keys) builds the events and writes them with one
executemany; a ``do_orm_execute`` hook added to ORM INSERT/UPDATE/DELETE executions only (see
``_wrap_orm_execute``) captures the ORM bulk statements, and a wrapper of
``Session._bulk_save_mappings`` the legacy ``bulk_save_objects`` / ``bulk_insert_mappings`` /
``bulk_update_mappings``, which send neither. Events wait on the session until the outermost commit, then
``event_recorded`` is sent; a rollback (or a rolled-back savepoint) drops them.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from inspect import signature as inspect_signature
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event, insert, inspect, select, tuple_
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.attributes import NO_VALUE, PASSIVE_NO_INITIALIZE
from sqlalchemy.sql.schema import Column

from audit_middleware.config import TrackingOptions
from audit_middleware.context import auditing_suspended
from audit_middleware.errors import AuditWriteError, UncapturedWriteError
from audit_middleware.events import AuditEvent
from audit_middleware.recorder import EventOrigin, logger
from audit_middleware.signals import event_recorded
from audit_middleware.store import ROWS_PER_CHUNK

from . import with_commit
from .store import EventCopy, insert_events, open_event_copy

if TYPE_CHECKING:
    from . import SQLAlchemyAuditor

PENDING_KEY = "audit_middleware.pending"
OLD_VALUES_KEY = "audit_middleware.old_values"
KEEP_KEY = "audit_middleware.keep"  # set while the session's events are wanted under PENDING_KEY (revert reads them)
_IN_CLAUSE_CHUNK = 500


class ModelInfo:
    """What capture needs to know about one mapped class, computed once."""

    __slots__ = ("mapper", "options", "keys", "columns", "attributes", "pk_keys", "pk_attributes", "discriminator",
                 "_by_column", "_by_name", "_always_read")

    def __init__(self, mapper: Mapper[Any], options: TrackingOptions) -> None:
        self.mapper = mapper
        self.options = options
        self.columns: dict[str, Column[Any]] = {}
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if isinstance(column, Column):
                self.columns[prop.key] = column
        self.keys = tuple(self.columns)
        # What capture's own SELECTs name: the class's attributes, so that SQLAlchemy reads them from the mapped
        # selectable (the join of a joined-inheritance subclass, the discriminator of a single-table one).
        self.attributes: dict[str, Any] = {key: getattr(mapper.class_, key) for key in self.keys}
        self.pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        self.pk_attributes = [self.attributes[k] for k in self.pk_keys]
        # The column SQLAlchemy sets to the class's polymorphic identity on INSERT (no default, not in the rows).
        polymorphic_on = mapper.polymorphic_on
        self.discriminator = next((k for k, c in self.columns.items() if c is polymorphic_on), None)
        # A bulk UPDATE's SET clause names columns by Column (its table's and name), attribute key, column key or
        # column name; an attribute key wins over another attribute's column name.
        self._by_column = {(column.table.name, column.name): key for key, column in self.columns.items()}
        self._by_name: dict[str, str] = {}
        for key, column in self.columns.items():
            self._by_name.setdefault(column.name, key)
            self._by_name.setdefault(column.key, key)
        self._by_name.update({key: key for key in self.keys})
        # Read for every bulk UPDATE: the ids, the label, and what the database or SQLAlchemy changes on its own
        # when a row is updated (onupdate defaults, computed columns).
        label = options.label if options.label in self.columns else None
        self._always_read = {*self.pk_keys, *([label] if label else []), *(
            key for key, column in self.columns.items()
            if column.onupdate is not None or column.server_onupdate is not None or column.computed is not None
        )}

    def selected(self, keys: Sequence[str]) -> list[Any]:
        """What capture's SELECTs (and RETURNINGs) name for ``keys``: each attribute labelled with its key."""
        return [self.attributes[k].label(k) for k in keys]

    def key_of(self, name: str) -> str:
        """The attribute a parameter name (attribute key, column key or column name) stands for."""
        return self._by_name.get(name, name)

    def updated_keys(self, statement: Any, parameters: Any) -> tuple[str, ...]:
        """The attributes a bulk UPDATE can change: those its SET clause (``.values()``, or the parameters it
        is executed with) assigns, plus the ids, label and columns updated on their own; every column when a
        SET key is not one of this model's columns (the UPDATE then says more than capture understands)."""
        assigned: list[Any] = list(getattr(statement, "_values", None) or ())
        assigned += [key for key, _ in getattr(statement, "_ordered_values", None) or ()]  # ordered_values(), 2.0
        for row in parameters if isinstance(parameters, list) else [parameters] if parameters else []:
            assigned += list(row)
        if not assigned:
            return self.keys
        keys = set(self._always_read)
        for name in assigned:
            if isinstance(name, str):
                key = self._by_name.get(name)
            else:
                table = getattr(name, "table", None)
                key = self._by_column.get((getattr(table, "name", None), getattr(name, "name", None)))
            if key is None:
                return self.keys
            keys.add(key)
        return tuple(k for k in self.keys if k in keys)

    def resource_id(self, values: dict[str, Any]) -> str | None:
        parts = [values.get(k) for k in self.pk_keys]
        if any(p is None for p in parts):
            return None
        return str(parts[0]) if len(parts) == 1 else "/".join(str(p) for p in parts)


def all_mappers() -> list[Mapper[Any]]:
    """Every mapper SQLAlchemy knows of right now."""
    try:
        module = importlib.import_module("sqlalchemy.orm.mapper")
        registries = module._all_registries()
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return []
    return [m for reg in registries for m in reg.mappers]


STREAM_CHUNK = 200
"""In a flush too large to hold for the COMMIT, events are written this many at a time as they are made."""

# Which capture records a session's changes. SQLAlchemy listens on a class: a sessionmaker's listeners go on its
# own Session subclass, a scoped_session's on its sessionmaker's, and a session runs the listeners of its class
# and of every class it inherits from, up to Session itself. So captures of overlapping targets (Session and a
# sessionmaker, or a sessionmaker and a scoped_session around it) would each record every change. One capture
# per listened-on class or session (a newer one takes it over), and of those covering a session the most
# specific one records its changes: the session's own, else its class's, else the nearest base class's.
_captures: dict[Any, SessionCapture] = {}
_owners: dict[type, SessionCapture | None] = {}  # by session class, computed on first use; cleared on change
_captures_lock = threading.Lock()


def listened_on(target: Any) -> Any:
    """The class (or session) SQLAlchemy puts ``target``'s session listeners on."""
    if isinstance(target, scoped_session):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        return target.class_
    if isinstance(target, type) and issubclass(target, scoped_session):
        return Session
    return target


def dirty_states(session: Session) -> list[Any]:
    """The states of ``session.dirty``, without the objects: ``session.new``, ``dirty`` and ``deleted`` each
    build an ``IdentitySet`` of objects, which the flush hooks would turn back into states (a Flask write
    request runs five of them). A list, as the hooks may load attributes while they walk it."""
    deleted = session._deleted
    return [state for state in session._dirty_states if state not in deleted]


def owner_of(session: Session) -> SessionCapture | None:
    """The capture that records ``session``'s changes (see above)."""
    if _captures:
        own = _captures.get(session)
        if own is not None:
            return own
    kind = type(session)
    try:
        return _owners[kind]
    except KeyError:
        pass
    with _captures_lock:
        owner = next((_captures[c] for c in kind.__mro__ if c in _captures), None)
        if len(_owners) >= 256:  # a sessionmaker makes a class of its own: do not keep every one alive
            _owners.clear()
        _owners[kind] = owner
    return owner


class SessionCapture:
    def __init__(self, auditor: SQLAlchemyAuditor) -> None:
        self.auditor = auditor
        self._infos: dict[Mapper[Any], ModelInfo | None] = {}
        # Mappers this auditor has captured writes of: a process may map several classes with one resource
        # name (two apps, or test modules), and the one this auditor writes is the one that name means here.
        self.written: dict[Mapper[Any], None] = {}
        self._targets: list[Any] = []

    # -- model discovery -------------------------------------------------------------------------------

    def info(self, mapper: Mapper[Any]) -> ModelInfo | None:
        try:
            return self._infos[mapper]
        except KeyError:
            pass
        cls = mapper.class_
        options = TrackingOptions.resolve(
            cls.__name__, getattr(cls, "__audit__", None),
            [p.key for p in mapper.column_attrs], self.auditor.recorder.config,
        )
        info = ModelInfo(mapper, options) if options is not None else None
        if info is not None:
            self.auditor.recorder.define_model(info.options)
        self._infos[mapper] = info
        return info

    def discover(self) -> None:
        for mapper in all_mappers():
            self.info(mapper)

    # -- listeners ---------------------------------------------------------------------------------------

    def listen(self, target: Any) -> None:
        """Capture the sessions of ``target``. One capture per target: an earlier auditor's capture of the same
        target stops (the app-factory pattern makes a new ``AuditTrail(app, db)`` on the same ``db`` for each
        app), so every change is recorded once, by the newest auditor. Targets that overlap (the Session class
        and a sessionmaker) each keep their capture, and a session's changes are recorded by the capture of the
        most specific target covering it (see :func:`owner_of`)."""
        key = listened_on(target)
        retired = None
        with _captures_lock:
            _wrap_legacy_bulk()
            _wrap_orm_execute()
            previous = _captures.get(key)
            if previous is not None and previous is not self:
                logger.debug("audit-middleware: a new auditor takes over capturing %r", target)
                previous._stop(key)
                if not previous.active:
                    retired = previous
            for name, fn in self._listeners():
                event.listen(key, name, fn)
            self._targets.append(key)
            _captures[key] = self
            _owners.clear()
        if retired is not None:  # it records nothing more: its drainers would only poll (stopped outside the lock)
            retired.auditor.stop_drainers()

    def remove(self) -> None:
        with _captures_lock:
            for target in list(self._targets):
                self._stop(target)

    @property
    def active(self) -> bool:
        """Whether this capture still listens on a target (not removed, not taken over)."""
        return bool(self._targets)

    def _stop(self, target: Any) -> None:
        for name, fn in self._listeners():
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._targets[:] = [t for t in self._targets if t is not target]
        if _captures.get(target) is self:
            del _captures[target]
        _owners.clear()

    def _listeners(self) -> list[tuple[str, Any]]:
        listeners = [
            ("before_flush", self.before_flush),
            ("after_flush", self.after_flush),
            ("after_commit", self.after_commit),
            ("after_soft_rollback", self.after_soft_rollback),
        ]
        if not _orm_execute_wrapped:  # see _wrap_orm_execute: the hook every execution runs, SELECTs included
            listeners.append(("do_orm_execute", self.on_orm_execute))
        return listeners

    def before_flush(self, session: Session, flush_context: UOWTransaction, instances: Any) -> None:
        """Load old values that a diff or a deletion snapshot needs but the session has not loaded."""
        if owner_of(session) is not self:
            return
        session.info.pop(OLD_VALUES_KEY, None)
        if auditing_suspended():
            return
        for state, obj in list(session._deleted.items()):
            info = self.info(state.mapper)
            if info is not None and state.expired_attributes & set(info.keys):
                session.refresh(obj, attribute_names=list(state.expired_attributes & set(info.keys)))
        # An attribute set while expired (after a commit) has no old value in the session: fetch the old
        # values of such rows with one SELECT per model, before the UPDATE overwrites them.
        unknown: dict[Mapper[Any], list[Any]] = {}
        for state in dirty_states(session):
            committed = state.committed_state
            if not committed or state.key is None or NO_VALUE not in committed.values():
                continue
            info = self.info(state.mapper)
            if info is not None:
                unknown.setdefault(state.mapper, []).append(state)
        if not unknown:
            return
        loaded: dict[int, dict[str, Any]] = session.info.setdefault(OLD_VALUES_KEY, {})
        for mapper, states in unknown.items():
            info = self.info(mapper)
            assert info is not None
            rows = self._rows_by_pk(session, info, info.keys, [tuple(st.key[1]) for st in states])
            by_pk = {tuple(r[k] for k in info.pk_keys): r for r in rows}
            for st in states:
                row = by_pk.get(tuple(st.key[1]))
                if row is not None:
                    loaded[id(st)] = row

    def after_flush(self, session: Session, flush_context: UOWTransaction) -> None:
        if auditing_suspended() or owner_of(session) is not self:
            return
        batches = _FlushBatches(self, session)
        try:
            self._capture_flush(session, batches)
            batches.write()
        except BaseException as error:
            batches.abort(error)  # a COPY left open would refuse the rollback's statements
            raise

    def _capture_flush(self, session: Session, batches: _FlushBatches) -> None:
        """The events of the flush's new, changed and deleted rows, handed to ``batches``."""
        recorder = self.auditor.recorder
        now = datetime.now(timezone.utc)
        origin: EventOrigin | None = None  # read at the first audited row: a flush has one origin
        fetched: dict[int, dict[str, Any]] = session.info.pop(OLD_VALUES_KEY, None) or {}

        for state in list(session._new):
            info = self.info(state.mapper)
            if info is None:
                continue
            self.written[state.mapper] = None
            with recorder.guard(self.auditor, info.options.must_record):
                values = {k: state.dict.get(k) for k in info.keys}
                origin = origin or recorder.origin()
                batches.add(state.mapper, recorder.change_events(
                    info.options, "created", info.resource_id(values), {}, values, occurred_at=now, origin=origin))
        for state in dirty_states(session):
            committed = state.committed_state
            if not committed:
                continue
            info = self.info(state.mapper)
            if info is None:
                continue
            self.written[state.mapper] = None
            with recorder.guard(self.auditor, info.options.must_record):
                old: dict[str, Any] = {}
                new: dict[str, Any] = {}
                row = fetched.get(id(state))
                for key in committed:
                    if key not in info.columns:
                        continue
                    history = state.get_history(key, PASSIVE_NO_INITIALIZE)  # AttributeState.history, unbuilt
                    if not history.added and not history.deleted:
                        continue
                    if history.deleted:
                        old[key] = history.deleted[0]
                    else:
                        old[key] = row.get(key) if row is not None else None
                    new[key] = history.added[0] if history.added else None
                if not new and not old:
                    continue
                ids = {k: state.dict.get(k) for k in info.pk_keys}
                if state.key is not None:
                    ids = dict(zip(info.pk_keys, state.key[1], strict=True))
                label = info.options.label
                if label and label not in new:
                    old[label] = new[label] = state.dict.get(label)
                origin = origin or recorder.origin()
                batches.add(state.mapper, recorder.change_events(
                    info.options, "modified", info.resource_id(ids), old, new, occurred_at=now, origin=origin))
        for state in list(session._deleted):
            info = self.info(state.mapper)
            if info is None:
                continue
            self.written[state.mapper] = None
            with recorder.guard(self.auditor, info.options.must_record):
                values = {k: state.dict.get(k) for k in info.keys if k in state.dict}
                if state.key is not None:
                    values.update(zip(info.pk_keys, state.key[1], strict=True))
                origin = origin or recorder.origin()
                batches.add(state.mapper, recorder.change_events(
                    info.options, "deleted", info.resource_id(values), values, {}, occurred_at=now, origin=origin))

    def on_orm_execute(self, orm_state: ORMExecuteState) -> Any:
        """Capture ``session.execute(insert(Model), rows)``, ``update(Model)...`` and ``delete(Model)...``: one
        event per row. A ``do_orm_execute`` hook, given to SQLAlchemy for DML statements only (see
        :func:`_wrap_orm_execute`), after the app's own hooks."""
        if not (orm_state.is_update or orm_state.is_delete or orm_state.is_insert) or auditing_suspended():
            return None
        if owner_of(orm_state.session) is not self:
            return None
        mapper = orm_state.bind_mapper
        if mapper is None:
            return None
        info = self.info(mapper)
        if info is None:
            return None
        self.written[mapper] = None
        if orm_state.is_insert:
            return self._bulk_insert(orm_state, info)
        session = orm_state.session
        parameters = orm_state.parameters
        statement = orm_state.statement
        # A delete's event holds the whole row; an update's, the columns it can change (and the label, the ids).
        keys = info.keys if orm_state.is_delete else info.updated_keys(statement, parameters)
        # The old rows are kept as tuples until their chunk's turn (a third of the memory of dicts), and let go as
        # each chunk is made into events.
        old_rows: deque[tuple[Any, ...]]
        if isinstance(parameters, list):  # bulk UPDATE by primary key: [{"id": 1, "name": ...}, ...]
            old_rows = self._old_rows_by_pk(session, info, keys, parameters)
        else:
            where = statement.whereclause  # type: ignore[attr-defined]
            query = select(*info.selected(keys))
            if where is not None:
                query = query.where(where)
            old_rows = deque(tuple(r) for r in session.execute(query, parameters or {}))
        result = orm_state.invoke_statement()

        self._record_in_chunks(session, info, keys, old_rows,
                               self._changed_events(session, info, keys, orm_state.is_delete))
        return result

    def _record_in_chunks(self, session: Session, info: ModelInfo, keys: Sequence[str],
                          rows: deque[tuple[Any, ...]],
                          events_of: Callable[[list[dict[str, Any]], datetime, EventOrigin], list[AuditEvent]]
                          ) -> None:
        """Make and write the events of a bulk statement's ``rows`` (tuples of ``keys``), 500 rows at a time. More
        rows than can be held for the COMMIT: each chunk's events are written as they are made, so a statement
        over a million rows never holds a million events; each chunk's rows are let go as it is made."""
        streaming = len(rows) > ROWS_PER_CHUNK
        events: list[AuditEvent] = []
        recorder = self.auditor.recorder
        now = datetime.now(timezone.utc)
        origin: EventOrigin | None = None
        while rows:
            chunk = [dict(zip(keys, rows.popleft(), strict=True)) for _ in range(min(_IN_CLAUSE_CHUNK, len(rows)))]
            with recorder.guard(self.auditor, info.options.must_record):
                origin = origin or recorder.origin()
                events += events_of(chunk, now, origin)
            if streaming:
                self.write(session, events, at_flush=True, bind_arguments={"mapper": info.mapper})
                events = []
        self.write(session, events, bind_arguments={"mapper": info.mapper})

    def _bulk_insert(self, orm_state: ORMExecuteState, info: ModelInfo) -> Any:
        """``session.execute(insert(Model), [rows])`` (SQLAlchemy's ORM bulk INSERT), or one row: a Created event
        per row, with the row as the database stored it (defaults included). Many rows come back from the INSERT
        itself (RETURNING, which the statement's result then holds), where the database can; one row, or many
        given with their primary keys, are read back by key; otherwise the INSERT runs unaudited and the failure
        is logged and counted (raised before it runs for a model that must be recorded)."""
        session = orm_state.session
        statement: Any = orm_state.statement
        parameters = orm_state.parameters
        keys = info.keys
        many = isinstance(parameters, list) or bool(getattr(statement, "_multi_values", None))
        dialect = session.get_bind(mapper=orm_state.bind_mapper).dialect
        given_keys = ([tuple(p.get(k) for k in info.pk_keys) for p in parameters]
                      if isinstance(parameters, list) else None)
        reason = None
        if getattr(statement, "_post_values_clause", None) is not None:
            reason = "an upsert (ON CONFLICT / ON DUPLICATE KEY): which rows it created is not known"
        elif getattr(statement, "_select_names", None):
            reason = "INSERT ... FROM SELECT: its rows are not known"
        elif statement._returning:
            reason = "with a RETURNING of its own, which capture cannot add the new rows' keys to"
        elif many and not getattr(dialect, "insert_executemany_returning", False) and (
                given_keys is None or any(None in k for k in given_keys)):
            reason = f"{dialect.name} cannot return the new rows' keys of a multi-row INSERT, and the rows lack them"
        if reason is not None:
            with self.auditor.recorder.guard(self.auditor, info.options.must_record):
                raise UncapturedWriteError(
                    f"not audited: an ORM INSERT of {info.options.resource} rows ({reason}); insert the objects "
                    "with session.add_all() instead, or record the change with an event of your own")
            return None
        if isinstance(parameters, list) and getattr(
                dialect, "insert_executemany_returning_sort_by_parameter_order", False):
            # The rows as given, with what only the database knows (the keys, and the columns with defaults)
            # returned in the order of the rows: as a flush records its new objects, without reading back
            # what the app handed over.
            defaulted = [k for k in keys if k in info.pk_keys or k == info.discriminator
                         or info.columns[k].default is not None or info.columns[k].server_default is not None]
            if any(info.key_of(name) not in info.columns for name in set().union(*parameters)):
                defaulted = list(keys)  # the rows name a composite or a synonym: the columns are read back
            # The attributes themselves, not labelled (the values are taken by position): SQLAlchemy 2.0 finds a
            # labelled primary key ambiguous in a RETURNING sorted by parameter order once the rows fill more than
            # one page of its insertmanyvalues batches.
            returning = statement.returning(*(info.attributes[k] for k in defaulted),
                                            sort_by_parameter_order=True)
            if dialect.driver == "psycopg":  # psycopg parses five 200-row statements faster than one of 1,000
                returning = returning.execution_options(insertmanyvalues_page_size=200)  # (67 -> 50 µs a row)
            result = orm_state.invoke_statement(statement=returning)
            frozen = result.freeze()

            def stored(given: dict[str, Any], returned: Any) -> tuple[Any, ...]:
                row = {info.key_of(name): value for name, value in given.items()}
                row.update(zip(defaulted, returned, strict=True))
                return tuple(row.get(k) for k in keys)

            rows = deque(stored(given, returned) for given, returned in zip(parameters, frozen(), strict=True))
            result = frozen()
        elif many and getattr(dialect, "insert_executemany_returning", False):
            result = orm_state.invoke_statement(statement=statement.returning(*info.selected(keys)))
            frozen = result.freeze()
            rows = deque(tuple(r) for r in frozen())
            result = frozen()
        else:
            result = orm_state.invoke_statement()
            new_keys = given_keys if many else [tuple(result.inserted_primary_key or ())]
            found = self._rows_by_pk(session, info, keys, new_keys or [])
            rows = deque(tuple(r.values()) for r in found)

        self._record_in_chunks(session, info, keys, rows, self._created_events(info))
        return result

    def _old_rows_by_pk(self, session: Session, info: ModelInfo, keys: Sequence[str],
                        rows: Sequence[dict[str, Any]]) -> deque[tuple[Any, ...]]:
        """The ``keys`` of the stored rows an UPDATE by primary key (``rows``, each with its key) is about to
        change, as tuples."""
        pks = [tuple(r.get(k) for k in info.pk_keys) for r in rows]  # a row without one: SQLAlchemy says so
        return deque(tuple(r.values()) for r in self._rows_by_pk(session, info, keys, pks))

    def _changed_events(self, session: Session, info: ModelInfo, keys: Sequence[str], deleted: bool
                        ) -> Callable[[list[dict[str, Any]], datetime, EventOrigin], list[AuditEvent]]:
        """What makes a chunk of a bulk UPDATE's or DELETE's old rows into events (see :meth:`_bulk_events`)."""
        def events_of(chunk: list[dict[str, Any]], now: datetime, origin: EventOrigin) -> list[AuditEvent]:
            return self._bulk_events(session, info, keys, chunk, deleted, now, origin)

        return events_of

    def legacy_bulk(self, save_mappings: Callable[..., None], session: Session, info: ModelInfo,
                    mapper: Mapper[Any], rows: list[Any], *, isupdate: bool, isstates: bool,
                    return_defaults: bool, update_changed_only: bool, render_nulls: bool) -> None:
        """``Session.bulk_save_objects()``, ``bulk_insert_mappings()`` or ``bulk_update_mappings()`` of one
        mapper (``rows``: mappings, or the objects' states): an event per row, as for the ORM bulk statements.

        An UPDATE (each row carries its primary key) reads the old values by key before it runs and the new ones
        after. An INSERT whose rows all carry their keys runs as asked and is read back by key; one where the
        app asked for ``return_defaults`` runs as asked and is read back by the keys SQLAlchemy filled in;
        otherwise it runs as the ORM bulk INSERT it is equivalent to (``session.execute(insert(Model), rows)``,
        the form SQLAlchemy 2 documents for it), which returns the new keys in the rows' order."""
        values: list[dict[str, Any]] = [state.dict for state in rows] if isstates else rows
        run = functools.partial(save_mappings, session, mapper, rows, isupdate=isupdate, isstates=isstates,
                                return_defaults=return_defaults, update_changed_only=update_changed_only,
                                render_nulls=render_nulls)
        with session.no_autoflush:  # the legacy methods do not flush the session; capture's SELECTs must not
            if isupdate:
                keys = info.updated_keys(None, values)
                old_rows = self._old_rows_by_pk(session, info, keys, values)
                run()
                self._record_in_chunks(session, info, keys, old_rows, self._changed_events(session, info, keys, False))
                return
            keyed = all(v.get(k) is not None for v in values for k in info.pk_keys)
            if not keyed and not return_defaults:  # copies: the ORM bulk INSERT leaves the app's rows alone too
                session.execute(insert(mapper).execution_options(render_nulls=render_nulls),
                                [dict(v) for v in values])
                return
            run()
            new_keys = [tuple(v.get(k) for k in info.pk_keys) for v in values]
            # A safety net: SQLAlchemy from 2.0.32 (the supported floor) fills the new keys into the rows; one that
            # did not (2.0.31 and older copied the mappings first) would leave these rows silently unrecorded.
            if any(None in key for key in new_keys):
                with self.auditor.recorder.guard(self.auditor, info.options.must_record):
                    raise UncapturedWriteError(
                        f"not audited: bulk_insert_mappings() of {info.options.resource} rows with "
                        "return_defaults=True, whose new keys SQLAlchemy did not hand back (it does from 2.0.32, "
                        "the supported floor); upgrade SQLAlchemy, or leave return_defaults off")
                return
            found = deque(tuple(r.values()) for r in self._rows_by_pk(session, info, info.keys, new_keys))
            self._record_in_chunks(session, info, info.keys, found, self._created_events(info))

    def _created_events(self, info: ModelInfo
                        ) -> Callable[[list[dict[str, Any]], datetime, EventOrigin], list[AuditEvent]]:
        """What makes a chunk of inserted rows (as stored) into Created events."""
        def events_of(chunk: list[dict[str, Any]], now: datetime, origin: EventOrigin) -> list[AuditEvent]:
            recorder = self.auditor.recorder
            return [event for row in chunk for event in recorder.change_events(
                info.options, "created", info.resource_id(row), {}, row, occurred_at=now, origin=origin)]

        return events_of

    def _bulk_events(self, session: Session, info: ModelInfo, keys: Sequence[str], old_rows: list[dict[str, Any]],
                     deleted: bool, now: datetime, origin: EventOrigin) -> list[AuditEvent]:
        """The events of some rows of a bulk statement: their old values, and for an UPDATE the new ones read
        back by primary key (the database's word on what the SET clause made of them)."""
        recorder = self.auditor.recorder
        events: list[AuditEvent] = []
        if deleted:
            for row in old_rows:
                events += recorder.change_events(info.options, "deleted", info.resource_id(row), row, {},
                                                 occurred_at=now, origin=origin)
            return events
        pks = [tuple(r[k] for k in info.pk_keys) for r in old_rows]
        new_by_pk = {tuple(r[k] for k in info.pk_keys): r
                     for r in self._rows_by_pk(session, info, keys, pks)}
        label = info.options.label
        for pk, row in zip(pks, old_rows, strict=True):
            new_row = new_by_pk.get(pk)
            if new_row is None:
                continue
            changed = [k for k in keys if new_row[k] != row[k]]
            fields = set(changed) | ({label} if label and changed else set())
            events += recorder.change_events(
                info.options, "modified", info.resource_id(row),
                {k: row.get(k) for k in fields}, {k: new_row.get(k) for k in fields}, occurred_at=now,
                origin=origin,
            )
        return events

    @staticmethod
    def _rows_by_pk(session: Session, info: ModelInfo, keys: Sequence[str], pks: Sequence[tuple[Any, ...]]
                    ) -> list[dict[str, Any]]:
        """The ``keys`` of the rows whose primary keys are ``pks``, as dicts, 500 keys a SELECT."""
        columns = info.selected(keys)
        pk_columns = info.pk_attributes
        rows: list[dict[str, Any]] = []
        for start in range(0, len(pks), _IN_CLAUSE_CHUNK):
            chunk = pks[start:start + _IN_CLAUSE_CHUNK]
            if len(pk_columns) == 1:
                clause = pk_columns[0].in_([k[0] for k in chunk])
            else:
                clause = tuple_(*pk_columns).in_(chunk)
            rows += _row_dicts(session.execute(select(*columns).where(clause)))
        return rows

    # -- writing and after-commit signals ------------------------------------------------------------------

    def write(self, session: Session, events: list[AuditEvent], *, at_flush: bool = False,
              bind_arguments: dict[str, Any] | None = None, connection: Connection | None = None) -> None:
        """Write ``events`` in the session's transaction, on the connection to the database their rows were
        written to (``connection``, or ``bind_arguments``: ``{"mapper": ...}``, or the ``{"bind": ...}`` a flush
        found, see :class:`_FlushBatches`): held for the COMMIT where that can be done (see
        :mod:`.with_commit`), or now (``at_flush``: part of a flush too large to hold)."""
        if not events:
            return
        try:
            if connection is None:
                connection = session.connection(bind_arguments=dict(bind_arguments) if bind_arguments else None)
            outbox = self.auditor.outbox
            forwarding = outbox is not None and outbox.forwarding
            # A flush of more than a chunk is written now (see ROWS_PER_CHUNK): one round trip is nothing next to it
            if (not at_flush and not forwarding and not session.twophase and len(events) <= ROWS_PER_CHUNK
                    and with_commit.can_hold(connection)):
                with_commit.hold(connection, events, self.auditor.table)  # sent with the COMMIT
            else:
                insert_events(connection, events, self.auditor.table)
                if outbox is not None:  # delivery rows, same transaction (transactional outbox)
                    outbox.write(connection, events)
        except Exception as error:
            raise _not_written(session, bind_arguments, f"write {len(events)} audit event(s) ({events[0].event}, ...)",
                               error) from error
        self.hold(session, events)

    def open_copy(self, session: Session, bind_arguments: dict[str, Any], connection: Connection | None
                  ) -> EventCopy | None:
        """A COPY for the rest of a large flush's events on its connection (see :class:`_FlushBatches`), where
        one can be used and no forwarding needs delivery rows written beside the events; else None."""
        outbox = self.auditor.outbox
        if outbox is not None and outbox.forwarding:
            return None
        try:
            if connection is None:
                connection = session.connection(bind_arguments=dict(bind_arguments))
            return open_event_copy(connection, self.auditor.table)
        except Exception as error:
            raise _not_written(session, bind_arguments, "start writing audit events", error) from error

    def write_to_copy(self, session: Session, copy: EventCopy, events: list[AuditEvent],
                      bind_arguments: dict[str, Any]) -> None:
        """Send ``events`` into a flush's open COPY (the server stores them meanwhile)."""
        try:
            copy.write(events)
        except Exception as error:
            raise _not_written(session, bind_arguments,
                               f"write {copy.count + len(events)} audit event(s) ({events[0].event}, ...)", error) from error
        self.hold(session, events)

    def end_copy(self, session: Session, copy: EventCopy, bind_arguments: dict[str, Any]) -> None:
        """End a flush's COPY: wait for the server to store its rows (a refused row fails the flush here)."""
        count = copy.count
        try:
            copy.finish()
        except Exception as error:
            raise _not_written(session, bind_arguments, f"write {count} audit event(s)", error) from error

    def hold(self, session: Session, events: Iterable[AuditEvent]) -> None:
        """Keep events for ``event_recorded`` until the outermost commit, tagged with the innermost transaction,
        when someone listens (a receiver connected when they are written, or revert's ``KEEP_KEY``): nothing is
        kept, and nothing done at the commit, for an app that does not listen, and a flush too large to hold does
        not keep thousands of events alive for nobody (the garbage collector's work)."""
        if not (event_recorded.has_receivers_for(self.auditor) or KEEP_KEY in session.info):
            return
        transaction = session.get_nested_transaction() or session.get_transaction()
        session.info.setdefault(PENDING_KEY, []).append((transaction, list(events)))

    def after_commit(self, session: Session) -> None:
        if owner_of(session) is not self:
            return
        pending = session.info.pop(PENDING_KEY, None)
        if not pending:
            return
        events = [e for _, batch in pending for e in batch]
        try:
            event_recorded.send(self.auditor, events=events)
        except Exception as error:  # the commit is done; a receiver's bug must not look like a failed commit
            self.auditor.recorder.errors.add(error)
            logger.exception("an event_recorded receiver failed")

    def after_soft_rollback(self, session: Session, previous_transaction: SessionTransaction) -> None:
        if owner_of(session) is not self:
            return
        pending = session.info.get(PENDING_KEY)
        if not pending:
            return
        kept = [(t, batch) for t, batch in pending if not _within(t, previous_transaction)]
        if kept:
            session.info[PENDING_KEY] = kept
        else:
            session.info.pop(PENDING_KEY, None)


class _FlushBatches:
    """A flush's events, by the database their rows were written to: a session may bind mappers to different
    engines (``Session(binds={Warehouse: one, Report: two})``, or a ``get_bind()`` of its own), and each change's
    events go to the audit table of its own database, in that connection's transaction. Each database's events
    are written together at the end of the flush; a flush of more events than can be held for the COMMIT
    writes them as it makes them (the first ``ROWS_PER_CHUNK + 1``, then ``STREAM_CHUNK`` at a time), so that
    they do not all live until the end of the flush. On PostgreSQL (psycopg 3, nobody watching the statements,
    no forwarding) they go into one COPY opened at the first chunk and ended with the flush: the server
    stores each chunk while the next is made. Until then nothing else runs on that connection (capture runs no
    statement while it makes events); :meth:`abort` ends the COPYs of a flush that fails."""

    __slots__ = ("capture", "session", "_only", "_binds", "_batches")

    def __init__(self, capture: SessionCapture, session: Session) -> None:
        self.capture = capture
        self.session = session
        self._only: Any = _UNSET  # the transaction's one connection, or None when it has several
        self._binds: dict[Mapper[Any], Any] = {}  # each mapper's bind, asked once a flush
        self._batches: dict[Any, _Batch] = {}

    def add(self, mapper: Mapper[Any], events: list[AuditEvent]) -> None:
        only = self._only
        if only is _UNSET:
            only = self._only = only_connection(self.session)
        if only is not None:  # every row of the flush went through it: no bind to ask for
            bind = only
        else:
            bind = self._binds.get(mapper)
            if bind is None:
                bind = self._binds[mapper] = self.session.get_bind(mapper=mapper)
        batch = self._batches.get(bind)
        if batch is None:
            batch = self._batches[bind] = _Batch({"bind": bind}, only)
        pending = batch.events
        pending += events
        if len(pending) >= (STREAM_CHUNK if batch.streaming else ROWS_PER_CHUNK + 1):
            capture = self.capture
            if not batch.streaming:
                batch.copy = capture.open_copy(self.session, batch.bind_arguments, batch.connection)
            if batch.copy is not None:
                capture.write_to_copy(self.session, batch.copy, pending, batch.bind_arguments)
            else:
                capture.write(self.session, pending, at_flush=True, bind_arguments=batch.bind_arguments,
                              connection=batch.connection)
            batch.events, batch.streaming = [], True

    def write(self) -> None:
        for batch in self._batches.values():
            copy = batch.copy
            if copy is None:
                self.capture.write(self.session, batch.events, at_flush=batch.streaming,
                                   bind_arguments=batch.bind_arguments, connection=batch.connection)
                continue
            if batch.events:  # a failure here leaves the COPY to abort()
                self.capture.write_to_copy(self.session, copy, batch.events, batch.bind_arguments)
            self.capture.end_copy(self.session, copy, batch.bind_arguments)  # over, even if it fails
            batch.copy = None

    def abort(self, error: BaseException) -> None:
        """End the COPYs still open because the flush fails with ``error``."""
        for batch in self._batches.values():
            copy, batch.copy = batch.copy, None
            if copy is not None:
                copy.abort(error)


class _Batch:
    """One database's share of a flush (see :class:`_FlushBatches`)."""

    __slots__ = ("bind_arguments", "connection", "events", "streaming", "copy")

    def __init__(self, bind_arguments: dict[str, Any], connection: Connection | None) -> None:
        self.bind_arguments = bind_arguments
        self.connection = connection  # the transaction's one connection, or None: asked from the bind arguments
        self.events: list[AuditEvent] = []  # made, not yet written
        self.streaming = False  # written as they are made: the flush had more than it could hold
        self.copy: EventCopy | None = None  # where they are written on PostgreSQL, until the flush ends


_UNSET = object()


def only_connection(session: Session) -> Connection | None:
    """The connection of the session's transaction when it has opened just one, else None. A flush's rows all
    went through it then, so its events need no ``get_bind()`` per model (Flask-SQLAlchemy's inspects the
    mapper and looks the app's engines up through ``current_app``). SQLAlchemy registers each connection of a
    transaction under itself and its engine, one entry for both (``SessionTransaction._connections``, 1.4 to
    2.1); anything else, or no such attribute, answers None and the binds are asked."""
    transaction = session.get_transaction()
    connections = getattr(transaction, "_connections", None)
    if not connections or len(connections) != 2:
        return None
    first, second = connections.values()
    return first[0] if first is second else None


# -- the legacy bulk methods ---------------------------------------------------------------------------------
# Session.bulk_save_objects(), bulk_insert_mappings() and bulk_update_mappings() run neither a flush nor
# do_orm_execute. All three go through Session._bulk_save_mappings (SQLAlchemy 1.4 to 2.1: one call per mapper
# and kind of write), which is wrapped once per process; a session no capture owns goes straight through.

_LEGACY_BULK = "_bulk_save_mappings"
_WRAPPED = "_audit_middleware_wrapped"


def _legacy_bulk_call(mapper: Any, mappings: Any, isupdate: bool, isstates: bool, return_defaults: bool,
                      update_changed_only: bool, render_nulls: bool) -> dict[str, Any]:
    """The arguments of ``_bulk_save_mappings`` by name (SQLAlchemy 1.4 passes them by position)."""
    return {"isupdate": isupdate, "isstates": isstates, "return_defaults": return_defaults,
            "update_changed_only": update_changed_only, "render_nulls": render_nulls}


def _wrap_legacy_bulk() -> None:
    save_mappings = getattr(Session, _LEGACY_BULK, None)
    if save_mappings is None:  # pragma: no cover - a SQLAlchemy without it: the legacy methods go unaudited
        logger.warning("audit-middleware: this SQLAlchemy has no Session.%s; bulk_save_objects() and "
                       "bulk_*_mappings() are not audited", _LEGACY_BULK)
        return
    if getattr(save_mappings, _WRAPPED, False):
        return

    @functools.wraps(save_mappings)
    def audited(session: Session, mapper: Any, mappings: Any, *args: Any, **kwargs: Any) -> None:
        capture = owner_of(session) if _captures else None
        if capture is None or auditing_suspended():
            return save_mappings(session, mapper, mappings, *args, **kwargs)  # type: ignore[no-any-return]
        resolved = inspect(mapper)
        info = capture.info(resolved)
        if info is None:
            return save_mappings(session, mapper, mappings, *args, **kwargs)  # type: ignore[no-any-return]
        capture.written[resolved] = None
        rows = list(mappings)  # an iterable (bulk_save_objects hands a group of states) is read once
        capture.legacy_bulk(save_mappings, session, info, resolved, rows,
                            **_legacy_bulk_call(mapper, rows, *args, **kwargs))
        return None

    setattr(audited, _WRAPPED, True)
    setattr(Session, _LEGACY_BULK, audited)


# -- the ORM bulk statements ---------------------------------------------------------------------------------
# A do_orm_execute listener makes SQLAlchemy build an ORMExecuteState and run the statement's compile-state hook
# a second time for every ORM execution, SELECTs included (a fifth of what capture added to a one-row update
# request, which loads the user and the row). So the hook is handed to SQLAlchemy only for INSERT, UPDATE and
# DELETE statements of a captured session, as an execution's extra hook: Session._execute_internal's
# ``_add_event`` (SQLAlchemy 2.0 to 2.1), the way SQLAlchemy adds its own, run after the app's listeners.
# Without that parameter, capture falls back to the listener.

_EXECUTE = "_execute_internal"
_orm_execute_wrapped = False


def _wrap_orm_execute() -> None:
    global _orm_execute_wrapped
    execute_internal = getattr(Session, _EXECUTE, None)
    if execute_internal is None or getattr(execute_internal, _WRAPPED, False):
        return
    try:
        parameters = inspect_signature(execute_internal).parameters
    except (TypeError, ValueError):  # pragma: no cover - not a plain function
        return
    if "_add_event" not in parameters or "_parent_execute_state" not in parameters:  # pragma: no cover
        return

    @functools.wraps(execute_internal)
    def audited(session: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        # DML only, not an execution a hook started (invoke_statement), nor one SQLAlchemy gave a hook of its own
        if (_captures and getattr(statement, "is_dml", False) and kwargs.get("_add_event") is None
                and kwargs.get("_parent_execute_state") is None):
            capture = owner_of(session)
            if capture is not None:
                kwargs["_add_event"] = capture.on_orm_execute
        return execute_internal(session, statement, *args, **kwargs)

    setattr(audited, _WRAPPED, True)
    setattr(Session, _EXECUTE, audited)
    _orm_execute_wrapped = True


def _not_written(session: Session, bind_arguments: dict[str, Any] | None, what: str, error: Exception
                 ) -> AuditWriteError:
    """The error for events that could not be written: "could not <what> to <the database>, so the change was
    not saved either: <the error>"."""
    return AuditWriteError(f"could not {what}{_on_database(session, bind_arguments)}, so the change was not saved "
                           f"either: {type(error).__name__}: {error}")


def _on_database(session: Session, bind_arguments: dict[str, Any] | None) -> str:
    """" to <the database's URL, password hidden>" for an error message, where the session can tell."""
    try:
        bind = (bind_arguments or {}).get("bind") or session.get_bind(**(bind_arguments or {}))
        return f" to {bind.engine.url.render_as_string(hide_password=True)}"
    except Exception:  # noqa: BLE001 - the message goes without it
        return ""


def _row_dicts(result: Any) -> list[dict[str, Any]]:
    """The result's rows as dicts by column label (``dict(row._mapping)`` builds a key view per row)."""
    keys = tuple(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False
