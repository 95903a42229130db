"""A session whose mappers are bound to different engines (``sessionmaker(binds={...})``): each change's events go
to the audit table of the database the change is written to, in that connection's transaction. Warehouse lives
on the run's backend, Label on a SQLite file beside it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import sessionmaker

from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore, track
from audit_middleware.errors import AuditWriteError
from audit_middleware.query import EventQuery

from .conftest import App, make_app


class TwoDatabases:
    def __init__(self, app: App, second: Any, Session: Any, auditor: Any) -> None:
        self.app, self.second, self.Session, self.auditor = app, second, Session, auditor

    def trail(self, engine: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
        """``engine``'s stored events, oldest first, as ``(event, resource name, changes)``."""
        page = SQLAlchemyStore(engine).query(EventQuery(limit=500))
        return [(e.event, e.resource_name, e.changes) for e in reversed(page.events)]


@pytest.fixture
def two(database_url: str, tmp_path: Any) -> Iterator[TwoDatabases]:
    app = make_app(database_url)
    app.auditor.remove()  # this test's auditor tracks a sessionmaker of its own
    second = create_engine(f"sqlite:///{tmp_path}/second.sqlite3")
    app.Label.metadata.create_all(second, tables=[app.Label.__table__])
    Session = sessionmaker(binds={app.Warehouse: app.engine, app.Label: second})
    auditor = track(Session, bind=app.engine)
    SQLAlchemyStore(second).create_tables()
    yield TwoDatabases(app, second, Session, auditor)
    auditor.remove()
    second.dispose()
    app.engine.dispose()


def test_each_changes_events_go_to_the_database_the_change_is_written_to(two: TwoDatabases) -> None:
    """One session, one flush, two engines: Warehouse's events on the first, Label's (Tag) on the second; updates
    and deletes alike; the auditor reads the engine it was given."""
    W, L = two.app.Warehouse, two.app.Label
    with two.Session() as session:
        session.add_all([W(name="North"), L(title="urgent")])
        session.commit()
        warehouse, label = session.scalars(select(W)).one(), session.scalars(select(L)).one()
        warehouse.name, label.title = "North, renamed", "very urgent"
        session.commit()
        session.delete(warehouse)
        session.delete(label)
        session.commit()
    assert [(e, n) for e, n, _ in two.trail(two.app.engine)] == [
        ("Warehouse Created", "North"), ("Warehouse Modified", "North, renamed"),
        ("Warehouse Deleted", "North, renamed")]
    assert [(e, n, c.get("title")) for e, n, c in two.trail(two.second)] == [
        ("Tag Created", "urgent", [None, "urgent"]), ("Tag Modified", "very urgent", ["urgent", "very urgent"]),
        ("Tag Deleted", "very urgent", ["very urgent", None])]
    assert [e.event for e in two.auditor.query().events] == [
        "Warehouse Deleted", "Warehouse Modified", "Warehouse Created"]


def test_a_rollback_drops_the_events_on_every_database(two: TwoDatabases) -> None:
    """Flushed on both engines, then rolled back: no row and no event on either."""
    W, L = two.app.Warehouse, two.app.Label
    with two.Session() as session:
        session.add_all([W(name="North"), L(title="urgent")])
        session.flush()
        session.rollback()
    assert two.trail(two.app.engine) == [] and two.trail(two.second) == []
    with two.Session() as session:
        assert session.scalars(select(W)).all() == [] and session.scalars(select(L)).all() == []


def test_bulk_statements_and_app_events_write_on_their_models_database(two: TwoDatabases) -> None:
    """An ORM bulk UPDATE of Labels, and record() of a Label in the session, write on the second engine."""
    L = two.app.Label
    two.auditor.catalog.define("Tag Pinned", "Tagging", resource="Tag")
    with two.Session() as session:
        session.add_all([L(title="a"), L(title="b")])
        session.commit()
        session.execute(update(L).where(L.title == "a").values(visible=False))
        two.auditor.record("Tag Pinned", session.scalars(select(L).where(L.title == "b")).one(), session=session)
        session.commit()
    assert [(e, n) for e, n, _ in two.trail(two.second)] == [
        ("Tag Created", "a"), ("Tag Created", "b"), ("Tag Disabled", "a"), ("Tag Pinned", "b")]
    assert two.trail(two.app.engine) == []


