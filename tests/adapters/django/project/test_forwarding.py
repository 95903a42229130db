"""Forwarding on Django: delivery rows in the request's transaction, ``manage.py audit_forward``, relays in
parallel (select_for_update skip_locked / SQLite lease), the Forwarding page, against real loopback receivers."""

import importlib.util
import re
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import Client, override_settings
from testapp.models import Membership, Warehouse

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.adapters.django.models import AuditDelivery
from audit_middleware.adapters.django.outbox import get_outbox
from audit_middleware.forwarding import Relay, SegmentDestination, WebhookDestination

from .conftest import events

_spec = importlib.util.spec_from_file_location(
    "forwarding_receivers", Path(__file__).resolve().parents[3] / "forwarding" / "receivers.py")
receivers = importlib.util.module_from_spec(_spec)
sys.modules["forwarding_receivers"] = receivers
_spec.loader.exec_module(receivers)

PAGE = "/admin/audit-trail/forwarding"


@pytest.fixture
def receiver():
    r = receivers.Receiver()
    with override_settings(AUDIT_TRAIL={**settings.AUDIT_TRAIL, "DESTINATIONS": [
        SegmentDestination(receivers.WRITE_KEY, host=r.base, allow_private=True, timeout=5),
        WebhookDestination(r.base + "/hook", receivers.SECRET, allow_private=True, timeout=5),
    ]}):
        yield r
    r.release.set()
    r.stop()
    AuditDelivery.objects.all().delete()
    from audit_middleware.adapters.django.models import AuditForwarding

    AuditForwarding.objects.all().delete()


def member(username, workspace="ws_1", viewer=False):
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    Membership.objects.create(user=user, workspace_id=workspace)
    if viewer:
        user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    return User.objects.get(pk=user.pk)


def test_a_views_change_is_forwarded_by_audit_forward_with_the_event_id_as_key(receiver):
    get_outbox().set_enabled("ws_1", "segment", True)
    get_outbox().set_enabled("ws_1", "webhook", True)
    client = Client()
    client.force_login(member("ada"))
    assert client.post("/warehouses/", {"name": "Prod"}).status_code == 200
    with acting_as(Actor.system("sync")), in_workspace("ws_2"):
        Warehouse.objects.create(name="Other workspace, forwarding Off")
    assert AuditDelivery.objects.count() == 2
    call_command("audit_forward", "--once")
    (event,) = events(workspace_id="ws_1", event="Warehouse Created")
    assert receiver.segment_ids == [f"audit-{event.id}"] and receiver.webhook_ids == [event.id]
    assert receiver.violations == [] and AuditDelivery.objects.count() == 0
    state = {s.name: s for s in get_outbox().states("ws_1")}["segment"]
    assert state.last_success_at is not None and state.backlog == 0


def test_a_failed_request_forwards_nothing(receiver):
    get_outbox().set_enabled("ws_1", "segment", True)
    with in_workspace("ws_1"):
        w = Warehouse.objects.create(name="A")
    AuditDelivery.objects.all().delete()
    client = Client(raise_request_exception=False)
    client.force_login(member("ada"))
    client.post(f"/warehouses/{w.pk}/fail")
    assert AuditDelivery.objects.count() == 0
    call_command("audit_forward", "--once")
    assert receiver.segment_ids == []


def test_three_relays_in_parallel_send_each_event_once(receiver):
    outbox = get_outbox()
    outbox.set_enabled("ws_1", "segment", True)
    outbox.set_enabled("ws_1", "webhook", True)
    with in_workspace("ws_1"):
        Warehouse.objects.bulk_create([Warehouse(name=f"w{i}") for i in range(300)])
    ids = {e.id for e in events(workspace_id="ws_1")}
    assert len(ids) == 300

    def run() -> None:
        try:
            Relay(get_outbox(), get_outbox().forwarding, batch=10).drain()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(receiver.segment_ids) == sorted(f"audit-{i}" for i in ids)
    assert sorted(receiver.webhook_ids) == sorted(ids)


def test_the_forwarding_page_turns_a_destination_on_with_csrf_and_shows_dead_deliveries(receiver):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member("owner", viewer=True))
    page = client.get(PAGE)
    assert page.status_code == 200 and b"segment (segment)" in page.content
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    assert client.post(PAGE, {"action": "save", "destination": "webhook", "enabled": "on"}).status_code == 403
    saved = client.post(PAGE, {"csrfmiddlewaretoken": token, "action": "save", "destination": "webhook",
                               "enabled": "on"})
    assert b"Saved: forwarding to webhook is On." in saved.content
    receiver.faults = lambda path, n, body: receivers.Fault(status=422)
    client.post("/warehouses/", {"name": "<b>x</b>", "csrfmiddlewaretoken": token})
    call_command("audit_forward", "--once")
    html = client.get(PAGE).content.decode()
    assert "HTTP 422" in html and 'id="fw-dead"' in html
    delivery = re.search(r'name="delivery" value="(\d+)"', html).group(1)
    receiver.faults = None
    client.post(PAGE, {"csrfmiddlewaretoken": token, "action": "retry", "delivery": delivery})
    client.post(PAGE, {"csrfmiddlewaretoken": token, "action": "test", "destination": "webhook"})
    call_command("audit_forward", "--once")
    assert len(receiver.webhook_ids) == 2 and b'id="fw-no-dead"' in client.get(PAGE).content
    bad = client.post(PAGE, {"csrfmiddlewaretoken": token, "action": "save", "destination": "nope"})
    assert bad.status_code == 400
    outsider = Client()
    outsider.force_login(member("plain"))
    assert outsider.get(PAGE).status_code == 403


def test_audit_forward_without_destinations_says_how_to_configure_them():
    with pytest.raises(CommandError, match=r"AUDIT_TRAIL\['DESTINATIONS'\]"):
        call_command("audit_forward", "--once")


def test_a_relay_whose_database_connection_is_killed_reconnects_and_delivers(receiver):
    """The server ends the relay's session (a restart, a failover, an idle timeout): the relay's next round
    fails, and the one after runs on a new connection and delivers everything, each event once."""
    connection = connections["default"]
    if connection.vendor == "sqlite":
        pytest.skip("SQLite has no server session to end")
    outbox = get_outbox()
    outbox.set_enabled("ws_1", "segment", True)
    with in_workspace("ws_1"):
        Warehouse.objects.bulk_create([Warehouse(name=f"w{i}") for i in range(5)])
    ids = {e.id for e in events(workspace_id="ws_1")}
    relay = Relay(outbox, outbox.forwarding, poll=0.05)
    stop = threading.Event()
    ready = threading.Event()
    session: list[int] = []

    def run() -> None:
        try:
            worker = connections["default"]
            with worker.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()" if worker.vendor == "postgresql" else "SELECT CONNECTION_ID()")
                session.append(cursor.fetchone()[0])
            ready.set()
            stop.wait(0.2)  # the session is ended meanwhile
            relay.run(stop)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    assert ready.wait(10)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_terminate_backend(%s)", [session[0]])
        else:
            cursor.execute(f"KILL {int(session[0])}")
    deadline = time.monotonic() + 20
    while AuditDelivery.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert AuditDelivery.objects.count() == 0
    assert sorted(receiver.segment_ids) == sorted(f"audit-{i}" for i in ids)
