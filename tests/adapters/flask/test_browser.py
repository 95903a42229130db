"""Headless Chromium (Debian's, driven by Playwright) uses the admin page as an owner would."""

from __future__ import annotations

import csv
import threading

from werkzeug.serving import make_server

from .conftest import TOKEN_SECRET, dispose, make_app


def test_an_owner_logs_in_filters_by_event_and_actor_pages_and_downloads_the_csv(browser, database_url, tmp_path):
    flask_app = make_app(database_url, AUDIT_TRAIL_PAGE_SIZE=3)
    server = make_server("127.0.0.1", 0, flask_app.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    context = browser.new_context(accept_downloads=True)
    try:
        ada, bob = flask_app.client("ada@a.example"), flask_app.client("bob@a.example")
        ids = [ada.post("/warehouses", data={"name": f"Warehouse {n}"}).json["id"] for n in range(7)]
        bob.post("/warehouses", data={"name": "Bob's"})
        ada.post(f"/warehouses/{ids[0]}", data={"enabled": "false"})
        flask_app.client().post("/warehouses", data={"name": "<b>by token</b>"},
                                headers={"Authorization": f"Bearer {TOKEN_SECRET}"})
        flask_app.client("eve@b.example").post("/warehouses", data={"name": "Other tenant"})

        page = context.new_page()
        problems: list[str] = []

        def on_console(message: object) -> None:  # CSP violations, failed loads, script errors of the admin pages
            if message.type == "error" and "/admin/audit-trail" in (message.location or {}).get("url", page.url):
                problems.append(message.text)

        page.on("console", on_console)
        page.goto(base + "/login")
        page.fill("#email", "ada@a.example")
        page.click("#sign-in")
        page.wait_for_url(base + "/")  # the test app has no home page: a 404 there is not the admin view's
        page.goto(base + "/admin/audit-trail/")
        assert page.title() == "Audit Trail"
        assert page.locator("#at-events tbody tr").count() == 3
        assert page.evaluate("getComputedStyle(document.querySelector('.at-header')).display") == "flex"
        assert "Other tenant" not in page.content()

        page.select_option("#f-event", "Warehouse Created")
        page.fill("#f-actor", "ada@a.example")
        page.click("#f-apply")
        page.wait_for_load_state()
        assert "event=Warehouse+Created" in page.url and "actor=ada%40a.example" in page.url

        def shown() -> list[str]:
            rows = page.locator("#at-events tbody tr")
            for n in range(rows.count()):
                assert "Warehouse Created" in rows.nth(n).inner_text()
                assert "ada@a.example" in rows.nth(n).inner_text()
            return [rows.nth(n).get_attribute("data-event-id") for n in range(rows.count())]

        first = shown()
        page.click("#at-older")
        second = shown()
        page.click("#at-older")
        third = shown()
        assert (len(first), len(second), len(third)) == (3, 3, 1)
        assert page.locator("#at-older").count() == 0
        page.click("#at-newer")
        assert shown() == second
        page.screenshot(path=str(tmp_path / "audit-trail.png"), full_page=True)

        with page.expect_download() as download_info:
            page.click("#at-export")
        download = download_info.value
        assert download.suggested_filename.startswith("audit-trail-") and download.suggested_filename.endswith(".csv")
        saved = tmp_path / download.suggested_filename
        download.save_as(str(saved))
        with saved.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["id"] for r in rows] == first + second + third
        assert {r["event"] for r in rows} == {"Warehouse Created"} and {r["actor_name"] for r in rows} == {"ada@a.example"}
        assert (tmp_path / "audit-trail.png").stat().st_size > 10_000
        assert problems == []
    finally:
        context.close()
        server.shutdown()
        thread.join(5)
        dispose(flask_app)
