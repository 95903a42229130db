"""The bundled admin view: access, tenant isolation, escaping, filters, paging, JSON and CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from audit_middleware import Actor
from audit_middleware.events import AuditEvent
from audit_middleware.ids import new_event_id

from .conftest import TOKEN_SECRET, dispose, make_app

ADMIN = "/admin/audit-trail"
ROW_ID = re.compile(r'<tr data-event-id="([^"]+)"')


def page_ids(html: str) -> list[str]:
    return ROW_ID.findall(html)


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def seed(flask_app, count: int = 5) -> list[int]:
    """Warehouses made by Ada (workspace A) and by Eve (workspace B), through HTTP."""
    ada, eve = flask_app.client("ada@a.example"), flask_app.client("eve@b.example")
    ids = []
    for n in range(count):
        ids.append(ada.post("/warehouses", data={"name": f"A-{n}"}).json["id"])
        eve.post("/warehouses", data={"name": f"B-{n}"})
    ada.post(f"/warehouses/{ids[0]}", data={"enabled": "false"})
    flask_app.client().post("/warehouses", data={"name": "by token"}, headers={"Authorization": f"Bearer {TOKEN_SECRET}"})
    return ids


def test_the_view_is_denied_to_anonymous_visitors_and_to_non_owners(flask_app):
    seed(flask_app, 1)
    for client in (flask_app.client(), flask_app.client("bob@a.example")):
        for path in ("/", "/events.json", "/export.csv"):
            response = client.get(ADMIN + path)
            assert response.status_code == 403, path
            assert b"A-0" not in response.data
    assert flask_app.client("ada@a.example").get(ADMIN + "/").status_code == 200


def test_an_owner_sees_only_their_workspace_whatever_the_query_string_says(flask_app):
    seed(flask_app, 3)
    client = flask_app.client("ada@a.example")
    sneaky = "?workspace=ws_b&workspace_id=ws_b&limit=500"
    html = client.get(ADMIN + "/" + sneaky).data.decode()
    body = client.get(ADMIN + "/events.json" + sneaky).json
    rows = csv_rows(client.get(ADMIN + "/export.csv" + sneaky).data)
    # whole names only: a form's random CSRF token may hold "B-1" (it did once, failing a CI run)
    assert not re.search(r"(?<![\w-])B-[0-2](?![\w-])", html) and re.search(r"(?<![\w-])A-0(?![\w-])", html)
    assert {e["workspace_id"] for e in body["events"]} == {"ws_a"}
    assert {r["workspace_id"] for r in rows} == {"ws_a"}
    everything = flask_app.events()
    assert len(rows) == len([e for e in everything if e.workspace_id == "ws_a"]) == 5
    eve_rows = csv_rows(flask_app.client("eve@b.example").get(ADMIN + "/export.csv").data)
    assert {r["resource_name"] for r in eve_rows} == {"B-0", "B-1", "B-2"}


def test_xss_payloads_in_field_values_render_escaped(flask_app):
    client = flask_app.client("ada@a.example")
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    warehouse_id = client.post("/warehouses", data={"name": payload}).json["id"]
    client.post(f"/warehouses/{warehouse_id}", data={"schedule": "\"><svg onload=alert(2)>"})
    html = client.get(ADMIN + "/?actor=" + "%3Cscript%3Ealert(3)%3C/script%3E").data.decode()
    assert "<script>" not in html and "<img" not in html and "<svg" not in html
    html = client.get(ADMIN + "/").data.decode()
    assert "<script>" not in html and "<img" not in html and "<svg" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;svg onload=alert(2)&gt;" in html
    response = client.get(ADMIN + "/")
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none': no scripts at all


def test_csv_export_neutralises_formulas_and_is_named_with_the_date(flask_app):
    client = flask_app.client("ada@a.example")
    client.post("/warehouses", data={"name": '=HYPERLINK("http://evil.example","x")'})
    client.post("/warehouses", data={"name": "@SUM(A1)"})
    response = client.get(ADMIN + "/export.csv")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert response.headers["Content-Disposition"] == f'attachment; filename="audit-trail-{today}.csv"'
    assert response.mimetype == "text/csv"
    names = {r["resource_name"] for r in csv_rows(response.data)}
    assert names == {"'=HYPERLINK(\"http://evil.example\",\"x\")", "'@SUM(A1)"}


def test_json_and_csv_agree_with_the_page_for_the_same_filters(flask_app):
    seed(flask_app, 4)
    client = flask_app.client("ada@a.example")
    for filters in ("", "?event=Warehouse+Created", "?actor=ada%40a.example&event=Warehouse+Disabled",
                    "?actor_type=token", "?resource_type=Warehouse&resource_id=1"):
        html = client.get(ADMIN + "/" + filters).data.decode()
        body = client.get(ADMIN + "/events.json" + filters).json
        rows = csv_rows(client.get(ADMIN + "/export.csv" + filters).data)
        ids = page_ids(html)
        assert ids, filters
        assert ids == [e["id"] for e in body["events"]] == [r["id"] for r in rows], filters
        assert body["next_cursor"] is None
    (token_event,) = client.get(ADMIN + "/events.json?actor_type=token").json["events"]
    assert token_event["actor"] == {"type": "token", "id": "tok_12", "name": "ci-deploy (...a1b2)"}


def test_older_and_newer_links_walk_every_page_by_keyset_and_the_csv_holds_them_all(flask_app):
    seed(flask_app, 6)  # 6 + 1 disable + 1 token = 8 events in workspace A
    client = flask_app.client("ada@a.example")
    expected = [r["id"] for r in csv_rows(client.get(ADMIN + "/export.csv?limit=3").data)]
    assert len(expected) == 8
    url, seen, pages = ADMIN + "/?limit=3", [], []
    while url:
        html = client.get(url).data.decode()
        pages.append(url)
        seen += page_ids(html)
        older = re.search(r'id="at-older" href="([^"]+)"', html)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == expected and len(pages) == 3
    assert "cursor=" in pages[-1] and "offset" not in pages[-1]
    back = []
    html = client.get(pages[-1]).data.decode()
    while True:
        newer = re.search(r'id="at-newer" href="([^"]+)"', html)
        if not newer:
            break
        html = client.get(newer.group(1).replace("&amp;", "&")).data.decode()
        back.append(page_ids(html))
    assert back == [expected[3:6], expected[0:3]]
    query = parse_qs(urlsplit(pages[1]).query)
    assert client.get(ADMIN + "/events.json?" + urlsplit(pages[1]).query).json["events"][0]["id"] == expected[3]
    assert query["limit"] == ["3"]


def test_bad_filter_values_get_a_400_naming_the_parameter(flask_app):
    client = flask_app.client("ada@a.example")
    for query, parameter in (("since=yesterday", "since"), ("limit=9999", "limit"), ("event=Warehouse+Exploded", "event"),
                             ("actor_type=robot", "actor_type"), ("cursor=garbage", "cursor"),
                             ("since=2026-11-20&until=2026-11-01", "until"), ("newer=%%%", "newer")):
        page = client.get(f"{ADMIN}/?{query}")
        assert page.status_code == 400, query
        assert f"<code>{parameter}</code>" in page.data.decode(), query
        body = client.get(f"{ADMIN}/events.json?{query}")
        assert body.status_code == 400 and body.json["error"]["parameter"] == parameter, query
        export = client.get(f"{ADMIN}/export.csv?{query}")
        assert export.status_code == 400 and parameter in export.data.decode(), query


def test_events_older_than_the_retention_window_are_never_shown(flask_app):
    client = flask_app.client("ada@a.example")
    client.post("/warehouses", data={"name": "recent"})
    old = AuditEvent(
        id=new_event_id(), occurred_at=datetime.now(timezone.utc) - timedelta(days=91), event="Warehouse Created",
        category="Warehouses", action="created", actor=Actor.user("1", "ada@a.example"),
        resource_type="Warehouse", resource_id="99", resource_name="ancient", workspace_id="ws_a",
    )
    with flask_app.app.app_context():
        flask_app.audit.store.append([old])
    assert len(flask_app.events()) == 2
    html = client.get(ADMIN + "/?since=2000-01-01").data.decode()
    assert "recent" in html and "ancient" not in html
    assert [e["resource"]["name"] for e in client.get(ADMIN + "/events.json?since=2000-01-01").json["events"]] == ["recent"]
    assert "ancient" not in client.get(ADMIN + "/export.csv").data.decode()
    long_ago = client.get(ADMIN + "/?since=2000-01-01&until=2000-02-01").data.decode()
    assert "older than the 90-day history" in long_ago


def test_the_event_filter_is_grouped_by_catalog_category(flask_app):
    html = flask_app.client("ada@a.example").get(ADMIN + "/").data.decode()
    group = re.search(r'<optgroup label="Warehouses">(.*?)</optgroup>', html, re.S).group(1)
    assert re.findall(r'<option value="([^"]+)"', group) == [
        "Warehouse Created", "Warehouse Deleted", "Warehouse Disabled", "Warehouse Enabled", "Warehouse Modified",
        "Warehouse Run Failed",
    ]
    assert '<link rel="stylesheet" href="/admin/audit-trail/static/admin.css">' in html
    with flask_app.client().get(ADMIN + "/static/admin.css") as css:
        assert css.status_code == 200 and b".at-table" in css.data


def test_templates_are_overridable_and_the_mount_point_is_configurable(database_url, tmp_path):
    (tmp_path / "audit_trail").mkdir()
    (tmp_path / "audit_trail" / "events.html").write_text("custom page with {{ page.rows|length }} rows")
    flask_app = make_app(database_url, template_folder=str(tmp_path), AUDIT_TRAIL_URL_PREFIX="/ops/trail")
    try:
        client = flask_app.client("ada@a.example")
        client.post("/warehouses", data={"name": "one"})
        assert client.get("/ops/trail/").data == b"custom page with 1 rows"
        assert client.get(ADMIN + "/").status_code == 404
    finally:
        dispose(flask_app)


def test_post_routes_on_the_blueprint_need_the_csrf_token(database_url):
    from audit_middleware.adapters.flask import csrf_token

    flask_app = make_app(database_url, AUDIT_TRAIL_URL_PREFIX=None)  # mount it ourselves, after adding routes
    try:
        blueprint = flask_app.audit.blueprint
        blueprint.add_url_rule("/probe", "probe", lambda: "changed", methods=["POST"])
        blueprint.add_url_rule("/token", "token", lambda: csrf_token())
        flask_app.app.register_blueprint(blueprint, url_prefix=ADMIN)
        client = flask_app.client("ada@a.example")
        assert client.post(ADMIN + "/probe").status_code == 400
        assert client.post(ADMIN + "/probe", data={"csrf_token": "forged"}).status_code == 400
        token = client.get(ADMIN + "/token").data.decode()
        assert client.post(ADMIN + "/probe", data={"csrf_token": token}).data == b"changed"
        assert client.post(ADMIN + "/probe", headers={"X-CSRF-Token": token}).data == b"changed"
        other = flask_app.client("eve@b.example")
        assert other.post(ADMIN + "/probe", data={"csrf_token": token}).status_code == 400
        assert flask_app.client("bob@a.example").post(ADMIN + "/probe", data={"csrf_token": token}).status_code == 403
    finally:
        dispose(flask_app)
