"""Faults in the audit write itself, and several processes writing at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from audit_middleware import AuditWriteError


def count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_failing_audit_write_fails_the_host_write_too_and_says_why(app):
    with app.engine.begin() as c:
        c.execute(text(f"DROP TABLE {app.auditor.table.name}"))
    with app.Session() as s:
        s.add(app.Warehouse(name="orphan"))
        with pytest.raises(AuditWriteError, match="could not write 1 audit event.*so the change was not saved"):
            s.commit()
    assert count(app.engine, app.Warehouse.__table__) == 0


def test_a_locked_event_table_times_out_the_host_write_with_nothing_half_done(app, backend):
    if backend == "sqlite":
        pytest.skip("SQLite locks the whole database, not one table")
    W = app.Warehouse
    table = app.auditor.table.name
    locker = app.engine.connect()
    trans = locker.begin()
    locker.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE" if backend == "postgresql"
                        else f"LOCK TABLES {table} WRITE"))
    try:
        with app.Session() as s:
            s.execute(text("SET lock_timeout = '300ms'" if backend == "postgresql" else "SET SESSION innodb_lock_wait_timeout = 1"))
            if backend == "mariadb":
                s.execute(text("SET SESSION lock_wait_timeout = 1"))
            s.add(W(name="blocked"))
            with pytest.raises(AuditWriteError, match="could not write"):
                s.commit()
    finally:
        if backend == "mariadb":
            locker.execute(text("UNLOCK TABLES"))
        trans.rollback()
        locker.close()
    assert count(app.engine, W.__table__) == 0
    assert count(app.engine, app.auditor.table) == 0


WRITER = """
import sys
sys.path.insert(0, {here!r})
from conftest import make_app
from audit_middleware import Actor, acting_as

app = make_app({url!r})
with acting_as(Actor.user("{n}", "proc{n}")):
    for m in range({writes}):
        with app.Session() as s:
            w = app.Warehouse(name=f"p{n}-{{m}}")
            s.add(w)
            s.commit()
            w.schedule = "daily"
            s.commit()
app.engine.dispose()
"""


def test_several_processes_writing_at_once_get_exactly_one_event_per_committed_change(app, database_url, tmp_path):
    processes, writes = 4, 15
    here = str(Path(__file__).parent)
    workers = [
        # cwd outside the checkout, so the source tree cannot shadow the installed package
        subprocess.Popen([sys.executable, "-c", WRITER.format(here=here, url=database_url, n=n, writes=writes)],
                         cwd=tmp_path)
        for n in range(processes)
    ]
    for w in workers:
        assert w.wait(120) == 0
    events = app.events()
    assert len(events) == processes * writes * 2
    assert len({e.id for e in events}) == len(events)
    by_resource: dict[str, list] = {}
    for e in sorted(events, key=lambda e: e.id):
        by_resource.setdefault(e.resource_id, []).append(e)
    assert len(by_resource) == processes * writes
    for resource_events in by_resource.values():
        assert [e.event for e in resource_events] == ["Warehouse Created", "Warehouse Modified"]
        assert resource_events[0].occurred_at <= resource_events[1].occurred_at
        assert resource_events[0].actor == resource_events[1].actor
        assert resource_events[0].resource_name.startswith(f"p{resource_events[0].actor.id}-")


def test_a_connection_dropped_mid_transaction_loses_the_change_and_its_event_together(app, backend):
    if backend == "sqlite":
        pytest.skip("SQLite has no server connection to drop")
    W = app.Warehouse
    killer = app.engine.connect()
    try:
        with app.Session() as s:
            s.add(W(name="doomed"))
            s.flush()  # the row and its event are written, not committed
            if backend == "postgresql":
                pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
                killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            else:
                cid = s.execute(text("SELECT CONNECTION_ID()")).scalar_one()
                killer.execute(text(f"KILL {int(cid)}"))
            if backend == "postgresql":  # the event rows go with the COMMIT: the audit write reports it
                with pytest.raises(AuditWriteError, match="could not write 1 audit event.*not saved") as raised:
                    s.commit()
                import psycopg

                assert isinstance(raised.value.__cause__, psycopg.OperationalError)  # "connection closed"
            else:
                with pytest.raises(DBAPIError):  # the driver's "connection closed", wrapped by SQLAlchemy
                    s.commit()
    finally:
        killer.close()
    assert count(app.engine, W.__table__) == 0
    assert count(app.engine, app.auditor.table) == 0
