"""Pages read through the index of their filter: over every workspace of a trail that holds one (an app without
a workspace loader), and on SQLite without statistics (no ANALYZE: how an app's database usually is)."""

import csv
import io
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit_middleware import Actor, EventQuery
from audit_middleware.adapters.django.store import DjangoStore
from audit_middleware.events import AuditEvent
from audit_middleware.export import export_csv
from audit_middleware.ids import new_event_id

from ....paging import ids_by_pages

ACTORS = [Actor.user(str(n), f"user{n}@example.com") for n in range(5)] + [Actor.system("nightly-sync")]
VERBS = ["Warehouse Created", "Warehouse Modified", "Warehouse Disabled", "Source Deleted"]

#: one query of each filter the workspace-first indexes serve, and the index SQLite should read it through
FILTERED = {
    "actor": (EventQuery(actor="user3@example.com", limit=4), "audit_ev_ws_actor"),
    "actor by id, with an event and a window": (
        EventQuery(actor="2", events=("Warehouse Disabled",), since=datetime(2000, 1, 1), limit=3),
        "audit_ev_ws_actor"),
    "event": (EventQuery(events=("Warehouse Disabled",), limit=4), "audit_ev_ws_event"),
    "resource": (EventQuery(resource_type="Warehouse", resource_id="7", limit=2), "audit_ev_ws_resource"),
}


def trail(workspaces, n=240):
    now = datetime.now(dt_timezone.utc)
    return [AuditEvent(new_event_id(), now - timedelta(minutes=i // 3), VERBS[i % 4], "Warehouses", "x",
                       ACTORS[i % 6], resource_type="Warehouse", resource_id=str(i % 11),
                       workspace_id=workspaces[i % len(workspaces)]) for i in range(n)]


def expected_ids(events, query):
    return [e.id for e in sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True) if query.matches(e)]


@pytest.mark.parametrize("workspaces", [[None], ["ws_only"], [None, "ws_a"], ["ws_a", "ws_b"]],
                         ids=["none", "one", "one and none", "two"])
def test_a_query_over_every_workspace_gives_every_matching_event_whatever_workspaces_the_trail_holds(workspaces):
    """A query over every workspace (the admin of an app without a workspace loader) is answered for the
    trail's one workspace when it holds one: the same events, page by page, counted and exported, as over every
    workspace; never a workspace's events left out when it holds several."""
    store = DjangoStore()
    events = trail(workspaces)
    store.append(events)
    queries = [q for q, _ in FILTERED.values()] + [
        EventQuery(limit=7), EventQuery(category="Warehouses", actor_type="system", limit=5)]
    for query in queries:
        expected = expected_ids(events, query)
        assert expected, query
        assert ids_by_pages(store, query) == expected, query
        assert store.count(query) == len(expected), query
        exported = list(csv.DictReader(io.StringIO("".join(export_csv(store, query)))))
        assert [row["id"] for row in exported] == expected, query
    for workspace in dict.fromkeys(workspaces):  # and each workspace's own
        query = FILTERED["event"][0].for_workspace(workspace)
        assert ids_by_pages(store, query) == expected_ids(events, query)


def test_the_workspace_span_is_what_the_trail_holds():
    store = DjangoStore()
    empty = store.workspace_span()
    assert (empty.lowest, empty.highest, empty.some_without) == (None, None, False)
    store.append(trail([None, "ws_b", "ws_a"], n=6))
    span = store.workspace_span()
    assert (span.lowest, span.highest, span.some_without) == ("ws_a", "ws_b", True)


def page_plan(query):
    with CaptureQueriesContext(connection) as queries:
        DjangoStore().query(query)
    sql = queries.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        return " | ".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.parametrize("scope", ["one workspace of several", "every workspace of a trail without any"])
@pytest.mark.parametrize("label", list(FILTERED))
def test_on_sqlite_without_statistics_a_filtered_page_reads_its_filters_index_in_page_order(scope, label):
    """Without ANALYZE, SQLite's planner took the workspace's time index for every filter, then read the whole
    workspace (2 s for an actor's page at 1,000,000 events); the filter indexes end with the page's order, so
    it takes them, and no sort."""
    if connection.vendor != "sqlite":
        pytest.skip("the planner this is about is SQLite's (PostgreSQL and MariaDB keep statistics themselves)")
    with connection.cursor() as cursor:  # another test's ANALYZE leaves statistics behind
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cursor.fetchall():
            cursor.execute("DELETE FROM sqlite_stat1")
    connection.close()  # the next connection reads the (now empty) statistics afresh
    DjangoStore().append(trail(["ws_a", "ws_b"] if scope.startswith("one") else [None]))
    query, index = FILTERED[label]
    plan = page_plan(query.for_workspace("ws_a") if scope.startswith("one") else query)
    assert index in plan and "audit_ev_ws_time" not in plan, plan
    if query.actor is None:
        assert "TEMP B-TREE" not in plan, plan
    else:  # each of the actor's two matches sorts its own page (at most limit + 1 rows) for the merge
        assert "RIGHT PART" not in plan and plan.count("TEMP B-TREE") == 2, plan
