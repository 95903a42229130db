"""A trail of a few hundred events over given workspaces, the filtered queries the workspace-first indexes
serve, and the check that a store answers queries over every workspace with exactly the matching events (pages,
count, CSV export): shared by the SQLAlchemy and Django read-plan tests."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from audit_middleware import Actor, EventQuery
from audit_middleware.events import AuditEvent
from audit_middleware.export import export_csv
from audit_middleware.ids import new_event_id
from audit_middleware.query import MERGED_WORKSPACES

from .paging import ids_by_pages

ACTORS = [Actor.user(str(n), f"user{n}@example.com") for n in range(5)] + [Actor.system("nightly-sync")]
VERBS = ["Warehouse Created", "Warehouse Modified", "Warehouse Disabled", "Source Deleted"]

#: one query of each filter the workspace-first indexes serve, and the part of the index name SQLite should
#: read it through (``_ws_actor``: both actor indexes, one per match)
FILTERED: dict[str, tuple[EventQuery, str]] = {
    "actor": (EventQuery(actor="user3@example.com", limit=4), "_ws_actor"),
    "actor by id, with an event and a window": (
        EventQuery(actor="2", events=("Warehouse Disabled",), since=datetime(2000, 1, 1), limit=3), "_ws_actor"),
    "event": (EventQuery(events=("Warehouse Disabled",), limit=4), "_ws_event"),
    "resource": (EventQuery(resource_type="Warehouse", resource_id="7", limit=2), "_ws_resource"),
}

#: the trails the every-workspace check runs on, and their test ids
WORKSPACE_SETS = ([None], ["ws_only"], [None, "ws_a"], ["ws_a", "ws_b"], ["ws_a", "WS_A"], ["ws_c", None, "ws_a", "ws_b"],
                  [f"ws_{n:02}" for n in range(MERGED_WORKSPACES + 1)])
WORKSPACE_SET_IDS = ("none", "one", "one and none", "two", "two differing in case", "three and none",
                     "more than are read one by one")


def trail(workspaces: list[str | None], n: int = 240) -> list[AuditEvent]:
    now = datetime.now(timezone.utc)
    return [AuditEvent(new_event_id(), now - timedelta(minutes=i // 3), VERBS[i % 4], "Warehouses", "x",
                       ACTORS[i % 6], resource_type="Warehouse", resource_id=str(i % 11),
                       workspace_id=workspaces[i % len(workspaces)]) for i in range(n)]


def expected_ids(events: list[AuditEvent], query: EventQuery) -> list[str]:
    return [e.id for e in sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True) if query.matches(e)]


def assert_queries_over_every_workspace_find_every_match(store: Any, workspaces: list[str | None]) -> None:
    """Store a trail over ``workspaces``; every query over every workspace (filtered, unfiltered, a window) gives
    exactly the matching events, newest first, page by page, counted and exported; and each workspace's own."""
    events = trail(workspaces)
    store.append(events)
    queries = [q for q, _ in FILTERED.values()] + [
        EventQuery(limit=7), EventQuery(category="Warehouses", actor_type="system", limit=5),
        EventQuery(events=("Warehouse Created", "Source Deleted"), limit=6),
        EventQuery(since=datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=30), limit=9)]
    for query in queries:
        expected = expected_ids(events, query)
        assert expected, query
        assert ids_by_pages(store, query) == expected, query
        assert store.count(query) == len(expected), query
        exported = list(csv.DictReader(io.StringIO("".join(export_csv(store, query)))))
        assert [row["id"] for row in exported] == expected, query
    for workspace in dict.fromkeys(workspaces):
        query = FILTERED["event"][0].for_workspace(workspace)
        assert ids_by_pages(store, query) == expected_ids(events, query)


def assert_reads_its_filters_index_in_page_order(plan: str, query: EventQuery, index: str) -> None:
    """SQLite's ``plan`` reads the filter's index (no time index, no sort but the actor merge's own)."""
    assert index in plan and "_ws_time" not in plan, plan
    if query.actor is None:
        assert "TEMP B-TREE" not in plan, plan
    else:  # each of the actor's two matches sorts its own page (at most limit + 1 rows) for the merge
        assert "RIGHT PART" not in plan and plan.count("TEMP B-TREE") == 2, plan


def assert_reads_its_filters_index_per_workspace(plan: str, query: EventQuery, index: str, workspaces: int) -> None:
    """SQLite's ``plan`` of a page over every workspace of a trail of ``workspaces``: each workspace's rows (each
    actor match's) read through the filter's index, merged; no table scan, no time index; the merge's rows read
    by id."""
    searches = re.findall(r"SEARCH \S+ USING (?:COVERING )?INDEX (\S+) \(([^)]*)\)", plan)
    members = [name for name, constraint in searches if constraint != "id=?"]
    assert len(members) == workspaces * (2 if query.actor is not None else 1), plan
    assert all(index in name for name in members) and "_ws_time" not in plan, plan
    assert "MERGE (UNION ALL)" in plan, plan
    assert_reads_chosen_rows_by_id(plan)


