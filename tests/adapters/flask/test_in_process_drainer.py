"""With AUDIT_TRAIL_FORWARD_IN_PROCESS, a Flask-SQLAlchemy app forwards with no relay process: the drainer
thread runs outside any app context and still finds the engine."""

from __future__ import annotations

import re
import time

import pytest

from audit_middleware.forwarding import SegmentDestination

from ...forwarding.receivers import WRITE_KEY, Receiver
from .conftest import dispose, make_app

PAGE = "/admin/audit-trail/forwarding"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def test_the_in_process_drainer_forwards_a_committed_change(database_url, receiver):
    test_app = make_app(database_url, AUDIT_TRAIL_FORWARD_IN_PROCESS=True, AUDIT_TRAIL_DESTINATIONS=[
        SegmentDestination(WRITE_KEY, host=receiver.base, allow_private=True),
    ])
    try:
        owner = test_app.client("ada@a.example")
        token = re.search(r'name="csrf_token" value="([^"]+)"', owner.get(PAGE).data.decode()).group(1)
        owner.post(PAGE, data={"csrf_token": token, "action": "save", "destination": "segment", "enabled": "on"})
        owner.post("/warehouses", data={"name": "Prod"})
        (event,) = [e for e in test_app.events() if e.event == "Warehouse Created" and e.workspace_id == "ws_a"]
        deadline = time.monotonic() + 20
        while f"audit-{event.id}" not in receiver.segment_ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"audit-{event.id}" in receiver.segment_ids
    finally:
        dispose(test_app)


def test_record_accepts_flask_sqlalchemys_scoped_session(flask_app):
    flask_app.audit.auditor.catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    with flask_app.app.app_context():
        flask_app.audit.record("Warehouse Run Failed", session=flask_app.db.session, resource_type="Warehouse",
                               resource_id="1")
        flask_app.db.session.rollback()
        flask_app.audit.record("Warehouse Run Failed", session=flask_app.db.session, resource_type="Warehouse",
                               resource_id="2")
        flask_app.db.session.commit()
    assert [e.resource_id for e in flask_app.events(events=("Warehouse Run Failed",))] == ["2"]
