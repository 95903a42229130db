"""Adversarial tests of the Django admin views: access on every route (enumerated from the URL resolver),
fuzzed query strings, hostile values in every displayed field, CSV formula injection and the security headers.

``AUDIT_LONG_TESTS=1`` runs the fuzzers with ten times the examples.
"""

import base64
import csv
import io
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from testapp.models import Membership, Warehouse

from audit_middleware import Actor, acting_as, admin_view, in_workspace
from audit_middleware.adapters.django import get_auditor, get_store, record
from audit_middleware.adapters.django.models import AuditEvent as AuditEventRow
from audit_middleware.adapters.django.outbox import get_outbox
from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import WebhookDestination
from audit_middleware.ids import new_event_id
from audit_middleware.query import QUERY_PARAMETERS

NAMESPACE = "audit_middleware"
LONG = os.environ.get("AUDIT_LONG_TESTS", "") not in ("", "0", "false", "no")
EXAMPLES = 500 if LONG else 50
TEMPLATES = Path(__file__).resolve().parents[4] / "adapters" / "django" / "templates"
#: URL arguments the test knows how to fill; a new route taking another one fails until it is added here
ROUTE_ARGUMENTS = ("event_id",)
#: public by design: the shared stylesheet
PUBLIC = {"stylesheet"}
REQUIRED = {"index", "events_json", "export_csv", "forwarding"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def admin_routes():
    """``(name, argument names)`` of every URL pattern in the audit_middleware namespace, found by walking
    the project's resolver (so a route added to urls.py is checked without editing this test)."""
    found = []

    def walk(patterns, namespace):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and namespace == NAMESPACE:
                found.append((pattern.name, frozenset(pattern.pattern.converters)
                              | frozenset(re.findall(r"\(\?P<(\w+)>", str(pattern.pattern)))))

    walk(get_resolver().url_patterns, None)
    return found


def member(username, workspace, viewer=False):
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    Membership.objects.create(user=user, workspace_id=workspace)
    if viewer:
        user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


@pytest.fixture
def two_workspaces():
    """ws_1 (owner ``ada``, member without the permission ``bob``) and ws_2 (owner ``eve``), each with its own
    warehouses, and a forwarding destination so the Forwarding page has forms."""
    destinations = [WebhookDestination("http://127.0.0.1:9/hook", SECRET, allow_private=True)]
    with override_settings(AUDIT_TRAIL={**settings.AUDIT_TRAIL, "DESTINATIONS": destinations}):
        with acting_as(Actor.user("2", "eve@example.com")), in_workspace("ws_2"):  # older than A's rows
            for n in range(3):
                Warehouse.objects.create(name=f"B-only-{n}")
        with acting_as(Actor.user("1", "ada@example.com")), in_workspace("ws_1"):
            for n in range(3):
                warehouse = Warehouse.objects.create(name=f"A-only-{n}")
            warehouse.enabled = False
            warehouse.save()
        clients = {"ada": member("ada", "ws_1", viewer=True), "bob": member("bob", "ws_1"),
                   "eve": member("eve", "ws_2", viewer=True), "anonymous": Client()}
        yield clients
    from audit_middleware.adapters.django.models import AuditDelivery, AuditForwarding

    AuditDelivery.objects.all().delete()
    AuditForwarding.objects.all().delete()


def snapshot():
    events = sorted(AuditEventRow.objects.filter(workspace_id="ws_1").values_list("id", flat=True))
    warehouses = sorted(Warehouse.objects.values_list("id", "name", "enabled"))
    forwarding = [(s.name, s.enabled, s.backlog, s.dead) for s in get_outbox().states("ws_1")]
    return events, warehouses, forwarding


def markers():
    return ["A-only"] + list(AuditEventRow.objects.filter(workspace_id="ws_1").values_list("id", flat=True))


def body_of(response):
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


# -- access ---------------------------------------------------------------------------------------------------


def test_every_admin_route_denies_anonymous_visitors_non_owners_and_owners_of_another_workspace(two_workspaces):
    """Each route of the namespace, by GET and POST, refuses anonymous visitors and users without the view
    permission (403, or 405 for a method the view does not serve) and changes nothing; the owner of ws_2 sees
    and changes nothing of ws_1 even with workspace/workspace_id and ws_1's cursors in the query and form."""
    routes = admin_routes()
    assert REQUIRED <= {name for name, _ in routes}
    ada = two_workspaces["ada"]
    a_cursor = ada.get(reverse(f"{NAMESPACE}:events_json"), {"limit": 1}).json()["next_cursor"]
    assert a_cursor
    crafted = urlencode({"workspace": "ws_1", "workspace_id": "ws_1", "cursor": a_cursor, "newer": a_cursor})
    form = {"workspace": "ws_1", "workspace_id": "ws_1", "action": "save", "destination": "webhook",
            "enabled": "on", "confirm": "1", "force": "1"}
    secret = markers()
    before = snapshot()
    a_ids = list(AuditEventRow.objects.filter(workspace_id="ws_1").values_list("id", flat=True))
    for name, arguments in routes:
        if name in PUBLIC:
            continue
        unknown = arguments - set(ROUTE_ARGUMENTS)
        assert not unknown, f"{name} takes {sorted(unknown)}: add them to ROUTE_ARGUMENTS"
        for target in a_ids if "event_id" in arguments else [None]:
            url = reverse(f"{NAMESPACE}:{name}", kwargs={"event_id": target} if target else None)
            for method in ("get", "post"):
                for who in ("anonymous", "bob"):
                    send = getattr(two_workspaces[who], method)
                    response = send(f"{url}?{crafted}", form) if method == "post" else send(f"{url}?{crafted}")
                    assert response.status_code in (403, 405), (who, method, url, response.status_code)
                    assert not [m for m in secret if m in body_of(response)], (who, method, url)
                send = getattr(two_workspaces["eve"], method)
                response = send(f"{url}?{crafted}", form) if method == "post" else send(f"{url}?{crafted}")
                assert response.status_code < 500, (method, url)
                leaked = [m for m in secret if m in body_of(response) and m not in url]
                assert not leaked, (method, url, leaked)
                assert snapshot() == before, (method, url)
                if target is not None:  # no oracle: ws_1's event answers as an event that does not exist
                    missing = reverse(f"{NAMESPACE}:{name}", kwargs={"event_id": new_event_id()})
                    other = send(f"{missing}?{crafted}", form) if method == "post" else send(f"{missing}?{crafted}")
                    assert other.status_code == response.status_code, (method, url)
    assert ada.get(reverse(f"{NAMESPACE}:index") + "?" + crafted).status_code == 200


def test_a_cursor_from_workspace_a_replayed_by_the_owner_of_b_shows_only_b(two_workspaces):
    """A cursor is only a position: replayed in another workspace it pages that workspace's own rows."""
    url = reverse(f"{NAMESPACE}:events_json")
    cursor = two_workspaces["ada"].get(url, {"limit": 1}).json()["next_cursor"]
    eve = two_workspaces["eve"]
    for name in ("index", "events_json", "export_csv"):
        response = eve.get(reverse(f"{NAMESPACE}:{name}"), {"cursor": cursor, "newer": cursor, "limit": 500})
        assert response.status_code == 200
        assert not [m for m in markers() if m in body_of(response)], name
    events = eve.get(url, {"cursor": cursor, "limit": 500}).json()["events"]
    assert events and {e["workspace_id"] for e in events} == {"ws_2"}


# -- input ----------------------------------------------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1", "1' OR 1=1 --", "'; DROP TABLE audit_middleware_auditevent; --", "1); SELECT pg_sleep(10); --",
    "` OR 1=1 #", "%' OR '%'='", "../../../../etc/passwd", "%2e%2e%2f", "\x00", "a\x00b", "x" * 5000, "9" * 400,
    "-1", "0", "501", "NaN", "٣", "１２", "{{7*7}}", "{% debug %}", "<script>alert(1)</script>", "2026-13-45",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "1969-12-31", "\r\nSet-Cookie: x=1",
    "\u202e\ufeff", "🙂" * 60, "Warehouse Created", "user",
]


