"""The framework-free admin view logic, on the in-memory store."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest

from audit_middleware import Actor, EventCatalog, InvalidFilterError
from audit_middleware.admin_view import (
    MAX_NEWER,
    Viewer,
    build_page,
    csv_body,
    csv_filename,
    error_body,
    event_row,
    json_body,
    parse_request,
    stylesheet_text,
)
from audit_middleware.diff import MASK
from audit_middleware.events import AuditEvent
from audit_middleware.testing import MemoryStore

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
WORKSPACE_A = Viewer("ws_a")


def catalog() -> EventCatalog:
    c = EventCatalog()
    c.define_resource("Warehouse", "Warehouses", toggle=True)
    c.define("Warehouse Run Failed", "Warehouses")
    c.define("User Invite Sent", "Access Management")
    return c


def event(n: int, *, workspace: str | None = "ws_a", name: str = "Warehouse Modified", days_ago: float = 0,
          changes: dict | None = None, actor: Actor | None = None) -> AuditEvent:
    action = name.split()[-1].lower()
    return AuditEvent(
        id=f"{n:08d}-0000-7000-8000-000000000000", occurred_at=NOW - timedelta(days=days_ago, seconds=n),
        event=name, category="Warehouses", action=action, actor=actor or Actor.user("7", "ada@example.com"),
        resource_type="Warehouse", resource_id=str(n), resource_name=f"W{n}", workspace_id=workspace,
        changes=changes if changes is not None else {"schedule": ["hourly", "daily"]},
    )


def request(params: dict[str, list[str]], viewer: Viewer = WORKSPACE_A, **kw):
    return parse_request(params, catalog=catalog(), viewer=viewer, retention_days=90, now=NOW, **kw)


def test_the_workspace_comes_from_the_viewer_never_from_the_query_string():
    store = MemoryStore()
    store.append([event(1), event(2, workspace="ws_b"), event(3, workspace=None)])
    admin = request({"workspace_id": ["ws_b"], "workspace": ["ws_b"]})
    assert [e["workspace_id"] for e in json_body(store, admin)["events"]] == ["ws_a"]
    assert [e["workspace_id"] for e in json_body(store, request({}, Viewer(None)))["events"]] == [None]
    assert len(json_body(store, request({}, Viewer.unscoped()))["events"]) == 3


def test_nothing_older_than_the_retention_window_is_shown_or_exported():
    store = MemoryStore()
    store.append([event(1, days_ago=1), event(2, days_ago=89), event(3, days_ago=91)])
    admin = request({"since": ["2000-01-01"]})
    assert [e["resource"]["id"] for e in json_body(store, admin)["events"]] == ["1", "2"]
    assert len(list(csv.reader(io.StringIO("".join(csv_body(store, admin)))))) == 3  # header + 2
    ancient = request({"since": ["2000-01-01"], "until": ["2001-01-01"]})
    assert ancient.empty and json_body(store, ancient) == {"events": [], "next_cursor": None}
    assert build_page(store, catalog(), ancient).out_of_retention


def test_filters_are_validated_against_the_catalog_and_name_the_parameter():
    for params, parameter in (({"event": ["Warehouse Exploded"]}, "event"), ({"limit": ["0"]}, "limit"),
                              ({"since": ["soon"]}, "since"), ({"newer": ["x.y"]}, "newer"),
                              ({"newer": [".".join(["WyJ4Il0"] * (MAX_NEWER + 1))]}, "newer")):
        with pytest.raises(InvalidFilterError) as caught:
            request(params)
        assert caught.value.parameter == parameter
        assert error_body(caught.value)["error"]["parameter"] == parameter


def test_older_and_newer_links_walk_back_and_forth_by_keyset():
    store = MemoryStore()
    store.append([event(n) for n in range(1, 8)])
    seen, pages, query = [], [], {"limit": ["2"], "event": ["Warehouse Modified"]}
    while True:
        admin = request(query)
        page = build_page(store, catalog(), admin)
        pages.append((query, page))
        seen += [r.id for r in page.rows]
        if page.older is None:
            break
        query = parse_qs(page.older)
    assert [int(i[:8]) for i in seen] == [1, 2, 3, 4, 5, 6, 7]
    assert pages[0][1].newer is None and pages[0][1].newest is None
    for (_, earlier), (_, later) in zip(pages, pages[1:], strict=False):
        back = build_page(store, catalog(), request(parse_qs(later.newer)))
        assert [r.id for r in back.rows] == [r.id for r in earlier.rows]
        assert parse_qs(later.newest) == {"limit": ["2"], "event": ["Warehouse Modified"]}
    assert parse_qs(pages[1][1].export_query) == {"event": ["Warehouse Modified"]}  # no cursor, no limit


def test_rows_show_changes_readably_and_keep_masked_values_hidden():
    created = event(1, name="Warehouse Created", changes={"name": [None, "W1"], "password": [None, MASK]})
    row = event_row(created)
    assert [(c.field, c.old, c.new, c.masked) for c in row.changes] == [
        ("name", None, "W1", False), ("password", None, MASK, True)
    ]
    toggled = event_row(event(2, name="Warehouse Disabled", changes={"enabled": [True, False]}))
    assert (toggled.badge, toggled.changes[0].old, toggled.changes[0].new) == ("disabled", "true", "false")
    other = event_row(event(3, name="Warehouse Run Failed", changes={}, actor=Actor.anonymous()))
    assert other.badge == "other" and other.actor_name == "Anonymous"
    assert (other.date, other.time) == ("2026-11-25", "11:59:57")



def test_the_page_objects_answer_item_lookups_as_django_templates_make_them():
    store = MemoryStore()
    store.append([event(1, name="Warehouse Created", changes={"name": [None, "W1"]})])
    page = build_page(store, catalog(), request({}))
    row = page.rows[0]
    assert page["rows"] is page.rows and page["form"]["actor"] == page.form.actor == ""
    assert row["resource_name"] == row.resource_name == "W1" and row["changes"][0]["new"] == "W1"
    assert page.form["event_groups"][0][1][0]["name"] == page.form.event_groups[0][1][0].name
    for missing in ("no_such_field", 0):
        with pytest.raises(KeyError):
            row[missing]

def test_the_csv_is_named_with_the_date_and_the_stylesheet_ships():
    assert csv_filename(request({})) == "audit-trail-2026-11-25.csv"
    assert ".at-table" in stylesheet_text()
