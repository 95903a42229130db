"""Flask-SQLAlchemy with ``SQLALCHEMY_BINDS``: a model with a ``__bind_key__`` has its events written to its own
database, in its transaction; ``db.create_all()`` creates the audit tables on every bind. The default database is
the run's backend, the ``reports`` bind a SQLite file."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from audit_middleware.adapters.flask import AuditTrail
from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore
from audit_middleware.query import EventQuery


def test_a_bound_models_events_go_to_its_own_database_and_roll_back_with_it(database_url: str, tmp_path: Any) -> None:
    class Base(DeclarativeBase):
        pass

    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=database_url,
                      SQLALCHEMY_BINDS={"reports": f"sqlite:///{tmp_path}/reports.sqlite3"})
    db = SQLAlchemy(app, model_class=Base)

    class BoundDepot(db.Model):  # type: ignore[name-defined, misc]
        # Names no other test uses: auditors discover every mapped class in the process.
        __tablename__ = "bound_depots"
        __audit__ = {"resource": "Depot"}
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))

    class BoundReport(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "bound_reports"
        __bind_key__ = "reports"
        __audit__ = {"resource": "Report"}
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))

    audit = AuditTrail(app, db, can_view=lambda: True)
    with app.app_context():
        db.create_all()
        try:
            reports = db.engines["reports"]
            assert {"audit_events", "audit_deliveries"} <= set(inspect(reports).get_table_names())

            db.session.add_all([BoundDepot(name="North"), BoundReport(name="Weekly")])
            db.session.commit()
            report = db.session.get(BoundReport, 1)
            report.name = "Weekly, renamed"
            db.session.commit()
            db.session.add(BoundReport(name="never"))
            db.session.flush()
            db.session.rollback()
            # An app event without session=: committed at once on the resource's bind, attached or detached
            audit.catalog.define("Report Shared", "Reports", resource="Report")
            report = db.session.get(BoundReport, 1)
            audit.record("Report Shared", report)
            db.session.expunge(report)
            audit.record("Report Shared", report)

            def trail(store: Any) -> list[tuple[str, str | None]]:
                return [(e.event, e.resource_name) for e in reversed(store.query(EventQuery()).events)]

            assert trail(SQLAlchemyStore(reports)) == [("Report Created", "Weekly"),
                                                       ("Report Modified", "Weekly, renamed"),
                                                       ("Report Shared", "Weekly, renamed"),
                                                       ("Report Shared", "Weekly, renamed")]
            assert trail(audit.store) == [("Depot Created", "North")]
            assert db.session.query(BoundReport).count() == 1
        finally:
            db.session.remove()
            db.drop_all()
            for engine in db.engines.values():
                engine.dispose()


def test_the_bind_tables_come_from_the_metadata_flask_sqlalchemy_keeps_per_bind(tmp_path: Any) -> None:
    """Each bind's metadata gets its own definition of the audit tables (one Table belongs to one MetaData)."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/main.sqlite3",
                      SQLALCHEMY_BINDS={"one": f"sqlite:///{tmp_path}/one.sqlite3",
                                        "two": f"sqlite:///{tmp_path}/two.sqlite3"})
    db = SQLAlchemy(app)
    AuditTrail(app, db, can_view=lambda: True)
    tables = {key: metadata.tables.get("audit_events") for key, metadata in db.metadatas.items()}
    assert set(tables) == {None, "one", "two"} and all(t is not None for t in tables.values())
    assert len({id(t) for t in tables.values()}) == 3
    assert all(t.metadata is db.metadatas[key] for key, t in tables.items())
    with app.app_context():
        db.create_all()
        for engine in db.engines.values():
            assert "audit_events" in inspect(engine).get_table_names()
            engine.dispose()
