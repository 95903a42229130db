"""Event rows sent with the COMMIT (psycopg): held from flush to commit, dropped on rollback, written at
flush wherever holding is not safe (savepoints, autocommit, other drivers)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text

from audit_middleware import AuditWriteError
from audit_middleware.adapters.sqlalchemy import with_commit

from ...libpq_trace import libpq_messages


def rows_in_transaction(session, table) -> int:
    """Event rows this session's own transaction can see."""
    return session.execute(select(func.count()).select_from(table)).scalar_one()


def test_events_wait_for_the_commit_on_psycopg_and_are_written_at_flush_elsewhere(app, backend):
    W, table = app.Warehouse, app.auditor.table
    with app.Session() as s:
        s.add(W(name="Main"))
        s.flush()
        held = backend == "postgresql"
        assert rows_in_transaction(s, table) == (0 if held else 1)
        assert with_commit.can_hold(s.connection()) is held
        s.commit()
    assert [e.event for e in app.events()] == ["Warehouse Created"]


def test_a_rollback_drops_held_rows_and_the_next_transaction_on_the_connection_writes_only_its_own(app):
    W = app.Warehouse
    with app.engine.connect() as connection:  # one connection, two transactions: the app's own, joined
        transaction = connection.begin()
        with app.Session(bind=connection) as s:
            s.add(W(name="rolled back"))
            s.flush()
        transaction.rollback()
        transaction = connection.begin()
        with app.Session(bind=connection) as s:
            s.add(W(name="kept"))
            s.flush()
        transaction.commit()
    assert [(e.event, e.resource_name) for e in app.events()] == [("Warehouse Created", "kept")]
    with app.Session() as s:
        assert [w.name for w in s.scalars(select(W))] == ["kept"]


def test_held_rows_add_no_engine_listener_and_a_session_closed_without_commit_drops_them(app, backend):
    """The rows wait in the dialect's commit, not in an engine event listener (with one, every statement of every
    connection would check for listeners). A session closed without a commit rolls its connection back: the rows
    held for that connection go, and the next commit on it sends only its own."""
    if backend != "postgresql":
        pytest.skip("holding rows is for psycopg only")
    W = app.Warehouse
    with app.engine.connect() as connection:
        with app.Session(bind=connection) as s:
            s.add(W(name="abandoned"))
            s.flush()
            driver = connection.connection.driver_connection
            assert driver in with_commit._held
        connection.rollback()  # what closing does for a transaction left open
        assert driver not in with_commit._held
        with app.Session(bind=connection) as s:
            s.add(W(name="kept"))
            s.commit()
        assert not app.engine.dispatch.commit and not app.engine.dispatch.rollback
    with app.Session() as s:  # from the pool, rows held and the session closed uncommitted
        s.add(W(name="left"))
        s.flush()
        driver = s.connection().connection.driver_connection
    assert driver not in with_commit._held
    assert [(e.event, e.resource_name) for e in app.events()] == [("Warehouse Created", "kept")]


def test_savepoints_write_at_flush_and_their_rollback_drops_only_their_events(app, backend):
    W = app.Warehouse
    with app.Session() as s:
        s.add(W(name="outer"))
        s.flush()  # held on PostgreSQL
        savepoint = s.begin_nested()
        s.add(W(name="inner, undone"))
        s.flush()  # inside a savepoint: written now, so that its rollback undoes it
        assert rows_in_transaction(s, app.auditor.table) == (1 if backend == "postgresql" else 2)
        savepoint.rollback()
        with s.begin_nested():
            s.add(W(name="inner, kept"))
        s.commit()
    assert sorted(e.resource_name for e in app.events()) == ["inner, kept", "outer"]


def test_several_flushes_go_with_one_commit(app):
    W = app.Warehouse
    with app.Session() as s:
        warehouses = [W(name=f"W{i}") for i in range(3)]
        for w in warehouses:
            s.add(w)
            s.flush()
        warehouses[0].enabled = False
        s.flush()
        s.commit()
    events = app.events()
    assert sorted(e.event for e in events) == ["Warehouse Created"] * 3 + ["Warehouse Disabled"]
    assert len({e.id for e in events}) == 4


def test_an_autocommit_engine_writes_at_flush(app, database_url, backend):
    if backend != "postgresql":
        pytest.skip("holding rows is for psycopg only")
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.begin()
            assert not with_commit.can_hold(connection)
    finally:
        engine.dispose()


