"""Requests per second of a Flask app with and without the audit-middleware extension.

    python benchmarks/flask_requests.py --backend sqlite --rounds 5

Two identical apps (Flask, Flask-SQLAlchemy, Flask-Login; a logged-in user's session cookie on every
request), one with ``AuditTrail(app, db)``. Two routes: ``GET /hello`` (no database work) and
``POST /warehouses/<id>`` (loads one row, changes one field, commits: with the extension that write also
records a "Warehouse Modified" event, resolving the actor through Flask-Login; the route is
``@login_required`` as a real write route is, so the user is loaded either way; ``--no-login-required`` shows
the cost of the one extra query when the actor is loaded only for the audit). Requests are dispatched
straight to the WSGI app (no HTTP server, no test-client overhead) so the ratio shows the extension's own
cost. Variants alternate in every round, in the same process; medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import flask
import flask_login
from flask import Flask, request
from flask_login import LoginManager, UserMixin, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

sys.path.insert(0, os.path.dirname(__file__))
from _workload import median  # noqa: E402

PG = os.environ.get("AUDIT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MARIADB = os.environ.get("AUDIT_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
VARIANTS = ("without", "with")


def database_url(backend: str, workdir: str) -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text

    if backend == "sqlite":
        return f"sqlite:///{workdir}/flask-bench-{uuid.uuid4().hex[:8]}.sqlite3", lambda: None
    base, admin = (PG, "postgres") if backend == "postgresql" else (MARIADB, "test")
    name = f"audit_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(f"{base}/{admin}", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with engine.connect() as connection:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        engine.dispose()

    suffix = "?charset=utf8mb4" if backend == "mariadb" else ""
    return f"{base}/{name}{suffix}", drop


def build_app(url: str, audited: bool, login_required: bool = True) -> tuple[Any, Any, str]:
    """The app, its db and a logged-in session cookie."""
    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))

    class Warehouse(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "warehouses"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(200))
        enabled: Mapped[bool] = mapped_column(default=True)
        schedule: Mapped[str | None] = mapped_column(String(50))
        region: Mapped[str | None] = mapped_column(String(50))

    app = Flask(__name__)
    app.config.update(SECRET_KEY="bench", SQLALCHEMY_DATABASE_URI=url)
    db.init_app(app)
    login = LoginManager(app)

    @login.user_loader
    def load_user(user_id: str) -> Any:
        return db.session.get(User, int(user_id))

    if audited:
        from audit_middleware.adapters.flask import AuditTrail

        AuditTrail(app, db)

    @app.get("/hello")
    def hello() -> str:
        return "Hello, World!"

    def update(warehouse_id: int) -> str:
        warehouse = db.get_or_404(Warehouse, warehouse_id)
        warehouse.schedule = request.args["schedule"]
        db.session.commit()
        return "ok"

    app.post("/warehouses/<int:warehouse_id>")(flask_login.login_required(update) if login_required else update)

    @app.post("/login")
    def do_login() -> str:
        login_user(db.session.get(User, 1))
        return "ok"

    with app.app_context():
        db.create_all()
        db.session.add_all([User(email="ada@example.com"), Warehouse(name="Production", region="eu")])
        db.session.commit()
    client = app.test_client()
    client.post("/login")
    cookie = client.get_cookie("session")
    assert cookie is not None
    return app, db, f"session={cookie.value}"


def environ(method: str, path: str, query: str, cookie: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost", "HTTP_COOKIE": cookie,
        "HTTP_USER_AGENT": "bench/1.0", "CONTENT_LENGTH": "0",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def run(app: Any, cookie: str, route: str, count: int, offset: int) -> tuple[float, float]:
    """Requests per second for ``count`` requests to ``route``, and the process's CPU microseconds per
    request (the app's own work, which other processes on the machine disturb far less than wall time)."""
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    start, cpu_start = time.perf_counter(), time.process_time()
    for n in range(count):
        if route == "hello":
            env = environ("GET", "/hello", "", cookie)
        else:
            env = environ("POST", "/warehouses/1", f"schedule=s{offset + n}", cookie)
        body = app(env, start_response)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    bad = [s for s in statuses if not s.startswith("200")]
    if bad:
        raise SystemExit(f"{route}: unexpected status {bad[0]}")
    return count / elapsed, cpu / count * 1e6


def scope_cost(app: Any, count: int = 200_000) -> float:
    """Microseconds the extension adds to a request that records an event, besides the event itself: its
    request scope (closures that load the actor, the request's facts and the workspace when an event needs
    them), made by the request's first event. A request that records nothing runs no code of the extension
    (it has no per-request hooks)."""
    from audit_middleware.adapters.flask.extension import _SCOPE_KEY

    audit = app.extensions["audit_middleware"]
    with app.test_request_context("/hello"):
        g = flask.g
        start = time.perf_counter()
        for _ in range(count):
            g.pop(_SCOPE_KEY, None)
            audit.request_scope()
        return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "mariadb"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hello", type=int, default=5000, help="hello-world requests per round and variant")
    parser.add_argument("--updates", type=int, default=500, help="one-row-update requests per round and variant")
    parser.add_argument("--no-login-required", action="store_true",
                        help="the update route does not load the user itself, so the actor costs the audited app a query")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="flask-bench-")
    apps: dict[str, tuple[Any, Any, str]] = {}
    drops = []
    for variant in VARIANTS:
        url, drop = database_url(args.backend, workdir)
        drops.append(drop)
        apps[variant] = build_app(url, audited=variant == "with", login_required=not args.no_login_required)
    results: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    statements: dict[tuple[str, str], int] = {}
    try:
        for variant in VARIANTS:  # warm-up: imports, first connections, statement caches
            app, _, cookie = apps[variant]
            run(app, cookie, "hello", 200, 0)
            run(app, cookie, "update", 50, 10**6)  # (and one more update below, counting statements)
        for round_no in range(args.rounds):
            order = VARIANTS if round_no % 2 == 0 else tuple(reversed(VARIANTS))
            for route, count in (("hello", args.hello), ("update", args.updates)):
                for variant in order:
                    app, _, cookie = apps[variant]
                    rps, cpu_us = run(app, cookie, route, count, round_no * count)
                    results.setdefault((variant, route), []).append(rps)
                    cpu.setdefault((variant, route), []).append(cpu_us)
        for variant in VARIANTS:  # SQL statements per request, counted on one more request of each route
            app, db, cookie = apps[variant]
            with app.app_context():
                engine = db.engine
            for route in ("hello", "update"):
                seen: list[str] = []

                def count_statement(*_: Any, seen: list[str] = seen) -> None:
                    seen.append("x")

                event.listen(engine, "before_cursor_execute", count_statement)
                run(app, cookie, route, 1, 10**7)
                event.remove(engine, "before_cursor_execute", count_statement)
                statements[(variant, route)] = len(seen)
        app, db, _ = apps["with"]
        with app.app_context():
            recorded = app.extensions["audit_middleware"].store.count()
        scope_us = scope_cost(app)
        expected = args.rounds * args.updates + 50 + 1 + 2  # + the counted one + the seed's 2 Created
    finally:
        for variant in VARIANTS:
            app, db, _ = apps[variant]
            with app.app_context():
                db.session.remove()
                for engine in db.engines.values():
                    engine.dispose()
        for drop in drops:
            drop()

    from importlib.metadata import version

    print(f"backend={args.backend} rounds={args.rounds} hello={args.hello} updates={args.updates} "
          f"update route login_required={not args.no_login_required} "
          f"python={sys.version.split()[0]} flask={version('flask')} flask-sqlalchemy={version('flask-sqlalchemy')} "
          f"sqlalchemy={version('sqlalchemy')}")
    print(f"events recorded by the audited app: {recorded} (expected {expected})")
    print("the extension's per-request hooks: none (a request that records nothing runs none of its code); "
          f"its request scope, made by a request's first event: {scope_us:.2f} us")
    # Medians, and the best round of each (least disturbed by other processes on a shared machine).
    print(f"{'route':<8} {'statistic':<9} {'without (req/s)':>16} {'with (req/s)':>14} {'with/without':>13} "
          f"{'added per request':>18}")
    for route in ("hello", "update"):
        for statistic, pick in (("median", median), ("best", max)):
            without = pick(results[("without", route)])
            with_ = pick(results[("with", route)])
            added_us = (1 / with_ - 1 / without) * 1e6
            print(f"{route:<8} {statistic:<9} {without:>16.0f} {with_:>14.0f} {with_ / without:>13.3f} "
                  f"{added_us:>15.0f} us")
    print(f"{'route':<8} {'CPU us/request without':>23} {'with':>6} {'added':>7}   {'SQL statements without':>22} {'with':>5}")
    for route in ("hello", "update"):
        without_cpu, with_cpu = median(cpu[("without", route)]), median(cpu[("with", route)])
        print(f"{route:<8} {without_cpu:>23.0f} {with_cpu:>6.0f} {with_cpu - without_cpu:>7.0f}   "
              f"{statements[('without', route)]:>22} {statements[('with', route)]:>5}")
    print("per round (req/s):")
    for (variant, route), values in sorted(results.items()):
        print(f"  {route:<7} {variant:<8} " + " ".join(f"{v:.0f}" for v in values))


if __name__ == "__main__":
    main()
