"""Capture: model signals, many-to-many changes, and wrapt patches for what sends no signal.

* ``post_save`` / ``post_delete`` (connected per audited model, so unaudited models keep Django's fast
  delete path) build Created/Modified/Deleted/Enabled/Disabled events. Old values come from a snapshot taken
  when the row was loaded (``Model.from_db``) or last saved, so a save costs no extra SELECT; only an
  instance that was never loaded (``Model(pk=5, ...).save()``) or a deferred field set before saving needs
  one.
* ``m2m_changed`` (per through model) gives "<Owner> Modified" with the full old and new id lists.
* ``QuerySet.update``, ``bulk_create`` and ``bulk_update`` are wrapped (wrapt; idempotent, undone by
  :meth:`DjangoCapture.uninstall`) and recorded per row. ``QuerySet.delete`` needs no patch: Django's
  collector cannot fast-delete a model that has delete receivers, so it loads the rows (cascades included)
  and sends ``post_delete`` per row.
* Event rows are written on the connection of the changed row, inside its transaction. Outside any
  ``atomic`` block the adapter opens one around the audited save or bulk operation, so the change and its
  events commit together; on PostgreSQL an update of a loaded row goes instead as one statement with its event
  rows (``one_statement``). (``own_block``: on MySQL and MariaDB it, and the delete collector's block of an
  audited delete, begin with ``BEGIN`` instead of toggling autocommit; on SQLite its ``BEGIN`` goes through
  the driver). Inside a block events wait in a per-connection buffer and are written with one
  executemany just before the outermost block commits (a savepoint rolled back drops its events; a
  rollback drops all); on psycopg 3 they go with the COMMIT itself, one round trip for both
  (``audit_middleware.commit_pipeline``); past 1,000 waiting in the outermost block they are written at once
  (``DjangoCapture._write_early``). With autocommit turned off by hand no block commits, so events are
  written at once into the app's open transaction. ``event_recorded`` is sent after the commit
  (``transaction.on_commit``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import wrapt
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, models, router, transaction
from django.db.models import signals
from django.db.models.deletion import Collector
from django.db.models.query import QuerySet

from audit_middleware.config import TrackingOptions
from audit_middleware.context import auditing_suspended
from audit_middleware.errors import AuditWriteError
from audit_middleware.events import AuditEvent
from audit_middleware.recorder import logger
from audit_middleware.signals import event_recorded
from audit_middleware.store import ROWS_PER_CHUNK

from .folded_begin import ARMED, disarm, fold_begin
from .one_statement import OneStatementSave, one_statement_save
from .own_block import arm_begin, disarm_begin, own_block
from .store import commit_with_events, insert_events

if TYPE_CHECKING:
    from .auditor import DjangoAuditor

LOADED = "_audit_loaded"   # (field attnames, values) as handed to Model.from_db; turned into OLD when needed
OLD = "_audit_old"         # {attname: value}: what the database holds, as far as this instance knows
M2M_OLD = "_audit_m2m_old"
PENDING = "_audit_pending"  # on a DatabaseWrapper: [(depth, [events]), ...] waiting for the commit
WRITTEN = "_audit_written"
LAST_BATCH = "_audit_last_batch"  # on a DatabaseWrapper: (events, sender, on_commit callback or, registered
# while nobody listened to event_recorded and so without one, the savepoint ids) of the last batch buffered
_CHUNK = 500

# Django's own bookkeeping: never audited.
BOOKKEEPING_APPS = frozenset({"contenttypes", "sessions", "migrations", "admin"})
BOOKKEEPING_MODELS = frozenset({"auth.permission", "audit_middleware.auditevent"})


class ModelInfo:
    """What capture needs to know about one model, computed once."""

    __slots__ = ("model", "options", "fields", "attnames", "pk", "label", "m2m", "_always_read")

    def __init__(self, model: type[models.Model], options: TrackingOptions) -> None:
        meta = model._meta
        self.model = model
        self.fields: dict[str, models.Field[Any, Any]] = {f.attname: f for f in meta.concrete_fields}
        self.attnames = tuple(self.fields)
        self.pk = meta.pk.attname  # type: ignore[union-attr]
        by_name = {f.name: f.attname for f in meta.concrete_fields}
        self.label = by_name.get(options.label, options.label) if options.label else None
        toggle = by_name.get(options.toggle, options.toggle) if options.toggle else None
        exclude = frozenset(by_name.get(n, n) for n in options.exclude)
        self.options = TrackingOptions(options.resource, options.category, exclude, toggle, self.label,
                                       options.must_record)
        # Every ManyToManyField (Django 6.1 no longer counts them as concrete: they have no column).
        self.m2m = {f.name: f for f in meta.many_to_many if isinstance(f, models.ManyToManyField)}
        # Read for every QuerySet.update(): the id, the label, and generated columns (the database changes them).
        self._always_read = {self.pk, *([self.label] if self.label in self.fields else []),
                             *(a for a, f in self.fields.items() if getattr(f, "generated", False))}

    def updated_attnames(self, assigned: Iterable[str]) -> tuple[str, ...]:
        """The columns ``QuerySet.update(**assigned)`` can change (plus the id, label and generated columns);
        every column if a name is not one of this model's fields (Django then refuses the update itself)."""
        keys = set(self._always_read)
        meta = self.model._meta
        for name in assigned:
            try:
                keys.add(meta.get_field(name).attname)  # type: ignore[union-attr]
            except Exception:
                return self.attnames
        return tuple(a for a in self.attnames if a in keys)

    def values(self, obj: models.Model, attnames: Iterable[str] | None = None) -> dict[str, Any]:
        d = obj.__dict__
        return {a: d[a] for a in (attnames if attnames is not None else self.attnames) if a in d}


