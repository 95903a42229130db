"""No secret leaks: after a realistic run, every secret value is searched for in the database, the logs, the
CSV export, the JSON endpoint, the admin pages (error pages included) and every forwarded payload."""

from __future__ import annotations

import base64
import io
import logging
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import abort, request
from sqlalchemy import MetaData, String, select
from sqlalchemy.orm import Mapped, mapped_column

from audit_middleware.forwarding import SegmentDestination, SlackDestination, WebhookDestination

from ...forwarding.receivers import SECRET, WRITE_KEY, Receiver
from . import conftest
from .conftest import TOKEN_SECRET, dispose, make_app

ADMIN = "/admin/audit-trail"
PASSWORD = "hunter2-Pl41n-7c1e"
NEW_PASSWORD = "correct-horse-9b8a"
API_KEY = "ak_live_5e4d3c2b1a09f8e7"
CLIENT_SECRET = "cs_6b5a49382716f0e1"
SIGNING_KEY = "audit-signing-key-0d1e2f3a"
SLACK_PATH_SECRET = "xoxSlackHookSecret4a5b"
SLACK_DOWN_SECRET = "xoxSlackDownSecret6c7d"


class RecordingReceiver(Receiver):
    """The shared loopback receivers, keeping every request's raw headers and body as well."""

    def __post_init__(self) -> None:
        self.raw: list[bytes] = []
        super().__post_init__()

    def handle(self, request: Any) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        with self.lock:
            self.raw.append(bytes(request.headers) + b"\n" + body)  # not the path: it is the receiver's URL
        request.rfile = io.BytesIO(body)
        super().handle(request)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    r = RecordingReceiver()
    yield r
    r.stop()


