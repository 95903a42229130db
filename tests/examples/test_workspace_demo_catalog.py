"""Walk the demo workspace's HTTP interface (pages as signed-in owners and members, the API with the access
token, SSO, invites, ingestion) and check that every one of the 66 events of Segment's audit catalog lands
in the trail, in its category, done by the right actor in the right workspace.

The walk runs in a pytest of its own (a child process): the demo maps its models at import, and the
SQLAlchemy auditor discovers every mapped class of the process, so the demo and the other test apps would
otherwise see each other's models in their catalogs.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("flask_sqlalchemy")

ROOT = Path(__file__).resolve().parents[2]
IN_CHILD = os.environ.get("AUDIT_DEMO_WALK") == "1"
DEMO_TOKEN_SECRET = "demo_secret_ci_deploy_7f3a"

# Segment's catalog, copied from its documentation (not from the demo), by category.
CATALOG: dict[str, list[str]] = {
    "Access Management": ["User Invite Sent", "User Invite Deleted", "User Invite Accepted", "User Added via SSO",
                          "User Removed", "User Group Created", "User Group Updated"],
    "Source": ["Source Created", "Source Enabled", "Source Disabled", "Source Modified", "Source Deleted"],
    "Integrations": ["Integrations Created", "Integrations Enabled", "Integrations Disabled",
                     "Integrations Modified", "Integrations Deleted"],
    "Functions": ["Source Function Created", "Source Function Deleted", "Source Function Modified",
                  "Destination Function Created", "Destination Function Deleted", "Destination Function Modified"],
    "Destination Filters": ["Destination Filters Created", "Destination Filters Modified",
                            "Destination Filters Deleted"],
    "Warehouses": ["Warehouses Created", "Warehouses Enabled", "Warehouses Disabled", "Warehouses Modified",
                   "Warehouses Deleted", "Warehouse Run Failed"],
    "Protocols": ["Tracking Plan Created", "Tracking Plan Modified", "Tracking Plan Deleted",
                  "Source Connected to Tracking Plan", "Source Disconnected From Tracking Plan",
                  "Tracking Plan Inferred", "Tracking Plan New Event Blocked", "Tracking Plan New Event Allowed",
                  "Tracking Plan New Group Trait Omitted", "Tracking Plan New Identify Trait Omitted",
                  "Tracking Plan New Track Property Omitted", "Tracking Plan Operations Updated",
                  "Tracking Plan Updated", "Violations Detected"],
    "Engage": ["Source Connected To Space", "Source Disconnected From Space", "Space Created", "Space Modified",
               "Space Deleted", "Computed Trait Created", "Computed Trait Modified", "Computed Trait Deleted",
               "Computed Trait CSV Downloaded", "Computed Trait Run Failed", "Computed Trait Destination Sync Failed",
               "Audience Created", "Audience Modified", "Audience Deleted", "Audience CSV Downloaded",
               "Audience Run Failed", "Audience Destination Sync Failed", "Engage Warehouse Source Created",
               "Engage Warehouse Source Modified", "Engage Warehouse Source Deleted"],
}
CATEGORY_OF = {name: category for category, names in CATALOG.items() for name in names}

ADA, GRACE = "ada@acme.example", "grace@acme.example"  # Acme Analytics: owner, member
HANK, MARGE = "hank@globex.example", "marge@globex.example"  # Globex Retail: owner, member
TOKEN = "ci-deploy (..." + DEMO_TOKEN_SECRET[-4:] + ")"
INVITEE, SSO_USER = "newhire@acme.example", "sso.person@globex.example"
ACME, GLOBEX = "ws_acme", "ws_globex"


def test_every_catalog_event_through_the_demo(tmp_path: Path) -> None:
    """Runs :func:`test_walk` below in a child pytest (see the module's docstring)."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))", str(Path(__file__)),
         "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "-k", "test_walk"],
        cwd=tmp_path, env={**os.environ, "AUDIT_DEMO_WALK": "1"}, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


@pytest.fixture()
def app(tmp_path: Any) -> Iterator[Any]:
    from workspace_demo.app import create_app
    from workspace_demo.models import db
    from workspace_demo.seed import seed

    app = create_app(f"sqlite:///{tmp_path / 'demo.sqlite3'}", secret_key="test", testing=True)
    with app.app_context():
        seed()
    yield app
    app.extensions["demo_audit"].auditor.remove()  # stop capturing on the demo's module-level db.session
    with app.app_context():
        db.engine.dispose()


class Browser:
    """A signed-in person using the pages (forms with the CSRF token, as the browser sends them)."""

    def __init__(self, app: Any, email: str | None = None) -> None:
        self.client = app.test_client()
        if email is not None:
            response = self.post("/login", {"email": email})
            assert response.status_code == 302 and response.location == "/", response.data

    def csrf(self) -> str:
        with self.client.session_transaction() as session:
            token = session.get("_audit_trail_csrf")
        if token is None:
            self.client.get("/login")
            with self.client.session_transaction() as session:
                token = session["_audit_trail_csrf"]
        return token

    def post(self, path: str, data: dict[str, Any] | None = None, status: int = 302) -> Any:
        response = self.client.post(path, data={**(data or {}), "csrf_token": self.csrf()})
        assert response.status_code == status, (path, response.status_code, response.data[:500])
        if status == 302:
            with self.client.session_transaction() as session:
                errors = [m for c, m in session.get("_flashes", []) if c == "error"]
            assert not errors, (path, errors)
        return response

    def create(self, slug: str, data: dict[str, Any]) -> int:
        location = self.post(f"/{slug}", data).location
        match = re.fullmatch(rf"/{slug}/(\d+)", location)
        assert match, location
        return int(match.group(1))


class Api:
    def __init__(self, app: Any) -> None:
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {DEMO_TOKEN_SECRET}"}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200) -> Any:
        response = self.client.open("/api/v1" + path, method=method, json=body, headers=self.headers)
        assert response.status_code == status, (path, response.status_code, response.data[:500])
        return response.get_json()


def seeded_id(model: Any, workspace: str, **filters: Any) -> int:
    from workspace_demo.models import db

    return db.session.scalar(db.select(model.id).filter_by(workspace_id=workspace, **filters).order_by(model.id))


def test_walk(app: Any) -> None:
    from workspace_demo.models import Invite, Source, Space, Warehouse, db

    assert sum(len(v) for v in CATALOG.values()) == 66
    ada, grace, hank, marge, api = Browser(app, ADA), Browser(app, GRACE), Browser(app, HANK), Browser(app, MARGE), Api(app)
    expected: dict[str, tuple[str, str, str]] = {}  # event -> (actor type, actor name, workspace)

    def expect(actor: str, workspace: str, *names: str) -> None:
        kind = "token" if actor == TOKEN else "system" if " " not in actor and "@" not in actor else "user"
        for name in names:
            expected[name] = (kind, actor, workspace)

    # Source: a member, on the pages
    sid = grace.create("sources", {"name": "Android app", "kind": "Android"})
    grace.post(f"/sources/{sid}", {"name": "Android app", "kind": "Node.js"})
    grace.post(f"/sources/{sid}/disable")
    grace.post(f"/sources/{sid}/enable")
    grace.post(f"/sources/{sid}/delete")
    expect(GRACE, ACME, *CATALOG["Source"])

    # Integrations and source functions: the access token, through the API
    with app.app_context():
        web = seeded_id(Source, ACME)
    item = api.call("POST", "/integrations", {"name": "Mixpanel (web)", "destination": "Mixpanel",
                                              "source_id": web, "api_key": "mp-secret"}, status=201)["item"]
    api.call("PATCH", f"/integrations/{item['id']}", {"destination": "Braze"})
    api.call("POST", f"/integrations/{item['id']}/disable")
    api.call("POST", f"/integrations/{item['id']}/enable")
    api.call("DELETE", f"/integrations/{item['id']}")
    fn = api.call("POST", "/source-functions", {"name": "Shopify parser"}, status=201)["item"]
    api.call("PATCH", f"/source-functions/{fn['id']}", {"code": "async function onRequest() { /* v2 */ }"})
    api.call("POST", f"/source-functions/{fn['id']}/delete")
    expect(TOKEN, ACME, *CATALOG["Integrations"], "Source Function Created", "Source Function Modified",
           "Source Function Deleted")

    # Destination functions: a member on the pages
    dfn = grace.create("destination-functions", {"name": "Jira issues", "description": "", "code": "x"})
    grace.post(f"/destination-functions/{dfn}", {"name": "Jira issues", "description": "Opens issues", "code": "x"})
    grace.post(f"/destination-functions/{dfn}/delete")
    expect(GRACE, ACME, "Destination Function Created", "Destination Function Modified", "Destination Function Deleted")

    # Destination filters and warehouses: the other workspace's owner
    flt = hank.create("destination-filters", {"name": "Only EU", "condition": 'context.locale = "de-DE"',
                                              "action": "sample", "enabled": "on"})
    hank.post(f"/destination-filters/{flt}", {"name": "Only EU", "condition": 'context.locale = "de-DE"',
                                              "action": "drop"})  # enabled unchecked: part of Modified
    hank.post(f"/destination-filters/{flt}/delete")
    wh = hank.create("warehouses", {"name": "EU Redshift", "kind": "Redshift", "host": "eu.redshift.example",
                                    "database": "prod", "sync_schedule": "every hour", "password": "pw"})
    hank.post(f"/warehouses/{wh}", {"name": "EU Redshift", "kind": "Redshift", "host": "eu.redshift.example",
                                    "database": "prod_v2", "sync_schedule": "every day", "password": ""})
    hank.post(f"/warehouses/{wh}/disable")
    hank.post(f"/warehouses/{wh}/enable")
    hank.post(f"/warehouses/{wh}/runs", {"outcome": "success"})
    hank.post(f"/warehouses/{wh}/runs", {"outcome": "failed"})
    hank.post(f"/warehouses/{wh}/delete")
    expect(HANK, GLOBEX, *CATALOG["Destination Filters"], *CATALOG["Warehouses"][:-1])
    expect("warehouse-scheduler", GLOBEX, "Warehouse Run Failed")

    # Protocols: Acme's owner on the pages, the validator on ingestion
    plan = ada.create("tracking-plans", {"name": "Checkout plan", "description": ""})
    ada.post(f"/tracking-plans/{plan}", {"name": "Checkout plan", "description": "Checkout v2"})
    ada.post(f"/tracking-plans/{plan}/delete")
    with app.app_context():
        web_plan = db.session.scalar(db.select(db.text("id FROM tracking_plan WHERE workspace_id = 'ws_acme'")))
        ios = seeded_id(Source, ACME, kind="iOS")
    ada.post(f"/tracking-plans/{web_plan}/events", {"add": "Coupon Removed", "remove": "Signed Up"})
    ada.post(f"/tracking-plans/{web_plan}/sources/{web}/disconnect")
    ada.post(f"/tracking-plans/{web_plan}/connect", {"source_id": ios})
    ada.post(f"/tracking-plans/{web_plan}/infer", {"source_id": ios})
    controls = f"/tracking-plans/{web_plan}/sources/{ios}/controls"
    ada.post(controls, {"block_new_events": "on"})
    ada.post(controls, {})
    ada.post(controls, {"omit_track_properties": "on"})
    ada.post(controls, {"omit_track_properties": "on", "omit_identify_traits": "on"})
    ada.post(controls, {"omit_track_properties": "on", "omit_identify_traits": "on", "omit_group_traits": "on"})
    ada.post(controls, {"omit_track_properties": "on", "omit_identify_traits": "on", "omit_group_traits": "on",
                        "forward_violations_to": str(web)})
    expect(ADA, ACME, *[n for n in CATALOG["Protocols"] if n != "Violations Detected"])
    write_key = base64.b64encode(b"wk_acme_ios:").decode()
    ingest = ada.client.post("/v1/track", json={"event": "Coupon Applied"},
                             headers={"Authorization": f"Basic {write_key}"})
    assert ingest.get_json() == {"success": True, "violation": True, "blocked": False}
    planned = ada.client.post("/v1/track", json={"event": "Order Completed"},
                              headers={"Authorization": f"Basic {write_key}"})
    assert planned.get_json()["violation"] is False  # inferred into the plan above
    expect("protocols-validator", ACME, "Violations Detected")

    # Engage: Globex's member on the pages, the scheduler's failures
    with app.app_context():
        globex_source = seeded_id(Source, GLOBEX)
        globex_space = seeded_id(Space, GLOBEX)
        globex_wh = seeded_id(Warehouse, GLOBEX)
    space = marge.create("spaces", {"name": "B2B accounts", "description": ""})
    marge.post(f"/spaces/{space}", {"name": "B2B accounts", "description": "Companies"})
    marge.post(f"/spaces/{space}/sources", {"source_id": globex_source})
    marge.post(f"/spaces/{space}/sources/{globex_source}/disconnect")
    marge.post(f"/spaces/{space}/delete")
    for slug, resource, data in (
        ("computed-traits", "Computed Trait", {"name": "lifetime_value", "space_id": globex_space,
                                               "kind": "Aggregation", "definition": "sum(total)"}),
        ("audiences", "Audience", {"name": "Churn risk", "space_id": globex_space, "definition": "no order 60d"}),
    ):
        obj = marge.create(slug, data)
        marge.post(f"/{slug}/{obj}", {**data, "definition": "changed"})
        download = marge.client.get(f"/{slug}/{obj}/download.csv")
        assert download.status_code == 200 and download.mimetype == "text/csv"
        marge.post(f"/{slug}/{obj}/runs", {"outcome": "success"})
        marge.post(f"/{slug}/{obj}/runs", {"outcome": "run_failed"})
        marge.post(f"/{slug}/{obj}/runs", {"outcome": "sync_failed"})
        marge.post(f"/{slug}/{obj}/delete")
        expect(MARGE, GLOBEX, f"{resource} Created", f"{resource} Modified", f"{resource} CSV Downloaded",
               f"{resource} Deleted")
        expect("engage-scheduler", GLOBEX, f"{resource} Run Failed", f"{resource} Destination Sync Failed")
    ews = marge.create("engage-warehouse-sources", {"name": "Subscriptions", "space_id": globex_space,
                                                    "warehouse_id": globex_wh, "query": "select 1"})
    marge.post(f"/engage-warehouse-sources/{ews}", {"name": "Subscriptions", "space_id": globex_space,
                                                    "warehouse_id": globex_wh, "query": "select 2"})
    marge.post(f"/engage-warehouse-sources/{ews}/delete")
    expect(MARGE, GLOBEX, "Source Connected To Space", "Source Disconnected From Space", "Space Created",
           "Space Modified", "Space Deleted", "Engage Warehouse Source Created", "Engage Warehouse Source Modified",
           "Engage Warehouse Source Deleted")

    # Access management: Acme's owner invites; the invitee accepts; someone joins Globex through SSO
    ada.post("/settings/invites", {"email": INVITEE, "role": "member"})
    ada.post("/settings/invites", {"email": "typo@acme.example", "role": "member"})
    with app.app_context():
        invites = {i.email: (i.id, i.code) for i in db.session.scalars(db.select(Invite))}
    ada.post(f"/settings/invites/{invites['typo@acme.example'][0]}/delete")
    newcomer = Browser(app)
    newcomer.post(f"/invites/{invites[INVITEE][1]}", {"name": "New Hire"})
    assert newcomer.client.get("/").status_code == 200  # signed in, in Acme
    ada.post("/settings/groups", {"name": "Data engineers", "description": "Warehouses"})
    with app.app_context():
        group = db.session.scalar(db.select(db.text("id FROM user_group WHERE name = 'Data engineers'")))
        newcomer_id = db.session.scalar(db.select(db.text(f"id FROM user WHERE email = '{INVITEE}'")))
    ada.client.post(f"/settings/groups/{group}", data={"name": "Data engineers", "description": "Warehouses",
                                                       "members": [str(newcomer_id)], "csrf_token": ada.csrf()})
    ada.post(f"/settings/users/{newcomer_id}/remove")
    expect(ADA, ACME, "User Invite Sent", "User Invite Deleted", "User Group Created", "User Group Updated",
           "User Removed")
    expect(INVITEE, ACME, "User Invite Accepted")
    sso = Browser(app)
    sso.post("/sso/globex", {"email": SSO_USER, "name": "Sso Person"})
    expect(SSO_USER, GLOBEX, "User Added via SSO")

    # What was refused recorded nothing: a member cannot invite nor open the trail, a POST without CSRF fails
    grace.post("/settings/invites", {"email": "nope@acme.example"}, status=403)
    assert grace.client.get("/admin/audit-trail/").status_code == 403
    assert grace.client.post("/sources", data={"name": "no csrf"}).status_code == 400
    assert app.test_client().get("/api/v1/sources").status_code == 401
    stranger = Browser(app)
    stranger.csrf()
    away = stranger.client.post("/login?next=https://evil.example/x", data={"email": ADA, "csrf_token": stranger.csrf()})
    assert away.status_code == 302 and away.location == "/"
    other = Browser(app)
    bounced = other.client.get("/warehouses")
    assert bounced.status_code == 302 and bounced.location == "/login?next=/warehouses"
    back = other.client.post(bounced.location, data={"email": GRACE, "csrf_token": other.csrf()})
    assert back.status_code == 302 and back.location == "/warehouses"

    # The trail: every catalog event, nothing else, each with its category, actor and workspace
    audit = app.extensions["demo_audit"]
    with app.app_context():
        events = list(audit.iter_events())
    assert sorted(audit.catalog.names()) == sorted(CATEGORY_OF)
    assert {e.event for e in events} == set(CATEGORY_OF), set(CATEGORY_OF) ^ {e.event for e in events}
    assert set(expected) == set(CATEGORY_OF)
    for event in events:
        kind, actor, workspace = expected[event.event]
        assert event.category == CATEGORY_OF[event.event], event
        assert (event.actor.type, event.actor.name or event.actor.id, event.workspace_id) == (kind, actor, workspace), event
    assert not any(e.event == "Source Created" and e.resource_name == "no csrf" for e in events)
    assert {e.event for e in events if e.actor.type == "token"} >= {"Integrations Disabled", "Source Function Created"}

    # The owners see their own workspace's events only, in the admin view's JSON
    acme = ada.client.get("/admin/audit-trail/events.json?limit=500").get_json()["events"]
    globex = hank.client.get("/admin/audit-trail/events.json?limit=500").get_json()["events"]
    assert {e["workspace_id"] for e in acme} == {ACME} and {e["workspace_id"] for e in globex} == {GLOBEX}
    assert len(acme) + len(globex) == len(events)
    disabled = next(e for e in globex if e["event"] == "Warehouses Disabled")
    assert disabled["changes"] == {"enabled": [True, False]} and disabled["resource"]["name"] == "EU Redshift"
    modified = next(e for e in globex if e["event"] == "Warehouses Modified")
    assert modified["changes"] == {"database": ["prod", "prod_v2"], "sync_schedule": ["every hour", "every day"]}
    filtered = ada.client.get("/admin/audit-trail/events.json?event=Violations+Detected").get_json()["events"]
    assert [e["actor"] for e in filtered] == [{"type": "system", "id": "protocols-validator",
                                               "name": "protocols-validator"}]


# The parent process collects the launcher only; the child collects the walk only.
if IN_CHILD:
    del test_every_catalog_event_through_the_demo
else:
    del test_walk
