"""The demo workspace app: a Segment-like customer-data workspace with the audit trail on.

``create_app(database_url)`` builds it; ``run.py`` creates the SQLite file, seeds it and serves it. Every one
of the 66 events of Segment's audit catalog can be produced from its pages (HTML forms, signed-in users) or
its API (``/api/v1/...``, ``Authorization: Bearer <access token>``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException

from audit_middleware import Actor, EventQuery, acting_as, in_workspace
from audit_middleware.adapters.flask import AuditTrail, csrf_token, validate_csrf
from audit_middleware.signals import event_recorded

from .models import (
    AccessToken,
    Audience,
    ComputedTrait,
    DestinationFilter,
    DestinationFunction,
    EngageWarehouseSource,
    Integration,
    Invite,
    Membership,
    ObservedEvent,
    PlanConnection,
    ReceivedMessage,
    Source,
    SourceFunction,
    Space,
    SpaceSource,
    TrackingPlan,
    TrackingPlanEvent,
    User,
    UserGroup,
    UserGroupMember,
    Warehouse,
    WarehouseRun,
    Workspace,
    db,
    utcnow,
)

# Segment's verbs that are not one of the five generic ones: defined once, recorded where they happen.
APP_EVENTS: dict[str, tuple[str, ...]] = {
    "Access Management": (
        "User Invite Sent", "User Invite Deleted", "User Invite Accepted", "User Added via SSO", "User Removed",
        "User Group Created", "User Group Updated",
    ),
    "Warehouses": ("Warehouse Run Failed",),
    "Protocols": (
        "Source Connected to Tracking Plan", "Source Disconnected From Tracking Plan", "Tracking Plan Inferred",
        "Tracking Plan New Event Blocked", "Tracking Plan New Event Allowed",
        "Tracking Plan New Group Trait Omitted", "Tracking Plan New Identify Trait Omitted",
        "Tracking Plan New Track Property Omitted", "Tracking Plan Operations Updated", "Tracking Plan Updated",
        "Violations Detected",
    ),
    "Engage": (
        "Source Connected To Space", "Source Disconnected From Space",
        "Computed Trait CSV Downloaded", "Computed Trait Run Failed", "Computed Trait Destination Sync Failed",
        "Audience CSV Downloaded", "Audience Run Failed", "Audience Destination Sync Failed",
    ),
}

SEGMENT_WRITE_KEY = "demo-audit-source-write-key"  # the local receiver's "HTTP API source"
SLACK_HOOK_PATH = "/receiver/slack/services/T0DEMO/B0AUDIT/alerts"
SLACK_RULES = ["* Disabled", "* Deleted", "* Run Failed", "* Sync Failed", "Violations Detected", "User Removed",
               "Forwarding Test Sent"]


# -- resource kinds: one table each, edited through the same generic pages and API ----------------------------


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    type: str = "text"  # text | textarea | select | bool | secret | ref
    choices: tuple[str, ...] = ()
    ref: str | None = None  # slug of the referenced kind


@dataclass(frozen=True)
class Kind:
    slug: str
    model: Any
    title: str
    singular: str
    section: str
    fields: tuple[Field, ...]
    toggle: bool = False
    blurb: str = ""
    columns: tuple[str, ...] = field(default=("name",))


KINDS: dict[str, Kind] = {k.slug: k for k in (
    Kind("sources", Source, "Sources", "Source", "Connections", (
        Field("name", "Name"),
        Field("kind", "Type", "select", ("Javascript", "HTTP API", "iOS", "Android", "Node.js", "Python")),
    ), toggle=True, blurb="Where your data comes from. Each source has a write key.", columns=("name", "kind")),
    Kind("integrations", Integration, "Destinations", "Destination", "Connections", (
        Field("name", "Name"),
        Field("destination", "Destination", "select",
              ("Google Analytics 4", "Amplitude", "Mixpanel", "Braze", "Webhooks", "Slack")),
        Field("source_id", "Source", "ref", ref="sources"),
        Field("api_key", "API key", "secret"),
    ), toggle=True, blurb="Integrations: where a source's events are sent.", columns=("name", "destination")),
    Kind("source-functions", SourceFunction, "Source Functions", "Source Function", "Connections", (
        Field("name", "Name"), Field("description", "Description"), Field("code", "Code", "textarea"),
    )),
    Kind("destination-functions", DestinationFunction, "Destination Functions", "Destination Function",
         "Connections", (Field("name", "Name"), Field("description", "Description"),
                         Field("code", "Code", "textarea"))),
    Kind("destination-filters", DestinationFilter, "Destination Filters", "Destination Filter", "Connections", (
        Field("name", "Name"),
        Field("integration_id", "Destination", "ref", ref="integrations"),
        Field("condition", "If (FQL)"),
        Field("action", "Then", "select", ("drop", "sample", "drop properties", "allow properties")),
        Field("enabled", "Enabled", "bool"),
    ), columns=("name", "action")),
    Kind("warehouses", Warehouse, "Warehouses", "Warehouse", "Connections", (
        Field("name", "Name"),
        Field("kind", "Type", "select", ("BigQuery", "Snowflake", "Redshift", "Postgres", "Databricks")),
        Field("host", "Host"), Field("database", "Database"),
        Field("sync_schedule", "Sync schedule", "select", ("every hour", "every 6 hours", "every day")),
        Field("password", "Password", "secret"),
    ), toggle=True, columns=("name", "kind")),
    Kind("tracking-plans", TrackingPlan, "Tracking Plans", "Tracking Plan", "Protocols", (
        Field("name", "Name"), Field("description", "Description"),
    )),
    Kind("spaces", Space, "Spaces", "Space", "Engage", (
        Field("name", "Name"), Field("description", "Description"),
    )),
    Kind("computed-traits", ComputedTrait, "Computed Traits", "Computed Trait", "Engage", (
        Field("name", "Name"), Field("space_id", "Space", "ref", ref="spaces"),
        Field("kind", "Type", "select", ("Event counter", "Aggregation", "Most frequent", "First", "Last")),
        Field("definition", "Definition"),
    ), columns=("name", "kind")),
    Kind("audiences", Audience, "Audiences", "Audience", "Engage", (
        Field("name", "Name"), Field("space_id", "Space", "ref", ref="spaces"),
        Field("definition", "Definition"),
    )),
    Kind("engage-warehouse-sources", EngageWarehouseSource, "Engage Warehouse Sources",
         "Engage Warehouse Source", "Engage", (
             Field("name", "Name"), Field("space_id", "Space", "ref", ref="spaces"),
             Field("warehouse_id", "Warehouse", "ref", ref="warehouses"), Field("query", "Query", "textarea"),
         )),
)}


class DemoError(Exception):
    """A request the demo refuses, with its status (answered as a flash message or JSON)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- the app -------------------------------------------------------------------------------------------------