def forged_cursor(when, event_id):
    return base64.urlsafe_b64encode(json.dumps([when, event_id]).encode()).decode().rstrip("=")


CURSORS = [
    forged_cursor("0001-01-01T00:00:00+01:00", "x"), forged_cursor("2026-11-25T00:00:00Z", "a\x00b"),
    forged_cursor("2026-11-25T00:00:00Z", "\ud800"), forged_cursor("2026-11-25T00:00:00Z", "' OR 1=1 --"),
    forged_cursor("2026-11-25T00:00:00Z", 5), forged_cursor("nonsense", "x"),
    base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode(), "!!",
]

text_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
values = st.one_of(st.sampled_from(INJECTIONS), st.sampled_from(CURSORS), text_values,
                   st.integers(-(10**30), 10**30).map(str))
keys = st.one_of(st.sampled_from((*QUERY_PARAMETERS, "newer", "workspace", "workspace_id")),
                 st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))


def check_answer(response, name, pairs):
    assert response.status_code in (200, 400), (name, pairs, response.status_code)
    text = body_of(response)
    given_keys = {key for key, _ in pairs}
    if response.status_code == 400:
        if name == "events_json":
            assert response["Content-Type"] == "application/json"
            parameter = json.loads(text)["error"]["parameter"]
        elif name == "export_csv":
            parameter = re.match(r"Invalid filter: (\w+): ", text).group(1)
        else:
            parameter = re.search(r"<code>(\w+)</code>", text).group(1)
        assert parameter in given_keys, (name, pairs, parameter)
    elif name == "events_json":
        assert all(e["workspace_id"] == "ws_1" for e in json.loads(text)["events"])
    elif name == "export_csv":
        assert all(r["workspace_id"] == "ws_1" for r in csv.DictReader(io.StringIO(text)))


