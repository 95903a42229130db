"""Capture through session events, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import String, bindparam, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from audit_middleware import (
    Actor,
    AuditWriteError,
    RequestContext,
    acting_as,
    in_workspace,
    request_context,
    suspend_auditing,
)
from audit_middleware.adapters.sqlalchemy import track
from audit_middleware.context import RequestScope, request_scope
from audit_middleware.diff import MASK
from audit_middleware.testing import capture_events

from ...sqlite_files import (
    assert_plain_multi_row_inserts_would_show_a_statement_journal,
    open_temporary_files,
)
from .conftest import Tier, make_app

ADA = Actor.user("7", "ada@example.com")


def test_create_modify_delete_record_events_with_diffs_actor_workspace_and_request(app):
    W = app.Warehouse
    with acting_as(ADA), in_workspace("ws_1"), request_context(RequestContext(ip="203.0.113.9", request_id="r-1")):
        with app.Session() as s:
            w = W(name="Production BigQuery", slug="prod", schedule="hourly")
            s.add(w)
            s.commit()
            w.schedule = "daily"
            w.slug = "prod-bq"
            s.commit()
            s.delete(w)
            s.commit()
    created, modified, deleted = app.events()
    assert created.event == "Warehouse Created" and created.category == "Warehouses" and created.action == "created"
    assert created.changes["name"] == [None, "Production BigQuery"] and created.changes["enabled"] == [None, True]
    assert created.resource_type == "Warehouse" and created.resource_id == str(w.id)
    assert created.resource_name == "Production BigQuery"
    assert created.actor == ADA and created.workspace_id == "ws_1"
    assert created.context == {"ip": "203.0.113.9", "request_id": "r-1"}
    assert modified.event == "Warehouse Modified"
    assert modified.changes == {"schedule": ["hourly", "daily"], "slug": ["prod", "prod-bq"]}
    assert deleted.event == "Warehouse Deleted"
    assert deleted.changes["name"] == ["Production BigQuery", None]
    assert deleted.changes["schedule"] == ["daily", None]
    assert created.id < modified.id < deleted.id


def test_toggle_flip_records_enabled_disabled_with_modified_beside_it(app):
    with app.Session() as s:
        w = app.Warehouse(name="wh")
        s.add(w)
        s.commit()
        w.enabled = False
        s.commit()
        w.enabled = True
        w.name = "wh2"
        s.commit()
    names = [(e.event, e.changes) for e in app.events()][1:]
    assert names == [
        ("Warehouse Disabled", {"enabled": [True, False]}),
        ("Warehouse Enabled", {"enabled": [False, True]}),
        ("Warehouse Modified", {"name": ["wh", "wh2"]}),
    ]


def test_model_options_rename_exclude_and_choose_the_toggle_and_label(app):
    with app.Session() as s:
        label = app.Label(title="pii", internal="x")
        s.add(label)
        s.commit()
        label.internal = "changed"
        s.commit()
        label.visible = False
        s.commit()
        s.add(app.Note(body="not audited"))
        s.commit()
    events = app.events()
    assert [e.event for e in events] == ["Tag Created", "Tag Disabled"]
    assert all(e.category == "Tagging" and e.resource_name == "pii" for e in events)
    assert "internal" not in events[0].changes


def test_sensitive_fields_keep_the_fact_of_change_not_the_value(app):
    with app.Session() as s:
        w = app.Warehouse(name="wh", password="hunter2")
        s.add(w)
        s.commit()
        w.password = "hunter3"
        s.commit()
    created, modified = app.events()
    assert created.changes["password"] == [None, MASK]
    assert modified.changes == {"password": [MASK, MASK]}
    with app.engine.connect() as c:
        stored = " ".join(str(v) for row in c.execute(select(app.auditor.table)) for v in row)
    assert "hunter" not in stored


def test_rolled_back_work_leaves_no_event_and_committed_work_keeps_every_one(app):
    with capture_events() as committed:
        with app.Session() as s:
            s.add(app.Warehouse(name="kept"))
            s.commit()
            s.add(app.Warehouse(name="dropped"))
            s.flush()
            assert len(app.events()) == 1  # the flushed event is not visible outside the transaction
            s.rollback()
    assert [e.resource_name for e in app.events()] == ["kept"]
    assert [e.resource_name for e in committed] == ["kept"]


def test_a_flush_that_changes_nothing_records_nothing(app):
    with app.Session() as s:
        w = app.Warehouse(name="same")
        s.add(w)
        s.commit()
        w.name = "same"
        s.commit()
        s.flush()
        s.commit()
    assert [e.event for e in app.events()] == ["Warehouse Created"]


def test_a_flushs_events_share_the_origin_read_once_at_flush_time_and_only_when_a_row_is_audited(app):
    """Actor, workspace and request context are read once per flush, at its first audited row: the events
    of one flush carry the same ones, the next flush reads them again, and a flush of unaudited rows only
    never resolves the request's actor (a user lookup in a web app)."""
    loads = []

    def load_actor():
        loads.append(1)
        return ADA

    with app.Session() as s:
        old = app.Warehouse(name="old")
        s.add(old)
        s.commit()
        with request_scope(RequestScope(actor_loader=load_actor, workspace_loader=lambda: "ws_1")):
            s.add(app.Note(body="not audited"))
            s.flush()
            assert loads == []
            with request_context(RequestContext(ip="203.0.113.9", request_id="r-1")):
                s.add_all([app.Warehouse(name="a"), app.Warehouse(name="b")])
                old.name = "renamed"
                s.flush()
                assert loads == [1]
            bob = Actor.user("8", "bob@example.com")
            with acting_as(bob), in_workspace("ws_2"), request_context(RequestContext(request_id="r-2")):
                s.delete(old)
                s.commit()
    first, second = app.events()[1:4], app.events()[4:]
    assert sorted(e.resource_name for e in first) == ["a", "b", "renamed"]
    for e in first:
        assert (e.actor, e.workspace_id, e.context) == (ADA, "ws_1", {"ip": "203.0.113.9", "request_id": "r-1"})
    assert [(e.event, e.actor, e.workspace_id, e.context) for e in second] == [
        ("Warehouse Deleted", bob, "ws_2", {"request_id": "r-2"})]