def create_app(database_url: str, *, public_url: str | None = None, secret_key: str | None = None,
               forward_in_process: bool = False, testing: bool = False) -> Flask:
    """The demo app on ``database_url``. ``public_url`` (``http://127.0.0.1:8000``) turns on forwarding to the
    built-in receiver (a Segment-style HTTP API source and a Slack-style channel, served by this same app)."""
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        SECRET_KEY=secret_key or secrets.token_hex(32),
        TESTING=testing,
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 30}} if database_url.startswith("sqlite") else {},
        DEMO_PUBLIC_URL=public_url,
    )
    if public_url:
        from audit_middleware.forwarding import SegmentDestination, SlackDestination

        app.config["AUDIT_TRAIL_DESTINATIONS"] = [
            SegmentDestination(SEGMENT_WRITE_KEY, host=f"{public_url}/receiver/segment", allow_private=True),
            SlackDestination(f"{public_url}{SLACK_HOOK_PATH}", rules=SLACK_RULES, allow_private=True,
                             admin_url=f"{public_url}/admin/audit-trail/", min_interval=0.2),
        ]
    db.init_app(app)
    audit = AuditTrail(
        app, db,
        can_view=lambda: g.get("role") == "owner",
        token_loader=load_token_actor,
        workspace_loader=lambda: g.get("workspace_id"),
        # the API authenticates by token only: a session cookie sent along must not make its user the actor
        user_loader=lambda user_id: None if is_api() else db.session.get(User, int(user_id)),
    )
    for category, names in APP_EVENTS.items():
        for name in names:
            resource = name.split(" ")[0] if category != "Access Management" else None
            audit.catalog.define(name, category, resource=resource)
    app.extensions["demo_audit"] = audit
    app.jinja_env.globals.update(csrf_token=csrf_token, KINDS=KINDS, SECTIONS=sections())
    app.jinja_env.filters["mrkdwn"] = mrkdwn

    app.before_request(authenticate)
    app.context_processor(lambda: {"me": g.get("user"), "workspace": g.get("workspace"),
                                   "role": g.get("role"), "memberships": g.get("memberships", [])})
    register_errors(app)
    register_routes(app, audit)
    with app.app_context():
        db.create_all()
        audit.auditor.register(*[k.model for k in KINDS.values()])
    if public_url and forward_in_process:
        start_relay_thread(app, audit)
    return app


def start_relay_thread(app: Flask, audit: AuditTrail, poll: float = 2.0) -> threading.Thread:
    """Forward from a thread of this process, woken after each commit of events.

    The library's ``AUDIT_TRAIL_FORWARD_IN_PROCESS`` drainer cannot be used with Flask-SQLAlchemy yet (its
    thread has no app context, so ``db.engine`` fails); this loop is the same relay inside an app context.
    """
    relay = audit.auditor.relay()
    wake = threading.Event()
    event_recorded.connect(lambda *_a, **_k: wake.set(), sender=audit.auditor, weak=False)

    def loop() -> None:
        while True:
            wake.clear()
            with app.app_context():
                try:
                    relay.drain()
                except Exception:  # a database hiccup: log it, try again on the next wake-up
                    app.logger.exception("forwarding round failed")
            wake.wait(poll)

    thread = threading.Thread(target=loop, name="demo-audit-forwarding", daemon=True)
    thread.start()
    return thread


def mrkdwn(text: str) -> Markup:
    """Slack's mrkdwn, enough of it for the receiver page: *bold*, `code`, <url|label> links; Slack's own
    &amp; &lt; &gt; entities are read back before the text is escaped for HTML."""

    def plain(part: str) -> str:
        raw = part.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        html = str(escape(raw))
        html = re.sub(r"\*([^*\n]+)\*", r"<strong>\1</strong>", html)
        return re.sub(r"`([^`\n]+)`", r"<code>\1</code>", html)

    pieces = re.split(r"<(https?://[^|>\s]+)\|([^>]+)>", text)
    out = []
    for i in range(0, len(pieces), 3):
        out.append(plain(pieces[i]))
        if i + 2 < len(pieces):
            out.append(f'<a href="{escape(pieces[i + 1])}">{plain(pieces[i + 2])}</a>')
    return Markup("".join(out))


def sections() -> list[tuple[str, list[Kind]]]:
    out: dict[str, list[Kind]] = {}
    for kind in KINDS.values():
        out.setdefault(kind.section, []).append(kind)
    return list(out.items())


def is_api() -> bool:
    return request.path.startswith("/api/")


def load_token_actor(secret: str) -> Actor | None:
    token = g.get("token")
    if token is None:
        token = db.session.scalar(db.select(AccessToken).filter_by(secret_sha256=token_digest(secret)))
    return None if token is None else Actor.token(token.id, token.label, secret=secret)