def test_fuzzed_query_strings_never_crash_and_every_rejection_names_its_parameter(two_workspaces):
    """Random and hostile values in every query parameter of every GET view: a 200 of the viewer's workspace
    or a 400 naming one of the given parameters."""
    client = two_workspaces["ada"]

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(name=st.sampled_from(["index", "events_json", "export_csv", "forwarding"]),
           pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=6))
    def check(name, pairs):
        response = client.get(reverse(f"{NAMESPACE}:{name}") + "?" + urlencode(pairs))
        if name == "forwarding":
            assert response.status_code == 200
            return
        check_answer(response, name, pairs)

    check()


def test_each_injection_string_in_each_parameter_is_a_200_or_a_400_naming_it(two_workspaces):
    """Every hostile string, in every query parameter, on the JSON view (where the database is queried)."""
    client = two_workspaces["ada"]
    for value in INJECTIONS + CURSORS:
        for key in (*QUERY_PARAMETERS, "newer"):
            response = client.get(reverse(f"{NAMESPACE}:events_json") + "?" + urlencode([(key, value)]))
            check_answer(response, "events_json", [(key, value)])


def test_fuzzed_forwarding_forms_and_event_ids_never_crash(two_workspaces):
    """The Forwarding form (and the revert route when present) with random fields: never a 500."""
    client = two_workspaces["ada"]
    names = {name for name, _ in admin_routes()}
    fields = st.dictionaries(
        st.sampled_from(["action", "destination", "enabled", "delivery", "force", "confirm", "x"]),
        st.one_of(st.sampled_from(["save", "retry", "test", "webhook", "on", "1", "9" * 40, "-1", "\x00"]),
                  st.sampled_from(INJECTIONS), text_values), max_size=4)
    ids = st.one_of(st.sampled_from(["\x00", "x" * 1000, "' OR 1=1 --", "0" * 64]),
                    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/?#"),
                            min_size=1, max_size=80))

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(form=fields, event_id=ids)
    @example(form={"action": "retry", "delivery": "9" * 40}, event_id="\x00")
    @example(form={"action": "retry", "delivery": "-1"}, event_id="x" * 1000)
    def check(form, event_id):
        response = client.post(reverse(f"{NAMESPACE}:forwarding"), form)
        assert response.status_code in (200, 400), (form, response.status_code)
        if "revert" in names:
            response = client.post(reverse(f"{NAMESPACE}:revert", kwargs={"event_id": event_id}), form)
            assert 200 <= response.status_code < 500, (event_id, form, response.status_code)

    check()


def test_page_size_export_size_and_date_range_are_bounded(two_workspaces, monkeypatch):
    """limit is 1 to 500; an export matching more than MAX_EXPORT_ROWS events is a 400 before any row is
    streamed; since cannot reach past the retention window."""
    client = two_workspaces["ada"]
    for limit in ("0", "501", "100000"):
        response = client.get(reverse(f"{NAMESPACE}:events_json"), {"limit": limit})
        assert response.status_code == 400 and response.json()["error"]["parameter"] == "limit"
    monkeypatch.setattr(admin_view, "MAX_EXPORT_ROWS", 2)
    refused = client.get(reverse(f"{NAMESPACE}:export_csv"))
    assert refused.status_code == 400 and refused.content.decode().startswith("Invalid filter: since: ")
    narrow = client.get(reverse(f"{NAMESPACE}:export_csv"), {"event": "Warehouse Disabled"})
    assert narrow.status_code == 200 and len(body_of(narrow).splitlines()) == 2
    monkeypatch.undo()
    get_store().append([AuditEvent(
        id=new_event_id(), occurred_at=datetime.now(timezone.utc) - timedelta(days=400), event="Warehouse Created",
        category="Warehouses", action="created", actor=Actor.system("old"), workspace_id="ws_1",
        resource_type="Warehouse", resource_name="A-ancient")])
    for name in ("index", "events_json", "export_csv"):
        response = client.get(reverse(f"{NAMESPACE}:{name}"), {"since": "1970-01-01", "limit": 500})
        assert "A-ancient" not in body_of(response), name


# -- output ---------------------------------------------------------------------------------------------------

PAYLOADS = [
    "<script>alert('s')</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(2)>",
    "</textarea></title><iframe src=javascript:alert(3)>",
]


