"""The Flask app: Flask-SQLAlchemy, Flask-Login (the signed-in user in the session cookie), and with
``HTTP_BENCH_AUDITED=1`` ``AuditTrail(app, db)``, which resolves the actor through Flask-Login.

    gunicorn --pythonpath benchmarks 'http_apps.flask_app:create_app()'
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Flask, request
from flask_login import LoginManager, UserMixin, login_required, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from http_apps import USER_EMAIL, WAREHOUSE_AUDIT, audited, database, seed_rows


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(UserMixin, db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


class Warehouse(db.Model):  # type: ignore[name-defined, misc]
    __tablename__ = "warehouses"
    __audit__ = WAREHOUSE_AUDIT
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    schedule: Mapped[str] = mapped_column(String(50), default="@hourly")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_id: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now, onupdate=now)


def database_url() -> str:
    spec = database()
    if spec["backend"] == "sqlite":
        return f"sqlite:///{spec['name']}"
    return f"postgresql+psycopg://{spec['user']}@{spec['host']}:{spec['port']}/{spec['name']}"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="http-bench-only", SQLALCHEMY_DATABASE_URI=database_url())
    db.init_app(app)
    login = LoginManager(app)

    @login.user_loader
    def load_user(user_id: str) -> User | None:
        return db.session.get(User, int(user_id))

    if audited():
        from audit_middleware.adapters.flask import AuditTrail

        AuditTrail(app, db)

    @app.get("/hello")
    def hello() -> str:
        return "Hello, World!"

    @app.post("/warehouses/<int:warehouse_id>")
    @login_required
    def update_warehouse(warehouse_id: int) -> str:
        warehouse = db.get_or_404(Warehouse, warehouse_id)
        warehouse.schedule = request.form["schedule"]
        warehouse.settings = {**warehouse.settings, "batch_size": int(request.form["batch_size"])}
        db.session.commit()
        return "ok"

    @app.post("/bench-login")
    def bench_login() -> str:  # used once by setup(), through the test client
        login_user(db.session.get(User, 1))
        return "ok"

    return app


def setup() -> dict[str, str]:
    """Create the tables, seed the user and the warehouses (not audited) and sign in: the Cookie header."""
    from audit_middleware import suspend_auditing

    app = create_app()
    with app.app_context(), suspend_auditing():
        db.create_all()
        db.session.add(User(id=1, email=USER_EMAIL))
        db.session.add_all([Warehouse(**row) for row in seed_rows()])
        db.session.commit()
    client = app.test_client()
    assert client.post("/bench-login").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()
    return {"Cookie": f"session={cookie.value}"}
