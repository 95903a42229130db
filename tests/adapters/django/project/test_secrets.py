"""No secret leaks on Django: after a run with masked fields, a token actor, forwarding to Segment and a
signed webhook through ``audit_forward``, and the admin pages, no secret value is in the audit tables, the
logs, the exports, the pages or the forwarded requests."""

import base64
import importlib.util
import io
import logging
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from testapp.models import ApiToken, Item, Membership, Warehouse

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.adapters.django.outbox import get_outbox
from audit_middleware.forwarding import SegmentDestination, WebhookDestination

if "forwarding_receivers" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "forwarding_receivers", Path(__file__).resolve().parents[3] / "forwarding" / "receivers.py")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["forwarding_receivers"] = _module
    _spec.loader.exec_module(_module)
receivers = sys.modules["forwarding_receivers"]

WRITE_KEY_VALUE = "wk_live_warehouse_8f7e6d5c"
IBAN = "DE89370400440532013000"
TOKEN = "dj_token_secret_3b2a1908"


class RecordingReceiver(receivers.Receiver):
    def __post_init__(self):
        self.raw = []
        super().__post_init__()

    def handle(self, request):
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        with self.lock:
            self.raw.append(bytes(request.headers) + b"\n" + body)
        request.rfile = io.BytesIO(body)
        super().handle(request)


@pytest.fixture
def receiver():
    r = RecordingReceiver()
    with override_settings(AUDIT_TRAIL={**settings.AUDIT_TRAIL, "DESTINATIONS": [
        SegmentDestination(receivers.WRITE_KEY, host=r.base, allow_private=True, timeout=5),
        WebhookDestination(r.base + "/hook", receivers.SECRET, allow_private=True, timeout=5),
    ]}):
        yield r
    r.stop()
    from audit_middleware.adapters.django.models import AuditDelivery, AuditForwarding

    AuditDelivery.objects.all().delete()
    AuditForwarding.objects.all().delete()


def audit_tables_dump():
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table.startswith("audit_"):
                cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
                lines += [f"{table}: {row!r}" for row in cursor.fetchall()]
    return "\n".join(lines)


def test_no_secret_reaches_the_database_logs_exports_pages_or_forwarded_payloads(receiver, caplog):
    """Masked fields (write_key, iban), a Bearer token's secret, the Segment write key and the webhook secret
    are found nowhere after the run."""
    caplog.set_level(logging.DEBUG)
    for name in ("segment", "webhook"):
        get_outbox().set_enabled("ws_1", name, True)
    ApiToken.objects.create(label="ci-deploy", secret=TOKEN)
    with acting_as(Actor.user("7", "ada@example.com")), in_workspace("ws_1"):
        warehouse = Warehouse.objects.create(name="Prod", write_key="wk_old_value_1")
        warehouse.write_key = WRITE_KEY_VALUE
        warehouse.save()
        Item.objects.create(name="payout", iban=IBAN)
    by_token = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_X_WORKSPACE="ws_1")
    assert by_token.post("/warehouses/", {"name": "by token"}).status_code == 200
    call_command("audit_forward", "--once")
    assert receiver.segment_ids and receiver.webhook_ids and not receiver.violations

    owner = User.objects.create_user("owner", "owner@example.com", "pw")
    Membership.objects.create(user=owner, workspace_id="ws_1")
    owner.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = Client()
    client.force_login(User.objects.get(pk=owner.pk))
    responses = [client.get(reverse(f"audit_middleware:{name}"), {"limit": 500})
                 for name in ("index", "events_json", "forwarding")]
    responses += [client.get(reverse("audit_middleware:export_csv")),
                  client.get(reverse("audit_middleware:index"), {"since": "yesterday"}),
                  by_token.get(reverse("audit_middleware:index"))]
    places = {"database": audit_tables_dump(), "logs": caplog.text}
    for n, response in enumerate(responses):
        places[f"response {n}"] = (b"".join(response.streaming_content) if response.streaming
                                   else response.content).decode()
    segment_auth = base64.b64encode(f"{receivers.WRITE_KEY}:".encode())
    places["forwarded"] = b"\n".join(receiver.raw).replace(b"Authorization: Basic " + segment_auth, b"").decode()
    assert "write_key" in places["database"] and "iban" in places["forwarded"]
    assert "ci-deploy" in places["database"]  # the token actor was recorded, by label

    secrets = {"write_key field": WRITE_KEY_VALUE, "old write_key": "wk_old_value_1", "iban": IBAN,
               "token secret": TOKEN, "Segment write key": receivers.WRITE_KEY,
               "webhook secret": receivers.SECRET, "webhook key": receivers.SECRET.removeprefix("whsec_"),
               "Segment basic auth": segment_auth.decode()}
    found = [(secret, place) for secret, value in secrets.items() for place, text in places.items()
             if value in text]
    assert not found, found
