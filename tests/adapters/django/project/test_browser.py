"""Headless Chromium (Debian's, driven by Playwright) uses the Django admin view as a workspace owner would.

Runs in the SQLite pass only (``AUDIT_DJANGO_BROWSER=1``): the page is the same on every database.
"""

import csv
import os
import shutil
import threading
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.contrib.auth.models import Permission, User
from django.core.wsgi import get_wsgi_application
from testapp.models import Membership, Warehouse

from audit_middleware import Actor, acting_as, in_workspace

pytestmark = pytest.mark.skipif(not os.environ.get("AUDIT_DJANGO_BROWSER"), reason="browser test runs in the SQLite pass")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("AUDIT_CHROMIUM", "/usr/bin/chromium")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class ThreadedServer(WSGIServer):
    def process_request(self, request, client_address):
        thread = threading.Thread(target=self._serve, args=(request, client_address), daemon=True)
        thread.start()

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


@pytest.fixture
def server():
    httpd = make_server("127.0.0.1", 0, get_wsgi_application(), server_class=ThreadedServer,
                        handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        if os.environ.get("AUDIT_REQUIRE_DATABASES"):
            pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def trail():
    """Events in the owner's workspace (ws_1) and another; set up before Playwright starts its event loop
    in this thread (Django refuses database calls from a thread running one)."""
    owner = User.objects.create_user("owner", "owner@example.com", "secret-pw", is_staff=True)
    owner.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    Membership.objects.create(user=owner, workspace_id="ws_1")
    with in_workspace("ws_1"):
        with acting_as(Actor.user("7", "ada@example.com")):
            made = [Warehouse.objects.create(name=f"Warehouse {n}") for n in range(5)]
            made[0].enabled = False
            made[0].save()
        with acting_as(Actor.token("tok_1", "ci-deploy")):
            Warehouse.objects.create(name="<b>by token</b>")
    with in_workspace("ws_2"), acting_as(Actor.user("8", "eve@example.com")):
        Warehouse.objects.create(name="Other tenant")



def test_an_owner_logs_in_filters_pages_and_downloads_the_csv(trail, browser, server, tmp_path):
    """An owner signs in, sees only their workspace's styled table, filters by event and actor, walks to
    the next page and back, and downloads exactly the filtered events as CSV."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    problems = []

    def on_console(message):  # CSP violations, failed loads and script errors of the audit trail pages only
        url = (message.location or {}).get("url") or page.url
        on_trail = urlsplit(url).path.startswith("/admin/audit-trail/")
        if message.type == "error" and on_trail and "status of 400" not in message.text:
            problems.append(message.text)

    page.on("console", on_console)
    page.goto(server + "/admin/login/?next=/admin/audit-trail/%3Flimit%3D2")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/audit-trail/**")
    assert page.title() == "Audit Trail"
    assert page.locator("#at-events tbody tr").count() == 2
    assert page.evaluate("getComputedStyle(document.querySelector('.at-header')).display") == "flex"
    assert "Other tenant" not in page.content()

    page.goto(server + "/admin/audit-trail/?limit=2")
    page.select_option("#f-event", "Warehouse Created")
    page.fill("#f-actor", "ada@example.com")
    page.click("#f-apply")
    page.wait_for_load_state()
    assert "event=Warehouse+Created" in page.url and "actor=ada%40example.com" in page.url and "limit=2" in page.url

    def shown():
        rows = page.locator("#at-events tbody tr")
        texts = [rows.nth(n).inner_text() for n in range(rows.count())]
        assert all("Warehouse Created" in t and "ada@example.com" in t for t in texts), texts
        return [rows.nth(n).get_attribute("data-event-id") for n in range(rows.count())]

    first = shown()
    assert len(first) == 2
    page.click("#at-older")
    page.wait_for_load_state()
    second = shown()
    assert len(second) == 2 and not set(first) & set(second)
    page.click("#at-newer")
    page.wait_for_load_state()
    assert shown() == first

    with page.expect_download() as download_info:
        page.click("#at-export")
    path = tmp_path / "trail.csv"
    download_info.value.save_as(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and {r["event"] for r in rows} == {"Warehouse Created"}
    assert {r["actor_name"] for r in rows} == {"ada@example.com"}

    page.goto(server + "/admin/audit-trail/?actor_type=token")
    assert page.locator("#at-events tbody tr").count() == 1
    assert page.locator(".at-resource").first.inner_text().startswith("Warehouse · <b>by token</b>")
    page.goto(server + "/admin/audit-trail/?since=not-a-date")
    assert "since" in page.locator(".at-error").inner_text()
    context.close()
    assert problems == [], problems