def snapshot_of(obj: models.Model) -> dict[str, Any] | None:
    d = obj.__dict__
    old = d.get(OLD)
    if old is None:
        loaded = d.pop(LOADED, None)
        if loaded is not None:
            old = d[OLD] = dict(zip(loaded[0], loaded[1], strict=False))
    return old  # type: ignore[no-any-return]


def _same(field: models.Field[Any, Any], before: Any, after: Any) -> bool:
    if before == after:
        return True
    try:  # a value assigned as text ("3") that the field stores as 3 is not a change
        return bool(field.to_python(after) == before)
    except Exception:
        return False


def in_transaction(using: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in the caller's transaction, or in one of its own when the connection autocommits."""
    connection = connections[using]
    if connection.in_atomic_block:
        fold_begin(connection)
        return fn()
    with own_block(connection, using):
        fold_begin(connection)
        return fn()


# -- the per-connection buffer ---------------------------------------------------------------------------
#
# PENDING holds (depth, events) not yet written; depth is how many savepoints deep they were recorded.
# WRITTEN holds (flush depth, entries) written before the outermost commit (a read through the model flushes
# early): rolling back the savepoint they were written in undoes those rows, so entries recorded outside it
# go back to PENDING.


def _pending(connection: Any) -> list[tuple[int, list[AuditEvent]]]:
    pending = connection.__dict__.get(PENDING)
    if pending is None:
        pending = connection.__dict__[PENDING] = []
    return pending  # type: ignore[no-any-return]


def flush(connection: Any, sender: Any = None, *, with_commit: bool = False) -> None:
    """Write the events waiting on ``connection``, in its current transaction; ``with_commit`` (the outermost
    block is about to commit) sends them with the COMMIT where the driver can (store.commit_with_events)."""
    pending = connection.__dict__.get(PENDING)
    if not pending:
        return
    entries = list(pending)
    pending.clear()
    events = [e for _, batch in entries for e in batch]
    try:
        if not (with_commit and commit_with_events(connection, events)):
            insert_events(connection, events)
    except Exception as error:
        if connection.in_atomic_block:  # its changes must not commit without their events, even if this is caught
            connection.needs_rollback = True
        raise AuditWriteError(
            f"could not write {len(events)} audit event(s) ({events[0].event}, ...) to database "
            f"{connection.alias!r}, so the change was not saved either: {type(error).__name__}: {error}"
        ) from error
    if connection.savepoint_ids:
        connection.__dict__.setdefault(WRITTEN, []).append((len(connection.savepoint_ids), entries))


def flush_all_pending() -> None:
    """Write every connection's waiting events (before reading the audit table)."""
    for connection in connections.all(initialized_only=True):
        # A transaction already marked for rollback refuses every query; the rollback drops the buffer.
        if connection.__dict__.get(PENDING) and connection.in_atomic_block and not connection.needs_rollback:
            flush(connection, _capture_sender[0])


def _after_commit(connection: Any, events: list[AuditEvent], sender: Any) -> Callable[[], None]:
    def send() -> None:
        if not events:  # written early with nobody listening (see DjangoCapture.emit): nothing kept to announce
            return
        try:
            event_recorded.send(sender, events=events)
        except Exception as error:  # the commit is done; a receiver's bug must not look like a failed commit
            logger.exception("an event_recorded receiver failed: %s", error)

    connection.on_commit(send)  # transaction.on_commit(send, using=alias), without looking the alias up again
    return send


def _joins_last_batch(connection: Any, sender: Any, listening: bool) -> list[AuditEvent] | None:
    """The pending batch new events of ``sender`` can join, if any: the last one buffered, at the current
    savepoint, whose ``on_commit`` callback is still the last registered, under the same savepoints. Events
    joining it are then written, dropped by a rollback and announced exactly as a batch of their own would
    be, without one more callback (and its objects, which the garbage collector walks) for every save. A batch
    buffered while nobody listened has no callback: events made while nobody listens join it under the same
    savepoints; once someone listens (``listening``), they start a batch with a callback."""
    last = connection.__dict__.get(LAST_BATCH)
    pending = connection.__dict__.get(PENDING)
    if last is None or not pending:
        return None
    batch, last_sender, send = last
    depth, pending_batch = pending[-1]
    if pending_batch is not batch or last_sender is not sender or depth != len(connection.savepoint_ids):
        return None
    if isinstance(send, set):  # no callback: the savepoint ids it was buffered under
        return batch if not listening and send == set(connection.savepoint_ids) else None
    callbacks = connection.run_on_commit  # Django 4.2+: (savepoint ids, callback, robust) in order
    if not callbacks:
        return None
    entry = callbacks[-1]
    if not isinstance(entry, tuple) or len(entry) < 2 or entry[1] is not send:
        return None
    return batch if entry[0] == set(connection.savepoint_ids) else None


def _atomic_exit(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Atomic.__exit__``: write buffered events just before the outermost commit; forget those of a
    rolled-back savepoint or transaction."""
    connection = transaction.get_connection(instance.using)
    state = connection.__dict__
    pending = state.get(PENDING)
    written = state.get(WRITTEN)
    if not connection.savepoint_ids and state.get(ARMED):  # no statement ran: BEGIN was never folded
        disarm(connection)
    if not pending and not written:
        if not connection.savepoint_ids:  # the outermost block: its callbacks hold the last batch from now on
            state.pop(LAST_BATCH, None)
        return wrapped(*args, **kwargs)
    exc_type = args[0] if args else kwargs.get("exc_type")
    failing = exc_type is not None or connection.needs_rollback or connection.closed_in_transaction
    depth = len(connection.savepoint_ids)
    if depth == 0:  # the outermost block: commit or roll back
        state.pop(LAST_BATCH, None)
        if written:
            written.clear()
        if failing:
            if pending:
                pending.clear()
            return wrapped(*args, **kwargs)
        try:
            flush(connection, _capture_sender[0], with_commit=True)
        except AuditWriteError as error:
            wrapped(type(error), error, error.__traceback__)  # rolls the transaction back
            raise
        return wrapped(*args, **kwargs)
    pending = _pending(connection)
    written = state.setdefault(WRITTEN, [])
    rolled_back = failing and connection.savepoint_ids[-1] is not None
    try:
        return wrapped(*args, **kwargs)
    finally:
        if rolled_back:
            requeue = [(d, batch) for fd, entries in written if fd >= depth for d, batch in entries if d < depth]
            written[:] = [(fd, entries) for fd, entries in written if fd < depth]
            pending[:] = [(d, batch) for d, batch in pending if d < depth] + requeue
        elif not failing:  # released: what happened in it now belongs to the enclosing block
            pending[:] = [(min(d, depth - 1), batch) for d, batch in pending]
            written[:] = [(min(fd, depth - 1), entries) for fd, entries in written]


def _uses_mysql() -> bool:
    """Whether a configured database is MySQL or MariaDB (an alias whose backend cannot load is left out: it
    fails where it is used, not when the adapter installs)."""
    for alias in connections:
        try:
            if connections[alias].vendor == "mysql":
                return True
        except ImproperlyConfigured:
            continue
    return False


_capture_sender: list[Any] = [None]
# Set while a bulk operation runs: Django's bulk_update calls QuerySet.update, which must not record again.
_in_bulk: ContextVar[bool] = ContextVar("audit_in_bulk", default=False)
# (instance, alias, connection, one-statement save or None) while an audited save runs: its post_save finds the
# connection here instead of looking it up again in Django's per-thread connections (a microsecond each, every
# audited save), and whether the save's events went with its UPDATE (see one_statement).
_saving: ContextVar[tuple[Any, str, Any, OneStatementSave | None] | None] = ContextVar("audit_saving", default=None)


class DjangoCapture:
    """Installs and removes every hook; one per auditor (the app installs one at ``ready()``)."""

    def __init__(self, auditor: DjangoAuditor) -> None:
        self.auditor = auditor
        self._infos: dict[type[models.Model], ModelInfo | None] = {}
        self._through: dict[type[models.Model], tuple[ModelInfo, models.ManyToManyField[Any, Any]]] = {}
        self._connected: list[tuple[Any, Callable[..., Any], type[models.Model]]] = []
        self._lock = threading.Lock()
        self.installed = False

    # -- models ----------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget computed options (the settings changed); hooks stay installed."""
        self._infos.clear()

    def info(self, model: type[models.Model]) -> ModelInfo | None:
        try:
            return self._infos[model]
        except KeyError:
            pass
        info = self._compute(model)
        self._infos[model] = info
        return info

    def _compute(self, model: type[models.Model]) -> ModelInfo | None:
        from . import conf

        meta = model._meta
        if meta.proxy:
            return self.info(meta.concrete_model)  # type: ignore[arg-type]
        key = meta.label_lower
        if (meta.app_label in BOOKKEEPING_APPS or key in BOOKKEEPING_MODELS or meta.auto_created
                or model.__module__ == "__fake__" or key in conf.exclude_models()):
            return None
        names = [f.name for f in meta.concrete_fields] + [f.attname for f in meta.concrete_fields]
        options = TrackingOptions.resolve(
            model.__name__, getattr(model, "__audit__", None), list(dict.fromkeys(names)),
            self.auditor.recorder.config,
        )
        if options is None:
            return None
        info = ModelInfo(model, options)
        self.auditor.recorder.define_model(info.options)
        return info

    # -- install / uninstall -----------------------------------------------------------------------------

    def install(self, models_: Iterable[type[models.Model]]) -> None:
        """Connect signals for ``models_`` and install the patches (idempotent)."""
        with self._lock:
            _capture_sender[0] = self.auditor
            for model in models_:
                info = self.info(model)
                if info is None:
                    continue
                self._connect(signals.post_save, self.post_save, model)
                self._connect(signals.pre_delete, self.pre_delete, model)
                self._connect(signals.post_delete, self.post_delete, model)
                for field in info.m2m.values():
                    through = field.remote_field.through  # type: ignore[union-attr]
                    if through not in self._through:
                        self._through[through] = (info, field)
                        self._connect(signals.m2m_changed, self.m2m_changed, through)
            if self.installed:
                return
            for owner, name, wrapper in self._patches():
                wrapt.wrap_function_wrapper(owner, name, wrapper)
            self.installed = True

    def _connect(self, signal: Any, receiver: Callable[..., Any], sender: type[models.Model]) -> None:
        uid = f"audit_middleware.{receiver.__name__}.{sender._meta.label_lower}"
        signal.connect(receiver, sender=sender, weak=False, dispatch_uid=uid)
        self._connected.append((signal, receiver, sender))

    def uninstall(self) -> None:
        """Disconnect every receiver and undo every patch (checked through ``__wrapped__``)."""
        with self._lock:
            for signal, receiver, sender in self._connected:
                signal.disconnect(receiver, sender=sender,
                                  dispatch_uid=f"audit_middleware.{receiver.__name__}.{sender._meta.label_lower}")
            self._connected.clear()
            self._through.clear()
            for owner, name, wrapper in self._patches(every=True):
                current = owner.__dict__.get(name)
                # Only our own wrapper is removed; one installed over it by another library stays.
                if isinstance(current, wrapt.FunctionWrapper) and current._self_wrapper == wrapper:
                    setattr(owner, name, current.__wrapped__)
            self.installed = False

    def _patches(self, every: bool = False) -> list[tuple[Any, str, Callable[..., Any]]]:
        """What install wraps; the delete collector only where a database is MySQL or MariaDB (the wrapper costs
        every delete a little, and does nothing elsewhere); ``every``: all that may be installed."""
        patches = [
            (models.Model, "from_db", self._from_db),
            (models.Model, "save_base", self._save_base),
            (models.Model, "refresh_from_db", self._refresh_from_db),
            (QuerySet, "update", self._update),
            (QuerySet, "bulk_create", self._bulk_create),
            (QuerySet, "bulk_update", self._bulk_update),
            (transaction.Atomic, "__exit__", _atomic_exit),
        ]
        if every or _uses_mysql():
            patches.append((Collector, "delete", self._collector_delete))
        return patches

    # -- emitting ----------------------------------------------------------------------------------------

    def emit(self, using: str, events: list[AuditEvent], connection: Any = None) -> None:
        """Buffer ``events`` for the commit of ``using``'s transaction (``connection``, if the caller has it)."""
        if not events:
            return
        if connection is None:
            connection = connections[using]
        if connection.in_atomic_block and connection.commit_on_exit:
            listening = event_recorded.has_receivers_for(self.auditor)
            batch = _joins_last_batch(connection, self.auditor, listening)
            if batch is not None:
                batch.extend(events)
            else:
                batch = list(events)
                _pending(connection).append((len(connection.savepoint_ids), batch))
                # Registered now, at the savepoint the change happened in: Django drops it with that savepoint,
                # and a TestCase's captureOnCommitCallbacks sees it even though its transaction never commits.
                # Nobody listening: no callback, nothing to do at the commit (the events are written all the same).
                connection.__dict__[LAST_BATCH] = (
                    batch, self.auditor,
                    _after_commit(connection, batch, self.auditor) if listening else set(connection.savepoint_ids))
            if len(batch) > ROWS_PER_CHUNK and not connection.savepoint_ids:
                self._write_early(connection, batch)
            return
        # No block of ours will commit: autocommit turned off by hand (the app commits or rolls back itself,
        # and Django's blocks inside are savepoints), or raw use. Write now, in whatever transaction is open.
        try:
            insert_events(connection, events)
        except Exception as error:
            raise AuditWriteError(f"could not write {len(events)} audit event(s) ({events[0].event}, ...) to "
                                  f"database {connection.alias!r}: {type(error).__name__}: {error}") from error
        if event_recorded.has_receivers_for(self.auditor):
            _after_commit(connection, events, self.auditor)

    def _write_early(self, connection: Any, batch: list[AuditEvent]) -> None:
        """More events than one chunk wait in the outermost block (no savepoint that could roll part of them
        back): write them now, in its transaction, as the commit would have, rather than keep thousands of
        events alive until then (which costs the garbage collector more than writing them). They stay in their
        commit callback only when an event_recorded receiver listens; the next saves start a batch of their
        own."""
        flush(connection, self.auditor)
        connection.__dict__.pop(LAST_BATCH, None)
        if not event_recorded.has_receivers_for(self.auditor):
            batch.clear()

    # -- snapshots ---------------------------------------------------------------------------------------

    def _from_db(self, wrapped: Any, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj = wrapped(*args, **kwargs)
        if self._infos.get(cls) is not None and len(args) == 3:
            obj.__dict__[LOADED] = (args[1], args[2])
        elif cls not in self._infos and len(args) == 3 and self.info(cls) is not None:
            obj.__dict__[LOADED] = (args[1], args[2])
        return obj

    def _refresh_from_db(self, wrapped: Any, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        info = self.info(type(obj))
        if info is not None:
            old = snapshot_of(obj)
            if old is not None:
                old.update(info.values(obj))
            else:
                obj.__dict__[OLD] = info.values(obj)
        return result

    def _save_base(self, wrapped: Any, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = self.info(type(obj))
        if info is None or auditing_suspended():
            return wrapped(*args, **kwargs)
        using = kwargs.get("using") or (args[3] if len(args) > 3 else None) or router.db_for_write(
            type(obj), instance=obj)
        d = obj.__dict__
        if d.get(info.pk) is not None:
            old = snapshot_of(obj)
            # Old values this instance does not know: it was never loaded, or a deferred field was set.
            if old is None or len(old) < len(info.attnames):
                self._load_unknown(info, obj, old, using)
        connection = connections[using]
        in_block = connection.in_atomic_block
        one_statement = None if in_block else one_statement_save(self, info, obj, using, connection, args, kwargs)
        token = _saving.set((obj, using, connection, one_statement))
        try:
            if in_block:
                fold_begin(connection)
                return wrapped(*args, **kwargs)
            if one_statement is not None:
                with one_statement:
                    return wrapped(*args, **kwargs)
            with own_block(connection, using):
                fold_begin(connection)
                return wrapped(*args, **kwargs)
        finally:
            _saving.reset(token)

    def _collector_delete(self, wrapped: Any, collector: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Django's delete collector, deleting audited rows outside any block on MySQL: its block begins with
        ``BEGIN`` (see ``own_block``)."""
        if not any(self.info(model) is not None for model in collector.data):
            return wrapped(*args, **kwargs)
        connection = connections[collector.using]
        if connection.vendor != "mysql" or connection.in_atomic_block:
            return wrapped(*args, **kwargs)
        arm_begin(connection)
        try:
            return wrapped(*args, **kwargs)
        finally:
            disarm_begin(connection)

    def _load_unknown(self, info: ModelInfo, obj: Any, old: dict[str, Any] | None, using: str) -> None:
        d = obj.__dict__
        unknown = [a for a in info.attnames if a in d and (old is None or a not in old)]
        if not unknown or (old is None and obj._state.adding and obj._meta.pk.has_default()):
            return
        with self.auditor.recorder.guard(self.auditor, info.options.must_record):
            row = type(obj)._base_manager.using(using).filter(pk=d[info.pk]).values(*unknown).first()
            if old is None:
                old = d[OLD] = {}
            if row is not None:
                old.update(row)

    # -- receivers ---------------------------------------------------------------------------------------

    def post_save(self, sender: Any, instance: Any, created: bool, update_fields: Any = None,
                  using: str = "default", **_: Any) -> None:
        if auditing_suspended():
            return
        info = self.info(sender)
        if info is None:
            return
        recorder = self.auditor.recorder
        events: list[AuditEvent] = []
        with recorder.guard(self.auditor, info.options.must_record):
            if created:
                new = info.values(instance)
                events = recorder.change_events(info.options, "created", new.get(info.pk), {}, new)
                instance.__dict__[OLD] = new
            else:
                saving = _saving.get()
                if saving is not None and saving[0] is instance and saving[3] is not None and saving[3].recorded is not None:
                    return  # its events went with the UPDATE, in one statement (see one_statement): no diff to make
                events, changed = self.modified_events(info, instance, update_fields)
                self.remember(instance, changed)
        saving = _saving.get()
        self.emit(using, events, saving[2] if saving is not None and saving[0] is instance and saving[1] == using
                  else None)

    @staticmethod
    def remember(instance: Any, changed: dict[str, Any]) -> None:
        """``instance``'s snapshot takes the ``changed`` values its save wrote and recorded."""
        old = snapshot_of(instance)
        if old is None:
            old = instance.__dict__[OLD] = {}
        old.update(changed)

    def modified_events(self, info: ModelInfo, instance: Any, update_fields: Any) -> tuple[list[AuditEvent],
                                                                                          dict[str, Any]]:
        """The events of saving ``instance``, a row that exists (``update_fields``: the fields the save writes,
        all if None), and the values its snapshot takes once they are recorded. Run in the recorder's guard."""
        saved = info.attnames if update_fields is None else [
            info.model._meta.get_field(f).attname for f in update_fields]
        old = snapshot_of(instance) or {}
        d = instance.__dict__
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for attname in saved:
            if attname not in d:
                continue
            value = d[attname]
            if attname in old and _same(info.fields[attname], old[attname], value):
                continue
            before[attname] = old.get(attname)
            after[attname] = value
        if not after:
            return [], after
        changed = dict(after)
        label = info.label
        if label and label not in after and label in d:
            before[label] = after[label] = d[label]
        return self.auditor.recorder.change_events(info.options, "modified", d.get(info.pk), before, after), changed

    def pre_delete(self, sender: Any, instance: Any, using: str = "default", **_: Any) -> None:
        """Django's collector deletes in a block of its own: its BEGIN can go with the DELETE."""
        fold_begin(connections[using])

    def post_delete(self, sender: Any, instance: Any, using: str = "default", **_: Any) -> None:
        if auditing_suspended():
            return
        info = self.info(sender)
        if info is None:
            return
        recorder = self.auditor.recorder
        events: list[AuditEvent] = []
        with recorder.guard(self.auditor, info.options.must_record):
            values = {**(snapshot_of(instance) or {}), **info.values(instance)}
            events = recorder.change_events(info.options, "deleted", values.get(info.pk), values, {})
        self.emit(using, events)

    def m2m_changed(self, sender: Any, instance: Any, action: str, reverse: bool, model: Any,
                    pk_set: set[Any] | None, using: str, **_: Any) -> None:
        if auditing_suspended() or sender not in self._through:
            return
        info, field = self._through[sender]
        source = field.m2m_field_name()
        target = field.m2m_reverse_field_name()
        links = sender._base_manager.using(using)
        recorder = self.auditor.recorder
        with recorder.guard(self.auditor, info.options.must_record):
            if action.startswith("pre_"):
                if not reverse:
                    owners: list[Any] = [instance.pk]
                elif pk_set is not None:
                    owners = list(pk_set)
                else:
                    owners = list(links.filter(**{target: instance.pk}).values_list(source, flat=True))
                old: dict[Any, set[Any]] = {o: set() for o in owners}
                for start in range(0, len(owners), _CHUNK):
                    rows = links.filter(**{f"{source}__in": owners[start:start + _CHUNK]}).values_list(source, target)
                    for owner, linked in rows:
                        old.setdefault(owner, set()).add(linked)
                instance.__dict__.setdefault(M2M_OLD, {})[(sender, action[4:])] = old
                return
            if not action.startswith("post_"):
                return
            old = instance.__dict__.get(M2M_OLD, {}).pop((sender, action[5:]), None)
            if old is None:
                return
            verb = action[5:]
            changed = (pk_set or set()) if not reverse else {instance.pk}
            names: dict[Any, Any] = {}
            if info.label:
                if reverse:
                    names = dict(info.model._base_manager.using(using).filter(pk__in=list(old))
                                 .values_list(info.pk, info.label))
                else:
                    names = {instance.pk: instance.__dict__.get(info.label)}
            events: list[AuditEvent] = []
            for owner, before in old.items():
                if verb == "add":
                    after = before | changed
                elif verb == "remove":
                    after = before - changed
                else:
                    after = set() if not reverse else before - changed
                old_values: dict[str, Any] = {field.name: _sorted(before)}
                new_values: dict[str, Any] = {field.name: _sorted(after)}
                if info.label:
                    old_values[info.label] = new_values[info.label] = names.get(owner)
                events += recorder.change_events(info.options, "modified", owner, old_values, new_values)
        self.emit(using, events)

    # -- bulk operations ---------------------------------------------------------------------------------

    def _update(self, wrapped: Any, queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = self.info(queryset.model)
        if info is None or auditing_suspended() or _in_bulk.get():
            return wrapped(*args, **kwargs)
        using = queryset.db
        attnames = info.updated_attnames(kwargs)

        def run() -> Any:
            rows = queryset
            features = connections[using].features
            if features.has_select_for_update and not rows.query.distinct and not rows.query.combinator:
                rows = rows.select_for_update()
            old_rows = deque(rows.values_list(*attnames))  # tuples: a third of the memory of dicts
            count = wrapped(*args, **kwargs)
            if old_rows:
                self._record_updates(info, using, attnames, old_rows)
            return count

        return in_transaction(using, run)

    def _record_updates(self, info: ModelInfo, using: str, attnames: Sequence[str],
                        old_rows: deque[tuple[Any, ...]]) -> None:
        """One event per changed row, a chunk of rows at a time: each chunk's new values are read back by
        primary key and its events emitted, so that a large update's events can be written as they are made
        (see emit) rather than all held at once; each chunk's old rows are let go as it is made."""
        recorder = self.auditor.recorder
        origin = None
        while old_rows:
            chunk = [dict(zip(attnames, old_rows.popleft(), strict=True))
                     for _ in range(min(_CHUNK, len(old_rows)))]
            events: list[AuditEvent] = []
            with recorder.guard(self.auditor, info.options.must_record):
                origin = origin or recorder.origin()
                new_rows = {r[info.pk]: r for r in self._rows_by_pk(info, using, [r[info.pk] for r in chunk],
                                                                    attnames)}
                for row in chunk:
                    new = new_rows.get(row[info.pk])
                    if new is None:
                        continue
                    changed = [a for a in attnames if new[a] != row[a]]
                    if not changed:
                        continue
                    if info.label and info.label not in changed:
                        changed.append(info.label)
                    events += recorder.change_events(info.options, "modified", row[info.pk],
                                                     {a: row[a] for a in changed}, {a: new[a] for a in changed},
                                                     origin=origin)
            self.emit(using, events)

    @staticmethod
    def _rows_by_pk(info: ModelInfo, using: str, pks: Sequence[Any], attnames: Sequence[str] | None = None
                    ) -> list[dict[str, Any]]:
        manager = info.model._base_manager.using(using)
        columns = list(attnames or info.attnames)
        if info.pk not in columns:
            columns.append(info.pk)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(pks), _CHUNK):
            rows += manager.filter(pk__in=pks[start:start + _CHUNK]).values(*columns)
        return rows

    def _bulk_create(self, wrapped: Any, queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = self.info(queryset.model)
        if info is None or auditing_suspended():
            return wrapped(*args, **kwargs)
        objs = list(args[0] if args else kwargs.pop("objs"))
        using = queryset.db

        def run() -> Any:
            created = wrapped(objs, *args[1:], **kwargs)
            recorder = self.auditor.recorder
            now = datetime.now(timezone.utc)
            origin = None
            for start in range(0, len(created), _CHUNK):  # emitted a chunk at a time, as QuerySet.update()'s
                events: list[AuditEvent] = []
                with recorder.guard(self.auditor, info.options.must_record):
                    origin = origin or recorder.origin()
                    for obj in created[start:start + _CHUNK]:
                        new = info.values(obj)
                        obj.__dict__[OLD] = dict(new)
                        events += recorder.change_events(info.options, "created", new.get(info.pk), {}, new,
                                                         occurred_at=now, origin=origin)
                self.emit(using, events)
            return created

        return in_transaction(using, run)

    def _bulk_update(self, wrapped: Any, queryset: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        info = self.info(queryset.model)
        if info is None or auditing_suspended():
            return wrapped(*args, **kwargs)
        objs = list(args[0] if args else kwargs.pop("objs"))
        fields = list(args[1] if len(args) > 1 else kwargs.pop("fields"))
        rest = args[2:]
        using = queryset.db
        attnames = [info.model._meta.get_field(f).attname for f in fields]

        def run() -> Any:
            recorder = self.auditor.recorder
            olds: list[dict[str, Any] | None] = []
            with recorder.guard(self.auditor, info.options.must_record):
                olds = [snapshot_of(obj) for obj in objs]
                unknown = [obj.pk for obj, old in zip(objs, olds, strict=True)
                           if old is None or any(a not in old for a in attnames)]
                if unknown:
                    fetched = {r[info.pk]: r for r in self._rows_by_pk(info, using, unknown, attnames)}
                    for i, obj in enumerate(objs):
                        if obj.pk in fetched:
                            merged = {**(olds[i] or {}), **fetched[obj.pk]}
                            olds[i] = obj.__dict__[OLD] = merged
            token = _in_bulk.set(True)
            try:
                result = wrapped(objs, fields, *rest, **kwargs)
            finally:
                _in_bulk.reset(token)
            events: list[AuditEvent] = []
            with recorder.guard(self.auditor, info.options.must_record):
                now = datetime.now(timezone.utc)
                origin = recorder.origin()
                for obj, old in zip(objs, olds or [None] * len(objs), strict=True):
                    if old is None:
                        continue
                    d = obj.__dict__
                    changed = [a for a in attnames if a in d and not _same(info.fields[a], old.get(a), d[a])]
                    if not changed:
                        continue
                    before = {a: old.get(a) for a in changed}
                    after = {a: d[a] for a in changed}
                    old.update(after)
                    if info.label and info.label not in after and info.label in d:
                        before[info.label] = after[info.label] = d[info.label]
                    events += recorder.change_events(info.options, "modified", obj.pk, before, after,
                                                     occurred_at=now, origin=origin)
            self.emit(using, events)
            return result

        return in_transaction(using, run)


def _sorted(values: set[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)
