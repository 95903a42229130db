"""Pages read through the index of their filter: over every workspace of a trail that holds one (an app without
workspaces), and on SQLite without statistics (no ANALYZE: how an app's database usually is)."""

from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy import Index, MetaData, event, inspect

from audit_middleware import EventQuery
from audit_middleware.query import MERGED_WORKSPACES, plans_each_statement

from ... import read_plans
from ...read_plans import FILTERED, trail


@pytest.mark.parametrize("workspaces", read_plans.WORKSPACE_SETS, ids=read_plans.WORKSPACE_SET_IDS)
def test_a_query_over_every_workspace_gives_every_matching_event_whatever_workspaces_the_trail_holds(
        app, workspaces):
    """A query over every workspace is answered for the trail's one workspace when it holds one: the same
    events, page by page, counted and exported, as over every workspace, and never a workspace's events left
    out when it holds several."""
    read_plans.assert_queries_over_every_workspace_find_every_match(app.auditor.store, list(workspaces))


def planned_each_time(app) -> None:
    """The app's PostgreSQL connections without prepared statements (psycopg's ``prepare_threshold=None``, as
    behind a pooler in transaction mode; psycopg 2 never prepares): PostgreSQL plans each page afresh."""
    app.engine.dispose()
    event.listen(app.engine, "connect", lambda driver, record: setattr(driver, "prepare_threshold", None))


def test_whether_postgresql_plans_each_statement_is_read_from_the_driver_connection(app, backend):
    """psycopg 3 prepares a statement run 5 times (its default ``prepare_threshold``) unless told not to
    (None) or its cursors bind values on the client (``ClientCursor``, Django's default); a connection of any
    other driver (psycopg 2 never prepares) plans each one."""
    if backend != "postgresql":
        pytest.skip("prepared statements are psycopg's")
    import psycopg

    with app.engine.connect() as c:
        driver = c.connection.driver_connection
        assert plans_each_statement(driver) is False
        driver.prepare_threshold = None
        assert plans_each_statement(driver) is True
        driver.prepare_threshold = 5
    url = app.engine.url.set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), cursor_factory=psycopg.ClientCursor) as client:
        assert plans_each_statement(client) is True
    with app.engine.connect() as c:
        assert plans_each_statement(c.connection.driver_connection) is False
    assert plans_each_statement(sqlite3.connect(":memory:")) is True


@pytest.mark.parametrize("workspaces", read_plans.WORKSPACE_SETS, ids=read_plans.WORKSPACE_SET_IDS)
def test_without_prepared_statements_a_query_over_every_workspace_gives_every_matching_event(app, backend, workspaces):
    """The same on PostgreSQL without prepared statements, where an event's page over several workspaces is
    read laterally, its times and ids first (``read_laterally``, ``read_by_id``)."""
    if backend != "postgresql":
        pytest.skip("prepared statements are psycopg's")
    planned_each_time(app)
    read_plans.assert_queries_over_every_workspace_find_every_match(app.auditor.store, list(workspaces))


def test_the_workspaces_listed_are_what_the_trail_holds(app):
    store = app.auditor.store

    def listed(at_most: int) -> list[str | None]:
        with app.engine.connect() as c:
            return store.workspaces_held(c, at_most)

    read_plans.held_workspaces_check(listed, store.append)


def page_plan(app, query: EventQuery, *settings: str) -> str:
    """The database's plan for the page statement the store runs for ``query`` (``settings``: PostgreSQL
    ``SET`` statements run first, in the same transaction)."""
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        statements.append((statement, parameters))

    event.listen(app.engine, "before_cursor_execute", keep)
    try:
        app.auditor.store.query(query)
    finally:
        event.remove(app.engine, "before_cursor_execute", keep)
    sql, parameters = statements[-1]
    with app.engine.connect() as c:
        driver = c.connection.driver_connection
        if app.engine.dialect.name == "sqlite":
            rows = driver.execute("EXPLAIN QUERY PLAN " + sql, parameters).fetchall()
        else:
            cursor = driver.cursor()
            for setting in settings:
                cursor.execute(setting)
            cursor.execute("EXPLAIN " + sql, parameters)
            rows = cursor.fetchall()
            c.rollback()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("label", list(FILTERED))
