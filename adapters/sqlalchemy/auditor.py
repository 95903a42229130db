"""The SQLAlchemy auditor: capture on a session class, plus record/query/export/purge."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, Table, inspect
from sqlalchemy.exc import NoInspectionAvailable
from sqlalchemy.orm import Session, object_session, scoped_session, sessionmaker

from audit_middleware.actors import Actor
from audit_middleware.catalog import EventCatalog
from audit_middleware.config import AuditConfig
from audit_middleware.context import auditing_suspended
from audit_middleware.errors import AuditWriteError
from audit_middleware.events import AuditEvent
from audit_middleware.export import export_csv
from audit_middleware.forwarding import Destination, Drainer, Forwarding, Relay
from audit_middleware.integrity import Signer, VerifyReport
from audit_middleware.query import EventQuery, Page
from audit_middleware.recorder import Recorder
from audit_middleware.revert import RevertResult
from audit_middleware.signals import event_recorded
from audit_middleware.store import iter_events, retention_cutoff

from .capture import SessionCapture
from .integrity import DEFAULT_SEAL_DELAY
from .outbox import SQLAlchemyOutbox
from .revert import _ANY as _ANY_WORKSPACE
from .schema import audit_events, tables_of
from .store import EngineSource, SQLAlchemyStore, insert_events, set_signer


def _engine_of(target: Any) -> Engine | None:
    factory = target.session_factory if isinstance(target, scoped_session) else target
    if isinstance(factory, sessionmaker):
        bind = factory.kw.get("bind")
        if isinstance(bind, Engine):
            return bind
    return None


class SQLAlchemyAuditor:
    """Captures changes made through one session class and reads the trail back.

    Build it with :func:`track`. ``catalog`` holds every event name; define the app's own verbs with
    ``auditor.catalog.define("Warehouse Run Failed", category="Warehouses")``.
    """

    def __init__(
        self,
        target: Any,
        *,
        bind: EngineSource | None = None,
        config: AuditConfig | None = None,
        catalog: EventCatalog | None = None,
        table: Table = audit_events,
        destinations: Forwarding | Iterable[Destination] | None = None,
    ) -> None:
        self.recorder = Recorder(config, catalog)
        self.table = table
        engine = bind if bind is not None else _engine_of(target)
        # One store for the auditor's life: it keeps the page statements it built (one per filter shape).
        self._store = SQLAlchemyStore(engine, table) if engine is not None else None
        #: the transactional outbox when destinations are configured (see outbox.py), else None
        self.outbox: SQLAlchemyOutbox | None = None
        if destinations is not None:
            self.outbox = SQLAlchemyOutbox(lambda: self.store.engine, destinations, tables_of(table))
        #: signs every row inserted into ``table`` (see :mod:`audit_middleware.integrity`)
        self.signer = Signer.from_config(self.config.signing_key)
        set_signer(table, self.signer)
        self.target = target
        self._drainers: list[Drainer] = []
        self.capture = SessionCapture(self)
        self.capture.listen(target)
        self.capture.discover()

    # -- configuration -----------------------------------------------------------------------------------

    @property
    def catalog(self) -> EventCatalog:
        return self.recorder.catalog

    @property
    def config(self) -> AuditConfig:
        return self.recorder.config

    @property
    def store(self) -> SQLAlchemyStore:
        if self._store is None:
            raise RuntimeError(
                "track(Session) could not find the engine the audit tables live on: "
                "pass track(Session, bind=engine)"
            )
        return self._store

    def register(self, *models: Any) -> None:
        """Define the catalog events of these mapped classes now (they are otherwise defined when SQLAlchemy
        maps them or when they first change)."""
        for model in models:
            self.capture.info(inspect(model).mapper)

    def create_tables(self) -> None:
        """Create the audit tables and indexes if they do not exist (use Alembic in production)."""
        self.store.create_tables()

    def remove(self) -> None:
        """Stop capturing: remove every listener this auditor installed, and stop its in-process drainers."""
        self.capture.remove()
        self.stop_drainers()

    def stop_drainers(self) -> None:
        """Stop the drainer threads :meth:`start_drainer` started (also done when a newer auditor takes the
        capture of this one's session target over: that one forwards from then on)."""
        drainers, self._drainers = self._drainers, []
        for drainer in drainers:
            drainer.disconnect()
            drainer.stop()

    # -- recording app verbs -----------------------------------------------------------------------------

    def record(
        self,
        name: str,
        resource: Any = None,
        *,
        details: Mapping[str, Any] | None = None,
        session: Session | scoped_session[Session] | None = None,
        resource_type: str | None = None,
        resource_id: Any = None,
        resource_name: Any = None,
    ) -> AuditEvent | None:
        """Record an app event such as ``"Warehouse Run Failed"``.

        ``resource`` may be a tracked model instance (its type, id and label are used) or None with the
        ``resource_*`` arguments. With ``session`` the event is written in that session's transaction and
        stands or falls with it; without, it is committed at once in a transaction of its own. Either way it goes
        to the resource's database when the session binds its model to another engine than the auditor's.
        Raises :class:`~audit_middleware.errors.AuditWriteError` when the event cannot be written.
        Raises :class:`~audit_middleware.errors.UnknownEventError` for a name the catalog lacks.
        """
        definition = self.catalog.get(name)
        if auditing_suspended():
            return None
        mapper = None
        if resource is not None:
            mapper, resource_type, resource_id, resource_name = self._describe(resource, resource_type)
        event = self.recorder.event(
            definition, resource_type=resource_type, resource_id=resource_id, resource_name=resource_name,
            details=details,
        )
        if session is not None:
            if isinstance(session, scoped_session):  # Flask-SQLAlchemy's db.session: the current session
                session = session()
            # the resource's database (a session may bind its mappers to several), else the session's one
            connection = session.connection(bind_arguments={"mapper": mapper}) if mapper else session.connection()
            insert_events(connection, [event], self.table)
            if self.outbox is not None:
                self.outbox.write(connection, [event])
            self.capture.hold(session, [event])
        else:
            # the resource's database (its mapper may be bound to another engine than the auditor's), else ours
            engine = (self._engine_of_mapper(resource, mapper) if mapper is not None else None) or self.store.engine
            try:
                with engine.begin() as connection:
                    insert_events(connection, [event], self.table)
                    if self.outbox is not None:
                        self.outbox.write(connection, [event])
            except Exception as error:
                raise AuditWriteError(
                    f"could not write the audit event {name!r} to {engine.url.render_as_string(hide_password=True)}"
                    f": {type(error).__name__}: {error}") from error
            event_recorded.send(self, events=[event])
        return event

    def _engine_of_mapper(self, resource: Any, mapper: Any) -> Engine | None:
        """The engine a session binds ``mapper`` to: the resource's own session's, or for a detached resource a
        new session's from the tracked factory (``sessionmaker(binds={...})``, Flask-SQLAlchemy's bind keys).
        None where no session can tell, and the auditor's engine is used."""
        session = object_session(resource)
        made = None
        try:
            if session is None:
                factory = self.target.session_factory if isinstance(self.target, scoped_session) else self.target
                if not isinstance(factory, sessionmaker):
                    return None
                session = made = factory()
            bind = session.get_bind(mapper=mapper)
        except Exception:  # noqa: BLE001 - no bind to tell (an unbound factory, no app context): the default
            return None
        finally:
            if made is not None:
                made.close()
        return bind if isinstance(bind, Engine) else bind.engine

    def _describe(self, resource: Any, resource_type: str | None) -> tuple[Any, str | None, Any, Any]:
        """``(mapper, resource type, id, name)`` of a mapped instance."""
        try:
            state = inspect(resource)
        except NoInspectionAvailable:
            raise TypeError(
                f"record(resource=...) takes a mapped model instance, not {type(resource).__name__}; "
                "pass resource_type=, resource_id=, resource_name= instead"
            ) from None
        info = self.capture.info(state.mapper)
        if info is None:
            raise TypeError(f"{type(resource).__name__} is not audited (__audit__ = False)")
        if state.identity is not None:
            values = dict(zip(info.pk_keys, state.identity, strict=True))
        else:
            values = {k: getattr(resource, k) for k in info.pk_keys}
        label = info.options.label
        name = getattr(resource, label) if label else None
        return state.mapper, resource_type or info.options.resource, info.resource_id(values), name

    # -- forwarding ---------------------------------------------------------------------------------------

    def _outbox(self) -> SQLAlchemyOutbox:
        if self.outbox is None:
            raise RuntimeError("forwarding is not configured: pass track(Session, destinations=[...])")
        return self.outbox

    def relay(self, **options: Any) -> Relay:
        """A :class:`~audit_middleware.forwarding.Relay` over this auditor's outbox (``batch``, ``lease``, ``poll``)."""
        outbox = self._outbox()
        return Relay(outbox, outbox.forwarding, **options)

    def start_drainer(self, *, poll: float = 5.0, **options: Any) -> Drainer:
        """Forward from a thread of this process, woken after each commit of events (for apps with no
        worker running ``audit-middleware forward``). Never blocks a request; restarts in forked children."""
        drainer = Drainer(self.relay(**options), poll=poll).connect(self)
        self._drainers.append(drainer)
        return drainer

    # -- reading the trail -------------------------------------------------------------------------------

    def query(self, query: EventQuery | None = None, **filters: Any) -> Page:
        """One page of events, newest first: ``auditor.query(actor="ada@example.com", limit=20)``."""
        return self.store.query(query if query is not None else EventQuery(**filters))

    def iter_events(self, query: EventQuery | None = None, **filters: Any) -> Iterator[AuditEvent]:
        return iter_events(self.store, query if query is not None else EventQuery(**filters))

    def export_csv(self, query: EventQuery | None = None, **filters: Any) -> Iterator[str]:
        """The CSV of every matching event, streamed in chunks of rows (see :class:`~audit_middleware.export.CsvExport`)."""
        return export_csv(self.store, query if query is not None else EventQuery(**filters))

    def purge(self, *, retention_days: int | None = None, batch_size: int | None = None) -> int:
        """Delete events older than the retention (90 days unless configured); returns how many."""
        days = retention_days if retention_days is not None else self.config.retention_days
        return self.store.purge(retention_cutoff(days), batch_size or self.config.purge_batch_size)

    # -- tamper evidence and revert -------------------------------------------------------------------------

    def revert(
        self,
        event_id: str,
        *,
        actor: Actor | None = None,
        force: bool = False,
        confirm: bool = False,
        session: Session | None = None,
        workspace_id: Any = _ANY_WORKSPACE,
        model: Any = None,
    ) -> RevertResult:
        """Undo an event: Modified/Enabled/Disabled restore the old values of the fields it changed, Deleted
        recreates the row from its snapshot (masked fields cannot be restored and are listed in the result),
        Created deletes the row (only with ``confirm=True``).

        The revert is a normal change, recorded by capture as ``actor`` (default: the current actor) in the
        event's workspace with ``reverted_event_id`` in its context. Raises
        :class:`~audit_middleware.revert.RevertConflict` naming the fields that changed since the event unless
        ``force=True``; :class:`~audit_middleware.revert.RevertError` when it cannot be reverted at all.
        ``workspace_id`` refuses events of other workspaces (admin views pass the viewer's); ``session`` does
        the work in the caller's session and transaction (flushed, not committed); ``model`` picks the mapped
        class when several record the same resource type.
        """
        from .revert import revert

        return revert(self, event_id, actor=actor, force=force, confirm=confirm, session=session,
                      workspace_id=workspace_id, model=model)

    def seal(self, *, delay: timedelta = DEFAULT_SEAL_DELAY) -> int:
        """Write sealed digests for every event older than ``delay``; returns how many digests."""
        integrity = self.store.integrity()
        assert integrity is not None
        return integrity.seal(delay=delay)

    def verify(self, *, seal_first: bool = True, delay: timedelta = DEFAULT_SEAL_DELAY) -> VerifyReport:
        """Check the trail: every row hash, every digest chain, every sealed range (see README)."""
        integrity = self.store.integrity()
        assert integrity is not None
        return integrity.verify(seal_first=seal_first, delay=delay)


def track(
    target: Any,
    *,
    bind: EngineSource | Callable[[], Engine] | None = None,
    config: AuditConfig | None = None,
    catalog: EventCatalog | None = None,
    destinations: Forwarding | Iterable[Destination] | None = None,
    **config_options: Any,
) -> SQLAlchemyAuditor:
    """Audit every mapped model changed through ``target`` (a sessionmaker, scoped_session or Session class).

    ``bind`` is the engine holding the audit tables (found from the sessionmaker when it has one).
    ``destinations`` (Segment, webhook, Slack destinations) turns on the forwarding outbox: each event
    recorded in a workspace where a destination is On gets a delivery row in the same transaction.
    Keyword options such as ``retention_days=30`` or ``extra_masked_fields=["iban"]`` build the
    :class:`~audit_middleware.config.AuditConfig`.
    """
    if config is not None and config_options:
        raise TypeError("pass either config= or config keyword options, not both")
    if config is None:
        config = AuditConfig(**config_options)
    return SQLAlchemyAuditor(target, bind=bind, config=config, catalog=catalog, destinations=destinations)
