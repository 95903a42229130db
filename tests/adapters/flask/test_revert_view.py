"""Revert from the Flask admin view: the button (POST with CSRF), conflicts, confirmation, permissions."""

from __future__ import annotations

import re

from .conftest import dispose, make_app

INDEX = "/admin/audit-trail/"


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def revert_url(event_id: str) -> str:
    return f"/admin/audit-trail/events/{event_id}/revert"


def warehouse(flask_app, warehouse_id):
    with flask_app.app.app_context():
        return flask_app.db.session.get(flask_app.Warehouse, warehouse_id)


def test_the_revert_button_enables_a_disabled_warehouse_as_the_owner(flask_app):
    owner = flask_app.client("ada@a.example")
    warehouse_id = owner.post("/warehouses", data={"name": "Production"}).json["id"]
    owner.post(f"/warehouses/{warehouse_id}", data={"enabled": "false"})
    (disabled,) = flask_app.events(events=("Warehouse Disabled",))
    page = owner.get(INDEX).data.decode()
    assert f'action="{revert_url(disabled.id)}"' in page
    response = owner.post(revert_url(disabled.id), data={"csrf_token": token_of(page)})
    assert response.status_code == 303
    assert warehouse(flask_app, warehouse_id).enabled is True
    (enabled,) = flask_app.events(events=("Warehouse Enabled",))
    notice = owner.get(response.headers["Location"]).data.decode()
    assert f"Event {disabled.id} was reverted; the revert is recorded as event {enabled.id}." in notice
    assert (enabled.actor.name, enabled.workspace_id, enabled.context["reverted_event_id"]) == (
        "ada@a.example", "ws_a", disabled.id)


def test_revert_needs_csrf_ownership_and_the_same_workspace(flask_app):
    owner = flask_app.client("ada@a.example")
    warehouse_id = owner.post("/warehouses", data={"name": "Production"}).json["id"]
    owner.post(f"/warehouses/{warehouse_id}", data={"enabled": "false"})
    (disabled,) = flask_app.events(events=("Warehouse Disabled",))
    assert owner.post(revert_url(disabled.id)).status_code == 400
    assert flask_app.client("bob@a.example").post(revert_url(disabled.id)).status_code == 403
    other = flask_app.client("eve@b.example")
    other.post("/warehouses", data={"name": "Eve's"})  # a row of her own, so her page has a form
    token = token_of(other.get(INDEX).data.decode())
    refused = other.post(revert_url(disabled.id), data={"csrf_token": token})
    assert refused.status_code == 404 and b"in this workspace" in refused.data
    assert warehouse(flask_app, warehouse_id).enabled is False


def test_a_conflict_shows_the_changed_fields_and_revert_anyway_overwrites(flask_app):
    owner = flask_app.client("ada@a.example")
    warehouse_id = owner.post("/warehouses", data={"name": "a"}).json["id"]
    owner.post(f"/warehouses/{warehouse_id}", data={"name": "b"})
    owner.post(f"/warehouses/{warehouse_id}", data={"name": "<c>"})
    first = flask_app.events(events=("Warehouse Modified",))[-1]
    token = token_of(owner.get(INDEX).data.decode())
    conflict = owner.post(revert_url(first.id), data={"csrf_token": token})
    assert conflict.status_code == 409
    html = conflict.data.decode()
    assert "<td>name</td><td>b</td><td>&lt;c&gt;</td>" in html and "Revert anyway" in html
    assert warehouse(flask_app, warehouse_id).name == "<c>"
    forced = owner.post(revert_url(first.id), data={"csrf_token": token, "force": "1"})
    assert forced.status_code == 303 and warehouse(flask_app, warehouse_id).name == "a"


def test_reverting_a_created_event_asks_before_deleting(flask_app):
    owner = flask_app.client("ada@a.example")
    warehouse_id = owner.post("/warehouses", data={"name": "Scratch"}).json["id"]
    (created,) = flask_app.events(events=("Warehouse Created",))
    token = token_of(owner.get(INDEX).data.decode())
    asked = owner.post(revert_url(created.id), data={"csrf_token": token})
    assert asked.status_code == 200 and b"Delete it" in asked.data and b'name="confirm" value="1"' in asked.data
    assert warehouse(flask_app, warehouse_id) is not None
    done = owner.post(revert_url(created.id), data={"csrf_token": token, "confirm": "1"})
    assert done.status_code == 303 and warehouse(flask_app, warehouse_id) is None


def test_can_revert_hides_the_button_and_refuses(database_url):
    test_app = make_app(database_url, AUDIT_TRAIL_CAN_REVERT=lambda: False)
    try:
        owner = test_app.client("ada@a.example")
        warehouse_id = owner.post("/warehouses", data={"name": "Production"}).json["id"]
        owner.post(f"/warehouses/{warehouse_id}", data={"enabled": "false"})
        (disabled,) = test_app.events(events=("Warehouse Disabled",))
        page = owner.get(INDEX).data.decode()
        assert "/revert" not in page
        with owner.session_transaction() as session:  # a valid token, so only can_revert can refuse
            session["_audit_trail_csrf"] = token = "t" * 43
        refused = owner.post(revert_url(disabled.id), data={"csrf_token": token})
        assert refused.status_code == 403 and b"not revert" in refused.data
    finally:
        dispose(test_app)


def test_the_can_revert_argument_lets_only_some_viewers_revert(database_url):
    test_app = make_app(database_url)
    test_app.audit.can_revert = lambda: False  # as AuditTrail(app, db, can_revert=...) sets it
    try:
        owner = test_app.client("ada@a.example")
        warehouse_id = owner.post("/warehouses", data={"name": "Production"}).json["id"]
        owner.post(f"/warehouses/{warehouse_id}", data={"enabled": "false"})
        assert "/revert" not in owner.get(INDEX).data.decode()
    finally:
        dispose(test_app)


def test_the_can_revert_check_runs_once_per_page_however_many_rows_it_covers(database_url):
    test_app = make_app(database_url)
    calls = []
    test_app.audit.can_revert = lambda: calls.append(1) or True  # a check that may cost a query
    try:
        owner = test_app.client("ada@a.example")
        for name in ("One", "Two", "Three"):
            warehouse_id = owner.post("/warehouses", data={"name": name}).json["id"]
            owner.post(f"/warehouses/{warehouse_id}", data={"enabled": "false"})
        calls.clear()
        page = owner.get(INDEX).data.decode()
        assert page.count('class="at-revert"') == 6 and len(calls) == 1  # 3 created, 3 disabled
    finally:
        dispose(test_app)
