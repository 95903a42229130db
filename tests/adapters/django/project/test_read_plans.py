"""Pages read through the index of their filter: over every workspace of a trail that holds one (an app without
a workspace loader), and on SQLite without statistics (no ANALYZE: how an app's database usually is)."""


import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit_middleware.adapters.django.store import DjangoStore
from audit_middleware.query import MERGED_WORKSPACES, plans_each_statement

from .... import read_plans
from ....read_plans import FILTERED, trail


@pytest.mark.parametrize("workspaces", read_plans.WORKSPACE_SETS, ids=read_plans.WORKSPACE_SET_IDS)
def test_a_query_over_every_workspace_gives_every_matching_event_whatever_workspaces_the_trail_holds(workspaces):
    """A query over every workspace (the admin of an app without a workspace loader) is answered for the
    trail's one workspace when it holds one: the same events, page by page, counted and exported, as over every
    workspace; never a workspace's events left out when it holds several."""
    read_plans.assert_queries_over_every_workspace_find_every_match(DjangoStore(), list(workspaces))


def test_whether_postgresql_plans_each_page_follows_the_databases_options():
    """Django's PostgreSQL cursors bind values on the client unless ``OPTIONS["server_side_binding"]``: PostgreSQL
    then plans each statement (the store reads an event's page over several workspaces laterally)."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are psycopg's")
    connection.ensure_connection()
    binds_in_server = connection.settings_dict["OPTIONS"].get("server_side_binding") is True
    assert plans_each_statement(connection.connection) is not binds_in_server


def test_the_workspaces_listed_are_what_the_trail_holds():
    store = DjangoStore()
    read_plans.held_workspaces_check(store.workspaces_held, store.append)


def test_on_mariadb_the_workspaces_are_listed_by_a_loose_index_scan():
    """MariaDB's recursive listing scanned the workspace index again at each step (3 s for 20 workspaces at
    1,000,000 events); its distinct workspaces are read one index seek each instead."""
    if connection.vendor != "mysql":
        pytest.skip("the planner this is about is MariaDB's")
    store = DjangoStore()
    store.append(trail(["ws_a", "ws_b", "ws_c", None], n=2000))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE audit_events")
        cursor.fetchall()
    with CaptureQueriesContext(connection) as queries:
        assert store.workspaces_held(MERGED_WORKSPACES) == ["ws_a", "ws_b", "ws_c", None]
    (listing,) = queries.captured_queries
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + listing["sql"])
        plan = cursor.fetchall()
    assert len(plan) == 1 and "Using index for group-by" in plan[0][-1], plan


def test_on_mariadb_a_page_over_every_workspace_merges_ids_read_from_the_indexes():
    """MariaDB gathers every member of a merged page in a temporary table before merging: each member reads only
    its times and ids, from its index alone, and the page's rows are read by primary key once the merge has chosen
    them (``KEYED_MERGES``)."""
    if connection.vendor != "mysql":
        pytest.skip("the planner this is about is MariaDB's")
    DjangoStore().append(trail(["ws_a", "ws_b", "ws_c"], n=2000))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE TABLE audit_events")
        cursor.fetchall()
    query, index = FILTERED["event"]
    with CaptureQueriesContext(connection) as queries:
        assert len(DjangoStore().query(query).events) == query.limit
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + queries.captured_queries[-1]["sql"])
        names = [column[0] for column in cursor.description]
        plan = [(row[names.index("key")], row[names.index("Extra")] or "") for row in cursor.fetchall()]
    members = [(key, extra) for key, extra in plan if key and key != "PRIMARY"]
    assert len(members) == 3 and all(index in key and "Using index" in extra for key, extra in members), plan
    assert [key for key, _ in plan].count("PRIMARY") == 1, plan


def page_plan(query, *settings):
    """The database's plan for the page statement the store runs for ``query`` (``settings``: PostgreSQL
    ``SET LOCAL`` statements run first, in the same transaction)."""
    with CaptureQueriesContext(connection) as queries:
        DjangoStore().query(query)
    sql = queries.captured_queries[-1]["sql"]
    with transaction.atomic(), connection.cursor() as cursor:
        for setting in settings:
            cursor.execute(setting)
        cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ") + sql)
        return " | ".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.parametrize("label", list(FILTERED))
def test_on_sqlite_without_statistics_a_filtered_page_over_every_workspace_of_several_reads_each_ones_index(label):
    """Over every workspace of a trail of several, SQLite without statistics walked the time index checking every
    row; each workspace's page is now read through the filter's index and the pages merged."""
    if connection.vendor != "sqlite":
        pytest.skip("the planner this is about is SQLite's (PostgreSQL and MariaDB keep statistics themselves)")
    without_statistics()
    DjangoStore().append(trail(["ws_a", "ws_b", "ws_c"]))
    query, index = FILTERED[label]
    read_plans.assert_reads_its_filters_index_per_workspace(page_plan(query), query, index, 3)


def without_statistics():
    with connection.cursor() as cursor:  # another test's ANALYZE leaves statistics behind
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cursor.fetchall():
            cursor.execute("DELETE FROM sqlite_stat1")
    connection.close()  # the next connection reads the (now empty) statistics afresh


@pytest.mark.parametrize("scope", ["one workspace of several", "every workspace of a trail without any"])
@pytest.mark.parametrize("label", list(FILTERED))
def test_on_sqlite_without_statistics_a_filtered_page_reads_its_filters_index_in_page_order(scope, label):
    """Without ANALYZE, SQLite's planner took the workspace's time index for every filter, then read the whole
    workspace (2 s for an actor's page at 1,000,000 events); the filter indexes end with the page's order, so
    it takes them, and no sort."""
    if connection.vendor != "sqlite":
        pytest.skip("the planner this is about is SQLite's (PostgreSQL and MariaDB keep statistics themselves)")
    without_statistics()
    DjangoStore().append(trail(["ws_a", "ws_b"] if scope.startswith("one") else [None]))
    query, index = FILTERED[label]
    plan = page_plan(query.for_workspace("ws_a") if scope.startswith("one") else query)
    read_plans.assert_reads_its_filters_index_in_page_order(plan, query, index)


@pytest.mark.parametrize("label", list(FILTERED))
def test_on_postgresql_a_page_of_events_without_a_workspace_reads_its_filters_index_in_page_order(label):
    """PostgreSQL takes ``workspace_id IS NULL`` for an index condition, not an equality: with only time and id
    in the ORDER BY it walked the time index checking every row (seconds for a rare actor at a million events
    without workspaces). The page orders by the workspace first, a constant there. Sorts and full scans are
    priced out (as a large trail prices them), so the plan shows whether an index gives the page's order."""
    if connection.vendor != "postgresql":
        pytest.skip("the planner this is about is PostgreSQL's")
    DjangoStore().append(trail([None]))
    with connection.cursor() as cursor:  # statistics, as autovacuum keeps them for a large trail
        cursor.execute("ANALYZE audit_events")
    query, index = FILTERED[label]
    plan = page_plan(query, "SET LOCAL enable_sort = off", "SET LOCAL enable_incremental_sort = off",
                     "SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")
    assert index in plan and "audit_ev_time " not in plan, plan
    # the actor's two pages (at most limit + 1 rows each) are merged by one sort over their Append
    assert plan.count("Sort Key") == (0 if query.actor is None else 1), plan


@pytest.mark.parametrize("label", list(FILTERED))
def test_on_postgresql_a_page_over_every_workspace_of_several_reads_each_ones_index(label):
    """Over every workspace of a trail of several, PostgreSQL walked the time index checking every row (seconds
    at a million events); each workspace's page (and the events' without one) is read through the filter's
    index, with sorts and full scans priced out (see ``read_plans.assert_postgresql_reads_each_workspaces_index``)."""
    if connection.vendor != "postgresql":
        pytest.skip("the planner this is about is PostgreSQL's")
    DjangoStore().append(trail(["ws_a", None, "ws_b"]))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_events")
    query, index = FILTERED[label]
    plan = page_plan(query, "SET LOCAL enable_sort = off", "SET LOCAL enable_incremental_sort = off",
                     "SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")
    # Django's default cursors bind values on the client: PostgreSQL plans each page (an event's read laterally)
    read_plans.assert_postgresql_reads_each_workspaces_index(
        plan, query, index, planned_each_time=plans_each_statement(connection.connection))


@pytest.mark.parametrize("label", ["actor", "resource"])
def test_a_count_over_every_workspace_of_several_reads_each_ones_index(label):
    """A count (and an export) of an actor's or a resource's events over every workspace read them in one query,
    with no index of the filter's to use; each workspace's are read through the filter's index now."""
    if connection.vendor == "mysql":
        pytest.skip("MariaDB's plans of a trail this small scan it whole")
    if connection.vendor == "sqlite":
        without_statistics()
    events = trail(["ws_a", None, "ws_b"])
    DjangoStore().append(events)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_events")
    query, index = FILTERED[label]
    with CaptureQueriesContext(connection) as queries:
        assert DjangoStore().count(query) == len(read_plans.expected_ids(events, query))
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + queries.captured_queries[-1]["sql"])
            plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
        read_plans.assert_sqlite_counts_each_workspace_through_the_filters_index(plan, query, index)
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + queries.captured_queries[-1]["sql"])
        plan = " | ".join(row[0] for row in cursor.fetchall())
    read_plans.assert_postgresql_counts_each_workspace_through_the_filters_index(plan, index)