def test_on_sqlite_without_statistics_a_filtered_page_over_every_workspace_of_several_reads_each_ones_index(
        app, backend, label):
    """Over every workspace of a trail of several, SQLite without statistics walked the time index checking
    every row (seconds for a resource's page at 1,000,000 events); each workspace's page is now read through the
    filter's index and the pages merged."""
    if backend != "sqlite":
        pytest.skip("the planner this is about is SQLite's (PostgreSQL and MariaDB keep statistics themselves)")
    app.auditor.store.append(trail(["ws_a", "ws_b", "ws_c"]))
    query, index = FILTERED[label]
    read_plans.assert_reads_its_filters_index_per_workspace(page_plan(app, query), query, index, 3)


@pytest.mark.parametrize("scope", ["one workspace of several", "every workspace of a trail without any"])
@pytest.mark.parametrize("label", list(FILTERED))
def test_on_sqlite_without_statistics_a_filtered_page_reads_its_filters_index_in_page_order(
        app, backend, scope, label):
    """Without ANALYZE, SQLite's planner took the workspace's time index for every filter (it gives the rows
    in page order; the filter's index, ending in time alone, did not), then read the whole workspace: 2 s for
    an actor's page at 1,000,000 events. The filter indexes end with the page's order, so the planner takes
    them, and no sort."""
    if backend != "sqlite":
        pytest.skip("the planner this is about is SQLite's (PostgreSQL and MariaDB keep statistics themselves)")
    app.auditor.store.append(trail(["ws_a", "ws_b"] if scope.startswith("one") else [None]))
    with app.engine.connect() as c:
        assert not c.exec_driver_sql("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'").all()
    query, index = FILTERED[label]
    plan = page_plan(app, query.for_workspace("ws_a") if scope.startswith("one") else query)
    read_plans.assert_reads_its_filters_index_in_page_order(plan, query, index)


def test_create_tables_builds_again_an_index_whose_columns_an_earlier_release_defined_otherwise(app):
    """An index of ours whose name stayed and whose columns changed (the filter indexes gained ``id``) is
    built again with the new columns; the rows stay."""
    table = app.auditor.table
    index = next(i for i in table.indexes if i.name.endswith("_ws_event"))
    app.auditor.store.append(trail(["ws_a"], n=3))
    index.drop(app.engine)
    copy = table.to_metadata(MetaData())  # the earlier index on a copy: the app's table keeps its own
    Index(index.name, copy.c.workspace_id, copy.c.event, copy.c.occurred_at).create(app.engine)

    def columns() -> list[str]:
        return next(i["column_names"] for i in inspect(app.engine).get_indexes(table.name) if i["name"] == index.name)

    assert columns() == ["workspace_id", "event", "occurred_at"]
    app.auditor.create_tables()
    assert columns() == ["workspace_id", "event", "occurred_at", "id"]
    app.auditor.create_tables()  # and again: nothing left to do
    assert columns() == ["workspace_id", "event", "occurred_at", "id"]
    assert app.auditor.store.count() == 3


