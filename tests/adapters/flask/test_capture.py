"""Capture through HTTP routes of a real Flask app: the right events, the right actor, the request's facts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flask import Flask

from audit_middleware.adapters.flask import AuditTrail
from audit_middleware.testing import capture_events

from .conftest import TOKEN_SECRET, make_app


def test_crud_by_a_logged_in_user_records_created_modified_disabled_deleted_as_that_user(flask_app):
    client = flask_app.client("ada@a.example")
    warehouse_id = client.post("/warehouses", data={"name": "Production BigQuery", "schedule": "hourly"}).json["id"]
    client.post(f"/warehouses/{warehouse_id}", data={"schedule": "daily", "enabled": "false"})
    client.post(f"/warehouses/{warehouse_id}/delete")

    events = list(reversed(flask_app.events()))
    assert [e.event for e in events] == [
        "Warehouse Created", "Warehouse Disabled", "Warehouse Modified", "Warehouse Deleted",
    ]
    for event in events:
        assert (event.actor.type, event.actor.id, event.actor.name) == ("user", "1", "ada@a.example")
        assert event.workspace_id == "ws_a"
        assert event.resource_type == "Warehouse" and event.resource_id == str(warehouse_id)
        assert event.resource_name == "Production BigQuery"
    assert events[1].changes == {"enabled": [True, False]}
    assert events[2].changes == {"schedule": ["hourly", "daily"]}
    assert events[0].context["method"] == "POST" and events[0].context["path"] == "/warehouses"


def test_a_bearer_token_is_the_actor_and_its_secret_is_stored_nowhere(flask_app):
    client = flask_app.client()
    response = client.post("/warehouses", data={"name": "Token-made"},
                           headers={"Authorization": f"Bearer {TOKEN_SECRET}"})
    assert response.status_code == 201
    (event,) = flask_app.events()
    assert (event.actor.type, event.actor.id, event.actor.name) == ("token", "tok_12", "ci-deploy (...a1b2)")
    assert event.workspace_id == "ws_a"
    with flask_app.app.app_context():
        csv_text = "".join(flask_app.audit.auditor.export_csv())
    assert TOKEN_SECRET not in csv_text and TOKEN_SECRET not in repr(event.to_json())


def test_an_unknown_token_and_no_login_record_an_anonymous_actor(flask_app):
    client = flask_app.client()
    client.post("/warehouses", data={"name": "Nobody's"}, headers={"Authorization": "Bearer sk_live_wrong"})
    client.post("/warehouses", data={"name": "Nobody's either"})
    assert [(e.actor.type, e.actor.id, e.actor.name) for e in flask_app.events()] == [("anonymous", None, None)] * 2


def test_logged_in_user_wins_over_a_token_and_logout_falls_back_to_anonymous(flask_app):
    client = flask_app.client("bob@a.example")
    client.post("/warehouses", data={"name": "one"}, headers={"Authorization": f"Bearer {TOKEN_SECRET}"})
    client.post("/logout")
    client.post("/warehouses", data={"name": "two"})
    assert [e.actor.type for e in reversed(flask_app.events())] == ["user", "anonymous"]


def test_a_handler_that_raises_after_writing_records_nothing(flask_app):
    flask_app.app.config["PROPAGATE_EXCEPTIONS"] = False
    client = flask_app.client("ada@a.example")
    warehouse_id = client.post("/warehouses", data={"name": "Stable"}).json["id"]
    with capture_events() as committed:
        response = client.post(f"/warehouses/{warehouse_id}/broken")
    assert response.status_code == 500
    assert committed == []
    assert [e.event for e in flask_app.events()] == ["Warehouse Created"]
    with flask_app.app.app_context():
        assert flask_app.db.session.get(flask_app.Warehouse, warehouse_id).name == "Stable"


def test_record_delegates_to_the_auditor_with_the_request_actor_and_signals_after_commit(flask_app):
    client = flask_app.client("ada@a.example")
    warehouse_id = client.post("/warehouses", data={"name": "Nightly"}).json["id"]
    with capture_events() as committed:
        client.post(f"/warehouses/{warehouse_id}/run-failed", data={"error": "quota exceeded"})
    assert committed.names() == ["Warehouse Run Failed"]
    (event,) = flask_app.events(events=("Warehouse Run Failed",))
    assert event.details == {"error": "quota exceeded"}
    assert event.actor.name == "ada@a.example" and event.resource_name == "Nightly"


def test_a_request_that_changes_nothing_loads_no_user_and_runs_no_query(flask_app):
    client = flask_app.client("ada@a.example")
    client.post("/warehouses", data={"name": "warm-up"})  # the extension has done real work in this app
    flask_app.statements.clear()
    for name in flask_app.calls:
        flask_app.calls[name] = 0
    for _ in range(3):
        assert client.get("/hello", headers={"Authorization": f"Bearer {TOKEN_SECRET}"}).data == b"hello"
    assert flask_app.statements == []
    assert flask_app.calls == {"user_loader": 0, "token_loader": 0, "workspace": 0}
    # and no per-request hook at all: the request scope is made by the first event a request records
    app, audit = flask_app.app, flask_app.audit
    hooks = [*app.before_request_funcs.get(None, []), *app.teardown_request_funcs.get(None, [])]
    assert not [hook for hook in hooks if getattr(hook, "__self__", None) is audit]
    with app.test_request_context("/hello"):
        from flask import g

        app.preprocess_request()
        assert "_audit_middleware_scope" not in g
        assert audit.request_scope() is audit.request_scope()  # one scope per request, made on demand


def test_request_facts_honour_the_trusted_proxy_count_and_the_request_id_header(database_url):
    flask_app = make_app(database_url, AUDIT_TRAIL_TRUSTED_PROXIES=1)
    try:
        client = flask_app.client("ada@a.example")
        client.post(
            "/warehouses", data={"name": "proxied"},
            headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Request-ID": "req-42", "User-Agent": "curl/8.5"},
        )
        client.post("/warehouses", data={"name": "odd id"}, headers={"X-Request-ID": "bad id <script>"})
        second, first = flask_app.events()
        assert first.context["ip"] == "203.0.113.9"
        assert first.context["request_id"] == "req-42" and first.context["user_agent"] == "curl/8.5"
        assert second.context["ip"] == "127.0.0.1"
        assert len(second.context["request_id"]) == 32 and "<" not in second.context["request_id"]
    finally:
        from .conftest import dispose

        dispose(flask_app)


def test_a_configured_request_id_header_is_read_and_the_default_one_then_ignored(database_url):
    flask_app = make_app(database_url, AUDIT_TRAIL_REQUEST_ID_HEADER="X-Correlation-Id")
    try:
        client = flask_app.client("ada@a.example")
        client.post("/warehouses", data={"name": "correlated"}, headers={"X-Correlation-Id": "corr-7"})
        client.post("/warehouses", data={"name": "default header"}, headers={"X-Request-ID": "req-42"})
        second, first = flask_app.events()
        assert first.context["request_id"] == "corr-7"
        assert second.context["request_id"] != "req-42" and len(second.context["request_id"]) == 32
    finally:
        from .conftest import dispose

        dispose(flask_app)


def test_init_app_twice_on_one_app_is_refused_and_a_missing_db_is_explained():
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match="AuditTrail needs the app's Flask-SQLAlchemy db"):
        AuditTrail(app)
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    audit = AuditTrail(app, db)
    assert app.extensions["audit_middleware"] is audit
    assert app.config["AUDIT_TRAIL_URL_PREFIX"] == "/admin/audit-trail"
    with pytest.raises(RuntimeError, match="already registered"):
        audit.init_app(app)
    audit.auditor.remove()
    oversized = Flask(__name__)
    oversized.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", AUDIT_TRAIL_PAGE_SIZE=1000)
    db.init_app(oversized)
    with pytest.raises(ValueError, match="AUDIT_TRAIL_PAGE_SIZE must be between 1 and 500"):
        AuditTrail(oversized, db)


def test_importing_the_adapter_without_flask_says_how_to_install_it(tmp_path):
    code = (
        "import sys; sys.modules['flask'] = None\n"
        "try:\n    import audit_middleware.adapters.flask\nexcept ImportError as e:\n    print(e)\n"
    )
    # Outside the checkout, so the installed package is imported (the source tree would shadow it).
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert 'pip install "audit-middleware[flask]"' in out


def test_the_request_scope_is_bound_before_the_apps_own_before_request_hooks():
    from flask_sqlalchemy import SQLAlchemy

    from audit_middleware.context import current_request

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    seen: list[object] = []
    app.before_request(lambda: seen.append(current_request()))
    app.get("/")(lambda: "ok")
    db = SQLAlchemy()
    db.init_app(app)
    audit = AuditTrail(app, db)
    try:
        app.test_client().get("/", headers={"X-Request-ID": "early-1"})
        assert seen[0] is not None and seen[0].request_id == "early-1"
    finally:
        audit.auditor.remove()


def app_factory(tmp_path, **config):
    """The app-factory pattern: a module-level ``db`` with one ``Gadget`` model, and ``create_app(name)`` making
    a Flask app on its own SQLite file with an ``AuditTrail`` on that same ``db`` (``config`` added to each)."""
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import Column, Integer, String

    db = SQLAlchemy()

    class Gadget(db.Model):
        id = Column(Integer, primary_key=True)
        name = Column(String(50))

    def create_app(name):
        app = Flask(name)
        app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / name}.sqlite3", **config)
        db.init_app(app)
        return app, AuditTrail(app, db)

    return db, Gadget, create_app


def test_an_app_factory_called_twice_on_one_db_records_each_change_once(tmp_path):
    """The app-factory pattern (a module-level db, create_app() per test or per worker): each new AuditTrail on
    the same db takes the capture over from the previous one, so a change is recorded once, by the newest."""
    from sqlalchemy import select

    db, Gadget, create_app = app_factory(tmp_path)
    first_app, first = create_app("first")
    second_app, second = create_app("second")
    try:
        for app, audit in ((first_app, first), (second_app, second)):
            with app.app_context():
                db.create_all()
                db.session.add(Gadget(name=app.name))
                db.session.commit()
                table = audit.auditor.table
                rows = db.session.execute(select(table.c.resource_name, table.c.event)).all()
                assert rows == [(app.name, "Gadget Created")]
        assert not first.auditor.capture.active and second.auditor.capture.active
    finally:
        second.auditor.remove()
        first.auditor.remove()


def test_an_app_taken_over_by_a_newer_one_stops_its_in_process_drainer(tmp_path):
    """With AUDIT_TRAIL_FORWARD_IN_PROCESS, each app of the factory pattern starts a drainer thread; once a
    newer AuditTrail takes the db's capture over, the older app records nothing more, so its drainer stops
    (it would poll the outbox every few seconds for the life of the process); the newest keeps forwarding."""
    from audit_middleware.forwarding import SegmentDestination
    from audit_middleware.signals import event_recorded

    db, Gadget, create_app = app_factory(
        tmp_path, AUDIT_TRAIL_FORWARD_IN_PROCESS=True,
        AUDIT_TRAIL_DESTINATIONS=[SegmentDestination("wk", host="http://127.0.0.1:9", allow_private=True)])
    first_app, first = create_app("first")
    second = None
    try:
        with first_app.app_context():
            db.create_all()
            db.session.add(Gadget(name="wakes the first drainer"))
            db.session.commit()
        assert first.drainer._thread is not None and first.drainer._thread.is_alive()
        _second_app, second = create_app("second")
        assert not first.drainer._thread.is_alive(), "taken over: the first app's drainer stopped"
        assert first.drainer.wake not in list(event_recorded.receivers_for(first.auditor))
        assert second.drainer.wake in list(event_recorded.receivers_for(second.auditor))
    finally:
        if second is not None:
            second.auditor.remove()
        first.auditor.remove()
    assert second.drainer._thread is None or not second.drainer._thread.is_alive()


def test_flask_sqlalchemys_session_records_the_legacy_bulk_methods(flask_app):
    """db.session (Flask-SQLAlchemy's scoped session) hands bulk_insert_mappings() and bulk_update_mappings()
    to the session the extension captures: an event per row, like any other write."""
    W = flask_app.Warehouse
    with flask_app.app.app_context():
        db = flask_app.db
        db.session.bulk_insert_mappings(W, [{"name": "bulk a", "workspace_id": "ws_1"},
                                            {"name": "bulk b", "workspace_id": "ws_1"}])
        db.session.commit()
        first = db.session.scalar(db.select(W.id).where(W.name == "bulk a"))
        db.session.bulk_update_mappings(W, [{"id": first, "enabled": False}])
        db.session.commit()
    assert sorted((e.event, e.resource_name) for e in flask_app.events()) == [
        ("Warehouse Created", "bulk a"), ("Warehouse Created", "bulk b"), ("Warehouse Disabled", "bulk a")]