def test_rolled_back_savepoint_drops_only_its_own_events(app):
    with capture_events() as committed:
        with app.Session() as s:
            s.add(app.Warehouse(name="outer"))
            s.flush()
            with s.begin_nested():
                s.add(app.Warehouse(name="inner-kept"))
            nested = s.begin_nested()
            s.add(app.Warehouse(name="inner-dropped"))
            s.flush()
            nested.rollback()
            s.commit()
    assert sorted(e.resource_name for e in app.events()) == ["inner-kept", "outer"]
    assert sorted(e.resource_name for e in committed) == ["inner-kept", "outer"]


def test_bulk_update_and_delete_statements_record_one_event_per_row_with_old_values(app):
    W = app.Warehouse
    with app.Session() as s:
        s.add_all([W(name=f"w{n}", schedule="hourly", enabled=True) for n in range(5)])
        s.commit()
    with app.Session() as s, acting_as(ADA):
        s.execute(update(W).where(W.name.in_(["w0", "w1", "w2"])).values(enabled=False, schedule="daily"))
        s.execute(delete(W).where(W.name == "w4"))
        s.commit()
    events = app.events()[5:]
    disabled = [e for e in events if e.event == "Warehouse Disabled"]
    modified = [e for e in events if e.event == "Warehouse Modified"]
    deleted = [e for e in events if e.event == "Warehouse Deleted"]
    assert sorted(e.resource_name for e in disabled) == ["w0", "w1", "w2"]
    assert all(e.changes == {"enabled": [True, False]} for e in disabled)
    assert all(e.changes == {"schedule": ["hourly", "daily"]} for e in modified) and len(modified) == 3
    assert [e.resource_name for e in deleted] == ["w4"] and deleted[0].changes["schedule"] == ["hourly", None]
    assert all(e.actor == ADA for e in events)


