"""A real Flask app per test: Flask-SQLAlchemy models, Flask-Login users, API tokens, workspaces, and the
extension, on the database chosen by ``database_url``."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, abort, g, request
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from audit_middleware import Actor, suspend_auditing
from audit_middleware.adapters.flask import AuditTrail

TOKEN_SECRET = "sk_live_4f9c2e7d1b8a6350a1b2"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class TestApp:
    app: Flask
    db: Any
    audit: AuditTrail
    User: Any
    Warehouse: Any
    ApiToken: Any
    calls: dict[str, int] = field(default_factory=lambda: {"user_loader": 0, "token_loader": 0, "workspace": 0})
    statements: list[str] = field(default_factory=list)

    def client(self, user: str | None = None) -> Any:
        """A test client, logged in as the user with that email when given."""
        client = self.app.test_client()
        if user is not None:
            response = client.post("/login", data={"email": user})
            assert response.status_code == 302, response.data
        return client

    def events(self, **filters: Any) -> list[Any]:
        """Every stored event (all workspaces), newest first."""
        with self.app.app_context():
            return list(self.audit.iter_events(**filters))

    def add(self, *objects: Any) -> None:
        with self.app.app_context():
            self.db.session.add_all(objects)
            self.db.session.commit()


def make_app(database_url: str, *, template_folder: str | None = None, **config: Any) -> TestApp:
    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200), unique=True)
        workspace_id: Mapped[str] = mapped_column(String(20))
        is_owner: Mapped[bool] = mapped_column(default=False)
        password: Mapped[str | None] = mapped_column(String(200))

    class Warehouse(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "warehouses"
        id: Mapped[int] = mapped_column(primary_key=True)
        workspace_id: Mapped[str] = mapped_column(String(20))
        name: Mapped[str] = mapped_column(String(300))
        enabled: Mapped[bool] = mapped_column(default=True)
        schedule: Mapped[str | None] = mapped_column(String(50))

    class ApiToken(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "api_tokens"
        __audit__ = False
        id: Mapped[str] = mapped_column(String(20), primary_key=True)
        label: Mapped[str] = mapped_column(String(100))
        secret_hash: Mapped[str] = mapped_column(String(64))
        workspace_id: Mapped[str] = mapped_column(String(20))

    app = Flask(__name__, template_folder=template_folder)
    app.config.update(
        SECRET_KEY="test-secret",
        SQLALCHEMY_DATABASE_URI=database_url,
        TESTING=True,
        **config,
    )
    db.init_app(app)
    login = LoginManager(app)
    holder: dict[str, TestApp] = {}

    @login.user_loader
    def load_user(user_id: str) -> Any:
        holder["t"].calls["user_loader"] += 1
        return db.session.get(User, int(user_id))

    def token_loader(secret: str) -> Actor | None:
        holder["t"].calls["token_loader"] += 1
        token = db.session.execute(select(ApiToken).where(ApiToken.secret_hash == digest(secret))).scalar_one_or_none()
        if token is None:
            return None
        g.token_workspace = token.workspace_id
        return Actor.token(token.id, token.label, secret=secret)

    def workspace_loader() -> str | None:
        holder["t"].calls["workspace"] += 1
        if current_user.is_authenticated:
            return str(current_user.workspace_id)
        if "token_workspace" not in g:
            token_loader_for_workspace()
        return g.get("token_workspace")

    def token_loader_for_workspace() -> None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            token_loader(header[7:].strip())

    audit = AuditTrail(
        app, db,
        can_view=lambda: bool(current_user.is_authenticated and current_user.is_owner),
        token_loader=token_loader,
        workspace_loader=workspace_loader,
    )
    audit.catalog.define("Warehouse Run Failed", category="Warehouses")

    @app.post("/login")
    def do_login() -> Any:
        user = db.session.execute(select(User).where(User.email == request.form["email"])).scalar_one_or_none()
        if user is None:
            abort(401)
        login_user(user)
        return "", 302, {"Location": "/"}

    @app.get("/login")
    def login_form() -> str:
        return (
            '<form method="post" action="/login"><label>Email <input name="email" id="email"></label>'
            '<button type="submit" id="sign-in">Sign in</button></form>'
        )

    @app.post("/logout")
    def do_logout() -> Any:
        logout_user()
        return "", 204

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    def workspace() -> str:
        found = workspace_loader()
        return found or "public"

    @app.post("/warehouses")
    def create_warehouse() -> Any:
        warehouse = Warehouse(workspace_id=workspace(), name=request.form["name"],
                              schedule=request.form.get("schedule"))
        db.session.add(warehouse)
        db.session.commit()
        return {"id": warehouse.id}, 201

    @app.post("/warehouses/<int:warehouse_id>")
    def update_warehouse(warehouse_id: int) -> Any:
        warehouse = db.get_or_404(Warehouse, warehouse_id)
        if "name" in request.form:
            warehouse.name = request.form["name"]
        if "schedule" in request.form:
            warehouse.schedule = request.form["schedule"]
        if "enabled" in request.form:
            warehouse.enabled = request.form["enabled"] == "true"
        db.session.commit()
        return {"id": warehouse.id}

    @app.post("/warehouses/<int:warehouse_id>/delete")
    def delete_warehouse(warehouse_id: int) -> Any:
        db.session.delete(db.get_or_404(Warehouse, warehouse_id))
        db.session.commit()
        return "", 204

    @app.post("/warehouses/<int:warehouse_id>/broken")
    def broken_update(warehouse_id: int) -> Any:
        warehouse = db.get_or_404(Warehouse, warehouse_id)
        warehouse.name = "half-done"
        db.session.flush()
        raise RuntimeError("the handler failed after writing")

    @app.post("/warehouses/<int:warehouse_id>/run-failed")
    def run_failed(warehouse_id: int) -> Any:
        warehouse = db.get_or_404(Warehouse, warehouse_id)
        audit.record("Warehouse Run Failed", resource=warehouse, details={"error": request.form["error"]})
        return "", 204

    test_app = TestApp(app, db, audit, User, Warehouse, ApiToken)
    holder["t"] = test_app
    with app.app_context():
        db.create_all()

        @event.listens_for(db.engine, "before_cursor_execute")
        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            test_app.statements.append(statement)

        with suspend_auditing():
            db.session.add_all([
                User(email="ada@a.example", workspace_id="ws_a", is_owner=True, password="x"),
                User(email="bob@a.example", workspace_id="ws_a", is_owner=False),
                User(email="eve@b.example", workspace_id="ws_b", is_owner=True),
                ApiToken(id="tok_12", label="ci-deploy", secret_hash=digest(TOKEN_SECRET), workspace_id="ws_a"),
            ])
            db.session.commit()
    return test_app


def dispose(test_app: TestApp) -> None:
    drainer = getattr(test_app.audit, "drainer", None)
    if drainer is not None:  # AUDIT_TRAIL_FORWARD_IN_PROCESS: its thread would poll a dropped database
        drainer.disconnect()
        drainer.stop()
    with test_app.app.app_context():
        test_app.db.session.remove()
        for engine in test_app.db.engines.values():
            engine.dispose()


@pytest.fixture
def flask_app(database_url: str) -> Iterator[TestApp]:
    test_app = make_app(database_url)
    try:
        yield test_app
    finally:
        dispose(test_app)


CHROMIUM = os.environ.get("AUDIT_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser). Missing Chromium skips,
    unless AUDIT_REQUIRE_DATABASES is set (CI), where it fails."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        message = f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver"
        if os.environ.get("AUDIT_REQUIRE_DATABASES"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            yield launched
        finally:
            launched.close()