def authenticate() -> Any:
    """Who is asking, and in which workspace: a session user on the pages, an access token on /api/."""
    path = request.path
    if path.startswith("/static/") or path.startswith("/v1/") or request.endpoint in ("receive_segment",
                                                                                      "receive_slack"):
        return None  # ingestion and the receiver's endpoints authenticate with their own keys
    if is_api():
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        token = None
        if scheme.lower() == "bearer" and secret.strip():
            token = db.session.scalar(db.select(AccessToken).filter_by(secret_sha256=token_digest(secret.strip())))
        if token is None:
            return jsonify({"error": "send Authorization: Bearer <access token>"}), 401
        g.token = token
        g.workspace_id = token.workspace_id
        g.workspace = db.session.get(Workspace, token.workspace_id)
        g.role = "token"
        return None
    user_id = session.get("user_id")
    user = db.session.get(User, int(user_id)) if user_id is not None else None
    if user is not None:
        memberships = db.session.scalars(db.select(Membership).filter_by(user_id=user.id)).all()
        g.user = user
        g.memberships = [(m, db.session.get(Workspace, m.workspace_id)) for m in memberships]
        current = next((m for m in memberships if m.workspace_id == session.get("workspace_id")), None)
        if current is None and memberships:
            current = memberships[0]
            session["workspace_id"] = current.workspace_id
        if current is not None:
            g.workspace_id = current.workspace_id
            g.workspace = db.session.get(Workspace, current.workspace_id)
            g.role = current.role
    elif user_id is not None:
        session.pop("user_id", None)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        problem = validate_csrf()
        if problem is not None:
            return render_template("message.html", title="Request refused", message=problem), 400
    public = path in ("/login", "/logout") or path.startswith("/sso/") or path.startswith("/invites/")
    if not public and g.get("user") is None:
        return redirect(url_for("login", next=path))
    if not public and g.get("workspace_id") is None:
        return render_template("message.html", title="No workspace",
                               message="You are not a member of any workspace."), 403
    return None


def register_errors(app: Flask) -> None:
    @app.errorhandler(DemoError)
    def demo_error(exc: DemoError) -> Any:
        db.session.rollback()
        if is_api():
            return jsonify({"error": exc.message}), exc.status
        if exc.status in (403, 404):
            return render_template("message.html", title="Not allowed" if exc.status == 403 else "Not found",
                                   message=exc.message), exc.status
        flash(exc.message, "error")
        return redirect(local_path(request.referrer) or url_for("home"))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if is_api():
            return jsonify({"error": exc.description}), exc.code
        return exc


# -- helpers -----------------------------------------------------------------------------------------------


def current_ws() -> str:
    return g.workspace_id


def owner_only() -> None:
    if g.get("role") != "owner":
        raise DemoError("Only the workspace's owners can do that.", 403)


def scoped(model: Any, obj_id: Any) -> Any:
    try:
        key = int(obj_id)
    except (TypeError, ValueError):
        raise DemoError(f"no {model.__name__} {obj_id!r}", 404) from None
    obj = db.session.get(model, key)
    if obj is None or getattr(obj, "workspace_id", None) != current_ws():
        raise DemoError(f"no {model.__name__} {obj_id} in this workspace", 404)
    return obj


def payload() -> dict[str, Any]:
    """The request's fields: the JSON body on the API, the form on the pages."""
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise DemoError("send a JSON object")
        return body
    return {k: v for k, v in request.form.items() if k != "csrf_token"}


def done(message: str, obj: Any = None, location: str | None = None, status: int = 200) -> Any:
    """Answer an action: JSON on the API, a flash message and a redirect on the pages."""
    if is_api():
        return jsonify({"ok": True, "message": message, "item": serialize(obj) if obj is not None else None}), status
    flash(message, "ok")
    return redirect(location or local_path(request.referrer) or url_for("home"))


