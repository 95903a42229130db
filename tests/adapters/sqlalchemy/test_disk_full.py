"""A full disk, simulated on SQLite with ``PRAGMA max_page_count`` (the database may not grow past its current
size): the host's write and its audit event fail together, and the error the host sees says what happened.

``max_page_count`` is a per-connection limit, so each test sets it on the session's own connection.
"""

from __future__ import annotations

import pytest
from sqlalchemy import exc, select

from audit_middleware.errors import AuditWriteError

from .conftest import make_app

BIG = 8000  # characters: a row of this size lives in overflow pages; its diff (old and new) needs twice that


@pytest.fixture
def app(tmp_path):
    application = make_app(f"sqlite:///{tmp_path}/full.sqlite3")
    yield application
    application.auditor.remove()
    application.engine.dispose()


def limit_growth(session, spare_pages: int) -> int:
    """Let the database file grow by ``spare_pages`` pages at most, on this session's connection."""
    connection = session.connection()
    pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
    connection.exec_driver_sql(f"PRAGMA max_page_count = {pages + spare_pages}")
    return pages


def flush_on_a_full_disk(app, spare_pages: int, change) -> AuditWriteError:
    """The AuditWriteError of a session's flush after ``change(session)``, the database let grow by ``spare_pages``
    at most; the session is rolled back."""
    with app.Session() as s:
        limit_growth(s, spare_pages)
        change(s)
        with pytest.raises(AuditWriteError) as caught:
            s.flush()
        s.rollback()
    return caught.value


def committed(app):
    with app.engine.connect() as c:
        return list(c.execute(select(app.Warehouse.id, app.Warehouse.notes)))


def test_audit_insert_that_hits_a_full_disk_fails_the_change_with_it(app):
    """The host's UPDATE fits (its row keeps its size and reuses its pages) but its event does not: the
    flush raises AuditWriteError naming the event and SQLite's error, and neither the change nor an event
    is committed. Once there is room again the same change commits with its event."""
    with app.Session() as s:
        w = app.Warehouse(name="w", notes="a" * BIG)
        s.add(w)
        s.commit()
        pk = w.id
    assert [e.event for e in app.events()] == ["Warehouse Created"]

    error = flush_on_a_full_disk(app, 1, lambda s: setattr(s.get(app.Warehouse, pk), "notes", "b" * BIG))
    message = str(error)
    assert "could not write 1 audit event(s) (Warehouse Modified" in message
    assert "so the change was not saved either" in message
    assert "database or disk is full" in message
    assert isinstance(error.__cause__, exc.OperationalError)
    assert committed(app) == [(pk, "a" * BIG)]
    assert [e.event for e in app.events()] == ["Warehouse Created"]

    with app.Session() as s:  # room again (a new limit on the same pooled connection): both commit
        limit_growth(s, spare_pages=100)
        s.get(app.Warehouse, pk).notes = "b" * BIG
        s.commit()
    assert committed(app) == [(pk, "b" * BIG)]
    modified = app.events()[-1]
    assert modified.event == "Warehouse Modified" and modified.changes["notes"] == ["a" * BIG, "b" * BIG]


def test_host_write_that_hits_a_full_disk_records_no_event(app):
    """When the host's own INSERT is the one that does not fit, the host sees SQLite's "database or disk is
    full" and no event is written for the row that was never stored."""
    with app.Session() as s:
        s.add(app.Warehouse(name="seed"))
        s.commit()
    with app.Session() as s:
        limit_growth(s, spare_pages=0)
        s.add(app.Warehouse(name="big", notes="c" * BIG))
        with pytest.raises(exc.OperationalError, match="database or disk is full"):
            s.commit()
        s.rollback()
    assert [notes for _, notes in committed(app)] == [None]
    assert [e.resource_name for e in app.events()] == ["seed"]


def test_a_several_row_event_insert_that_hits_a_full_disk_fails_every_change_of_the_flush(app):
    """Twenty rows changed in one flush: their UPDATEs fit, their events (one ``INSERT OR FAIL`` of 20 rows, for
    which SQLite keeps no statement journal, so a full disk part way ends SQLite's whole transaction) do not. The
    flush raises AuditWriteError, nothing of it is committed, and the same pooled connection commits the same
    changes with their events once there is room."""
    with app.Session() as s:
        rows = [app.Warehouse(name=f"w{i}", notes="a" * BIG) for i in range(20)]
        s.add_all(rows)
        s.commit()
        pks = [w.id for w in rows]

    def change_all(s):
        for w in s.scalars(select(app.Warehouse)).all():  # loaded first: no autoflush between the changes
            w.notes = "b" * BIG

    message = str(flush_on_a_full_disk(app, 6, change_all))
    assert "could not write 20 audit event(s) (Warehouse Modified" in message
    assert "database or disk is full" in message
    assert sorted(committed(app)) == [(pk, "a" * BIG) for pk in sorted(pks)]
    assert [e.event for e in app.events()] == ["Warehouse Created"] * 20

    with app.Session() as s:
        limit_growth(s, spare_pages=1000)
        change_all(s)
        s.commit()
    assert sorted(committed(app)) == [(pk, "b" * BIG) for pk in sorted(pks)]
    assert [e.event for e in app.events()].count("Warehouse Modified") == 20