@pytest.mark.parametrize("label", list(FILTERED))
def test_on_postgresql_a_page_of_events_without_a_workspace_reads_its_filters_index_in_page_order(
        app, backend, label):
    """PostgreSQL takes ``workspace_id IS NULL`` for an index condition but not for an equality: with only time
    and id in the ORDER BY it did not see that the filter's index gives the rows in page order, and walked the
    time index checking every row (5.7 s for an actor's page at 1,000,000 events without workspaces). The page
    orders by the workspace first (a constant there). Sorts and full scans are priced out of the plan (as a
    large trail prices them), so the plan shows whether an index gives the page's order."""
    if backend != "postgresql":
        pytest.skip("the planner this is about is PostgreSQL's")
    app.auditor.store.append(trail([None]))
    with app.engine.begin() as c:  # statistics, as autovacuum keeps them for a large trail
        c.exec_driver_sql(f"ANALYZE {app.auditor.table.name}")
    query, index = FILTERED[label]
    plan = page_plan(app, query, "SET LOCAL enable_sort = off", "SET LOCAL enable_incremental_sort = off",
                     "SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")
    assert index in plan and f"ix_{app.auditor.table.name}_time " not in plan, plan
    # the actor's two pages (at most limit + 1 rows each) are merged by one sort over their Append
    assert plan.count("Sort Key") == (0 if query.actor is None else 1), plan


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "planned each time"])
@pytest.mark.parametrize("label", list(FILTERED))
def test_on_postgresql_a_page_over_every_workspace_of_several_reads_each_ones_index(app, backend, label, prepared):
    """Over every workspace of a trail of several, PostgreSQL walked the time index checking every row (2 to 3 s
    for an actor's or a resource's page at 1,000,000 events in 20 workspaces); each workspace's page (and the
    events' without one) is now read through the filter's index, with sorts and full scans priced out (see
    ``read_plans.assert_postgresql_reads_each_workspaces_index``), with prepared statements (psycopg's default)
    and without."""
    if backend != "postgresql":
        pytest.skip("the planner this is about is PostgreSQL's")
    if not prepared:
        planned_each_time(app)
    app.auditor.store.append(trail(["ws_a", None, "ws_b"]))
    with app.engine.begin() as c:
        c.exec_driver_sql(f"ANALYZE {app.auditor.table.name}")
    query, index = FILTERED[label]
    plan = page_plan(app, query, "SET LOCAL enable_sort = off", "SET LOCAL enable_incremental_sort = off",
                     "SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")
    read_plans.assert_postgresql_reads_each_workspaces_index(plan, query, index, planned_each_time=not prepared)


@pytest.mark.parametrize("workspaces", [[None], ["ws_a", "ws_b"]], ids=["without workspaces", "over two"])
def test_on_postgresql_a_repeated_page_is_planned_once_for_every_value(app, backend, workspaces):
    """psycopg prepares a statement run five times on a connection; PostgreSQL then plans it once for every
    value (a generic plan) only when that plan costs about what a plan for the values does. With the page size
    bound as a parameter it priced a generic plan for a tenth of the rows and planned the page again at every
    run for the events without a workspace and for pages merged over workspaces (3.5 to 5.7 ms of planning for
    20 workspaces, more than running them); the size is written into the statement."""
    if backend != "postgresql":
        pytest.skip("the planner this is about is PostgreSQL's")
    store = app.auditor.store
    store.append(trail(workspaces))
    with app.engine.begin() as c:
        c.exec_driver_sql(f"ANALYZE {app.auditor.table.name}")
    statements: list[str] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        statements.append(statement)

    event.listen(app.engine, "before_cursor_execute", keep)
    try:
        for n in range(12):
            store.query(EventQuery(actor=f"user{n % 5}@example.com", limit=4))
    finally:
        event.remove(app.engine, "before_cursor_execute", keep)
    page = statements[-1]
    assert "actor_name" in page and re.findall(r"LIMIT\s+(\S+?)\)*\s", page + " ") == ["5"] * page.count("LIMIT"), page
    # a small trail does not show PostgreSQL's choice the way a large one does; the plans must be generic here too
    with app.engine.connect() as c:  # the pool's one connection, which ran the pages
        plans = c.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%%actor_name%%'"
        ).all()
    assert len(plans) == 1, plans
    generic, custom = plans[0]
    assert generic > 0 and custom <= 5, plans