def local_path(target: str | None) -> str | None:
    """``target`` reduced to a path on this site (never an open redirect), or None."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.netloc and parts.netloc != request.host:
        return None
    path = parts.path or "/"
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return None
    return path + (f"?{parts.query}" if parts.query else "")


def serialize(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        if column.key in ("password", "api_key", "write_key", "secret_sha256", "code"):
            continue
        out[column.key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def describe(obj: Any, resource_type: str, label: str = "name") -> dict[str, Any]:
    """``record()`` arguments for a row of an opted-out table."""
    return {"resource_type": resource_type, "resource_id": str(obj.id), "resource_name": getattr(obj, label)}


def apply_fields(kind: Kind, obj: Any, data: dict[str, Any], *, creating: bool) -> None:
    full_form = not is_api()
    for f in kind.fields:
        if f.type == "bool":
            if f.name in data:
                value = data[f.name]
                setattr(obj, f.name, value in (True, "on", "1", "true", 1))
            elif full_form:
                setattr(obj, f.name, False)
            continue
        if f.name not in data:
            if creating and f.name == "name":
                raise DemoError("a name is required")
            continue
        value = data[f.name]
        if f.type == "secret" and value in ("", None):
            continue  # blank secret fields keep the current value
        if f.type == "ref":
            if value in ("", None):
                value = None
            else:
                target = KINDS[f.ref].model if f.ref else None
                value = scoped(target, value).id
        elif f.type == "select":
            if value not in f.choices:
                raise DemoError(f"{f.label}: choose one of {', '.join(f.choices)}")
        else:
            value = "" if value is None else str(value).strip()
            if f.name == "name" and not value:
                raise DemoError("a name is required")
        setattr(obj, f.name, value)


def add_rule(app: Flask, path: str, view: Callable[..., Any], methods: tuple[str, ...] = ("POST",),
             api: bool = True) -> None:
    """Serve ``view`` on the page URL and, with ``api``, on ``/api/v1`` + the same URL."""
    app.add_url_rule(path, endpoint=view.__name__, view_func=view, methods=list(methods))
    if api:
        app.add_url_rule("/api/v1" + path, endpoint="api_" + view.__name__, view_func=view, methods=list(methods))


# -- routes ------------------------------------------------------------------------------------------------


def register_routes(app: Flask, audit: AuditTrail) -> None:  # noqa: C901 - one place lists every route
    # App verbs written in the request's transaction pass the Session itself (``db.session()``): the
    # auditor's record(session=...) does not accept Flask-SQLAlchemy's scoped_session proxy yet.
    record = audit.record

    # sign-in: pick a demo user (no passwords in the demo), SSO, invites -----------------------------------

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            user = db.session.scalar(db.select(User).filter_by(email=request.form.get("email", "").strip().lower()))
            if user is None:
                flash("No such user in the demo. Pick one below.", "error")
                return redirect(url_for("login"))
            sign_in(user)
            return redirect(local_path(request.args.get("next")) or url_for("home"))
        people = db.session.scalars(db.select(Membership).order_by(Membership.workspace_id,
                                                                   Membership.role.desc())).all()
        return render_template("login.html", people=[(m, db.session.get(Workspace, m.workspace_id))
                                                     for m in people],
                               workspaces=db.session.scalars(db.select(Workspace)).all())

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.post("/workspace")
    def switch_workspace() -> Any:
        wanted = request.form.get("workspace_id")
        if not any(m.workspace_id == wanted for m, _ in g.memberships):
            raise DemoError("you are not a member of that workspace", 403)
        session["workspace_id"] = wanted
        return redirect(url_for("home"))

    @app.route("/sso/<slug>", methods=["GET", "POST"])
    def sso(slug: str) -> Any:
        """A stand-in identity provider: "signs in" any email of the workspace's domain."""
        workspace = db.session.scalar(db.select(Workspace).filter_by(slug=slug))
        if workspace is None:
            abort(404)
        if request.method == "GET":
            return render_template("sso.html", ws=workspace)
        email = request.form.get("email", "").strip().lower()
        name = request.form.get("name", "").strip() or email.split("@")[0].title()
        if "@" not in email:
            flash("Enter an email address.", "error")
            return redirect(url_for("sso", slug=slug))
        user = db.session.scalar(db.select(User).filter_by(email=email))
        if user is None:
            user = User(email=email, name=name)
            db.session.add(user)
            db.session.flush()
        member = db.session.scalar(db.select(Membership).filter_by(workspace_id=workspace.id, user_id=user.id))
        if member is None:
            db.session.add(Membership(workspace_id=workspace.id, user_id=user.id, role="member", via="sso"))
            with acting_as(Actor.user(user.id, user.email)), in_workspace(workspace.id):
                record("User Added via SSO", **describe(user, "User", "email"), session=db.session(),
                       details={"identity_provider": "demo-okta", "role": "member"})
        db.session.commit()
        sign_in(user, workspace.id)
        return redirect(url_for("home"))

    @app.route("/invites/<code>", methods=["GET", "POST"])
    def invite(code: str) -> Any:
        inv = db.session.scalar(db.select(Invite).filter_by(code=code))
        if inv is None or inv.accepted_at is not None:
            return render_template("message.html", title="Invite not found",
                                   message="This invite was deleted or already accepted."), 404
        workspace = db.session.get(Workspace, inv.workspace_id)
        if request.method == "GET":
            return render_template("invite.html", inv=inv, ws=workspace)
        user = db.session.scalar(db.select(User).filter_by(email=inv.email))
        if user is None:
            user = User(email=inv.email, name=request.form.get("name", "").strip() or inv.email.split("@")[0].title())
            db.session.add(user)
            db.session.flush()
        if db.session.scalar(db.select(Membership).filter_by(workspace_id=inv.workspace_id, user_id=user.id)) is None:
            db.session.add(Membership(workspace_id=inv.workspace_id, user_id=user.id, role=inv.role, via="invite"))
        inv.accepted_at = utcnow()
        with acting_as(Actor.user(user.id, user.email)), in_workspace(inv.workspace_id):
            record("User Invite Accepted", **describe(inv, "User Invite", "email"), session=db.session(),
                   details={"email": inv.email, "role": inv.role})
        db.session.commit()
        sign_in(user, inv.workspace_id)
        return redirect(url_for("home"))

    # pages -------------------------------------------------------------------------------------------------

    @app.get("/")
    def home() -> Any:
        counts = {k.slug: db.session.scalar(db.select(db.func.count()).select_from(k.model)
                                            .filter_by(workspace_id=current_ws())) for k in KINDS.values()}
        recent = audit.query(EventQuery(limit=8).for_workspace(current_ws())).events if g.role == "owner" else []
        return render_template("home.html", counts=counts, recent=recent)

    @app.get("/api/v1/whoami")
    def api_whoami() -> Any:
        return jsonify({"token": {"id": g.token.id, "label": g.token.label}, "workspace_id": current_ws()})

    # generic resources: list, create, show, update, enable/disable, delete -----------------------------------

    def kind_of(slug: str) -> Kind:
        kind = KINDS.get(slug)
        if kind is None:
            abort(404)
        return kind

    def options_for(kind: Kind) -> dict[str, list[Any]]:
        return {f.name: db.session.scalars(db.select(KINDS[f.ref].model).filter_by(workspace_id=current_ws())
                                           .order_by("name")).all()
                for f in kind.fields if f.type == "ref" and f.ref}

    def list_items(slug: str) -> Any:
        kind = kind_of(slug)
        items = db.session.scalars(db.select(kind.model).filter_by(workspace_id=current_ws())
                                   .order_by(kind.model.id)).all()
        if request.method == "POST":
            obj = kind.model(workspace_id=current_ws())
            if kind.model is Source:
                obj.write_key = secrets.token_urlsafe(24)
            apply_fields(kind, obj, payload(), creating=True)
            db.session.add(obj)
            db.session.commit()
            return done(f"{kind.singular} {obj.name!r} created.", obj,
                        url_for("show_item", slug=slug, item_id=obj.id), 201 if is_api() else 200)
        if is_api():
            return jsonify({"items": [serialize(i) for i in items]})
        return render_template("kind_list.html", kind=kind, items=items, options=options_for(kind))

    add_rule(app, "/<slug>", list_items, ("GET", "POST"))

    def show_item(slug: str, item_id: int) -> Any:
        kind = kind_of(slug)
        obj = scoped(kind.model, item_id)
        if request.method in ("POST", "PATCH"):
            apply_fields(kind, obj, payload(), creating=False)
            changed = bool(db.session.dirty)
            db.session.commit()
            return done(f"{kind.singular} {obj.name!r} saved." if changed else "Nothing changed.", obj,
                        url_for("show_item", slug=slug, item_id=obj.id))
        if request.method == "DELETE":
            return delete_item(slug, item_id)
        if is_api():
            return jsonify({"item": serialize(obj)})
        return render_template("kind_detail.html", kind=kind, obj=obj, options=options_for(kind),
                               extra=detail_extra(kind, obj))

    add_rule(app, "/<slug>/<int:item_id>", show_item, ("GET", "POST", "PATCH", "DELETE"))

    def delete_item(slug: str, item_id: int) -> Any:
        kind = kind_of(slug)
        obj = scoped(kind.model, item_id)
        name = obj.name
        cleanup(obj)
        db.session.delete(obj)
        db.session.commit()
        return done(f"{kind.singular} {name!r} deleted.", None, url_for("list_items", slug=slug))

    add_rule(app, "/<slug>/<int:item_id>/delete", delete_item)

    def toggle_item(slug: str, item_id: int, verb: str) -> Any:
        kind = kind_of(slug)
        if not kind.toggle:
            abort(404)
        obj = scoped(kind.model, item_id)
        obj.enabled = verb == "enable"
        db.session.commit()
        return done(f"{kind.singular} {obj.name!r} {verb}d.", obj, url_for("show_item", slug=slug, item_id=obj.id))

    add_rule(app, "/<slug>/<int:item_id>/<any(enable, disable):verb>", toggle_item)

    def cleanup(obj: Any) -> None:
        """Rows that only make sense with ``obj`` (bookkeeping tables, not audited)."""
        if isinstance(obj, Warehouse):
            db.session.execute(db.delete(WarehouseRun).filter_by(warehouse_id=obj.id))
        elif isinstance(obj, TrackingPlan):
            db.session.execute(db.delete(TrackingPlanEvent).filter_by(plan_id=obj.id))
            db.session.execute(db.delete(PlanConnection).filter_by(plan_id=obj.id))
        elif isinstance(obj, Space):
            db.session.execute(db.delete(SpaceSource).filter_by(space_id=obj.id))
        elif isinstance(obj, Source):
            db.session.execute(db.delete(SpaceSource).filter_by(source_id=obj.id))
            db.session.execute(db.delete(PlanConnection).filter_by(source_id=obj.id))
            db.session.execute(db.delete(ObservedEvent).filter_by(source_id=obj.id))

    def detail_extra(kind: Kind, obj: Any) -> dict[str, Any]:
        ws = current_ws()
        sources = db.session.scalars(db.select(Source).filter_by(workspace_id=ws).order_by(Source.name)).all()
        if isinstance(obj, Warehouse):
            runs = db.session.scalars(db.select(WarehouseRun).filter_by(warehouse_id=obj.id)
                                      .order_by(WarehouseRun.id.desc()).limit(10)).all()
            return {"runs": runs}
        if isinstance(obj, TrackingPlan):
            events = db.session.scalars(db.select(TrackingPlanEvent).filter_by(plan_id=obj.id)
                                        .order_by(TrackingPlanEvent.name)).all()
            connections = db.session.scalars(db.select(PlanConnection).filter_by(plan_id=obj.id)).all()
            return {"plan_events": events, "sources": sources,
                    "connections": [(c, db.session.get(Source, c.source_id)) for c in connections]}
        if isinstance(obj, Space):
            linked = db.session.scalars(db.select(SpaceSource).filter_by(space_id=obj.id)).all()
            return {"sources": sources, "linked": [db.session.get(Source, s.source_id) for s in linked]}
        if isinstance(obj, Source):
            observed = db.session.scalars(db.select(ObservedEvent).filter_by(source_id=obj.id)
                                          .order_by(ObservedEvent.name)).all()
            return {"observed": observed}
        return {}

    # warehouses: runs ----------------------------------------------------------------------------------

    def run_warehouse(item_id: int) -> Any:
        """Run a sync now. ``outcome=failed`` simulates a failing run (bad credentials)."""
        wh = scoped(Warehouse, item_id)
        if not wh.enabled:
            raise DemoError(f"Warehouse {wh.name!r} is disabled; enable it first.")
        failed = payload().get("outcome") == "failed" or not wh.host
        run = WarehouseRun(warehouse_id=wh.id, status="failed" if failed else "succeeded",
                           rows=0 if failed else 1000 + secrets.randbelow(90000),
                           error=(f"could not connect to {wh.kind} at {wh.host or '(no host)'}: "
                                  "authentication failed" if failed else None))
        db.session.add(run)
        db.session.commit()
        if failed:
            with acting_as(Actor.system("warehouse-scheduler")):
                record("Warehouse Run Failed", wh, details={"run_id": run.id, "error": run.error})
            return done(f"Run {run.id} of {wh.name!r} failed: {run.error}", wh)
        return done(f"Run {run.id} of {wh.name!r} loaded {run.rows} rows.", wh)

    add_rule(app, "/warehouses/<int:item_id>/runs", run_warehouse)

    # protocols: plan rules, connections, schema controls, inference ----------------------------------------

    def plan_events(item_id: int) -> Any:
        plan = scoped(TrackingPlan, item_id)
        data = payload()
        added = [n.strip() for n in str(data.get("add", "")).split(",") if n.strip()]
        removed = [n.strip() for n in str(data.get("remove", "")).split(",") if n.strip()]
        existing = {e.name: e for e in db.session.scalars(db.select(TrackingPlanEvent).filter_by(plan_id=plan.id))}
        added = [n for n in added if n not in existing]
        removed = [n for n in removed if n in existing]
        if not added and not removed:
            raise DemoError("nothing to change: name events to add or remove")
        for n in added:
            db.session.add(TrackingPlanEvent(plan_id=plan.id, name=n))
        for n in removed:
            db.session.delete(existing[n])
        record("Tracking Plan Updated", plan, session=db.session(), details={"added": added, "removed": removed})
        db.session.commit()
        return done(f"Tracking plan {plan.name!r} updated.", plan)

    add_rule(app, "/tracking-plans/<int:item_id>/events", plan_events)

    def plan_connect(item_id: int) -> Any:
        plan = scoped(TrackingPlan, item_id)
        source = scoped(Source, payload().get("source_id"))
        if db.session.scalar(db.select(PlanConnection).filter_by(source_id=source.id)) is not None:
            raise DemoError(f"Source {source.name!r} is already connected to a tracking plan.")
        db.session.add(PlanConnection(plan_id=plan.id, source_id=source.id))
        record("Source Connected to Tracking Plan", plan, session=db.session(),
               details={"source_id": source.id, "source": source.name})
        db.session.commit()
        return done(f"Source {source.name!r} connected to {plan.name!r}.", plan)

    add_rule(app, "/tracking-plans/<int:item_id>/connect", plan_connect)

    def connection_of(plan: TrackingPlan, source_id: Any) -> tuple[PlanConnection, Source]:
        source = scoped(Source, source_id)
        conn = db.session.scalar(db.select(PlanConnection).filter_by(plan_id=plan.id, source_id=source.id))
        if conn is None:
            raise DemoError(f"Source {source.name!r} is not connected to {plan.name!r}.", 404)
        return conn, source

    def plan_disconnect(item_id: int, source_id: int) -> Any:
        plan = scoped(TrackingPlan, item_id)
        conn, source = connection_of(plan, source_id)
        db.session.delete(conn)
        record("Source Disconnected From Tracking Plan", plan, session=db.session(),
               details={"source_id": source.id, "source": source.name})
        db.session.commit()
        return done(f"Source {source.name!r} disconnected from {plan.name!r}.", plan)

    add_rule(app, "/tracking-plans/<int:item_id>/sources/<int:source_id>/disconnect", plan_disconnect)

    controls = {
        "block_new_events": ("Tracking Plan New Event Blocked", "Tracking Plan New Event Allowed"),
        "omit_track_properties": ("Tracking Plan New Track Property Omitted", None),
        "omit_identify_traits": ("Tracking Plan New Identify Trait Omitted", None),
        "omit_group_traits": ("Tracking Plan New Group Trait Omitted", None),
    }

    def plan_controls(item_id: int, source_id: int) -> Any:
        """Schema controls of one connected source; each flip records Segment's verb for it, and the
        violation-forwarding operations record "Tracking Plan Operations Updated"."""
        plan = scoped(TrackingPlan, item_id)
        conn, source = connection_of(plan, source_id)
        data = payload()
        recorded: list[str] = []
        operations: dict[str, list[Any]] = {}
        for name, (on_event, off_event) in controls.items():
            if name not in data and is_api():
                continue
            new = data.get(name) in (True, "on", "1", "true", 1)
            old = getattr(conn, name)
            if new == old:
                continue
            setattr(conn, name, new)
            event = on_event if new else off_event
            if event is None:  # Segment has no "... Allowed" verb for traits and properties: an operation change
                operations[name] = [old, new]
                continue
            record(event, plan, session=db.session(), details={"source_id": source.id, "source": source.name})
            recorded.append(event)
        for name in ("forward_violations_to", "forward_blocked_to"):
            if name not in data:
                continue
            value = data[name]
            new_id = scoped(Source, value).id if value not in ("", None) else None
            if new_id != getattr(conn, name):
                operations[name] = [getattr(conn, name), new_id]
                setattr(conn, name, new_id)
        if operations:
            record("Tracking Plan Operations Updated", plan, session=db.session(),
                   details={"source_id": source.id, "source": source.name, "changes": operations})
            recorded.append("Tracking Plan Operations Updated")
        db.session.commit()
        return done(f"Schema controls of {source.name!r} saved" + (f": {', '.join(recorded)}." if recorded else
                                                                   " (nothing changed)."), plan)

    add_rule(app, "/tracking-plans/<int:item_id>/sources/<int:source_id>/controls", plan_controls)

    def plan_infer(item_id: int) -> Any:
        """Add to the plan every event its connected sources have seen that it does not plan yet."""
        plan = scoped(TrackingPlan, item_id)
        source_ids = [c.source_id for c in db.session.scalars(db.select(PlanConnection).filter_by(plan_id=plan.id))]
        wanted = payload().get("source_id")
        if wanted not in (None, ""):
            source_ids = [scoped(Source, wanted).id]
        if not source_ids:
            raise DemoError("connect a source first: the plan is inferred from the events it receives")
        planned = {e.name for e in db.session.scalars(db.select(TrackingPlanEvent).filter_by(plan_id=plan.id))}
        seen = sorted({o.name for o in db.session.scalars(db.select(ObservedEvent)
                                                          .where(ObservedEvent.source_id.in_(source_ids)))})
        new = [n for n in seen if n not in planned]
        for n in new:
            db.session.add(TrackingPlanEvent(plan_id=plan.id, name=n))
        record("Tracking Plan Inferred", plan, session=db.session(),
               details={"source_ids": source_ids, "events_added": new})
        db.session.commit()
        return done(f"Inferred {len(new)} event(s) into {plan.name!r}.", plan)

    add_rule(app, "/tracking-plans/<int:item_id>/infer", plan_infer)

    @app.post("/v1/track")
    def ingest_track() -> Any:
        """Segment-style ingestion (Basic auth with a source's write key): counts the event, and when the
        source's tracking plan does not plan it, records "Violations Detected" as the Protocols validator."""
        header = request.headers.get("Authorization", "")
        source = None
        if header.startswith("Basic "):
            try:
                write_key = base64.b64decode(header[6:]).decode().split(":")[0]
            except (ValueError, UnicodeDecodeError):
                write_key = ""
            source = db.session.scalar(db.select(Source).filter_by(write_key=write_key)) if write_key else None
        if source is None:
            return jsonify({"success": False, "error": "unknown write key"}), 401
        body = request.get_json(silent=True) or {}
        name = str(body.get("event") or "").strip()
        if not name:
            return jsonify({"success": False, "error": "event is required"}), 400
        if not source.enabled:
            return jsonify({"success": False, "error": "source is disabled"}), 403
        observed = db.session.scalar(db.select(ObservedEvent).filter_by(source_id=source.id, name=name))
        if observed is None:
            observed = ObservedEvent(source_id=source.id, name=name, count=0, violations=0)
            db.session.add(observed)
        observed.count += 1
        conn = db.session.scalar(db.select(PlanConnection).filter_by(source_id=source.id))
        violation = blocked = False
        if conn is not None:
            planned = db.session.scalar(db.select(TrackingPlanEvent).filter_by(plan_id=conn.plan_id, name=name))
            if planned is None:
                violation = True
                blocked = conn.block_new_events
                observed.violations += 1
                plan = db.session.get(TrackingPlan, conn.plan_id)
                with acting_as(Actor.system("protocols-validator")), in_workspace(source.workspace_id):
                    record("Violations Detected", plan, session=db.session(),
                           details={"source_id": source.id, "source": source.name, "event": name,
                                    "violation": "Unplanned event", "blocked": blocked})
        db.session.commit()
        return jsonify({"success": True, "violation": violation, "blocked": blocked})

    # engage: spaces' sources, CSV downloads, compute runs ----------------------------------------------------

    def space_connect(item_id: int) -> Any:
        space = scoped(Space, item_id)
        source = scoped(Source, payload().get("source_id"))
        if db.session.get(SpaceSource, (space.id, source.id)) is not None:
            raise DemoError(f"Source {source.name!r} is already connected to {space.name!r}.")
        db.session.add(SpaceSource(space_id=space.id, source_id=source.id))
        record("Source Connected To Space", space, session=db.session(),
               details={"source_id": source.id, "source": source.name})
        db.session.commit()
        return done(f"Source {source.name!r} connected to space {space.name!r}.", space)

    add_rule(app, "/spaces/<int:item_id>/sources", space_connect)

    def space_disconnect(item_id: int, source_id: int) -> Any:
        space = scoped(Space, item_id)
        source = scoped(Source, source_id)
        link = db.session.get(SpaceSource, (space.id, source.id))
        if link is None:
            raise DemoError(f"Source {source.name!r} is not connected to {space.name!r}.", 404)
        db.session.delete(link)
        record("Source Disconnected From Space", space, session=db.session(),
               details={"source_id": source.id, "source": source.name})
        db.session.commit()
        return done(f"Source {source.name!r} disconnected from space {space.name!r}.", space)

    add_rule(app, "/spaces/<int:item_id>/sources/<int:source_id>/disconnect", space_disconnect)

    engage = {"computed-traits": (ComputedTrait, "Computed Trait"), "audiences": (Audience, "Audience")}

    def engage_csv(slug: str, item_id: int) -> Any:
        if slug not in engage:
            abort(404)
        model, resource = engage[slug]
        obj = scoped(model, item_id)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["user_id", "email", obj.name])
        for i in range(1, 26):
            writer.writerow([f"user_{obj.id}_{i:03d}", f"customer{i}@example.com",
                             (i * 7) % 13 if model is ComputedTrait else True])
        record(f"{resource} CSV Downloaded", obj, details={"rows": 25})
        filename = f"{slug[:-1]}-{obj.id}.csv"
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    add_rule(app, "/<any('computed-traits', audiences):slug>/<int:item_id>/download.csv", engage_csv, ("GET",))

    def engage_run(slug: str, item_id: int) -> Any:
        """Compute now. ``outcome`` = ``success``, ``run_failed`` or ``sync_failed`` (a destination refused)."""
        model, resource = engage[slug]
        obj = scoped(model, item_id)
        outcome = payload().get("outcome", "success")
        if outcome not in ("success", "run_failed", "sync_failed"):
            raise DemoError("outcome: success, run_failed or sync_failed")
        if outcome == "success":
            return done(f"{resource} {obj.name!r} computed.", obj)
        with acting_as(Actor.system("engage-scheduler")):
            if outcome == "run_failed":
                record(f"{resource} Run Failed", obj, details={"error": "query timed out after 900 s"})
            else:
                record(f"{resource} Destination Sync Failed", obj,
                       details={"destination": "Braze", "error": "HTTP 401 from the destination: invalid API key"})
        return done(f"{resource} {obj.name!r}: {outcome.replace('_', ' ')}.", obj)

    add_rule(app, "/<any('computed-traits', audiences):slug>/<int:item_id>/runs", engage_run)

    # access management: team, invites, removal, user groups (owners only) ------------------------------------

    @app.get("/settings/team")
    def team() -> Any:
        owner_only()
        ws = current_ws()
        members = db.session.scalars(db.select(Membership).filter_by(workspace_id=ws)).all()
        invites = db.session.scalars(db.select(Invite).filter_by(workspace_id=ws, accepted_at=None)).all()
        groups = db.session.scalars(db.select(UserGroup).filter_by(workspace_id=ws)).all()
        group_members = {gr.id: [db.session.get(User, m.user_id) for m in
                                 db.session.scalars(db.select(UserGroupMember).filter_by(group_id=gr.id))]
                         for gr in groups}
        tokens = db.session.scalars(db.select(AccessToken).filter_by(workspace_id=ws)).all()
        return render_template("team.html", members=members, invites=invites, groups=groups,
                               group_members=group_members, tokens=tokens)

    def send_invite() -> Any:
        owner_only()
        data = payload()
        email = str(data.get("email", "")).strip().lower()
        role = data.get("role", "member")
        if "@" not in email or role not in ("owner", "member"):
            raise DemoError("an email address and a role (owner or member) are required")
        inv = Invite(workspace_id=current_ws(), email=email, role=role, code=secrets.token_urlsafe(16),
                     invited_by=g.user.id if g.get("user") else None)
        db.session.add(inv)
        db.session.flush()
        record("User Invite Sent", **describe(inv, "User Invite", "email"), session=db.session(),
               details={"email": email, "role": role})
        db.session.commit()
        link = url_for("invite", code=inv.code, _external=True)
        if is_api():
            return jsonify({"ok": True, "invite": {"id": inv.id, "email": email, "link": link}}), 201
        flash(f"Invite sent to {email}. (Demo: the invite link is {link})", "ok")
        return redirect(url_for("team"))

    add_rule(app, "/settings/invites", send_invite, api=False)

    def delete_invite(invite_id: int) -> Any:
        owner_only()
        inv = db.session.get(Invite, invite_id)
        if inv is None or inv.workspace_id != current_ws() or inv.accepted_at is not None:
            raise DemoError("no such pending invite", 404)
        record("User Invite Deleted", **describe(inv, "User Invite", "email"), session=db.session(),
               details={"email": inv.email, "role": inv.role})
        db.session.delete(inv)
        db.session.commit()
        return done(f"Invite for {inv.email} deleted.", None, url_for("team"))

    add_rule(app, "/settings/invites/<int:invite_id>/delete", delete_invite, api=False)

    def remove_user(user_id: int) -> Any:
        owner_only()
        member = db.session.scalar(db.select(Membership).filter_by(workspace_id=current_ws(), user_id=user_id))
        if member is None:
            raise DemoError("no such member", 404)
        if g.get("user") is not None and member.user_id == g.user.id:
            raise DemoError("you cannot remove yourself")
        user = db.session.get(User, user_id)
        group_ids = db.select(UserGroup.id).filter_by(workspace_id=current_ws())
        db.session.execute(db.delete(UserGroupMember).where(UserGroupMember.user_id == user_id,
                                                            UserGroupMember.group_id.in_(group_ids)))
        db.session.delete(member)
        record("User Removed", **describe(user, "User", "email"), session=db.session(),
               details={"email": user.email, "role": member.role})
        db.session.commit()
        return done(f"{user.email} removed from the workspace.", None, url_for("team"))

    add_rule(app, "/settings/users/<int:user_id>/remove", remove_user, api=False)

    def member_ids(raw: Any) -> list[int]:
        values = raw if isinstance(raw, list) else request.form.getlist("members") if not is_api() else []
        ids = []
        for v in values:
            m = db.session.scalar(db.select(Membership).filter_by(workspace_id=current_ws(), user_id=int(v)))
            if m is None:
                raise DemoError(f"user {v} is not a member of this workspace")
            ids.append(int(v))
        return sorted(set(ids))

    def create_group() -> Any:
        owner_only()
        data = payload()
        name = str(data.get("name", "")).strip()
        if not name:
            raise DemoError("a group name is required")
        group = UserGroup(workspace_id=current_ws(), name=name, description=str(data.get("description", "")))
        db.session.add(group)
        db.session.flush()
        members = member_ids(data.get("members"))
        for uid in members:
            db.session.add(UserGroupMember(group_id=group.id, user_id=uid))
        record("User Group Created", **describe(group, "User Group"), session=db.session(),
               details={"description": group.description, "members": members})
        db.session.commit()
        return done(f"User group {name!r} created.", None, url_for("team"))

    add_rule(app, "/settings/groups", create_group, api=False)

    def update_group(group_id: int) -> Any:
        owner_only()
        group = db.session.get(UserGroup, group_id)
        if group is None or group.workspace_id != current_ws():
            raise DemoError("no such user group", 404)
        data = payload()
        changes: dict[str, list[Any]] = {}
        for attr in ("name", "description"):
            if attr in data and str(data[attr]).strip() != getattr(group, attr):
                changes[attr] = [getattr(group, attr), str(data[attr]).strip()]
                setattr(group, attr, str(data[attr]).strip())
        old = sorted(m.user_id for m in db.session.scalars(db.select(UserGroupMember).filter_by(group_id=group.id)))
        new = member_ids(data.get("members"))
        if new != old:
            changes["members"] = [old, new]
            db.session.execute(db.delete(UserGroupMember).filter_by(group_id=group.id))
            for uid in new:
                db.session.add(UserGroupMember(group_id=group.id, user_id=uid))
        if not changes:
            return done("Nothing changed.", None, url_for("team"))
        record("User Group Updated", **describe(group, "User Group"), session=db.session(), details={"changes": changes})
        db.session.commit()
        return done(f"User group {group.name!r} updated.", None, url_for("team"))

    add_rule(app, "/settings/groups/<int:group_id>", update_group, api=False)

    # the built-in receiver: a Segment-style HTTP API source and a Slack-style channel ----------------------

    @app.post("/receiver/segment/v1/batch")
    def receive_segment() -> Any:
        expected = "Basic " + base64.b64encode(f"{SEGMENT_WRITE_KEY}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return jsonify({"success": False, "message": "invalid write key"}), 401
        body = request.get_json(silent=True) or {}
        for item in body.get("batch") or []:
            db.session.add(ReceivedMessage(channel="segment", body=json.dumps(item)))
        db.session.commit()
        return jsonify({"success": True})

    @app.post(SLACK_HOOK_PATH)
    def receive_slack() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "text" not in body:
            return Response("invalid_payload", status=400, mimetype="text/plain")
        db.session.add(ReceivedMessage(channel="slack", body=json.dumps(body)))
        db.session.commit()
        return Response("ok", mimetype="text/plain")

    @app.get("/receiver/<any(segment, slack):channel>")
    def receiver(channel: str) -> Any:
        rows = db.session.scalars(db.select(ReceivedMessage).filter_by(channel=channel)
                                  .order_by(ReceivedMessage.id.desc()).limit(100)).all()
        messages = [(r, json.loads(r.body)) for r in rows]
        if request.args.get("format") == "json":
            return jsonify({"messages": [m for _, m in messages]})
        return render_template("receiver.html", channel=channel, messages=messages,
                               configured=bool(app.config.get("AUDIT_TRAIL_DESTINATIONS")))


def sign_in(user: User, workspace_id: str | None = None) -> None:
    session.clear()
    session["user_id"] = user.id
    if workspace_id:
        session["workspace_id"] = workspace_id