def assert_postgresql_reads_each_workspaces_index(plan: str, query: EventQuery, index: str,
                                                  planned_each_time: bool = False) -> None:
    """PostgreSQL's ``plan`` (sorts and full scans priced out) of a page over every workspace of a trail of
    ``["ws_a", None, "ws_b"]``: every workspace's rows are read through the filter's index. An actor's or a
    resource's page is one member a match joined laterally to the list of the trail's workspaces
    (``read_laterally``: planned once for all of them, where over 20 workspaces planning two members a workspace
    took 3 to 5 ms), and the events without a workspace a member of their own (IS NULL). An event's page is a
    member per workspace, merged, where the statement is prepared; ``planned_each_time`` (the driver has every
    statement planned again), it is read laterally too, each workspace's times and ids from the index alone,
    then the chosen rows by id (``read_by_id``)."""
    members = re.findall(r"Index (Only )?Scan(?: Backward)? using (\S+) on [^|]*\|\s*Index Cond: \(+(workspace_id|\(workspace_id\))", plan)
    scans = re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\S+)", plan)
    assert members and all(index in name for _, name, _ in members), plan
    if query.actor is None and query.resource_id is None and not planned_each_time:
        assert len(scans) == 3 == len(members) and "Nested Loop" not in plan, plan
        return
    matches = 2 if query.actor is not None else 1
    assert len(members) == 2 * matches and "Nested Loop" in plan, plan
    assert plan.count("(workspace_id IS NULL)") == matches, plan
    assert len(re.findall(r"workspace_id\)?(?:::text)? = ", plan)) == matches, plan  # one for every listed workspace
    if query.actor is None and query.resource_id is None:  # the times and ids from the index alone, then the rows
        assert all(only for only, _, _ in members), plan
        assert re.search(r"\.id\)::text = ", plan), plan
    else:
        assert len(scans) == len(members), plan


def assert_postgresql_counts_each_workspace_through_the_filters_index(plan: str, index: str) -> None:
    """PostgreSQL's ``plan`` (sequential scans priced out) of a count of an actor's or a resource's events over
    every workspace of ``["ws_a", None, "ws_b"]``: each workspace's rows counted through the filter's index, with
    the workspace in the index condition (``per_workspace_for_rows``); over every workspace at once the index,
    which leads with the workspace, could only be read whole."""
    scans = re.findall(r"Index (?:Only )?Scan(?: Backward)? (?:using|on) (\S+)", plan)
    assert scans and all(index in name for name in scans) and "Seq Scan" not in plan, plan
    conditions = re.findall(r"Index Cond: \(+(?:\(workspace_id\)::text = '(ws_a|ws_b)'|workspace_id (IS NULL))", plan)
    assert {a or b for a, b in conditions} == {"ws_a", "ws_b", "IS NULL"}, plan
    assert len(conditions) == len(scans), plan


def assert_sqlite_counts_each_workspace_through_the_filters_index(plan: str, query: EventQuery, index: str) -> None:
    """SQLite's ``plan`` (no planner statistics) of a count of an actor's or a resource's events over every
    workspace of ``["ws_a", None, "ws_b"]``: each workspace's rows (each actor match's) searched in the filter's
    index by workspace, no scan of the table (which read much of the trail: 0.55 to 1.7 s at 1,000,000 events)."""
    searches = re.findall(r"SEARCH \S+ USING (?:COVERING )?INDEX (\S+) \(([^)]*)\)", plan)
    assert len(searches) == 3 * (2 if query.actor is not None else 1), plan
    assert all(index in name and constraint.startswith("workspace_id") for name, constraint in searches), plan
    assert not re.search(r"SCAN audit_events\b", plan), plan


def assert_reads_chosen_rows_by_id(plan: str) -> None:
    """SQLite's ``plan`` of a merged page: the members' times and ids merged, then the chosen rows read by id
    (one primary key search, the first step), not every member's full rows (see ``KEYED_MERGES``)."""
    assert re.match(r"SEARCH \S+ USING INDEX sqlite_autoindex_\S+ \(id=\?\) \| LIST SUBQUERY", plan), plan
    assert len(re.findall(r"\(id=\?\)", plan)) == 1, plan


def held_workspaces_check(listed: Any, append: Any) -> None:
    """A store's listing of its trail's workspaces (``listed(at_most)``; ``append`` stores events): ascending,
    at most ``at_most + 1``, then None when some event has none."""
    assert listed(MERGED_WORKSPACES) == []
    append(trail(["ws_c", "ws_a", "ws_b"], n=6))
    assert listed(MERGED_WORKSPACES) == ["ws_a", "ws_b", "ws_c"]
    append(trail([None, "ws_d"], n=4))
    assert listed(MERGED_WORKSPACES) == ["ws_a", "ws_b", "ws_c", "ws_d", None]
    assert listed(3) == ["ws_a", "ws_b", "ws_c", "ws_d", None]
    assert listed(2) == ["ws_a", "ws_b", "ws_c", None]
    assert listed(1) == ["ws_a", "ws_b", None]
    assert listed(0) == ["ws_a", None]