def test_a_database_without_the_audit_table_fails_the_flush_and_keeps_nothing(two: TwoDatabases,
                                                                                tmp_path: Any) -> None:
    """Labels bound to an engine whose database lacks the audit table: the flush fails with AuditWriteError, and
    neither the Label nor the Warehouse of the same session is saved."""
    bare = create_engine(f"sqlite:///{tmp_path}/bare.sqlite3")
    two.app.Label.metadata.create_all(bare, tables=[two.app.Label.__table__])
    Bare = sessionmaker(binds={two.app.Warehouse: two.app.engine, two.app.Label: bare})
    auditor = track(Bare, bind=two.app.engine)
    try:
        with Bare() as session:
            session.add_all([two.app.Warehouse(name="North"), two.app.Label(title="urgent")])
            with pytest.raises(AuditWriteError, match=r"Tag Created, ...[)] to sqlite:///.*bare.sqlite3, so the change "
                                                      r"was not saved either: .*no such table: audit_events"):
                session.commit()
        with Bare() as session:
            assert session.scalars(select(two.app.Warehouse)).all() == []
            assert session.scalars(select(two.app.Label)).all() == []
        assert two.trail(two.app.engine) == []
    finally:
        auditor.remove()
        bare.dispose()


def test_a_flush_too_large_to_hold_writes_every_chunk_on_its_models_database(two: TwoDatabases) -> None:
    """More events than one chunk (written as the flush makes them, a chunk at a time): every chunk goes to the
    second engine, and the Warehouse flushed with them to the first."""
    from audit_middleware.store import ROWS_PER_CHUNK

    count = ROWS_PER_CHUNK + 450  # the first chunk at ROWS_PER_CHUNK + 1, then two more, then the rest
    with two.Session() as session:
        session.add(two.app.Warehouse(name="North"))
        session.add_all([two.app.Label(title=f"tag {i}") for i in range(count)])
        session.commit()
    assert SQLAlchemyStore(two.second).count() == count
    assert [(e, n) for e, n, _ in two.trail(two.app.engine)] == [("Warehouse Created", "North")]


def test_record_without_a_session_writes_on_the_resources_database(two: TwoDatabases, tmp_path: Any) -> None:
    """record(name, label) without session=: committed at once on the engine Label is bound to, whether the Label
    is still in its session or detached; a Warehouse's on the auditor's own engine; a resource_type-only event
    there too. A bind without the audit table fails with AuditWriteError naming that database."""
    W, L = two.app.Warehouse, two.app.Label
    two.auditor.catalog.define("Tag Pinned", "Tagging", resource="Tag")
    two.auditor.catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    with two.Session() as session:
        session.add_all([W(name="North"), L(title="urgent")])
        session.commit()
        label, warehouse = session.scalars(select(L)).one(), session.scalars(select(W)).one()
        two.auditor.record("Tag Pinned", label, details={"attached": True})
        two.auditor.record("Warehouse Run Failed", warehouse)
    two.auditor.record("Tag Pinned", label, details={"attached": False})  # detached: the session is closed
    two.auditor.record("Warehouse Run Failed", resource_type="Warehouse", resource_id="9")
    assert [(e, n) for e, n, _ in two.trail(two.second)] == [
        ("Tag Created", "urgent"), ("Tag Pinned", "urgent"), ("Tag Pinned", "urgent")]
    pinned = [e for e in SQLAlchemyStore(two.second).query(EventQuery(limit=10)).events if e.event == "Tag Pinned"]
    assert [e.details for e in pinned] == [{"attached": False}, {"attached": True}]
    assert [(e, n) for e, n, _ in two.trail(two.app.engine)] == [
        ("Warehouse Created", "North"), ("Warehouse Run Failed", "North"), ("Warehouse Run Failed", None)]

    bare = create_engine(f"sqlite:///{tmp_path}/bare.sqlite3")
    L.metadata.create_all(bare, tables=[L.__table__])
    Bare = sessionmaker(binds={W: two.app.engine, L: bare})
    two.auditor.remove()
    auditor = track(Bare, bind=two.app.engine)
    try:
        auditor.catalog.define("Tag Pinned", "Tagging", resource="Tag")
        with Bare() as session:
            session.add(L(title="loose"))
            with pytest.raises(AuditWriteError):
                session.commit()  # the flush fails: nothing is saved
        loose = L(id=1, title="loose")
        with pytest.raises(AuditWriteError, match=r"'Tag Pinned' to sqlite:///.*bare.sqlite3: OperationalError: "
                                                  r".*no such table: audit_events"):
            auditor.record("Tag Pinned", loose)
        assert SQLAlchemyStore(two.app.engine).count() == 3
    finally:
        auditor.remove()
        bare.dispose()
