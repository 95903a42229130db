"""The middleware's actors and request facts, DRF and async views, the admin views and the commands."""

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient, Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from testapp.models import ApiToken, Membership, Warehouse

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.adapters.django import get_store
from audit_middleware.adapters.django.models import AuditEvent

from .conftest import audit_inserts, events, names


def make_user(username, *, workspace=None, viewer=False):
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    if workspace is not None:
        Membership.objects.create(user=user, workspace_id=workspace)
    if viewer:
        user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    return User.objects.get(pk=user.pk)


# -- actors and request facts ----------------------------------------------------------------------------


def test_session_user_is_the_actor_with_request_facts():
    """A logged-in user's change is attributed to them, with IP (one trusted proxy), user agent, request id."""
    ada = make_user("ada", workspace="ws_1")
    client = Client()
    client.force_login(ada)
    response = client.post("/warehouses/", {"name": "A"}, HTTP_USER_AGENT="pytest-agent",
                           HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_X_REQUEST_ID="req-42")
    assert response.status_code == 200
    (event,) = events(event="Warehouse Created")
    assert event.actor == Actor.user(ada.pk, "ada@example.com")
    assert event.workspace_id == "ws_1"
    assert event.context == {"ip": "203.0.113.9", "user_agent": "pytest-agent", "request_id": "req-42",
                             "method": "POST", "path": "/warehouses/"}


def test_user_without_email_is_named_by_the_username_field():
    """A signed-in user with no email is named by USERNAME_FIELD (``request.user`` is Django's lazy object,
    whose type is not the user model's)."""
    plain = User.objects.create_user("plain-no-email", "", "pw")
    client = Client()
    client.force_login(plain)
    assert client.post("/warehouses/", {"name": "A"}).status_code == 200
    (event,) = events(event="Warehouse Created")
    assert event.actor == Actor.user(plain.pk, "plain-no-email")


def test_middleware_never_forces_request_user_before_the_view():
    """request.user is still an unevaluated lazy object when the view starts."""
    client = Client()
    client.force_login(make_user("ada"))
    assert client.get("/probe/user").json() == {"lazy_when_view_started": True}


def test_bearer_token_resolved_by_the_token_loader():
    """Without a session user, Authorization: Bearer is resolved by TOKEN_LOADER; the secret is not stored."""
    token = ApiToken.objects.create(label="ci-deploy", secret="sk_live_abcd1234")
    response = Client().post("/warehouses/", {"name": "A"}, HTTP_AUTHORIZATION="Bearer sk_live_abcd1234",
                             HTTP_X_WORKSPACE="ws_2")
    assert response.status_code == 200
    (event,) = events()
    assert event.actor == Actor("token", f"tok_{token.pk}", "ci-deploy (...1234)")
    assert event.workspace_id == "ws_2"
    assert "sk_live_abcd1234" not in json.dumps([e.to_json() for e in events()])


def test_anonymous_request_and_unknown_token_are_anonymous():
    """A request with no user and an unknown token records an anonymous actor."""
    Client().post("/warehouses/", {"name": "A"}, HTTP_AUTHORIZATION="Bearer nope")
    assert events()[0].actor == Actor.anonymous()


