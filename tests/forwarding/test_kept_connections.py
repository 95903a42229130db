"""Posts to one host share a kept connection (HTTP/1.1 keep-alive), and keeping it never costs an event, a
duplicate, a wrong answer or the SSRF guard: a connection the server closed is replaced, one that timed out or
that the server said it would close is not kept, an idle one is closed after KEEP_IDLE, a forked child makes its
own."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from audit_middleware import Actor
from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import SegmentDestination, WebhookDestination, _http
from audit_middleware.forwarding._http import TransportError, kept_connections, post
from audit_middleware.ids import new_event_id

from ..forking import exit_code_of_forked

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def event(i: int = 0) -> AuditEvent:
    return AuditEvent(new_event_id(), datetime.now(timezone.utc), "Warehouse Disabled", "Warehouses", "disabled",
                      Actor.user("7", "ada@example.com"), resource_type="Warehouse", resource_id=str(i),
                      workspace_id="ws_1")


class Server:
    """A loopback HTTP/1.1 server that notes, for every request, the client's port (one port per connection).

    ``close_silently``: after each answer, close the connection without saying so (no ``Connection: close``),
    as a server does whose idle timeout ends a kept connection. ``say_close``: answer with ``Connection:
    close``. ``hang_first``: hold the first answer this many seconds. ``gather``: hold the answers of each group
    of this many requests (in arrival order) until the group's last has arrived (at most 2 s), then answer the
    group at once; ``most_at_once`` is the most requests there were in flight."""

    def __init__(self, *, close_silently: bool = False, say_close: bool = False, hang_first: float = 0.0,
                 gather: int = 0) -> None:
        self.in_flight = 0
        self.most_at_once = 0
        self.arrivals = 0
        self.arrived = threading.Condition()
        self.ports: list[int] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.ports.append(self.client_address[1])
                    outer.bodies.append(body)
                    first = len(outer.ports) == 1
                if first and hang_first:
                    time.sleep(hang_first)
                with outer.arrived:
                    outer.in_flight += 1
                    outer.arrivals += 1
                    group_end = -(-outer.arrivals // gather) * gather if gather else 0
                    outer.most_at_once = max(outer.most_at_once, outer.in_flight)
                    outer.arrived.notify_all()
                    outer.arrived.wait_for(lambda: outer.arrivals >= group_end, timeout=2.0)
                    outer.in_flight -= 1
                reply = str(len(outer.ports)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                if say_close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply)
                if close_silently:
                    self.wfile.flush()
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def connections(self) -> int:
        with self.lock:
            return len(set(self.ports))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def no_kept_connections() -> Iterator[None]:
    kept_connections.close_all()
    yield
    kept_connections.close_all()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


def test_a_webhooks_posts_one_at_a_time_share_one_connection(server):
    webhook = WebhookDestination(server.url, SECRET, allow_private=True, parallel=1)
    events = [event(i) for i in range(20)]
    outcomes = webhook.deliver(events)
    assert [outcomes[e.id].kind for e in events] == ["sent"] * 20
    assert len(server.ports) == 20
    assert server.connections() == 1
    # each answer went to its own request: the bodies arrived in order, one per event
    assert [e.id.encode() in body for e, body in zip(events, server.bodies, strict=True)] == [True] * 20


def test_a_webhook_posts_four_events_at_once_on_four_kept_connections():
    server = Server(gather=4)
    try:
        webhook = WebhookDestination(server.url, SECRET, allow_private=True)
        events = [event(i) for i in range(12)]
        outcomes = webhook.deliver(events)
        assert [outcomes[e.id].kind for e in events] == ["sent"] * 12
        assert server.most_at_once == 4
        assert server.connections() == 4  # each window's posts reuse the connections of the window before
        posted = [next(e.id for e in events if e.id.encode() in body) for body in server.bodies]
        assert sorted(posted) == sorted(e.id for e in events)  # each event once
    finally:
        server.stop()


def test_a_connection_the_server_closed_while_kept_is_replaced_and_each_event_arrives_once():
    server = Server(close_silently=True)
    try:
        webhook = WebhookDestination(server.url, SECRET, allow_private=True)
        events = [event(i) for i in range(5)]
        outcomes = webhook.deliver(events)
        assert [outcomes[e.id].kind for e in events] == ["sent"] * 5
        assert len(server.bodies) == 5  # not one more: the closed connection carried nothing to the server
        assert server.connections() == 5
    finally:
        server.stop()


def test_an_answer_saying_connection_close_is_not_kept():
    server = Server(say_close=True)
    try:
        for i in range(3):
            assert post(server.url, b"{}", {}, allow_private=True).body == str(i + 1).encode()
        assert server.connections() == 3
        assert kept_connections.take(("http", "127.0.0.1", server.server.server_address[1], True)) is None
    finally:
        server.stop()


def test_a_connection_that_timed_out_is_not_kept_and_the_next_answer_is_its_own():
    server = Server(hang_first=1.0)
    try:
        with pytest.raises(TransportError, match="timed out"):
            post(server.url, b"first", {}, timeout=0.2, allow_private=True)
        # the late answer to "first" ("1") must not be read as the answer to "second"
        assert post(server.url, b"second", {}, allow_private=True).body == b"2"
        assert server.connections() == 2
    finally:
        server.stop()


def test_an_idle_connection_is_closed_after_keep_idle(server, monkeypatch):
    monkeypatch.setattr(_http, "KEEP_IDLE", 0.2)
    post(server.url, b"{}", {}, allow_private=True)
    post(server.url, b"{}", {}, allow_private=True)
    time.sleep(0.3)
    post(server.url, b"{}", {}, allow_private=True)
    assert server.connections() == 2


def test_a_kept_connection_never_lets_a_destination_past_the_ssrf_guard(server):
    allowed = SegmentDestination("wk", host=server.url.rsplit("/", 1)[0], allow_private=True)
    guarded = SegmentDestination("wk", host=server.url.rsplit("/", 1)[0])
    assert allowed.deliver([event()])
    assert [o.kind for o in allowed.deliver([event()]).values()] == ["sent"]
    refused = guarded.deliver([event()])
    assert [o.kind for o in refused.values()] == ["dead"]
    assert "private, loopback or reserved" in next(iter(refused.values())).error
    assert len(server.bodies) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own(server):
    post(server.url, b"parent", {}, allow_private=True)

    def child() -> int:
        return 0 if post(server.url, b"child", {}, allow_private=True).status == 200 else 2

    assert exit_code_of_forked(child) == 0
    post(server.url, b"parent again", {}, allow_private=True)
    by_body = dict(zip(server.bodies, server.ports, strict=True))
    assert by_body[b"child"] != by_body[b"parent"]  # the child did not write on the parent's socket
    assert by_body[b"parent again"] == by_body[b"parent"]
    assert server.connections() == 2