def test_a_held_row_the_database_refuses_fails_the_commit_and_leaves_the_connection_clean(app, backend):
    if backend != "postgresql":
        pytest.skip("holding rows is for psycopg only")
    W, table = app.Warehouse, app.auditor.table
    with app.engine.begin() as c:  # refuse one resource name at the database, after capture built the row
        c.execute(text(f"ALTER TABLE {table.name} ADD CONSTRAINT no_bad CHECK (resource_name <> 'bad')"))
    with app.engine.connect() as connection:
        transaction = connection.begin()
        with app.Session(bind=connection) as s:
            s.add(W(name="bad"))
            s.flush()
        with pytest.raises(AuditWriteError, match="could not write 1 audit event.*with the commit.*not saved"):
            transaction.commit()
        transaction.rollback()  # SQLAlchemy's rule after any failed commit
        transaction = connection.begin()  # the same connection works, and holds nothing from before
        with app.Session(bind=connection) as s:
            s.add(W(name="good"))
            s.flush()
        transaction.commit()
    with app.Session() as s:
        assert [w.name for w in s.scalars(select(W))] == ["good"]
    assert [e.resource_name for e in app.events()] == ["good"]


@pytest.mark.parametrize("writes", [1, 40])
def test_rows_sent_with_the_commit_keep_every_value_as_it_was(app, backend, writes, tmp_path):
    """A few rows go with the COMMIT as one query text, their values quoted by libpq; more go as a COPY, then
    the COMMIT (both ways run here, seen in libpq's trace of what was sent). Text that quoting must get right,
    for a literal and for COPY's text format, reads back exactly, in every row."""
    from audit_middleware.commit_pipeline import ONE_QUERY_ROWS

    assert 1 <= ONE_QUERY_ROWS < 40  # one parametrization each way
    awkward = ["it's", "%s %(name)s %%", "back\\slash", "E'\\x41'", "'); DROP TABLE x; --", "é 日本 🙂", "$1 $$ $$",
               "tab\tand\nnewline\r", "\\N", "\\.", "end\\"]
    W = app.Warehouse
    with app.Session() as s:
        for i in range(writes):
            s.add(W(name=awkward[i % len(awkward)] + f" {i}"))
        s.flush()
        if backend != "postgresql":
            s.commit()
        else:
            with libpq_messages(s.connection().connection.driver_connection.pgconn, tmp_path) as sent:
                s.commit()
    stored = sorted((e.resource_name for e in app.events()), key=lambda name: int(name.rsplit(" ", 1)[1]))
    assert stored == [awkward[i % len(awkward)] + f" {i}" for i in range(writes)]
    if backend == "postgresql":  # what the commit sent
        queries = [text for kind, text in sent if kind == "Query"]
        if writes <= ONE_QUERY_ROWS:
            assert len(queries) == 1 and "INSERT INTO" in queries[0] and queries[0].rstrip('"').endswith("COMMIT")
            assert [kind for kind, _ in sent] == ["Query"], "the rows and the COMMIT are the one message sent"
        else:
            assert len(queries) == 2 and queries[0].startswith(' "COPY ') and queries[1] == ' "COMMIT"'
            kinds = [kind for kind, _ in sent]
            assert kinds[0] == "Query" and kinds[-2:] == ["CopyDone", "Query"] and set(kinds[1:-2]) == {"CopyData"}
            assert "Parse" not in kinds


def test_rows_a_copy_cannot_stand_for_go_with_the_commit_in_a_pipeline(app, backend, tmp_path):
    """Many rows of a statement that is not a plain one-row INSERT go in a psycopg pipeline with the COMMIT:
    prepared once, one sync; a failing row fails the lot."""
    if backend != "postgresql":
        pytest.skip("the rows sent with the COMMIT are psycopg's")
    from audit_middleware.commit_pipeline import send_with_commit

    with app.engine.begin() as c:
        c.execute(text("CREATE TABLE pipelined (n integer PRIMARY KEY)"))
    insert = "INSERT INTO pipelined (n) VALUES (%s) ON CONFLICT DO NOTHING"
    with app.engine.connect() as connection:
        driver = connection.connection.driver_connection
        driver.execute("SELECT 1")  # the transaction is open
        with libpq_messages(driver.pgconn, tmp_path) as sent:
            send_with_commit(driver, [(insert, [(n,) for n in range(30)] + [(3,)])])
        assert driver.pgconn.transaction_status == 0  # committed
        driver.execute("SELECT 1")
        with pytest.raises(Exception, match="invalid input syntax"):
            send_with_commit(driver, [(insert, [(n,) for n in range(30, 60)] + [("x",)])])
        assert driver.pgconn.transaction_status == 0  # rolled back
    assert sum("INSERT INTO pipelined" in text for kind, text in sent if kind == "Parse") == 1
    assert sum(kind == "Sync" for kind, _ in sent) == 1 and not any(kind == "Query" for kind, _ in sent)
    with app.engine.connect() as c:
        assert c.execute(text("SELECT count(*), max(n) FROM pipelined")).one() == (30, 29)