def test_on_mariadb_the_workspaces_are_listed_by_a_loose_index_scan(app, backend):
    """MariaDB's recursive listing scanned the workspace index again at each step (3 s for 20 workspaces at
    1,000,000 events, before every page over every workspace); its distinct workspaces are read one index seek
    each instead."""
    if backend != "mariadb":
        pytest.skip("the planner this is about is MariaDB's")
    store = app.auditor.store
    store.append(trail(["ws_a", "ws_b", "ws_c", None], n=2000))
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        statements.append((statement, parameters))

    with app.engine.connect() as c:
        c.exec_driver_sql("ANALYZE TABLE audit_events")
        event.listen(c, "before_cursor_execute", keep)
        assert store.workspaces_held(c, MERGED_WORKSPACES) == ["ws_a", "ws_b", "ws_c", None]
        (sql, parameters), = statements
        plan = c.exec_driver_sql("EXPLAIN " + sql, parameters).fetchall()
    assert len(plan) == 1 and "Using index for group-by" in plan[0][-1], plan


def test_on_mariadb_a_page_over_every_workspace_merges_ids_read_from_the_indexes(app, backend):
    """MariaDB gathers every member of a merged page in a temporary table before merging: each member now reads
    only its times and ids, from its index alone, and the page's rows are read by primary key once the merge has
    chosen them (``KEYED_MERGES``; over 20 workspaces at 1,000,000 events an event's page took 89 ms, now 7 to
    11)."""
    if backend != "mariadb":
        pytest.skip("the planner this is about is MariaDB's")
    app.auditor.store.append(trail(["ws_a", "ws_b", "ws_c"], n=2000))
    with app.engine.connect() as c:
        c.exec_driver_sql("ANALYZE TABLE audit_events")
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        statements.append((statement, parameters))

    query, index = FILTERED["event"]
    event.listen(app.engine, "before_cursor_execute", keep)
    try:
        assert len(app.auditor.store.query(query).events) == query.limit
    finally:
        event.remove(app.engine, "before_cursor_execute", keep)
    sql, parameters = statements[-1]
    with app.engine.connect() as c:
        plan = [(row.key, row.Extra or "") for row in c.exec_driver_sql("EXPLAIN " + sql, parameters)]
    members = [(key, extra) for key, extra in plan if key and key != "PRIMARY"]
    assert len(members) == 3 and all(index in key and "Using index" in extra for key, extra in members), plan
    assert [key for key, _ in plan].count("PRIMARY") == 1, plan


@pytest.mark.parametrize("label", ["actor", "resource"])
def test_a_count_over_every_workspace_of_several_reads_each_ones_index(app, backend, label):
    """A count (and an export) of an actor's or a resource's events over every workspace read them in one query,
    with no index of the filter's to use (89 to 102 ms for a count at 1,000,000 events in 20 workspaces); each
    workspace's are read through the filter's index now (5 to 38 ms)."""
    if backend == "mariadb":
        pytest.skip("MariaDB's plans of a trail this small scan it whole")
    store = app.auditor.store
    events = trail(["ws_a", None, "ws_b"])
    store.append(events)
    with app.engine.begin() as c:
        c.exec_driver_sql(f"ANALYZE {app.auditor.table.name}")
    query, index = FILTERED[label]
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        statements.append((statement, parameters))

    event.listen(app.engine, "before_cursor_execute", keep)
    try:
        assert store.count(query) == len(read_plans.expected_ids(events, query))
    finally:
        event.remove(app.engine, "before_cursor_execute", keep)
    sql, parameters = statements[-1]
    if backend == "sqlite":  # without statistics (none gathered here)
        plan = page_plan_of(app, sql, parameters)
        read_plans.assert_sqlite_counts_each_workspace_through_the_filters_index(plan, query, index)
        return
    with app.engine.connect() as c:
        c.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = " | ".join(row[0] for row in c.exec_driver_sql("EXPLAIN " + sql, parameters))
        c.rollback()
    read_plans.assert_postgresql_counts_each_workspace_through_the_filters_index(plan, index)


def page_plan_of(app, sql: str, parameters: object) -> str:
    """SQLite's plan of ``sql``."""
    with app.engine.connect() as c:
        rows = c.connection.driver_connection.execute("EXPLAIN QUERY PLAN " + sql, parameters).fetchall()
    return " | ".join(str(row[-1]) for row in rows)
