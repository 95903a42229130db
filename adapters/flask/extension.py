"""The Flask extension: capture through the SQLAlchemy adapter, a lazy request scope, the admin blueprint."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Flask, current_app, g, has_app_context, has_request_context, request

from audit_middleware.actors import Actor
from audit_middleware.adapters.sqlalchemy import SQLAlchemyAuditor, SQLAlchemyStore
from audit_middleware.adapters.sqlalchemy.schema import define_tables
from audit_middleware.catalog import EventCatalog
from audit_middleware.config import DEFAULT_RETENTION_DAYS, AuditConfig
from audit_middleware.context import RequestContext, RequestScope, add_scope_finder
from audit_middleware.diff import DEFAULT_TOGGLE_FIELDS
from audit_middleware.events import AuditEvent
from audit_middleware.query import DEFAULT_LIMIT, MAX_LIMIT, EventQuery, Page

from .request import TokenLoader, UserLoader, request_facts, resolve_actor
from .views import make_blueprint

EXTENSION_KEY = "audit_middleware"
_SCOPE_KEY = "_audit_middleware_scope"

CONFIG_DEFAULTS: dict[str, Any] = {
    "AUDIT_TRAIL_URL_PREFIX": "/admin/audit-trail",
    "AUDIT_TRAIL_RETENTION_DAYS": DEFAULT_RETENTION_DAYS,
    "AUDIT_TRAIL_PAGE_SIZE": DEFAULT_LIMIT,
    "AUDIT_TRAIL_TOGGLE_FIELDS": DEFAULT_TOGGLE_FIELDS,
    "AUDIT_TRAIL_MASKED_FIELDS": None,
    "AUDIT_TRAIL_EXTRA_MASKED_FIELDS": (),
    "AUDIT_TRAIL_TRUSTED_PROXIES": 0,
    "AUDIT_TRAIL_REQUEST_ID_HEADER": "X-Request-ID",
    "AUDIT_TRAIL_SESSION_USER_KEY": "user_id",
    "AUDIT_TRAIL_USER_NAME_ATTRIBUTES": ("email", "username", "name"),
    "AUDIT_TRAIL_DESTINATIONS": None,
    "AUDIT_TRAIL_FORWARD_IN_PROCESS": False,
    "AUDIT_TRAIL_SIGNING_KEY": None,
    "AUDIT_TRAIL_CAN_REVERT": None,
}


class AuditTrail:
    """Audit trail and admin view for a Flask app::

        audit = AuditTrail(app, db, can_view=lambda: current_user.is_owner)

    or ``audit = AuditTrail(db=db, ...)`` then ``audit.init_app(app)``. Every model changed through ``db.session``
    (Flask-SQLAlchemy) or through ``session=`` (any SQLAlchemy sessionmaker or scoped_session, with ``bind=``
    the engine holding the audit table when the sessionmaker has none) is audited. With Flask-SQLAlchemy the
    audit table is added to ``db.metadata``, so ``db.create_all()`` and Flask-Migrate create it.

    :param can_view: ``() -> bool``, whether the current user may open the admin view. Without it every
        request to the view gets a 403.
    :param token_loader: ``(token) -> Actor | None`` for ``Authorization: Bearer <token>`` requests; return
        ``Actor.token(token_id, label)`` (the token itself is never stored).
    :param workspace_loader: ``() -> str | None``, the current workspace (tenant); every event is recorded in
        it and the admin view shows only its events. Without it the app has no workspaces.
    :param user_loader: ``(user_id) -> user | Actor | None`` for apps without Flask-Login that keep the user id
        in the session (``AUDIT_TRAIL_SESSION_USER_KEY``).
    :param catalog: an :class:`~audit_middleware.catalog.EventCatalog` to share; ``audit.catalog`` otherwise.
    :param can_revert: ``() -> bool``, whether a viewer may also use the Revert buttons (default: every
        viewer; ``AUDIT_TRAIL_CAN_REVERT`` does the same from the config).

    The actor of an event is resolved only when an event is recorded, in this order: Flask-Login's
    ``current_user`` when authenticated; the user id in the session; a Bearer token through ``token_loader``;
    anonymous. A request that records nothing loads no user and runs no query.

    Configuration keys (``app.config``), with their defaults:

    ``AUDIT_TRAIL_URL_PREFIX`` (``"/admin/audit-trail"``)
        Where the admin blueprint is mounted; ``None`` mounts no admin view.
    ``AUDIT_TRAIL_RETENTION_DAYS`` (``90``)
        Events older than this are never shown (and are removed by ``audit.purge()``).
    ``AUDIT_TRAIL_PAGE_SIZE`` (``50``)
        Rows per page in the admin view when no ``limit`` is given (1 to 500).
    ``AUDIT_TRAIL_TOGGLE_FIELDS`` (``("enabled", "is_enabled", "active", "is_active")``)
        Boolean fields whose flip records "X Enabled" / "X Disabled".
    ``AUDIT_TRAIL_MASKED_FIELDS`` (``None``: password, secret, token, api_key, ...)
        Field names whose values are never stored, replacing the defaults;
        ``AUDIT_TRAIL_EXTRA_MASKED_FIELDS`` (``()``) adds to them instead.
    ``AUDIT_TRAIL_TRUSTED_PROXIES`` (``0``)
        How many reverse proxies in front of the app append to X-Forwarded-For; with 0 the socket's
        address is the client's.
    ``AUDIT_TRAIL_REQUEST_ID_HEADER`` (``"X-Request-ID"``)
        Header whose value becomes the event's request id; a new id is generated when absent or malformed.
    ``AUDIT_TRAIL_SESSION_USER_KEY`` (``"user_id"``)
        Session key holding the logged-in user's id, for apps without Flask-Login.
    ``AUDIT_TRAIL_USER_NAME_ATTRIBUTES`` (``("email", "username", "name")``)
        User attributes tried, in order, for the actor's display name.
    ``AUDIT_TRAIL_DESTINATIONS`` (None)
        Forwarding destinations (``SegmentDestination``, ``WebhookDestination``, ``SlackDestination``); each
        workspace turns them On on the Forwarding page. Relays: ``audit-middleware forward``.
    ``AUDIT_TRAIL_FORWARD_IN_PROCESS`` (False)
        Forward from a thread of the app process, woken after each commit, for apps that run no relay.
    ``AUDIT_TRAIL_SIGNING_KEY`` (None: ``$AUDIT_SIGNING_KEY``)
        Key of the row and digest hashes (tamper evidence; ``audit-middleware verify`` needs the same key).
    ``AUDIT_TRAIL_CAN_REVERT`` (None: whoever may view)
        ``() -> bool``: who may use the Revert buttons.

    The capture settings (toggle and masked fields) are read from the first app the extension is
    initialised on. The extension is stored in ``app.extensions["audit_middleware"]``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: Any = None,
        *,
        session: Any = None,
        bind: Any = None,
        can_view: Callable[[], bool] | None = None,
        token_loader: TokenLoader | None = None,
        workspace_loader: Callable[[], str | None] | None = None,
        user_loader: UserLoader | None = None,
        catalog: EventCatalog | None = None,
        can_revert: Callable[[], bool] | None = None,
    ) -> None:
        if db is not None and session is not None:
            raise TypeError("pass either db (Flask-SQLAlchemy) or session= (a SQLAlchemy session factory), not both")
        self.db = db
        self.session = session
        self.bind = bind
        self.can_view = can_view
        self.can_revert = can_revert
        self.token_loader = token_loader
        self.workspace_loader = workspace_loader
        self.user_loader = user_loader
        self.catalog = catalog if catalog is not None else EventCatalog()
        self._auditor: SQLAlchemyAuditor | None = None
        self._lock = threading.Lock()
        self.blueprint = make_blueprint(self)
        if app is not None:
            self.init_app(app)

    # -- setup ---------------------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``: config defaults, request hooks and the admin blueprint."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "audit-middleware is already registered on this app; create one AuditTrail per app "
                "(or call init_app once)"
            )
        for key, value in CONFIG_DEFAULTS.items():
            app.config.setdefault(key, value)
        if self.db is None and self.session is None:
            self.db = app.extensions.get("sqlalchemy")
            if self.db is None:
                raise RuntimeError(
                    "AuditTrail needs the app's Flask-SQLAlchemy db (AuditTrail(app, db)) or a SQLAlchemy "
                    "session factory (AuditTrail(app, session=Session, bind=engine))"
                )
        page_size = int(app.config["AUDIT_TRAIL_PAGE_SIZE"])
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"AUDIT_TRAIL_PAGE_SIZE must be between 1 and {MAX_LIMIT}, got {page_size}")
        self._make_auditor(app)
        app.extensions[EXTENSION_KEY] = self
        # No per-request hook: the request scope is made on the first event a request records (see
        # _request_scope), so a request that records nothing costs nothing.
        add_scope_finder(_request_scope)
        prefix = app.config["AUDIT_TRAIL_URL_PREFIX"]
        if prefix:
            app.register_blueprint(self.blueprint, url_prefix=prefix)

    def _make_auditor(self, app: Flask) -> None:
        with self._lock:
            if self._auditor is not None:
                return
            config = AuditConfig(
                retention_days=int(app.config["AUDIT_TRAIL_RETENTION_DAYS"]),
                masked_fields=app.config["AUDIT_TRAIL_MASKED_FIELDS"],
                extra_masked_fields=tuple(app.config["AUDIT_TRAIL_EXTRA_MASKED_FIELDS"]),
                toggle_fields=tuple(app.config["AUDIT_TRAIL_TOGGLE_FIELDS"]),
                trusted_proxies=int(app.config["AUDIT_TRAIL_TRUSTED_PROXIES"]),
                signing_key=app.config["AUDIT_TRAIL_SIGNING_KEY"],
            )
            if self.db is not None:
                db = self.db
                table = db.metadata.tables.get("audit_events")
                if table is None:
                    table = define_tables(db.metadata).events
                # A model with a __bind_key__ has its events written to its own database, in its transaction:
                # the tables go on every bind's metadata too, so that db.create_all() (and Flask-Migrate's
                # multi-database setup) creates them wherever audited rows live.
                for bind_metadata in db.metadatas.values():
                    if "audit_events" not in bind_metadata.tables:
                        define_tables(bind_metadata)

                def engine() -> Any:
                    # db.engine needs an app context; relays and the in-process drainer run without one
                    if has_app_context():
                        return db.engine
                    with app.app_context():
                        return db.engine

                self._auditor = SQLAlchemyAuditor(
                    db.session, bind=engine, config=config, catalog=self.catalog, table=table,
                    destinations=app.config["AUDIT_TRAIL_DESTINATIONS"],
                )
            else:
                self._auditor = SQLAlchemyAuditor(self.session, bind=self.bind, config=config, catalog=self.catalog,
                                                  destinations=app.config["AUDIT_TRAIL_DESTINATIONS"])
            if app.config["AUDIT_TRAIL_FORWARD_IN_PROCESS"] and self._auditor.outbox is not None:
                self.drainer = self._auditor.start_drainer()

    @property
    def auditor(self) -> SQLAlchemyAuditor:
        """The SQLAlchemy auditor doing the capture (exists once ``init_app`` ran)."""
        if self._auditor is None:
            raise RuntimeError("AuditTrail is not initialised yet: call audit.init_app(app) first")
        return self._auditor

    @property
    def store(self) -> SQLAlchemyStore:
        return self.auditor.store

    def create_tables(self) -> None:
        """Create the audit table if missing (inside an app context; ``db.create_all()`` does it too)."""
        self.auditor.create_tables()

    # -- per request ---------------------------------------------------------------------------------------

    def request_scope(self) -> RequestScope:
        """The current request's scope, made once per request: only closures, nothing is loaded or queried
        until an event needs the actor, the request facts or the workspace."""
        scope: RequestScope | None = g.get(_SCOPE_KEY)
        if scope is None:
            scope = RequestScope(
                actor_loader=self._load_actor,
                request_loader=self._load_request,
                workspace_loader=self._load_workspace if self.workspace_loader is not None else None,
            )
            setattr(g, _SCOPE_KEY, scope)
        return scope

    def _load_actor(self) -> Actor:
        return resolve_actor(user_loader=self.user_loader, token_loader=self.token_loader)

    def _load_request(self) -> RequestContext:
        return request_facts(request._get_current_object(), current_app._get_current_object())  # type: ignore[attr-defined]

    def _load_workspace(self) -> str | None:
        assert self.workspace_loader is not None
        workspace = self.workspace_loader()
        return None if workspace is None else str(workspace)

    def viewer_workspace(self) -> tuple[bool, str | None]:
        """``(scoped, workspace_id)`` of the current viewer."""
        if self.workspace_loader is None:
            return False, None
        return True, self._load_workspace()

    def allowed(self) -> bool:
        """Whether the current request may open the admin view (``can_view``; denied without it)."""
        return bool(self.can_view is not None and self.can_view())

    # -- recording and reading -----------------------------------------------------------------------------

    def record(self, name: str, resource: Any = None, *, details: Mapping[str, Any] | None = None,
               **options: Any) -> AuditEvent | None:
        """Record an app event such as ``"Warehouse Run Failed"`` (define it once in ``audit.catalog``).

        ``resource`` is a model instance or None with ``resource_type=``/``resource_id=``/``resource_name=``;
        ``session=db.session`` writes the event in that session's transaction, otherwise it is committed at once.
        """
        return self.auditor.record(name, resource, details=details, **options)

    def query(self, query: EventQuery | None = None, **filters: Any) -> Page:
        return self.auditor.query(query, **filters)

    def iter_events(self, query: EventQuery | None = None, **filters: Any) -> Iterator[AuditEvent]:
        return self.auditor.iter_events(query, **filters)

    def purge(self, *, retention_days: int | None = None) -> int:
        return self.auditor.purge(retention_days=retention_days)


def _request_scope() -> RequestScope | None:
    """The scope finder (see :func:`audit_middleware.context.add_scope_finder`): in a request of an app with
    an AuditTrail, that extension's scope for the request."""
    if not has_request_context():
        return None
    audit = current_app.extensions.get(EXTENSION_KEY)
    return audit.request_scope() if isinstance(audit, AuditTrail) else None
