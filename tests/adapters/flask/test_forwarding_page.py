"""The Forwarding page in the Flask admin view: select a destination, toggle On, Save Changes (CSRF), and the
events of that workspace reach a real receiver; dead deliveries show with Retry; Send test event."""

from __future__ import annotations

import re

import pytest

from audit_middleware.forwarding import SegmentDestination, WebhookDestination

from ...forwarding.receivers import SECRET, WRITE_KEY, Fault, Receiver
from .conftest import dispose, make_app

PAGE = "/admin/audit-trail/forwarding"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def fwd_app(database_url, receiver):
    test_app = make_app(database_url, AUDIT_TRAIL_DESTINATIONS=[
        SegmentDestination(WRITE_KEY, host=receiver.base, allow_private=True),
        WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True),
    ])
    try:
        yield test_app
    finally:
        dispose(test_app)


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def drain(test_app) -> None:
    with test_app.app.app_context():
        test_app.audit.auditor.relay(backoff_base=0.01, backoff_cap=0.05).drain()


def test_an_owner_turns_segment_on_and_the_workspaces_events_are_forwarded(fwd_app, receiver):
    owner = fwd_app.client("ada@a.example")
    page = owner.get(PAGE)
    assert page.status_code == 200 and b"segment (segment)" in page.data
    token = token_of(page.data.decode())
    assert owner.post(PAGE, data={"action": "save", "destination": "segment", "enabled": "on"}).status_code == 400
    saved = owner.post(PAGE, data={"csrf_token": token, "action": "save", "destination": "segment",
                                   "enabled": "on"})
    assert saved.status_code == 200 and b"Saved: forwarding to segment is On." in saved.data
    owner.post("/warehouses", data={"name": "Prod"})
    fwd_app.client("eve@b.example").post("/warehouses", data={"name": "Other workspace"})
    drain(fwd_app)
    (event,) = [e for e in fwd_app.events() if e.workspace_id == "ws_a" and e.event == "Warehouse Created"]
    assert receiver.segment_ids == [f"audit-{event.id}"] and receiver.webhook_ids == []
    assert "never" not in owner.get(PAGE).data.decode().split('id="fw-segment"')[1].split("</tr>")[0]


def test_dead_deliveries_show_with_retry_and_the_test_button_sends_one_event(fwd_app, receiver):
    owner = fwd_app.client("ada@a.example")
    token = token_of(owner.get(PAGE).data.decode())
    owner.post(PAGE, data={"csrf_token": token, "action": "save", "destination": "webhook", "enabled": "on"})
    receiver.faults = lambda path, n, body: Fault(status=422)
    owner.post("/warehouses", data={"name": "<b>Prod</b>"})
    drain(fwd_app)
    html = owner.get(PAGE).data.decode()
    assert 'id="fw-dead"' in html and "HTTP 422" in html
    delivery = re.search(r'name="delivery" value="(\d+)"', html).group(1)
    receiver.faults = None
    retried = owner.post(PAGE, data={"csrf_token": token, "action": "retry", "delivery": delivery})
    assert b"1 dead delivery queued again." in retried.data
    owner.post(PAGE, data={"csrf_token": token, "action": "test", "destination": "webhook"})
    drain(fwd_app)
    assert len(receiver.webhook_ids) == 2 and b'id="fw-no-dead"' in owner.get(PAGE).data
    bad = owner.post(PAGE, data={"csrf_token": token, "action": "save", "destination": "nope"})
    assert bad.status_code == 400 and b"no destination named" in bad.data


def test_non_owners_cannot_see_or_change_forwarding(fwd_app):
    assert fwd_app.client("bob@a.example").get(PAGE).status_code == 403
    assert fwd_app.client().get(PAGE).status_code == 403
