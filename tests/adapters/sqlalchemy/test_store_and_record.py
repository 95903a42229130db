"""Recording app verbs, querying, exporting and purging through the SQLAlchemy store, on every database."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest

from audit_middleware import Actor, EventQuery, InvalidFilterError, UnknownEventError, acting_as, in_workspace
from audit_middleware.events import AuditEvent
from audit_middleware.export import CSV_COLUMNS
from audit_middleware.ids import new_event_id
from audit_middleware.query import parse_query
from audit_middleware.testing import capture_events

from ...awkward_csv import assert_exports_the_awkward_events, awkward_events
from ...paging import ids_by_pages

ADA = Actor.user("7", "ada@example.com")
TOKEN = Actor.token("tok_12", "ci-deploy")


def old_event(days_ago: float, name: str = "Warehouse Created", **kw) -> AuditEvent:
    when = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return AuditEvent(new_event_id(), when, name, "Warehouses", "created", kw.pop("actor", ADA), **kw)


def test_record_app_verbs_validated_against_the_catalog(app):
    app.auditor.catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    with app.Session() as s:
        w = app.Warehouse(name="Prod")
        s.add(w)
        s.commit()
        with acting_as(Actor.system("warehouse-scheduler")), capture_events() as seen:
            event = app.auditor.record("Warehouse Run Failed", resource=w, details={"error": "timeout"})
        assert [e.id for e in seen] == [event.id]
        with pytest.raises(UnknownEventError, match="Did you mean 'Warehouse Run Failed'"):
            app.auditor.record("Warehouse Run Fail", resource=w)
    stored = app.auditor.store.get(event.id)
    assert stored.event == "Warehouse Run Failed" and stored.action == "run_failed"
    assert stored.resource_id == str(w.id) and stored.resource_name == "Prod"
    assert stored.actor.type == "system" and stored.details == {"error": "timeout"}


def test_record_with_a_session_stands_or_falls_with_its_transaction(app):
    app.auditor.catalog.define("User Invite Sent", "Access Management")
    with app.Session() as s:
        app.auditor.record("User Invite Sent", session=s, resource_type="Invite", resource_id="1")
        s.rollback()
        app.auditor.record("User Invite Sent", session=s, resource_type="Invite", resource_id="2")
        s.commit()
    assert [e.resource_id for e in app.events(event="User Invite Sent")] == ["2"]


def test_query_filters_and_keyset_pages_newest_first(app):
    store = app.auditor.store
    events = []
    for n in range(30):
        events.append(old_event(
            1 + n / 100, name="Warehouse Created" if n % 2 else "Warehouse Deleted",
            actor=ADA if n % 3 else TOKEN, resource_type="Warehouse", resource_id=str(n % 5),
            workspace_id="ws_1" if n < 20 else "ws_2",
        ))
    store.append(events)
    newest_first = sorted(events, key=lambda e: e.occurred_at, reverse=True)
    assert ids_by_pages(store, EventQuery(limit=7)) == [e.id for e in newest_first]
    for query in [
        EventQuery(events=("Warehouse Deleted",)),
        EventQuery(actor="ada@example.com"),
        EventQuery(actor="tok_12"),
        EventQuery(actor_type="token"),
        EventQuery(resource_type="Warehouse", resource_id="3"),
        EventQuery(category="Warehouses", limit=500),
        EventQuery().for_workspace("ws_2"),
        EventQuery(since=newest_first[10].occurred_at.replace(tzinfo=None),
                   until=newest_first[3].occurred_at.replace(tzinfo=None)),
    ]:
        got = [e.id for e in store.query(EventQuery(**{**{f: getattr(query, f) for f in query.__dataclass_fields__},
                                                       "limit": 500})).events]
        assert got == [e.id for e in newest_first if query.matches(e)], query
        assert got, query


def test_events_in_one_flush_share_a_timestamp_and_still_page_without_gaps(app):
    with app.Session() as s:
        s.add_all([app.Warehouse(name=f"w{n}") for n in range(12)])
        s.commit()
    ids = ids_by_pages(app.auditor, EventQuery(limit=5))
    assert len(ids) == 12 == len(set(ids))


def test_bad_filter_values_give_a_clear_error_before_touching_the_database(app):
    for params, parameter in [({"limit": ["1000"]}, "limit"), ({"since": ["last week"]}, "since"),
                              ({"cursor": ["%%%"]}, "cursor")]:
        with pytest.raises(InvalidFilterError) as info:
            app.auditor.query(parse_query(params))
        assert info.value.parameter == parameter


def test_export_streams_the_filtered_set_as_csv(app):
    app.auditor.store.append([old_event(1, workspace_id="ws_1", resource_name="=cmd|' /C calc'!A0"),
                              old_event(2, workspace_id="ws_2")])
    text = "".join(app.auditor.export_csv(EventQuery().for_workspace("ws_1")))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 1
    assert rows[0]["resource_name"].startswith("'=")


def test_purge_deletes_only_events_older_than_the_retention_in_batches(app):
    app.auditor.store.append([old_event(91 + n) for n in range(25)] + [old_event(89), old_event(1)])
    assert app.auditor.purge(batch_size=10) == 25
    assert len(app.events()) == 2
    assert app.auditor.purge(retention_days=30) == 1


def test_workspace_scoping_from_context(app):
    with in_workspace("ws_9"), app.Session() as s:
        s.add(app.Warehouse(name="tenant"))
        s.commit()
    assert app.auditor.query(EventQuery().for_workspace("ws_9")).events[0].resource_name == "tenant"
    assert app.auditor.query(EventQuery().for_workspace("ws_other")).events == []


def test_export_from_stored_rows_is_the_csv_of_the_events(app):
    """CSV export reads stored column values (no event objects, SQLite's time text unparsed); it must give
    exactly the CSV the events themselves give, whatever the values."""
    from audit_middleware.export import export_csv, iter_csv
    from audit_middleware.store import iter_events

    store = app.auditor.store
    whole_second = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    store.append([
        old_event(1, resource_type="Warehouse", resource_id="=1+2", resource_name='@SUM(A1), "quoted"\nline',
                  workspace_id="ws_1", changes={"name": ["-old", "+new"], "n": [1, 2.5]},
                  context={"ip": "203.0.113.9", "user_agent": "\tMozilla", "request_id": "r-1"}),
        old_event(2, actor=TOKEN, workspace_id="ws_1", context={"request_id": "r-2"}),
        old_event(3, actor=Actor.system("nightly"), workspace_id="ws_1"),
        AuditEvent(new_event_id(), whole_second, "Warehouse Deleted", "Warehouses", "deleted", ADA,
                   resource_type="Warehouse", resource_id="9", workspace_id="ws_1", changes={"x": [None, "é"]}),
    ])
    query = EventQuery().for_workspace("ws_1")
    exported = "".join(export_csv(store, query))
    assert exported == "".join(iter_csv(iter_events(store, query)))
    rows = list(csv.reader(io.StringIO(exported)))
    assert len(rows) == 5 and rows[0] == list(CSV_COLUMNS)
    assert rows[1][0].endswith(".000000Z")  # the whole-second time, newest first, keeps its microseconds
    assert "'=1+2" in rows[2] and "'\tMozilla" in rows[2]


def test_actor_filter_matches_id_or_name_once_each_newest_first_across_pages(app):
    """The actor filter runs one ordered query per match (id, name) and merges them: every row matching
    either appears once, in time order, and keyset pages walk them without gaps or repeats."""
    store = app.auditor.store
    both = Actor.user("ada@example.com", "ada@example.com")  # id and name both match: must come once
    by_name = Actor.user("7", "ada@example.com")
    by_id = Actor.token("ada@example.com", "a token")
    other = Actor.user("8", "bob@example.com")
    events = [old_event(1 + n / 10, actor=[both, by_name, by_id, other][n % 4], workspace_id="ws_1")
              for n in range(22)]
    store.append(events)
    expected = [e.id for e in sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True)
                if e.actor is not other]
    seen = ids_by_pages(store, EventQuery(actor="ada@example.com", limit=4).for_workspace("ws_1"))
    assert seen == expected and len(expected) == 17


def test_create_tables_adds_an_index_a_later_release_defines_to_an_existing_table(app):
    """Tables made by an earlier release keep their rows; create_tables() adds the indexes they lack."""
    from sqlalchemy import func, inspect, select

    table = app.auditor.table
    index = next(i for i in table.indexes if i.name.endswith("_ws_actor_name_time"))
    app.auditor.store.append([old_event(1, workspace_id="ws_1")])
    index.drop(app.engine)
    assert index.name not in {i["name"] for i in inspect(app.engine).get_indexes(table.name)}
    app.auditor.create_tables()
    app.auditor.create_tables()  # and again: nothing left to do
    assert {i.name for i in table.indexes} <= {i["name"] for i in inspect(app.engine).get_indexes(table.name)}
    with app.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(table)).scalar_one() == 1


def test_a_store_read_leaves_the_hosts_connections_transactional(app):
    """Reads may run in autocommit (PostgreSQL), but the pooled connection goes back as it came: the app's next
    transaction on it still rolls back."""
    from sqlalchemy import func, select

    store = app.auditor.store
    store.append([old_event(1, workspace_id="ws_1")])
    for _ in range(3):
        assert store.query(EventQuery(limit=5).for_workspace("ws_1")).events
        assert store.count(EventQuery().for_workspace("ws_1")) == 1
    with app.engine.connect() as c:
        c.execute(app.Warehouse.__table__.insert().values(name="never"))
        c.rollback()
        assert c.execute(select(func.count()).select_from(app.Warehouse.__table__)).scalar_one() == 0


def test_postgresql_page_reads_send_no_begin_or_rollback_and_stay_prepared(app, backend, tmp_path):
    """On PostgreSQL a page read is one statement in autocommit: no BEGIN before it, no ROLLBACK after it
    (checked in libpq's own trace of what went over the wire), so psycopg keeps the page statement prepared
    and the server stops planning it on every page."""
    if backend != "postgresql":
        pytest.skip("autocommit reads are PostgreSQL's: SQLite opens no transaction for a read, and on MariaDB "
                    "switching autocommit would cost a round trip of its own")
    from sqlalchemy import create_engine

    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore

    engine = create_engine(app.engine.url, pool_size=1, max_overflow=0)  # one connection: every read reuses it
    store = SQLAlchemyStore(engine, app.auditor.table)
    store.append([old_event(1 + n / 10, workspace_id="ws_1", actor=[ADA, TOKEN][n % 2]) for n in range(6)])
    trace = tmp_path / "libpq.trace"
    with engine.connect() as c:
        pgconn = c.connection.driver_connection.pgconn
    with open(trace, "w") as sink:
        pgconn.trace(sink.fileno())
        try:
            for n in range(8):
                assert store.query(EventQuery(actor=["7", "tok_12"][n % 2], limit=2).for_workspace("ws_1")).events
            with engine.begin() as c:  # the app's own transaction on the same connection
                c.exec_driver_sql("SELECT 1")
        finally:
            pgconn.untrace()
    # What the client sent: "<time>\tF\t<length>\t<message>\t<payload>" (a query's own newlines continue it)
    sent = re.findall(r"^[^\t\n]+\tF\t\d+\t(\w+)\t?(.*)$", trace.read_text(), re.MULTILINE)
    commands = [text.split('"')[1].split()[0] for kind, text in sent if kind == "Query"]
    assert commands == ["BEGIN", "SELECT", "COMMIT"], commands  # the app's transaction; the reads sent none
    page_parses = [text for kind, text in sent if kind == "Parse" and "UNION ALL" in text]
    assert len(page_parses) < 8, "after a few pages psycopg prepares the statement and stops sending it"
    with engine.connect() as c:
        prepared = c.exec_driver_sql(
            "SELECT generic_plans + custom_plans FROM pg_prepared_statements WHERE statement LIKE 'SELECT%%UNION ALL%%'"
        ).scalars().all()
    engine.dispose()
    assert prepared and max(prepared) >= 2, "the actor page statement is prepared once and executed again"


def test_the_auditor_keeps_one_store_whose_page_statements_are_built_once_per_filter_shape(app):
    """The admin views ask ``auditor.store`` on every request: it is one store, keeping the statement it built
    for each shape of filter (building the actor filter's UNION ALL costs more than running it)."""
    store = app.auditor.store
    store.append([old_event(1, workspace_id="ws_1"), old_event(2, workspace_id="ws_1", actor=TOKEN)])
    pages = [app.auditor.query(EventQuery(actor=actor, limit=5).for_workspace("ws_1")) for actor in ("7", "tok_12")]
    assert [[e.actor.id for e in page.events] for page in pages] == [["7"], ["tok_12"]]
    assert app.auditor.store is store
    assert len(store._pages) == 1, "both pages ran the statement built for the first"



def test_a_batch_whose_later_row_repeats_an_id_stores_none_of_its_rows(app):
    """Several events go in one statement (on SQLite an ``INSERT OR FAIL``, which stops at the bad row without
    undoing the rows before it): a batch whose 30th row repeats the first's id raises the database's error and
    stores none of its rows, as its transaction rolls back; the store works on afterwards."""
    from dataclasses import replace

    from sqlalchemy.exc import IntegrityError

    store = app.auditor.store
    batch = [old_event(1 + n / 100) for n in range(40)]
    batch[29] = replace(batch[29], id=batch[0].id)
    with pytest.raises(IntegrityError):
        store.append(batch)
    assert store.count() == 0
    store.append(batch[:29])
    assert store.count() == 29


def test_export_of_awkward_text_is_byte_for_byte_the_csv_of_the_events(app):
    """Every way of exporting gives the same bytes: on PostgreSQL the database writes the CSV itself (COPY),
    elsewhere the stored rows are formatted in Python; both must equal the CSV of the events."""
    store = app.auditor.store
    store.append(awkward_events("ws_awkward") + [old_event(1, workspace_id="ws_other")])
    assert_exports_the_awkward_events(store, EventQuery().for_workspace("ws_awkward"))
    on_postgresql = store.engine.dialect.name == "postgresql"
    assert (store.iter_csv_chunks(EventQuery()) is not None) == on_postgresql


def test_an_export_stopped_early_leaves_its_connection_usable(app):
    """A download cancelled after its first chunk: the export stops (on PostgreSQL its COPY is cancelled)
    and the store's next reads and exports work on the same pool."""
    from sqlalchemy import text

    from audit_middleware.export import export_csv

    store = app.auditor.store
    when = datetime.now(timezone.utc) - timedelta(days=1)
    store.append([AuditEvent(new_event_id(), when - timedelta(seconds=n), "Warehouse Created", "Warehouses",
                             "created", ADA, workspace_id="ws_big") for n in range(3000)])
    query = EventQuery().for_workspace("ws_big")
    chunks = export_csv(store, query, rows_per_chunk=100)
    first = next(chunks)
    assert first.startswith(",".join(CSV_COLUMNS) + "\r\n") and first.count("\r\n") == 101
    chunks.close()
    assert store.count(query) == 3000 and len(store.query(EventQuery(limit=5).for_workspace("ws_big")).events) == 5
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as connection:
            copying = connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%'"
                " AND state = 'active'")).scalar_one()
        assert copying == 0
    assert "".join(export_csv(store, query)).count("\r\n") == 3001
    assert "".join(export_csv(store, EventQuery().for_workspace("nobody"))) == ",".join(CSV_COLUMNS) + "\r\n"
