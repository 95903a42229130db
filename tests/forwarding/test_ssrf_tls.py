"""Forwarding cannot be turned against the network it runs in: private, loopback, link-local and carrier-NAT
addresses in every spelling are refused unless allowed, redirects are never followed, TLS is verified."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from audit_middleware import Actor
from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import SegmentDestination, SlackDestination, WebhookDestination
from audit_middleware.forwarding._http import TransportError, _PinnedHTTPSConnection, resolve
from audit_middleware.ids import new_event_id

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

REFUSED_ADDRESSES = [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.100.100.200", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1",
    "::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fe80::1", "fc00::1",
    "fd12:3456::1", "ff02::1", "2002:7f00:1::", "2002:a9fe:a9fe::", "64:ff9b::7f00:1",
    "2130706433", "0x7f.1", "127.1", "0177.0.0.1", "localhost", "0",
]


def event() -> AuditEvent:
    return AuditEvent(id=new_event_id(), occurred_at=datetime.now(timezone.utc), event="Warehouse Disabled",
                      category="Warehouses", action="disabled", actor=Actor.user("7", "ada@example.com"),
                      resource_type="Warehouse", resource_id="42", workspace_id="ws_1")


class Server:
    """A loopback HTTP(S) server answering every POST with ``status`` (and ``Location``), counting requests."""

    def __init__(self, status: int = 200, location: str | None = None, context: ssl.SSLContext | None = None):
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.hits.append(self.path)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_private_loopback_and_reserved_addresses_are_refused_in_every_spelling(address):
    """Whatever the spelling (IPv4, IPv6, mapped, 6to4, NAT64, decimal, hex, short, a name), the guard
    refuses the address permanently and says how to allow it."""
    with pytest.raises(TransportError) as refused:
        resolve(address, 80, allow_private=False)
    assert refused.value.permanent and "allow_private=True" in str(refused.value)


def test_public_addresses_pass_the_guard():
    """The guard is not a blanket refusal: public literals resolve to themselves."""
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert resolve(address, 443, allow_private=False) in (address, "8.8.8.8")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "127.1"])
def test_every_destination_kind_refuses_a_loopback_receiver_and_nothing_is_sent(server, host):
    """Segment, webhook and Slack destinations pointed at a loopback server mark the delivery dead (not
    retried) and the server receives nothing; with allow_private=True the same server is reached."""
    base = f"http://{host}:{server.port}"
    e = event()
    for destination in (SegmentDestination("wk", host=base), WebhookDestination(base + "/hook", SECRET),
                        SlackDestination(base + "/slack", min_interval=0)):
        outcome = destination.deliver([e])[e.id]
        assert outcome.kind == "dead" and "allow_private=True" in (outcome.error or ""), destination
    assert server.hits == []
    if host != "[::ffff:127.0.0.1]":  # the mapped spelling is only reachable on a dual-stack socket
        allowed = WebhookDestination(base + "/hook", SECRET, allow_private=True).deliver([e])[e.id]
        assert allowed.kind == "sent" and server.hits == ["/hook"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(status):
    """A redirect (even to an allowed address) is a dead delivery: one request, the Location never fetched."""
    target = Server()
    redirector = Server(status, location=f"http://127.0.0.1:{target.port}/elsewhere")
    try:
        e = event()
        outcome = WebhookDestination(f"http://127.0.0.1:{redirector.port}/hook", SECRET,
                                     allow_private=True).deliver([e])[e.id]
        assert outcome.kind == "dead" and "not followed" in (outcome.error or "")
        assert redirector.hits == ["/hook"] and target.hits == []
    finally:
        target.stop()
        redirector.stop()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_certificates_are_verified(self_signed):
    """An HTTPS receiver with a certificate no trusted authority signed gets no request: the handshake fails,
    the delivery is retried later (not sent), and the error names the certificate."""
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    https = Server(context=context)
    try:
        e = event()
        for destination in (
            WebhookDestination(f"https://localhost:{https.port}/hook", SECRET, allow_private=True, timeout=5),
            SegmentDestination("wk", host=f"https://127.0.0.1:{https.port}", allow_private=True, timeout=5),
        ):
            outcome = destination.deliver([e])[e.id]
            assert outcome.kind != "sent", destination
            assert "CERTIFICATE_VERIFY_FAILED" in (outcome.error or ""), outcome
        assert https.hits == []
    finally:
        https.stop()


def test_an_https_connection_is_opened_with_nagles_algorithm_off(self_signed):
    """As http.client's own connect does for HTTP: it writes a request's headers and body apart, and with Nagle's
    algorithm on, the body of a post on a kept HTTPS connection waited for the server's delayed ACK of the
    headers (43 ms a post, measured, against 0.5)."""
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    https = Server(context=context)
    try:
        connection = _PinnedHTTPSConnection("localhost", "127.0.0.1", https.port, 5.0,
                                            ssl.create_default_context(cafile=str(cert)))
        connection.connect()
        assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        connection.close()
    finally:
        https.stop()
