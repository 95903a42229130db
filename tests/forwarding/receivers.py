"""Real HTTP receivers on loopback for the forwarding tests: a Segment-like batch API, a Standard Webhooks
receiver and a Slack-like incoming webhook, with faults injected on demand.

The receivers check what the real services check (basic auth, batch limits, signatures) independently of the
code under test, and record what they accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WRITE_KEY = "wk_test_123"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Fault:
    """What to do to one request instead of (or besides) answering 200."""

    status: int | None = None            # answer this status without processing
    retry_after: str | None = None       # with this Retry-After header
    hang: float = 0.0                    # sleep this long before answering (the client times out)
    process_first: bool = False          # with hang: record the request before hanging (ambiguous result);
                                         # the answer waits ``hang`` seconds or until ``Receiver.release`` is set
    drop: bool = False                   # close the connection without an answer


@dataclass
class Receiver:
    write_key: str = WRITE_KEY
    secret: str = SECRET
    #: called with (path, request number, body) for each request; returns a Fault or None
    faults: Callable[[str, int, dict[str, Any]], Fault | None] | None = None
    segment_ids: list[str] = field(default_factory=list)
    webhook_ids: list[str] = field(default_factory=list)
    slack_messages: list[dict[str, Any]] = field(default_factory=list)
    slack_times: list[float] = field(default_factory=list)
    #: message ids whose request was processed but whose answer the client may not have seen
    ambiguous: set[str] = field(default_factory=set)
    #: message ids of requests answered with a fault status (not recorded)
    refused: dict[int, list[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    requests: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        #: set it to let answers held by ``process_first`` faults go at once (fixtures set it at teardown)
        self.release = threading.Event()
        self.start()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                receiver.handle(self)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening: the next requests get "connection refused"."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what was received -------------------------------------------------------------------------------

    def segment_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.segment_ids)

    def webhook_counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.webhook_ids)

    # -- handling ----------------------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        with self.lock:
            self.requests += 1
            number = self.requests
        try:
            body = json.loads(raw)
        except ValueError:
            return self.answer(request, 400, {"error": "invalid JSON"})
        path = request.path
        ids = self.ids_of(path, body, request)
        fault = self.faults(path, number, body) if self.faults else None
        if fault is not None and fault.drop:
            request.close_connection = True
            request.wfile.flush()
            request.connection.shutdown(2)
            return None
        if fault is not None and fault.status is not None:
            with self.lock:
                self.refused.setdefault(fault.status, []).extend(ids)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return self.answer(request, fault.status, {"error": "injected"}, headers)
        if fault is not None and fault.hang and not fault.process_first:
            time.sleep(fault.hang)
            return self.answer(request, 503, {"error": "too slow"})
        status, reply = self.process(path, body, raw, request)
        if fault is not None and fault.hang:
            with self.lock:
                self.ambiguous.update(ids)
            self.release.wait(fault.hang)
        return self.answer(request, status, reply)

    def ids_of(self, path: str, body: Any, request: BaseHTTPRequestHandler) -> list[str]:
        if path == "/v1/batch":
            return [item.get("messageId", "") for item in body.get("batch", [])]
        if path == "/hook":
            return [request.headers.get("webhook-id", "")]
        return []

    def process(self, path: str, body: Any, raw: bytes, request: BaseHTTPRequestHandler) -> tuple[int, Any]:
        if path == "/v1/batch":
            return self.segment(body, raw, request)
        if path == "/hook":
            return self.webhook(body, raw, request)
        if path == "/slack":
            return self.slack(body)
        return 404, {"error": "no such route"}

    def violation(self, message: str) -> tuple[int, Any]:
        with self.lock:
            self.violations.append(message)
        return 400, {"error": message}

    def segment(self, body: Any, raw: bytes, request: BaseHTTPRequestHandler) -> tuple[int, Any]:
        expected = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return 401, {"error": "bad write key"}
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            return self.violation("no batch")
        if len(batch) > 100:
            return self.violation(f"{len(batch)} items in one batch")
        if len(raw) >= 475_000:
            return self.violation(f"batch of {len(raw)} bytes")
        if "sentAt" not in body:
            return self.violation("no sentAt")
        for item in batch:
            size = len(json.dumps(item).encode())
            if size > 32 * 1024:
                return self.violation(f"item of {size} bytes")
            if item.get("type") != "track" or not item.get("event") or not item.get("userId"):
                return self.violation(f"bad item {item}")
            if not str(item.get("messageId", "")).startswith("audit-"):
                return self.violation(f"bad messageId {item.get('messageId')}")
        with self.lock:
            self.segment_ids.extend(item["messageId"] for item in batch)
        return 200, {"success": True}

    def webhook(self, body: Any, raw: bytes, request: BaseHTTPRequestHandler) -> tuple[int, Any]:
        # Checked by hand here, not with the library's verify(), so the test does not trust the code under test.
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + raw, hashlib.sha256).digest())
        offered = [s.split(",", 1)[1] for s in request.headers.get("webhook-signature", "").split() if "," in s]
        if expected.decode() not in offered:
            return self.violation(f"bad signature for {msg_id}")
        if abs(time.time() - int(stamp or 0)) > 300:
            return self.violation("stale timestamp")
        if body.get("data", {}).get("id") != msg_id:
            return self.violation("webhook-id is not the event id")
        with self.lock:
            self.webhook_ids.append(msg_id)
        return 200, {"ok": True}

    def slack(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body.get("text"), str) or not isinstance(body.get("blocks"), list):
            return 400, "invalid_payload"
        with self.lock:
            self.slack_messages.append(body)
            self.slack_times.append(time.monotonic())
        return 200, "ok"

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, reply: Any, headers: dict[str, str] | None = None
               ) -> None:
        data = (reply if isinstance(reply, str) else json.dumps(reply)).encode()
        try:
            request.send_response(status)
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except OSError:
            pass  # the client gave up (timed out); that is the point of some faults