def test_bulk_update_by_primary_key_and_rolled_back_bulk_statement(app):
    W = app.Warehouse
    with app.Session() as s:
        s.add_all([W(id=n, name=f"w{n}") for n in (1, 2, 3)])
        s.commit()
    with app.Session() as s:
        s.execute(update(W), [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
        s.commit()
        s.execute(delete(W))
        s.rollback()
    assert [(e.event, e.changes) for e in app.events()[3:]] == [
        ("Warehouse Modified", {"name": ["w1", "one"]}), ("Warehouse Modified", {"name": ["w2", "two"]}),
    ]


def test_orm_selects_run_no_execute_hook_and_the_apps_own_hooks_shape_the_bulk_statements_capture_sees(app):
    """Capture adds its do_orm_execute hook to DML executions only: a SELECT meets no hook at all (no
    ORMExecuteState built, no compile-state hook run twice). An app's own do_orm_execute listener runs first, so
    a bulk UPDATE it narrows (a soft-delete filter, say) records events for exactly the rows that changed."""
    W = app.Warehouse
    seen = []

    def spy(orm_state):
        seen.append(type(orm_state.statement).__name__)

    with app.Session() as s:
        s.add_all([W(name=f"w{n}") for n in range(3)])
        s.commit()
        assert not s.dispatch.do_orm_execute  # capture listens to no execution of its own
        event.listen(app.Session, "do_orm_execute", spy)
        try:
            assert s.scalars(select(W.name).order_by(W.name)).all() == ["w0", "w1", "w2"]
        finally:
            event.remove(app.Session, "do_orm_execute", spy)

    def keep_w1(orm_state):
        if orm_state.is_update:
            orm_state.statement = orm_state.statement.where(W.name != "w1")

    event.listen(app.Session, "do_orm_execute", keep_w1)
    try:
        with app.Session() as s:
            s.execute(update(W).values(schedule="daily"))
            s.execute(select(W)).all()
            s.commit()
    finally:
        event.remove(app.Session, "do_orm_execute", keep_w1)
    assert seen == ["Select"]  # the app's own listener sees the SELECT as before
    assert sorted((e.resource_name, e.changes["schedule"][1]) for e in app.events(event="Warehouse Modified")) == [
        ("w0", "daily"), ("w2", "daily")]
    with app.Session() as s:
        assert s.scalars(select(W.name).where(W.schedule == "daily").order_by(W.name)).all() == ["w0", "w2"]


@contextmanager
def tracked(database_url: str, base: Any) -> Iterator[tuple[Any, Any, Any]]:
    """``(engine, Session, auditor)`` for a test's own models (``base``'s tables made on a fresh database),
    removed and disposed afterwards."""
    engine = create_engine(database_url)
    base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    auditor = track(Session)
    auditor.create_tables()
    try:
        yield engine, Session, auditor
    finally:
        auditor.remove()
        engine.dispose()


def stored_changes(engine: Any, auditor: Any, *where: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """``(event, resource id, changes)`` of the stored events matching ``where``, oldest first."""
    table = auditor.table
    with engine.connect() as c:
        rows = c.execute(select(table.c.event, table.c.resource_id, table.c.changes).where(*where)
                         .order_by(table.c.occurred_at, table.c.id)).all()
    return [(r.event, r.resource_id, json.loads(r.changes)) for r in rows]


def test_a_bulk_update_reads_only_what_its_set_clause_and_onupdate_defaults_can_change(database_url):
    """A bulk UPDATE's events hold what it changed of the columns it assigns (literals, or expressions the
    database evaluates, read back from it) and of those SQLAlchemy updates on its own (onupdate); the SELECTs
    around it read only those, the ids and the label. A SET it names by something that is not a column of
    the model (here a bound parameter's name) falls back to reading every column."""
    class Base(DeclarativeBase):
        pass

    class Dock(Base):
        __tablename__ = "docks"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        bay: Mapped[int] = mapped_column("bay_number")
        notes: Mapped[str | None] = mapped_column(String(50))
        revision: Mapped[int] = mapped_column(default=1, onupdate=7)

    selects: list[str] = []
    with tracked(database_url, Base) as (engine, Session, auditor):

        @event.listens_for(engine, "before_cursor_execute")
        def note_select(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("SELECT") and "docks" in statement:
                selects.append(statement)

        with Session() as s:
            s.add_all([Dock(id=i, name=f"d{i}", bay=i, notes="n") for i in (1, 2)])
            s.commit()
        selects.clear()
        with Session() as s:
            s.execute(update(Dock).where(Dock.id == 1).values(bay=Dock.bay + 10))
            s.commit()
        assert selects and all("notes" not in sql for sql in selects), selects
        assert all("bay_number" in sql and "revision" in sql and "name" in sql for sql in selects), selects
        selects.clear()
        with Session() as s:
            s.execute(update(Dock), [{"id": 2, "notes": "by id"}])
            s.execute(update(Dock).where(Dock.id == bindparam("dock")).values(notes=bindparam("text")),
                      {"dock": 1, "text": "bound"})
            s.commit()
        assert any("bay_number" in sql for sql in selects), "an unknown SET name reads every column"
        assert stored_changes(engine, auditor, auditor.table.c.event == "Dock Modified") == [
            ("Dock Modified", "1", {"bay": [1, 11], "revision": [1, 7]}),
            ("Dock Modified", "2", {"notes": ["n", "by id"], "revision": [1, 7]}),
            ("Dock Modified", "1", {"notes": ["n", "bound"]}),
        ]


def test_bulk_statements_on_inheriting_classes_record_exactly_the_rows_they_change(database_url):
    """A bulk UPDATE or DELETE of a joined-inheritance subclass reads its rows through the join (not a
    cartesian product of the two tables), and one of a single-table subclass only the rows of that kind: the
    events are those of the rows the statement changed, no more. The legacy bulk methods alike."""
    from sqlalchemy import ForeignKey

    class Base(DeclarativeBase):
        pass

    class Vehicle(Base):
        __tablename__ = "vehicles"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        kind: Mapped[str] = mapped_column(String(20))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "vehicle"}

    class Truck(Vehicle):  # joined: a table of its own
        __tablename__ = "trucks"
        id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"), primary_key=True)
        load: Mapped[int] = mapped_column()
        __mapper_args__ = {"polymorphic_identity": "truck"}

    class Van(Vehicle):  # single-table: rows of vehicles whose kind is "van"
        __mapper_args__ = {"polymorphic_identity": "van"}

    with tracked(database_url, Base) as (engine, Session, auditor):
        with Session() as s:
            s.add_all([Truck(id=1, name="t1", load=5), Truck(id=2, name="t2", load=7), Van(id=3, name="v3"),
                       Van(id=4, name="v4"), Vehicle(id=5, name="bike")])
            s.commit()
        with Session() as s:
            s.execute(update(Truck).where(Truck.load > 6).values(load=Truck.load + 1))
            s.execute(delete(Van).where(Van.name == "v4"))
            s.execute(delete(Van))
            s.commit()
        assert stored_changes(engine, auditor, auditor.table.c.event.not_like("% Created")) == [
            ("Truck Modified", "2", {"load": [7, 8]}),
            ("Van Deleted", "4", {"id": [4, None], "kind": ["van", None], "name": ["v4", None]}),
            ("Van Deleted", "3", {"id": [3, None], "kind": ["van", None], "name": ["v3", None]}),
        ]
        with engine.begin() as c:
            events_before = c.scalar(select(func.max(auditor.table.c.id)))
            if engine.dialect.name == "postgresql":  # the rows above were given their ids: move the sequence on
                c.execute(text("SELECT setval(pg_get_serial_sequence('vehicles', 'id'), 100)"))
        with Session() as s:  # the legacy bulk methods: both tables of a joined subclass, the kind of a single one
            s.bulk_insert_mappings(Truck, [{"name": "t9", "load": 9}])
            s.bulk_save_objects([Van(name="v9")])
            s.bulk_update_mappings(Truck, [{"id": 1, "name": "t1b", "load": 6}])
            s.commit()
            t9, v9 = (s.scalar(select(Vehicle.id).where(Vehicle.name == name)) for name in ("t9", "v9"))
        assert stored_changes(engine, auditor, auditor.table.c.id > events_before) == [
            ("Truck Created", str(t9), {"id": [None, t9], "kind": [None, "truck"], "load": [None, 9],
                                        "name": [None, "t9"]}),
            ("Van Created", str(v9), {"id": [None, v9], "kind": [None, "van"], "name": [None, "v9"]}),
            ("Truck Modified", "1", {"load": [5, 6], "name": ["t1", "t1b"]}),
        ]


def test_a_bulk_statement_over_more_rows_than_a_chunk_writes_as_it_goes_and_keeps_events_for_a_listener(app):
    """A bulk UPDATE or DELETE of more rows than ROWS_PER_CHUNK writes its events a chunk at a time while it
    runs (in its transaction: a rollback drops them), and keeps them for after the commit only when an
    event_recorded receiver listens; every row's event is stored once, and verifies."""
    from datetime import timedelta

    from audit_middleware.adapters.sqlalchemy.capture import PENDING_KEY
    from audit_middleware.signals import event_recorded
    from audit_middleware.store import ROWS_PER_CHUNK

    W, table = app.Warehouse, app.auditor.table
    count = ROWS_PER_CHUNK + 300
    with suspend_auditing(), app.Session() as s:
        s.add_all([W(name=f"w{i}", schedule="hourly") for i in range(count)])
        s.commit()
    with app.Session() as s:
        s.execute(update(W).values(schedule="daily"))
        assert PENDING_KEY not in s.info, "nobody listens: the statement's events are not kept"
        assert s.execute(select(func.count()).select_from(table)).scalar_one() == count
        s.commit()
    modified = app.events(event="Warehouse Modified")
    assert sorted(e.resource_name for e in modified) == sorted(f"w{i}" for i in range(count))
    assert all(e.changes == {"schedule": ["hourly", "daily"]} for e in modified)

    announced: list[str] = []

    def note(sender, events):  # type: ignore[no-untyped-def]
        announced.extend(e.event for e in events)

    event_recorded.connect(note, sender=app.auditor, weak=False)
    try:
        with app.Session() as s:
            s.execute(update(W).values(schedule="weekly"))
            s.rollback()
        assert announced == [] and len(app.events()) == count
        with app.Session() as s:
            s.execute(delete(W))
            s.commit()
        assert announced == ["Warehouse Deleted"] * count
    finally:
        event_recorded.disconnect(note, sender=app.auditor)
    deleted = app.events(event="Warehouse Deleted")
    assert sorted(e.resource_name for e in deleted) == sorted(f"w{i}" for i in range(count))
    assert all(e.changes["schedule"] == ["daily", None] for e in deleted)
    report = app.auditor.verify(delay=timedelta(0))
    assert report.ok and report.events == 2 * count, report.problems[:3]


def test_orm_bulk_insert_records_each_row_as_the_database_stored_it(app):
    """session.execute(insert(Model), rows), SQLAlchemy's ORM bulk INSERT, and an INSERT of one row record a
    Created event per row with its new id and the column defaults; one row's result keeps its
    inserted_primary_key; more than 1,000 rows write their events as they go (none kept without a listener);
    a rollback drops them."""
    from audit_middleware.adapters.sqlalchemy.capture import PENDING_KEY
    from audit_middleware.store import ROWS_PER_CHUNK

    W = app.Warehouse
    with app.Session() as s, acting_as(ADA):
        s.execute(insert(W), [{"name": "bulk a"}, {"name": "bulk b", "enabled": False, "schedule": "daily"}])
        s.execute(insert(W).values([{"name": "values a", "schedule": None}, {"name": "values b", "schedule": "weekly"}]))
        single = s.execute(insert(W).values(name="single"))
        assert single.inserted_primary_key is not None
        single_id = single.inserted_primary_key[0]
        s.commit()
    created = app.events(event="Warehouse Created")
    by_name = {e.resource_name: e for e in created}
    with app.Session() as s:
        ids = {w.name: w.id for w in s.scalars(select(W))}
    assert sorted(by_name) == ["bulk a", "bulk b", "single", "values a", "values b"]
    assert ids["single"] == single_id and by_name["values b"].changes["schedule"] == [None, "weekly"]
    assert all(e.resource_id == str(ids[name]) and e.actor == ADA for name, e in by_name.items())
    assert by_name["bulk a"].changes["enabled"] == [None, True]  # the column default, as stored
    assert by_name["bulk b"].changes["schedule"] == [None, "daily"]
    assert by_name["bulk b"].changes["enabled"] == [None, False]

    count = ROWS_PER_CHUNK + 200
    with app.Session() as s:
        s.execute(insert(W), [{"name": f"many {i}"} for i in range(count)])
        assert PENDING_KEY not in s.info, "nobody listens: the statement's events are not kept"
        s.commit()
    with app.Session() as s:
        s.execute(insert(W), [{"name": "rolled back"}])
        s.rollback()
    names = [e.resource_name for e in app.events(event="Warehouse Created")]
    assert sorted(n for n in names if n.startswith("many ")) == sorted(f"many {i}" for i in range(count))
    assert "rolled back" not in names and len(names) == count + 5


def test_an_orm_insert_capture_cannot_record_runs_unaudited_and_is_counted_or_refused_when_it_must_be(app):
    """An INSERT ... FROM SELECT has no rows capture could know: it runs, and the failure is logged and
    counted; for a model whose events must be recorded it is refused before it runs."""
    from audit_middleware import UncapturedWriteError

    W = app.Warehouse
    with suspend_auditing(), app.Session() as s:
        s.add(W(name="source"))
        s.commit()
    copy = insert(W).from_select(["name"], select(W.name + " (copy)"))
    with app.Session() as s:
        s.execute(copy)
        s.commit()
    assert app.auditor.recorder.errors.count == 1
    assert isinstance(app.auditor.recorder.errors.last, UncapturedWriteError)
    assert "FROM SELECT" in str(app.auditor.recorder.errors.last)
    with app.Session() as s:
        assert [w.name for w in s.scalars(select(W).order_by(W.id))] == ["source", "source (copy)"]
    assert app.events() == []
    dialect = app.engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:
        from sqlalchemy.dialects.mysql import insert as upsert
    statement = upsert(W).values(id=1, name="kept")
    statement = (statement.on_duplicate_key_update(name="kept") if dialect not in ("postgresql", "sqlite")
                 else statement.on_conflict_do_nothing())
    with app.Session() as s:
        s.execute(statement)
        s.commit()
    assert app.auditor.recorder.errors.count == 2 and "upsert" in str(app.auditor.recorder.errors.last)
    assert app.events() == []

    W.__audit__ = {"must_record": True}
    app.auditor.capture._infos.clear()
    try:
        with app.Session() as s, pytest.raises(UncapturedWriteError, match="not audited"):
            s.execute(copy)
        with app.Session() as s:
            assert s.scalar(select(func.count()).select_from(W)) == 2
    finally:
        del W.__audit__
        app.auditor.capture._infos.clear()


def test_the_legacy_bulk_methods_record_an_event_per_row(app):
    """bulk_insert_mappings(), bulk_save_objects() and bulk_update_mappings() send neither a flush nor an ORM
    execute event: each still records an event per row, with new ids and column defaults as stored, the old
    values of updates, toggles as Enabled/Disabled; the app's mappings and objects come back as SQLAlchemy
    leaves them (no keys filled in unless asked); a rollback drops the events; pending objects are not flushed
    early."""
    W = app.Warehouse
    given = [{"name": "mapping a"}, {"name": "mapping b", "enabled": False}]
    with app.Session() as s, acting_as(ADA):
        s.bulk_insert_mappings(W, given)
        assert given == [{"name": "mapping a"}, {"name": "mapping b", "enabled": False}]
        objects = [W(name="object a", schedule="daily"), W(name="object b")]
        s.bulk_save_objects(objects)
        assert [o.id for o in objects] == [None, None]
        s.bulk_save_objects([W(name="object keys", schedule="hourly")], return_defaults=True)
        asked = [{"name": "mapping keys"}]
        s.bulk_insert_mappings(W, asked, return_defaults=True)
        assert asked[0]["id"] is not None
        s.bulk_insert_mappings(W, [{"id": 9001, "name": "mapping with id"}])
        s.commit()
    with app.Session() as s:
        ids = {w.name: w.id for w in s.scalars(select(W))}
    created = {e.resource_name: e for e in app.events(event="Warehouse Created")}
    assert sorted(created) == sorted(ids) == sorted(["mapping a", "mapping b", "object a", "object b",
                                                     "object keys", "mapping keys", "mapping with id"])
    assert all(e.resource_id == str(ids[name]) and e.actor == ADA for name, e in created.items())
    assert created["mapping a"].changes["enabled"] == [None, True]  # the column default, as stored
    assert created["mapping b"].changes["enabled"] == [None, False]
    assert created["object a"].changes["schedule"] == [None, "daily"]
    assert ids["mapping with id"] == 9001 and asked[0]["id"] == ids["mapping keys"]

    with app.Session() as s:
        detached = s.get(W, ids["object a"])
    detached.schedule = "monthly"
    with app.Session() as s, acting_as(ADA):
        s.bulk_update_mappings(W, [{"id": ids["mapping a"], "schedule": "weekly"},
                                   {"id": ids["mapping b"], "enabled": True, "name": "mapping b2"},
                                   {"id": ids["object b"], "name": "object b"}])  # no change: no event
        s.bulk_save_objects([detached])
        s.commit()
    events = app.events()[len(created):]
    assert sorted(((e.event, e.resource_id, e.resource_name, e.changes) for e in events), key=str) == sorted([
        ("Warehouse Modified", str(ids["mapping a"]), "mapping a", {"schedule": [None, "weekly"]}),
        ("Warehouse Enabled", str(ids["mapping b"]), "mapping b2", {"enabled": [False, True]}),
        ("Warehouse Modified", str(ids["mapping b"]), "mapping b2", {"name": ["mapping b", "mapping b2"]}),
        ("Warehouse Modified", str(ids["object a"]), "object a", {"schedule": ["daily", "monthly"]}),
    ], key=str)

    before = len(app.events())
    with app.Session() as s:
        pending = W(name="pending")
        s.add(pending)
        s.bulk_insert_mappings(W, [{"name": "rolled back"}])
        assert pending in s.new, "the bulk insert did not flush the session"
        s.rollback()
    assert len(app.events()) == before


def test_bulk_inserts_naming_a_composite_record_its_columns_as_stored(database_url):
    """Rows handed to the ORM bulk INSERT or bulk_insert_mappings() may name a composite attribute (and keys
    SQLAlchemy ignores): the Created events hold the columns the composite wrote, read back from the database."""
    import dataclasses

    from sqlalchemy.orm import composite

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    class Base(DeclarativeBase):
        pass

    class Pin(Base):
        __tablename__ = "pins"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        x: Mapped[int | None]
        y: Mapped[int | None]
        at = composite(Point, "x", "y")

    with tracked(database_url, Base) as (engine, Session, auditor):
        with Session() as s:
            s.execute(insert(Pin), [{"name": "statement", "at": Point(1, 2)}, {"name": "plain", "x": 5, "y": 6}])
            s.bulk_insert_mappings(Pin, [{"name": "legacy", "at": Point(3, 4), "ignored": True}])
            s.commit()
        changes = {c["name"][1]: c for _, _, c in stored_changes(engine, auditor)}
    assert {name: (c["x"], c["y"]) for name, c in changes.items()} == {
        "statement": ([None, 1], [None, 2]), "plain": ([None, 5], [None, 6]), "legacy": ([None, 3], [None, 4])}


def test_the_legacy_bulk_methods_of_unaudited_sessions_and_suspended_auditing_record_nothing(app):
    """The wrapper of the legacy bulk methods is process-wide: a session no capture owns, and any session under
    suspend_auditing(), write as SQLAlchemy does and record nothing; an audited session records."""
    from sqlalchemy.orm import Session

    W = app.Warehouse
    with Session(app.engine) as s:
        s.bulk_insert_mappings(W, [{"name": "unowned"}])
        s.commit()
    with suspend_auditing(), app.Session() as s:
        s.bulk_save_objects([W(name="suspended")])
        s.commit()
    with app.Session() as s:
        s.bulk_save_objects([W(name="recorded")])
        s.commit()
        assert sorted(s.scalars(select(W.name))) == ["recorded", "suspended", "unowned"]
    assert [e.resource_name for e in app.events()] == ["recorded"]


def test_composite_primary_keys_are_joined_in_the_resource_id(app):
    with app.Session() as s:
        s.add(app.Warehouse(id=9, name="w"))
        s.flush()
        s.add(app.Membership(user_id=3, warehouse_id=9, role="owner"))
        s.commit()
    assert app.events(event="Membership Created")[0].resource_id == "3/9"


def test_values_that_are_not_json_by_nature_are_stored_and_read_back(app):
    external = uuid.UUID("12345678-1234-5678-1234-567812345678")
    text = "Zürich 東京 🚀 " + "x" * 20_000
    with app.Session() as s:
        s.add(app.Warehouse(name="ünïcødé", amount=decimal.Decimal("1234.500000"), external_id=external,
                            blob=b"\x00\x01", tier=Tier.BUSINESS, notes=text, settings={"a": [1, 2]},
                            created_at=dt.datetime(2026, 11, 25, 19, 7, 41, 123456)))
        s.commit()
    changes = app.events()[0].changes
    assert changes["amount"] == [None, "1234.500000"]
    assert changes["external_id"] == [None, str(external)]
    assert changes["blob"] == [None, "base64:AAE="]
    assert changes["tier"] == [None, "BUSINESS"] or changes["tier"] == [None, "business"]
    assert changes["notes"] == [None, text]
    assert changes["settings"] == [None, {"a": [1, 2]}]
    assert changes["created_at"] == [None, "2026-11-25T19:07:41.123456"]
    assert app.events()[0].resource_name == "ünïcødé"


def test_concurrent_sessions_in_threads_get_exactly_their_events_and_actors(app):
    threads, writes = 4, 10
    errors = []

    def worker(n: int) -> None:
        try:
            with acting_as(Actor.user(str(n), f"user{n}")):
                for m in range(writes):
                    with app.Session() as s:
                        s.add(app.Warehouse(name=f"t{n}-{m}"))
                        s.commit()
        except Exception as error:  # reported below
            errors.append(error)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    events = app.events()
    assert len(events) == threads * writes
    assert len({e.id for e in events}) == threads * writes
    for e in events:
        assert e.resource_name.startswith(f"t{e.actor.id}-")


def test_suspend_auditing_records_nothing(app):
    with suspend_auditing(), app.Session() as s:
        s.add(app.Warehouse(name="quiet"))
        s.commit()
    assert app.events() == []


def test_audit_rows_commit_in_the_same_transaction_as_the_change(app):
    with app.Session() as s:
        s.add(app.Warehouse(name="a"))
        s.commit()
    with app.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(app.auditor.table)).scalar_one() == 1


@pytest.mark.parametrize("kind", ["expired", "fresh"])
def test_old_values_are_known_even_when_the_row_was_expired_by_a_commit(app, kind):
    with app.Session() as s:
        w = app.Warehouse(name="before")
        s.add(w)
        s.commit()
        if kind == "fresh":
            w = s.get(app.Warehouse, w.id)
            assert w.name == "before"
        w.name = "after"
        s.commit()
    assert app.events()[-1].changes == {"name": ["before", "after"]}


def test_a_session_keeps_events_for_the_commit_signal_only_while_a_receiver_listens(app):
    """Nobody listening: a flush keeps nothing on the session for the commit. A receiver connected before a flush
    gets that flush's events after the commit, in one call with the rest of the transaction's; one connected
    after a flush does not get the events flushed before it."""
    from audit_middleware.adapters.sqlalchemy.capture import PENDING_KEY
    from audit_middleware.signals import event_recorded

    got: list[list[str]] = []

    def note(sender: object, events: list) -> None:
        got.append([e.resource_name for e in events])

    with app.Session() as s:
        s.add(app.Warehouse(name="unheard"))
        s.flush()
        assert PENDING_KEY not in s.info
        event_recorded.connect(note, sender=app.auditor, weak=False)
        try:
            s.add(app.Warehouse(name="heard, first"))
            s.flush()
            assert len(s.info[PENDING_KEY]) == 1
            s.add(app.Warehouse(name="heard, second"))
            s.commit()
        finally:
            event_recorded.disconnect(note, sender=app.auditor)
    assert got == [["heard, first", "heard, second"]]
    assert [e.resource_name for e in app.events()] == ["unheard", "heard, first", "heard, second"]


@pytest.mark.parametrize("wider", ["Session class", "scoped_session"])
def test_overlapping_targets_record_each_change_once_by_the_most_specific_capture(app, wider):
    """A session runs the listeners of its factory's class and of Session itself, and a scoped_session listens
    where its factory does: tracking both must not record a change twice. The factory's capture records its
    sessions' changes (or, tracked through a scoped_session around it, the newer capture takes it over); the
    Session-class capture records the other sessions; once the specific one is removed, the wider one records
    the factory's sessions too."""
    from sqlalchemy.orm import Session, scoped_session

    from audit_middleware.adapters.sqlalchemy import track
    from audit_middleware.signals import event_recorded

    specific = app.auditor
    scoped = scoped_session(app.Session)
    wider_auditor = track(Session, bind=app.engine) if wider == "Session class" else track(scoped)
    senders: list[tuple[object, str | None]] = []

    def note(sender: object, events: list) -> None:
        senders.extend((sender, e.resource_name) for e in events)

    event_recorded.connect(note, weak=False)
    try:
        with app.Session() as s:
            s.add(app.Warehouse(name="from the factory"))
            s.commit()
        with Session(app.engine) as s:  # a session no factory made: only the Session class covers it
            s.add(app.Warehouse(name="made elsewhere"))
            s.commit()
        scoped.add(app.Warehouse(name="through the scoped session"))
        scoped.commit()
        scoped.remove()
        if wider == "Session class":
            assert specific.capture.active and wider_auditor.capture.active
            assert [e.resource_name for e in app.events()] == [
                "from the factory", "made elsewhere", "through the scoped session"]
            assert senders == [(specific, "from the factory"), (wider_auditor, "made elsewhere"),
                               (specific, "through the scoped session")]
        else:  # the same class listened on: the newer capture took it over
            assert not specific.capture.active and wider_auditor.capture.active
            assert [e.resource_name for e in app.events()] == ["from the factory", "through the scoped session"]
            assert senders == [(wider_auditor, "from the factory"), (wider_auditor, "through the scoped session")]
        specific.remove()
        senders.clear()
        with app.Session() as s:
            s.add(app.Warehouse(name="after removing the factory's auditor"))
            s.commit()
        assert app.events()[-1].resource_name == "after removing the factory's auditor"
        assert [e.resource_name for e in app.events()].count("after removing the factory's auditor") == 1
        assert senders == [(wider_auditor, "after removing the factory's auditor")]
    finally:
        event_recorded.disconnect(note)
        wider_auditor.remove()


def test_tracking_a_session_factory_again_takes_the_capture_over_and_records_each_change_once(app):
    """track() on a session factory that an auditor already captures replaces it: one event per change, the
    earlier auditor stops capturing, and removing it afterwards leaves the new one in place."""
    from audit_middleware.adapters.sqlalchemy import track

    first = app.auditor
    second = track(app.Session)
    try:
        with app.Session() as s:
            s.add(app.Warehouse(name="once"))
            s.commit()
        assert [e.resource_name for e in app.events()] == ["once"]
        assert not first.capture.active and second.capture.active
        first.remove()
        with app.Session() as s:
            s.add(app.Warehouse(name="still captured"))
            s.commit()
        assert [e.resource_name for e in app.events()] == ["once", "still captured"]
    finally:
        second.remove()


def test_on_sqlite_a_large_flushs_event_rows_keep_no_statement_journal(app, backend):
    """A flush of 1,100 new rows writes their events 60 rows a statement: SQLite keeps no statement journal for
    them (a temporary file of every page each statement changes that the transaction changed before), as this
    process sees its open files while the transaction is open; plain 60-row INSERTs in the same transaction, as
    the rows went before, do make one (the check can see it). Committed, the rows are all there."""
    if backend != "sqlite":
        pytest.skip("SQLite's statement journal")
    with app.Session() as s, acting_as(ADA):
        s.add_all([app.Warehouse(name=f"w{i}") for i in range(1100)])
        s.flush()
        assert open_temporary_files() == []
        s.commit()
    assert len(app.events()) == 1100
    with app.Session() as s, acting_as(ADA):
        s.add_all([app.Warehouse(name=f"again {i}") for i in range(100)])
        s.flush()
        assert_plain_multi_row_inserts_would_show_a_statement_journal(s.connection().connection.driver_connection,
                                                                      app.auditor.table.name)
        s.rollback()
    assert open_temporary_files() == [] and len(app.events()) == 1100


def test_on_sqlite_event_rows_skip_sqlalchemys_execution_only_while_nobody_watches(app, backend, caplog):
    """With no engine or dialect listener and no echo, SQLite's event INSERT goes straight to the sqlite3
    connection (SQLAlchemy's do_execute never sees it); a before_cursor_execute listener, a dialect do_execute
    listener or echo each see it again; the rows verify either way, and a failing INSERT still fails the write."""
    if backend != "sqlite":
        pytest.skip("the driver-direct event INSERT is SQLite's")
    W = app.Warehouse
    dialect = app.engine.dialect
    seen: list[str] = []
    do_execute = dialect.do_execute

    def spy(cursor, statement, parameters, context=None):  # type: ignore[no-untyped-def]
        seen.append(statement)
        return do_execute(cursor, statement, parameters, context)

    def audit_inserts(statements: list[str]) -> list[str]:
        into = f"INTO {app.auditor.table.name}"  # INSERT OR FAIL for several rows (store.event_insert)
        return [s for s in statements if s.startswith((f"INSERT {into}", f"INSERT OR FAIL {into}"))]

    dialect.do_execute = spy  # type: ignore[method-assign]  # a plain attribute: no event, nobody "watches"
    try:
        with app.Session() as s, acting_as(ADA):
            s.add(W(name="unwatched"))
            s.add_all([W(name=f"unwatched {i}") for i in range(70)])  # one statement of 60 rows, one of 11
            s.commit()
        assert not audit_inserts(seen), "nobody watches: the rows go straight to sqlite3"
        assert seen, "the spy sees SQLAlchemy's own statements"

        cursor_statements: list[str] = []

        def note(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            cursor_statements.append(statement)

        event.listen(app.engine, "before_cursor_execute", note)
        with app.Session() as s:
            s.add(W(name="watched"))
            s.commit()
        assert len(audit_inserts(cursor_statements)) == 1 and len(audit_inserts(seen)) == 1
        event.remove(app.engine, "before_cursor_execute", note)

        fresh = make_app(str(app.engine.url))  # a new engine: _has_events is set for good once listened to
        try:
            dialect_seen: list[str] = []

            def on_do_execute(cursor, statement, parameters, context):  # type: ignore[no-untyped-def]
                dialect_seen.append(statement)

            event.listen(fresh.engine, "do_execute", on_do_execute)
            with fresh.Session() as s:
                s.add(fresh.Warehouse(name="dialect listener"))
                s.commit()
            assert len(audit_inserts(dialect_seen)) == 1
        finally:
            fresh.auditor.remove()
            fresh.engine.dispose()

        echoing = make_app(str(app.engine.url))
        try:
            echoing.engine.echo = True
            with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"), echoing.Session() as s:
                s.add(echoing.Warehouse(name="echoed"))
                s.commit()
            assert audit_inserts([r.getMessage() for r in caplog.records])
        finally:
            echoing.auditor.remove()
            echoing.engine.dispose()
    finally:
        del dialect.do_execute

    names = sorted(e.resource_name for e in app.events(event="Warehouse Created"))
    assert names == sorted(["unwatched", *(f"unwatched {i}" for i in range(70)), "watched", "dialect listener",
                            "echoed"])
    assert app.auditor.verify().ok

    with app.engine.begin() as c:
        c.execute(text(f"CREATE TRIGGER refuse BEFORE INSERT ON {app.auditor.table.name} "
                       "BEGIN SELECT RAISE(ABORT, 'no events today'); END"))
    with app.Session() as s:
        s.add(W(name="refused"))
        with pytest.raises(AuditWriteError, match="no events today") as refused:
            s.commit()
    assert isinstance(refused.value.__cause__, IntegrityError)  # what SQLAlchemy raises for sqlite3's error
    with app.Session() as s:
        assert s.scalar(select(func.count()).select_from(W).where(W.name == "refused")) == 0