@pytest.fixture
def app_with_secrets(database_url: str, receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[conftest.TestApp]:
    monkeypatch.setenv("AUDIT_SIGNING_KEY", SIGNING_KEY)
    test_app = make_app(database_url, AUDIT_TRAIL_DESTINATIONS=[
        SegmentDestination(WRITE_KEY, host=receiver.base, allow_private=True, timeout=5),
        WebhookDestination(receiver.base + "/hook", SECRET, allow_private=True, timeout=5),
        SlackDestination(f"{receiver.base}/slack/T0/B0/{SLACK_PATH_SECRET}", name="slack-404",
                         allow_private=True, min_interval=0, timeout=5),
        SlackDestination(f"http://127.0.0.1:{closed_port()}/services/T0/B0/{SLACK_DOWN_SECRET}",
                         name="slack-down", allow_private=True, min_interval=0, timeout=5),
    ])
    db = test_app.db

    class Credential(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "credentials"
        id: Mapped[int] = mapped_column(primary_key=True)
        workspace_id: Mapped[str] = mapped_column(String(20))
        name: Mapped[str] = mapped_column(String(100))
        api_key: Mapped[str] = mapped_column(String(100))
        client_secret: Mapped[str] = mapped_column(String(100))

    app = test_app.app

    @app.post("/credentials")
    def create_credential() -> Any:
        if not request.form.get("name"):
            abort(400, f"a credential needs a name (got api_key={request.form.get('api_key')!r})")
        credential = Credential(workspace_id="ws_a", name=request.form["name"], api_key=request.form["api_key"],
                                client_secret=request.form["client_secret"])
        db.session.add(credential)
        db.session.commit()
        return {"id": credential.id}, 201

    @app.post("/credentials/<int:credential_id>")
    def rotate_credential(credential_id: int) -> Any:
        credential = db.get_or_404(Credential, credential_id)
        credential.api_key = request.form["api_key"]
        credential.client_secret = request.form["client_secret"]
        db.session.commit()
        return "", 204

    @app.post("/password")
    def change_password() -> Any:
        from flask_login import current_user

        user = db.session.get(test_app.User, current_user.id)
        user.password = request.form["password"]
        db.session.commit()
        return "", 204

    with app.app_context():
        db.create_all()
    try:
        yield test_app
    finally:
        dispose(test_app)


def database_dump(test_app: conftest.TestApp) -> str:
    """Every row of every audit table (events, deliveries, forwarding state, digests), as text."""
    with test_app.app.app_context():
        engine = test_app.db.engine
        metadata = MetaData()
        metadata.reflect(engine)
        tables = [t for name, t in metadata.tables.items() if name.startswith("audit")]
        assert len(tables) >= 3, sorted(metadata.tables)
        lines = []
        with engine.connect() as connection:
            for table in tables:
                for row in connection.execute(select(table)):
                    lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def test_no_secret_reaches_the_database_logs_exports_pages_or_forwarded_payloads(app_with_secrets, receiver,
                                                                                  caplog):
    """A run with masked fields changed (password, api_key, client_secret), a token actor, Segment, webhook
    and Slack destinations (one answering 404, one down), signed webhooks, tamper-evidence signing and error
    pages; then no secret value appears in any of the places an attacker or a log reader could look."""
    caplog.set_level(logging.DEBUG)
    test_app = app_with_secrets
    with test_app.app.app_context():
        outbox = test_app.audit.auditor.outbox
        assert outbox is not None
        for name in ("segment", "webhook", "slack-404", "slack-down"):
            outbox.set_enabled("ws_a", name, True)
    ada = test_app.client("ada@a.example")
    ada.post("/password", data={"password": PASSWORD})
    ada.post("/password", data={"password": NEW_PASSWORD})
    credential = ada.post("/credentials", data={"name": "warehouse login", "api_key": "ak_old_value_1",
                                                "client_secret": "cs_old_value_1"}).json["id"]
    ada.post(f"/credentials/{credential}", data={"api_key": API_KEY, "client_secret": CLIENT_SECRET})
    assert ada.post("/credentials", data={"api_key": API_KEY, "client_secret": CLIENT_SECRET}).status_code == 400
    bearer = {"Authorization": f"Bearer {TOKEN_SECRET}"}
    assert test_app.client().post("/warehouses", data={"name": "by token"}, headers=bearer).status_code == 201
    with test_app.app.app_context():
        relay = test_app.audit.auditor.relay(backoff_base=0.01, backoff_cap=0.05)
        relay.drain()
        test_app.audit.auditor.seal(delay=timedelta(0))

    # The run did what it says: events with masked changes, a token actor, deliveries sent and failed.
    events = test_app.events()
    changed = {field for e in events for field in e.changes}
    assert {"password", "api_key", "client_secret"} <= changed
    assert any(e.actor.type == "token" and e.actor.id == "tok_12" for e in events)
    assert receiver.segment_ids and receiver.webhook_ids and not receiver.violations
    assert any(b'"blocks"' in raw for raw in receiver.raw)  # the Slack message was sent (and answered 404)

    pages = {
        "index": ada.get(ADMIN + "/?limit=500"),
        "json": ada.get(ADMIN + "/events.json?limit=500"),
        "csv": ada.get(ADMIN + "/export.csv"),
        "forwarding": ada.get(ADMIN + "/forwarding"),
        "bad filter": ada.get(ADMIN + "/?since=yesterday"),
        "bad json filter": ada.get(ADMIN + "/events.json?cursor=forged"),
        "forbidden": test_app.client().get(ADMIN + "/"),
        "forbidden token": test_app.client().get(ADMIN + "/", headers=bearer),
        "unknown revert": ada.post(ADMIN + "/events/nope/revert", data={}),
    }
    forwarding_page = pages["forwarding"].get_data(as_text=True)
    assert "slack-down" in forwarding_page and "refused" in forwarding_page.lower()
    places = {name: response.get_data(as_text=True) for name, response in pages.items()}
    places["database"] = database_dump(test_app)
    places["logs"] = caplog.text + "\n".join(repr(r.args) for r in caplog.records)
    forwarded = b"\n".join(raw for raw in receiver.raw)
    segment_auth = base64.b64encode(f"{WRITE_KEY}:".encode())
    places["forwarded"] = forwarded.replace(b"Authorization: Basic " + segment_auth, b"").decode(errors="replace")
    assert "warehouse login" in places["database"] and "warehouse login" in places["forwarded"]

    secrets = {
        "password": PASSWORD, "new password": NEW_PASSWORD, "api_key": API_KEY, "old api_key": "ak_old_value_1",
        "client_secret": CLIENT_SECRET, "token secret": TOKEN_SECRET, "Segment write key": WRITE_KEY,
        "webhook signing secret": SECRET, "webhook signing key": SECRET.removeprefix("whsec_"),
        "tamper-evidence key": SIGNING_KEY, "Slack URL": SLACK_PATH_SECRET, "Slack URL (down)": SLACK_DOWN_SECRET,
        "Segment basic auth": segment_auth.decode(),
    }
    found = [(secret, place) for secret, value in secrets.items() for place, text in places.items()
             if value in text]
    assert not found, found