def test_xss_payloads_in_every_displayed_field_render_inert(two_workspaces):
    """Resource names, actor names, changed values, user agents, event names, categories and details holding
    HTML render escaped on the events, error and Forwarding pages; JSON is served as JSON."""
    p0, p1, p2, p3 = PAYLOADS
    get_auditor().catalog.define(f"Warehouse {p2} Exploded", category=f"Category {p3}")
    with acting_as(Actor.user(p0, p1)), in_workspace("ws_1"):
        warehouse = Warehouse.objects.create(name=p0, notes=p2)
        warehouse.notes = p1
        warehouse.name = p3
        warehouse.save()
        record(f"Warehouse {p2} Exploded", resource_type=p1, resource_id=p0, resource_name=p3, details={p1: p2})
    Client(HTTP_USER_AGENT=p3, HTTP_X_WORKSPACE="ws_1").post("/warehouses/", {"name": p1})
    ada = two_workspaces["ada"]
    index = reverse(f"{NAMESPACE}:index")
    pages = [ada.get(index), ada.get(index, {"limit": 3}),
             ada.get(index, {"actor": p0, "resource_type": p1, "resource_id": p2, "category": p3}),
             ada.get(index, {"since": p1}), ada.get(index, {"event": p0}),
             ada.get(reverse(f"{NAMESPACE}:forwarding"))]
    assert pages[0].status_code == 200 and pages[3].status_code == 400
    for response in pages:
        html = response.content.decode()
        assert response["Content-Type"].startswith("text/html")
        for payload in PAYLOADS:
            assert payload not in html, (response.request, payload)
        assert "<script" not in html.lower() and "<img" not in html and "<svg" not in html and "<iframe" not in html
    html = pages[0].content.decode()
    assert "&lt;script&gt;alert(" in html and "onerror=alert(1)&gt;" in html  # shown, escaped
    response = ada.get(reverse(f"{NAMESPACE}:events_json"))
    assert response["Content-Type"] == "application/json" and response["X-Content-Type-Options"] == "nosniff"


def test_the_templates_hold_no_script_and_no_inline_handler():
    """The CSP forbids scripts; the shipped templates have none, nor on*= attributes or unescaping filters."""
    templates = list(TEMPLATES.rglob("*.html"))
    assert templates
    for template in templates:
        text = template.read_text()
        assert "<script" not in text.lower(), template
        assert not re.search(r"\son[a-z]+\s*=", text), template
        assert "|safe" not in text.replace(" ", "") and "autoescape off" not in text, template


FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "=HYPERLINK(\"http://evil\")"]


def test_csv_formula_injection_is_neutralised_in_every_column(two_workspaces):
    """An event with a spreadsheet formula in every text field exports with no cell a spreadsheet would run."""
    get_store().append([AuditEvent(
        id=new_event_id(), occurred_at=datetime.now(timezone.utc), event=f, category=f, action=f,
        actor=Actor("user", f, f), resource_type=f, resource_id=f, resource_name=f, workspace_id="ws_1",
        changes={f: [f, f]}, context={"ip": f, "user_agent": f, "request_id": f}, details={f: f},
    ) for f in FORMULAS])
    response = two_workspaces["ada"].get(reverse(f"{NAMESPACE}:export_csv"))
    assert response["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(body_of(response))))
    assert len(rows) > len(FORMULAS)
    for row in rows[1:]:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r", (row, cell)
    assert "'=HYPERLINK(\"http://evil\")" in {cell for row in rows for cell in row}


def test_every_admin_response_carries_the_security_headers(two_workspaces):
    """The core's header set (CSP without scripts, frame-ancestors 'none', nosniff, DENY) and no-store on
    pages, JSON and CSV, on 200s, 400s and 403s alike; only the stylesheet may be cached."""
    ada = two_workspaces["ada"]
    responses = [ada.get(reverse(f"{NAMESPACE}:{name}"), params)
                 for name in ("index", "events_json", "export_csv", "forwarding")
                 for params in ({}, {"limit": "0"})]
    responses += [two_workspaces["anonymous"].get(reverse(f"{NAMESPACE}:{name}"))
                  for name in ("index", "events_json", "export_csv", "forwarding")]
    for response in responses:
        body_of(response)
        csp = response["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "unsafe-inline" not in csp
        for header, value in admin_view.security_headers().items():
            assert response[header] == value, (response.request, header)
    export = ada.get(reverse(f"{NAMESPACE}:export_csv"))
    assert export["Content-Disposition"].startswith("attachment; ") and export["Content-Type"].startswith("text/csv")
    css = ada.get(reverse(f"{NAMESPACE}:stylesheet"))
    assert css["X-Content-Type-Options"] == "nosniff" and css["Content-Type"].startswith("text/css")