def test_drf_token_authentication_user_set_inside_the_view_is_the_actor():
    """DRF's TokenAuthentication sets the user inside the view; the event is attributed to that user."""
    bob = make_user("bob", workspace="ws_1")
    token = Token.objects.create(user=bob)
    w = Warehouse.objects.create(name="A")
    response = Client().post(f"/api/warehouses/{w.pk}/rename", {"name": "B"},
                             HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200, response.content
    event = events(event="Warehouse Modified")[0]
    assert event.actor == Actor.user(bob.pk, "bob@example.com")
    assert event.changes == {"name": ["A", "B"]} and event.workspace_id == "ws_1"


def test_async_view_under_asgi_records_with_the_actor():
    """An async view (ASGI handler, async middleware chain) records its changes with the request's actor."""
    import asyncio

    ada = make_user("ada", workspace="ws_1")
    client = AsyncClient()
    client.force_login(ada)

    async def call():
        return await client.post("/async/warehouses/", json.dumps({"name": "Async"}),
                                 content_type="application/json")

    response = asyncio.run(call())
    assert response.status_code == 200
    got = [e for e in events() if e.resource_type == "Warehouse"]
    assert [e.event for e in got] == ["Warehouse Created", "Warehouse Modified"]
    assert {e.actor for e in got} == {Actor.user(ada.pk, "ada@example.com")}
    assert got[1].changes == {"capacity": [0, 5]}


def test_failed_transaction_in_a_view_records_nothing():
    """A view whose atomic block fails leaves neither the change nor its event."""
    w = Warehouse.objects.create(name="A")
    assert Client().post(f"/warehouses/{w.pk}/fail").status_code == 502
    assert names() == ["Warehouse Created"]


def test_atomic_requests_writes_a_views_events_together_at_commit_and_drops_them_on_error():
    """Under ATOMIC_REQUESTS the view's events are written with one INSERT when its transaction commits,
    and an exception in the view rolls back its rows and their events alike."""
    from django.db import connection

    connection.settings_dict["ATOMIC_REQUESTS"] = True
    try:
        with audit_inserts(connection) as inserts:
            assert Client().post("/warehouses/many", {"name": "ok"}).status_code == 200
        assert len(inserts) == 1 and names() == ["Warehouse Created"] * 3
        client = Client(raise_request_exception=False)
        assert client.post("/warehouses/many", {"name": "bad", "explode": "1"}).status_code == 500
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    assert len(names()) == 3 and not Warehouse.objects.filter(name__startswith="bad").exists()
    assert Client(raise_request_exception=False).post(
        "/warehouses/many", {"name": "autocommit", "explode": "1"}).status_code == 500
    assert len(names()) == 6  # without ATOMIC_REQUESTS each save committed with its own event


def test_middleware_is_sync_and_async_capable():
    """The middleware declares both modes and marks itself a coroutine function in an async chain."""
    from asgiref.sync import iscoroutinefunction

    from audit_middleware.adapters.django.middleware import AuditMiddleware

    async def async_view(request):
        return None

    assert AuditMiddleware.sync_capable and AuditMiddleware.async_capable
    assert iscoroutinefunction(AuditMiddleware(async_view))
    assert not iscoroutinefunction(AuditMiddleware(lambda request: None))


# -- admin views -----------------------------------------------------------------------------------------


@pytest.fixture
def seeded():
    """Events in two workspaces, and a viewer in each."""
    with acting_as(Actor.user("7", "ada@example.com")), in_workspace("ws_1"):
        a = Warehouse.objects.create(name="Prod <script>alert(1)</script>")
        a.enabled = False
        a.save()
        Warehouse.objects.create(name="=HYPERLINK(\"http://evil\")")
    with acting_as(Actor.system("sync")), in_workspace("ws_2"):
        Warehouse.objects.create(name="Other tenant")
    viewer = make_user("viewer", workspace="ws_1", viewer=True)
    client = Client()
    client.force_login(viewer)
    return client


def test_urls_reverse_in_the_namespace():
    """The views are reverse()-able in the audit_middleware namespace."""
    assert reverse("audit_middleware:index") == "/admin/audit-trail/"
    assert reverse("audit_middleware:events_json") == "/admin/audit-trail/events.json"
    assert reverse("audit_middleware:export_csv") == "/admin/audit-trail/export.csv"


def test_access_needs_the_view_permission(seeded):
    """Anonymous visitors and users without view_auditevent get 403 on every admin route."""
    plain = Client()
    plain.force_login(make_user("plain", workspace="ws_1"))
    for client in (Client(), plain):
        for name in ("index", "events_json", "export_csv"):
            assert client.get(reverse(f"audit_middleware:{name}")).status_code == 403
    assert seeded.get(reverse("audit_middleware:index")).status_code == 200


def test_can_view_setting_replaces_the_permission_check():
    """AUDIT_TRAIL['CAN_VIEW'] decides who may view."""
    from django.conf import settings
    from django.test import override_settings

    client = Client()
    client.force_login(make_user("plain"))
    assert client.get(reverse("audit_middleware:index")).status_code == 403
    allow = {**settings.AUDIT_TRAIL, "CAN_VIEW": lambda request: request.user.username == "plain"}
    with override_settings(AUDIT_TRAIL=allow):
        assert client.get(reverse("audit_middleware:index")).status_code == 200


def test_index_shows_only_the_viewers_workspace_escaped(seeded):
    """The page lists the viewer's workspace only, escapes every value, and carries security headers."""
    response = seeded.get(reverse("audit_middleware:index"))
    html = response.content.decode()
    assert "Prod &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "Other tenant" not in html
    assert "Warehouse Disabled" in html and 'href="/admin/audit-trail/static/admin.css"' in html
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store"


def test_json_endpoint_filters_and_pages_with_a_cursor(seeded):
    """events.json answers the documented shape, honours filters and walks pages by cursor."""
    url = reverse("audit_middleware:events_json")
    body = seeded.get(url, {"limit": 2}).json()
    assert len(body["events"]) == 2 and body["next_cursor"]
    rest = seeded.get(url, {"limit": 2, "cursor": body["next_cursor"]}).json()
    assert len(rest["events"]) == 1 and rest["next_cursor"] is None
    ids = [e["id"] for e in body["events"] + rest["events"]]
    assert len(set(ids)) == 3
    assert all(e["workspace_id"] == "ws_1" for e in body["events"] + rest["events"])
    only = seeded.get(url, {"event": "Warehouse Disabled"}).json()["events"]
    assert [e["event"] for e in only] == ["Warehouse Disabled"]
    assert only[0]["changes"] == {"enabled": [True, False]}
    assert set(only[0]) >= {"id", "occurred_at", "event", "category", "action", "resource", "actor",
                            "workspace_id", "changes", "context"}


@pytest.mark.parametrize("params, parameter", [
    ({"since": "yesterday"}, "since"),
    ({"limit": "9999"}, "limit"),
    ({"actor_type": "robot"}, "actor_type"),
    ({"cursor": "!!"}, "cursor"),
    ({"event": "Warehouse Exploded"}, "event"),
])
def test_bad_filters_get_a_400_naming_the_filter(seeded, params, parameter):
    """Every route answers a bad filter with 400 and says which filter was wrong."""
    body = seeded.get(reverse("audit_middleware:events_json"), params)
    assert body.status_code == 400 and body.json()["error"]["parameter"] == parameter
    page = seeded.get(reverse("audit_middleware:index"), params)
    assert page.status_code == 400 and f"<code>{parameter}</code>" in page.content.decode()
    assert seeded.get(reverse("audit_middleware:export_csv"), params).status_code == 400


def test_csv_export_is_the_filtered_set_with_formulas_neutralised(seeded):
    """export.csv streams exactly the filtered events of the workspace, with formula cells neutralised."""
    response = seeded.get(reverse("audit_middleware:export_csv"), {"event": "Warehouse Created"})
    assert response["Content-Disposition"].startswith('attachment; filename="audit-trail-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 2 and {r["workspace_id"] for r in rows} == {"ws_1"}
    assert "'=HYPERLINK(\"http://evil\")" in {r["resource_name"] for r in rows}


def test_views_refuse_post_and_serve_the_shared_stylesheet(seeded):
    """The admin views are GET only (CSRF-safe); the stylesheet is the core's admin.css."""
    from audit_middleware.admin_view import stylesheet_text

    assert seeded.post(reverse("audit_middleware:index")).status_code == 405
    css = seeded.get(reverse("audit_middleware:stylesheet"))
    assert css.status_code == 200 and css.content.decode() == stylesheet_text()


def test_events_older_than_the_retention_are_not_shown(seeded):
    """An event older than RETENTION_DAYS never appears in the views."""
    old = datetime.now(timezone.utc) - timedelta(days=91)
    AuditEvent.objects.filter(event="Warehouse Disabled").update(occurred_at=old)
    events_ = seeded.get(reverse("audit_middleware:events_json")).json()["events"]
    assert "Warehouse Disabled" not in [e["event"] for e in events_] and len(events_) == 2


def test_contrib_admin_registration_is_read_only(seeded):
    """The audit events appear in django.contrib.admin for viewing, with no add, change or delete."""
    admin = make_user("root")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client = Client()
    client.force_login(admin)
    changelist = client.get("/admin/audit_middleware/auditevent/")
    assert changelist.status_code == 200 and "Warehouse Disabled" in changelist.content.decode()
    event_id = AuditEvent.objects.first().pk
    assert client.get("/admin/audit_middleware/auditevent/add/").status_code == 403
    detail = client.get(f"/admin/audit_middleware/auditevent/{event_id}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert client.post(f"/admin/audit_middleware/auditevent/{event_id}/delete/").status_code == 403


# -- commands and migrations ------------------------------------------------------------------------------


def test_audit_export_command_writes_the_csv(seeded, tmp_path):
    """manage.py audit_export writes the filtered events as CSV."""
    out = tmp_path / "trail.csv"
    call_command("audit_export", "--workspace", "ws_2", "--output", str(out), stderr=io.StringIO())
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["resource_name"] for r in rows] == ["Other tenant"]
    buffer = io.StringIO()
    call_command("audit_export", "--event", "Warehouse Disabled", stdout=buffer, stderr=io.StringIO())
    assert buffer.getvalue().startswith("occurred_at,event,") and buffer.getvalue().count("\r\n") == 2
    with pytest.raises(CommandError, match="--since"):
        call_command("audit_export", "--since", "nope")


def test_audit_purge_command_deletes_old_events_only_with_yes(seeded):
    """manage.py audit_purge --yes deletes events before the cutoff; without --yes it refuses."""
    old = datetime.now(timezone.utc) - timedelta(days=120)
    AuditEvent.objects.filter(event="Warehouse Disabled").update(occurred_at=old)
    before = get_store().count()
    with pytest.raises(CommandError, match="--yes"):
        call_command("audit_purge", "--no-input")
    out = io.StringIO()
    call_command("audit_purge", "--yes", stdout=out)
    assert "purged 1 event(s)" in out.getvalue()
    assert get_store().count() == before - 1
    call_command("audit_purge", "--yes", "--before", "2999-01-01", stdout=io.StringIO())
    assert get_store().count() == 0
    with pytest.raises(CommandError, match="--before"):
        call_command("audit_purge", "--yes", "--before", "soon")


def test_shipped_migrations_match_the_models():
    """makemigrations --check finds nothing to do for the audit app."""
    call_command("makemigrations", "audit_middleware", "--check", "--dry-run", verbosity=0)


def test_store_protocol_round_trip():
    """The Django store implements the core protocol: append, query, get, count, purge."""
    from audit_middleware.query import EventQuery
    from audit_middleware.store import EventStore

    store = get_store()
    assert isinstance(store, EventStore)
    with acting_as(Actor.system("job")):
        Warehouse.objects.create(name="A")
    page = store.query(EventQuery(actor="job"))
    (event,) = page.events
    assert store.get(event.id) == event and store.count(EventQuery(actor_type="system")) == 1


def test_forwarded_for_honours_the_proxy_depth_and_ignores_garbage():
    """With one trusted proxy the client is the last X-Forwarded-For hop; a forged earlier hop or a value that
    is not an address is never taken."""
    Client().post("/warehouses/", {"name": "A"}, HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    Client().post("/warehouses/", {"name": "B"}, HTTP_X_FORWARDED_FOR="<script>", REMOTE_ADDR="10.0.0.2")
    assert [e.context["ip"] for e in events()] == ["203.0.113.9", "10.0.0.2"]


def test_unknown_setting_key_is_an_error_naming_it():
    """A misspelt AUDIT_TRAIL key raises ImproperlyConfigured naming the key."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from audit_middleware.adapters.django import conf

    with pytest.raises(ImproperlyConfigured, match="RETENTION_DAY"), \
            override_settings(AUDIT_TRAIL={**settings.AUDIT_TRAIL, "RETENTION_DAY": 30}):
        conf.audit_config()
    assert conf.audit_config().retention_days == 90


def test_loader_settings_are_read_again_after_they_change():
    """The loaders are imported once and kept until AUDIT_TRAIL changes: an override takes effect on the next
    request, and the dotted path comes back after it."""
    from django.conf import settings
    from django.test import override_settings

    Client().post("/warehouses/", {"name": "A"}, HTTP_X_WORKSPACE="ws_header")
    with override_settings(AUDIT_TRAIL={**settings.AUDIT_TRAIL, "WORKSPACE_LOADER": lambda request: "ws_override"}):
        Client().post("/warehouses/", {"name": "B"}, HTTP_X_WORKSPACE="ws_header")
    Client().post("/warehouses/", {"name": "C"}, HTTP_X_WORKSPACE="ws_header")
    assert [(e.resource_name, e.workspace_id) for e in events()] == [
        ("A", "ws_header"), ("B", "ws_override"), ("C", "ws_header")]


def test_exclude_models_setting_and_retention_setting_apply_after_override():
    """EXCLUDE_MODELS silences a model and RETENTION_DAYS changes the window, read again after the change."""
    from django.conf import settings
    from django.test import override_settings

    from audit_middleware.adapters.django import get_auditor

    changed = {**settings.AUDIT_TRAIL, "EXCLUDE_MODELS": ["testapp.Tag"], "RETENTION_DAYS": 7}
    with override_settings(AUDIT_TRAIL=changed):
        from testapp.models import Tag

        Tag.objects.create(name="quiet")
        assert get_auditor().config.retention_days == 7
    Tag.objects.create(name="loud")
    assert names() == ["Tag Created"] and get_auditor().config.retention_days == 90
