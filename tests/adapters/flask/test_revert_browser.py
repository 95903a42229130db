"""Headless Chromium: an owner clicks Revert, sees the conflict page, and reverts anyway."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from .conftest import dispose, make_app


def test_an_owner_reverts_from_the_page_and_reverts_anyway_after_a_conflict(browser, backend, database_url):
    if backend != "sqlite":
        pytest.skip("one database is enough for the browser; the route is tested on all three")
    flask_app = make_app(database_url)
    server = make_server("127.0.0.1", 0, flask_app.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    context = browser.new_context()
    try:
        ada = flask_app.client("ada@a.example")
        warehouse_id = ada.post("/warehouses", data={"name": "Production"}).json["id"]
        ada.post(f"/warehouses/{warehouse_id}", data={"enabled": "false"})
        (disabled,) = flask_app.events(events=("Warehouse Disabled",))
        page = context.new_page()
        problems: list[str] = []
        # CSP violations and script errors; the expected 404 (the test app has no home page) and 409 (the
        # conflict page) statuses are reported as "Failed to load resource" and are not problems.
        page.on("console", lambda message: problems.append(message.text)
                if message.type == "error" and "Failed to load resource" not in message.text else None)
        page.goto(base + "/login")
        page.fill("#email", "ada@a.example")
        page.click("#sign-in")
        page.wait_for_url(base + "/")
        page.goto(base + "/admin/audit-trail/")
        page.click(f'tr[data-event-id="{disabled.id}"] form.at-revert button')
        page.wait_for_load_state()
        assert f"Event {disabled.id} was reverted" in page.locator("#at-reverted").inner_text()
        with flask_app.app.app_context():
            assert flask_app.db.session.get(flask_app.Warehouse, warehouse_id).enabled is True

        # A rename the app changed again since: the conflict page, then "Revert anyway".
        ada.post(f"/warehouses/{warehouse_id}", data={"name": "Renamed"})
        ada.post(f"/warehouses/{warehouse_id}", data={"name": "Renamed again"})
        renamed = flask_app.events(events=("Warehouse Modified",))[-1]
        page.goto(base + "/admin/audit-trail/")
        page.click(f'tr[data-event-id="{renamed.id}"] form.at-revert button')
        page.wait_for_load_state()
        assert "changed since this event" in page.locator("h1").inner_text()
        assert page.locator("#rv-conflicts tbody tr").inner_text().split("\t") == [
            "name", "Renamed", "Renamed again"]
        page.click("#rv-submit")
        page.wait_for_load_state()
        assert f"Event {renamed.id} was reverted" in page.locator("#at-reverted").inner_text()
        with flask_app.app.app_context():
            assert flask_app.db.session.get(flask_app.Warehouse, warehouse_id).name == "Production"
        assert problems == []
    finally:
        context.close()
        server.shutdown()
        dispose(flask_app)