def test_a_nul_in_a_held_value_fails_the_commit_and_nothing_is_cut_short(app, backend):
    """PostgreSQL's text cannot hold a NUL, and libpq's quoting would cut a value there: an event value with
    one (the actor's name) fails the commit with AuditWriteError, the change is not saved, and no event is
    stored with the name cut short."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL's text refuses a NUL (SQLite and MariaDB keep it)")
    from audit_middleware import Actor, acting_as

    with acting_as(Actor.user("7", "ada\x00lovelace")), app.Session() as s:
        s.add(app.Warehouse(name="not saved"))
        s.flush()
        with pytest.raises(AuditWriteError, match="NUL"):
            s.commit()
    with app.Session() as s:
        assert s.scalars(select(app.Warehouse)).all() == []
    assert app.events() == []

    # A flush too large to hold: psycopg refuses the row as it goes into the flush's COPY, which is ended with
    # the error; the rollback works and the connection serves the next flush.
    from audit_middleware.store import ROWS_PER_CHUNK

    with acting_as(Actor.user("7", "ada\x00lovelace")), app.Session() as s:
        s.add_all([app.Warehouse(name=f"not saved {i}") for i in range(ROWS_PER_CHUNK + 5)])
        with pytest.raises(AuditWriteError, match="NUL"):
            s.flush()
        s.rollback()
    with app.Session() as s:
        assert s.scalars(select(app.Warehouse)).all() == []
        s.add_all([app.Warehouse(name=f"saved {i}") for i in range(ROWS_PER_CHUNK + 5)])
        s.commit()
    assert len(app.events()) == ROWS_PER_CHUNK + 5


def test_a_flush_of_more_than_a_chunk_is_written_at_once_in_chunks_and_every_row_verifies(app, backend):
    """A flush of more events than ROWS_PER_CHUNK is written at the flush (not held for the COMMIT), a chunk
    of rows at a time: every event is stored, with the hash of its own row."""
    from audit_middleware.store import ROWS_PER_CHUNK

    W, table = app.Warehouse, app.auditor.table
    count = ROWS_PER_CHUNK * 2 + 500
    with app.Session() as s:
        s.add_all([W(name=f"w{i}") for i in range(count)])
        s.flush()
        assert rows_in_transaction(s, table) == count
        s.commit()
    events = app.events()
    assert sorted(e.resource_name for e in events) == sorted(f"w{i}" for i in range(count))
    report = app.auditor.verify(delay=timedelta(0))
    assert report.ok and report.events == count, report.problems[:3]


def test_a_large_flush_goes_as_one_copy_unless_someone_watches_and_a_refused_row_fails_it(app, backend, tmp_path):
    """On psycopg a flush too large to hold sends its event rows as one COPY when nobody watches the engine's
    statements, opened at the first chunk and ended with the flush: the server stores rows while the flush still
    makes events. With a listener they go through SQLAlchemy as INSERTs, which it sees. A row the database
    refuses fails the flush with AuditWriteError, SQLAlchemy's error inside, and nothing is saved."""
    if backend != "postgresql":
        pytest.skip("COPY is psycopg's")
    from sqlalchemy import event

    from audit_middleware.adapters.sqlalchemy.capture import STREAM_CHUNK
    from audit_middleware.store import ROWS_PER_CHUNK

    W, table = app.Warehouse, app.auditor.table
    count = ROWS_PER_CHUNK + 1 + 5 * STREAM_CHUNK  # written as the flush goes: 1,001 events, then 200 at a time
    recorder = app.auditor.recorder
    made = recorder.change_events
    stored_meanwhile: list[int] = []
    observer = create_engine(app.engine.url)

    def change_events(*args, **kwargs):  # type: ignore[no-untyped-def]
        change_events.calls += 1  # type: ignore[attr-defined]
        if change_events.calls == count - 100:  # type: ignore[attr-defined]
            # The flush is paused with 1,801 events written to its COPY: what has the server stored by now?
            stored_meanwhile.append(_copied_rows(observer, ROWS_PER_CHUNK + 1))
        return made(*args, **kwargs)

    change_events.calls = 0  # type: ignore[attr-defined]
    recorder.change_events = change_events
    try:
        with app.Session() as s:
            s.add_all([W(name=f"copied {i}") for i in range(count)])
            with libpq_messages(s.connection().connection.driver_connection.pgconn, tmp_path) as sent:
                s.flush()
            s.commit()
    finally:
        del recorder.change_events
        observer.dispose()
    copy = f' "COPY {table.name} (' + ", ".join(c.name for c in table.columns) + ') FROM STDIN"'
    assert [text for kind, text in sent if kind == "Query" and table.name in text] == [copy]
    assert not any(table.name in text for kind, text in sent if kind == "Parse")
    assert stored_meanwhile[0] >= ROWS_PER_CHUNK + 1
    assert sorted(e.resource_name for e in app.events()) == sorted(f"copied {i}" for i in range(count))

    with app.engine.begin() as c:
        c.execute(text(f"ALTER TABLE {table.name} ADD CONSTRAINT no_bad CHECK (resource_name <> 'bad')"))
    with app.Session() as s:
        s.add_all([W(name=f"lost {i}") for i in range(ROWS_PER_CHUNK)] + [W(name="bad")])
        with pytest.raises(AuditWriteError, match=r"(?s)IntegrityError.*no_bad.*COPY") as raised:
            s.flush()
        assert raised.value.__cause__.__class__.__module__.startswith("sqlalchemy")
        s.rollback()
    with app.Session() as s:
        assert s.scalar(select(func.count()).select_from(W).where(W.name.like("lost%"))) == 0
    assert len(app.events()) == count

    seen: list[str] = []

    def watch(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(app.engine, "before_cursor_execute", watch)
    try:
        with app.Session() as s:
            s.add_all([W(name=f"watched {i}") for i in range(ROWS_PER_CHUNK + 1)])
            s.commit()
    finally:
        event.remove(app.engine, "before_cursor_execute", watch)
    assert sum(statement.startswith(f"INSERT INTO {table.name}") for statement in seen) == 2  # 1,000 rows, then 1
    assert len(app.events()) == count + ROWS_PER_CHUNK + 1


class _Interrupted(BaseException):
    """What a KeyboardInterrupt or a worker's timeout does to a flush: not an Exception, so capture's guard
    lets it through."""


def test_a_flush_interrupted_while_its_copy_is_open_rolls_back_cleanly(app, backend):
    """A flush that fails while its events' COPY is open (an interrupt between two events) ends the COPY: the
    error is the interrupt's, the rollback works, nothing is saved, and the connection serves the next flush."""
    from audit_middleware.store import ROWS_PER_CHUNK

    W = app.Warehouse
    recorder = app.auditor.recorder
    made = recorder.change_events
    calls = [0]

    def change_events(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == ROWS_PER_CHUNK + 300:  # the first 1,001 events are sent (on PostgreSQL into the COPY)
            raise _Interrupted("stop")
        return made(*args, **kwargs)

    recorder.change_events = change_events
    try:
        with app.Session() as s:
            s.add_all([W(name=f"lost {i}") for i in range(ROWS_PER_CHUNK + 500)])
            with pytest.raises(_Interrupted):
                s.flush()
            s.rollback()
    finally:
        del recorder.change_events
    with app.Session() as s:
        assert s.scalar(select(func.count()).select_from(W)) == 0
        s.add_all([W(name=f"kept {i}") for i in range(ROWS_PER_CHUNK + 2)])
        s.commit()
    assert len(app.events()) == ROWS_PER_CHUNK + 2


def test_a_row_refused_while_a_large_flush_writes_as_it_goes_fails_the_flush_with_the_databases_error(app, backend):
    """A flush too large to hold writes its events as it captures them; a row the database refuses then fails
    the flush with AuditWriteError carrying the database's own error (not a later "transaction aborted"), it
    is not counted or signalled as a capture failure (the write does not go ahead), and nothing is saved."""
    from audit_middleware.signals import capture_failed
    from audit_middleware.store import ROWS_PER_CHUNK

    W, table = app.Warehouse, app.auditor.table
    with app.engine.begin() as c:
        if backend == "sqlite":
            c.execute(text(f"CREATE TRIGGER no_bad BEFORE INSERT ON {table.name} WHEN NEW.resource_name = 'bad' "
                           "BEGIN SELECT RAISE(ABORT, 'no_bad'); END"))
        else:
            c.execute(text(f"ALTER TABLE {table.name} ADD CONSTRAINT no_bad CHECK (resource_name <> 'bad')"))
    failed: list[Exception] = []

    def note(sender, error):  # type: ignore[no-untyped-def]
        failed.append(error)

    capture_failed.connect(note, weak=False)
    try:
        with app.Session() as s:
            s.add_all([W(name=f"lost {i}") for i in range(ROWS_PER_CHUNK)] + [W(name="bad")])
            with pytest.raises(AuditWriteError, match=r"could not write 1001 audit event.*no_bad"):
                s.flush()
            s.rollback()
    finally:
        capture_failed.disconnect(note)
    assert failed == [] and not app.auditor.recorder.errors.count
    with app.Session() as s:
        assert s.scalar(select(func.count()).select_from(W)) == 0
    assert app.events() == []


def test_a_flush_too_large_to_hold_keeps_its_events_only_for_a_listener(app):
    """The events of a flush of more than ROWS_PER_CHUNK rows are written as they are made and kept until the
    commit only when an event_recorded receiver listens: announced in full after the commit, never after a
    rollback; without a receiver the session keeps none of them, and every row is stored all the same."""
    from audit_middleware.adapters.sqlalchemy.capture import PENDING_KEY
    from audit_middleware.signals import event_recorded
    from audit_middleware.store import ROWS_PER_CHUNK

    W, table = app.Warehouse, app.auditor.table
    count = ROWS_PER_CHUNK + 500
    with app.Session() as s:
        s.add_all([W(name=f"quiet {i}") for i in range(count)])
        s.flush()
        assert PENDING_KEY not in s.info, "nobody listens: the flush's events are not kept"
        assert rows_in_transaction(s, table) == count
        s.commit()
    assert sorted(e.resource_name for e in app.events()) == sorted(f"quiet {i}" for i in range(count))

    announced: list[list[str]] = []

    def note(sender, events):  # type: ignore[no-untyped-def]
        announced.append([e.resource_name for e in events])

    event_recorded.connect(note, sender=app.auditor, weak=False)
    try:
        with app.Session() as s:
            s.add_all([W(name=f"heard {i}") for i in range(count)])
            s.flush()
            s.add(W(name="small flush"))
            s.commit()
        assert announced == [[f"heard {i}" for i in range(count)] + ["small flush"]]
        announced.clear()
        with app.Session() as s:
            s.add_all([W(name=f"rolled back {i}") for i in range(count)])
            s.flush()
            s.rollback()
        assert announced == []
    finally:
        event_recorded.disconnect(note, sender=app.auditor)
    assert len(app.events()) == 2 * count + 1


def test_a_large_flush_of_rows_with_two_events_each_stores_every_event_once(app):
    """Rows whose change makes two events (the toggle flip and a Modified) cross the point where a large flush
    starts writing as it goes in the middle of a row's pair: every event is stored once, and verifies."""
    from audit_middleware.store import ROWS_PER_CHUNK

    L = app.Label
    count = ROWS_PER_CHUNK // 2 + 300
    with app.Session() as s:
        s.add_all([L(title=f"t{i}") for i in range(count)])
        s.commit()
    with app.Session() as s:
        for label in s.query(L).all():
            label.visible = False
            label.title = label.title + " (hidden)"
        s.commit()
    disabled = app.events(event="Tag Disabled")
    modified = app.events(event="Tag Modified")
    assert len(disabled) == len(modified) == count
    assert len({e.id for e in disabled + modified}) == 2 * count
    assert sorted(e.changes["title"][1] for e in modified) == sorted(f"t{i} (hidden)" for i in range(count))
    report = app.auditor.verify(delay=timedelta(0))
    assert report.ok and report.events == 3 * count, report.problems[:3]


def _copied_rows(observer, at_least: int) -> int:  # type: ignore[no-untyped-def]
    """The rows a COPY in progress on another connection has stored (PostgreSQL's pg_stat_progress_copy),
    once it reaches ``at_least`` or after 10 s."""
    deadline = time.monotonic() + 10
    with observer.connect() as c:
        while True:
            rows = c.execute(text("SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy")).scalar()
            c.rollback()
            if rows >= at_least or time.monotonic() > deadline:
                return int(rows)
            time.sleep(0.01)
