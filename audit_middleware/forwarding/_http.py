"""One HTTP POST with the standard library: a timeout, no redirects followed, an SSRF guard, and connections
kept open between posts to the same host.

The guard resolves the host once per connection, refuses private, loopback, link-local, multicast and reserved
addresses (unless the destination was configured with ``allow_private=True``), and connects to exactly the
address it checked, so a DNS answer that changes between the check and the connection cannot slip through.

A connection whose answer was read to its end is kept (HTTP/1.1 keep-alive) for the next post to the same
scheme, host, port and ``allow_private``, for at most :data:`KEEP_IDLE` seconds: a webhook sends one request per
event, and a new connection each time cost a TCP handshake (and, over HTTPS, a TLS handshake) per event. A kept
connection the server has closed meanwhile fails before any answer: the post is made again, once, on a new one.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class TransportError(Exception):
    """The request got no HTTP answer: refused, reset, timed out, or the URL was refused by the guard."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _public(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 (mapped, 6to4, Teredo) is judged as that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    # is_global also excludes the shared address space 100.64.0.0/10 (carrier NAT, some clouds' metadata).
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def check_url(url: str) -> None:
    """Refuse URLs that are not absolute http(s) URLs (at configuration time)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"destination URL must be an absolute http:// or https:// URL, got {shown_url(url)}")


def shown_url(url: str) -> str:
    """What an error message shows of a destination URL: its scheme and host at most. A Slack or webhook
    URL's path is its secret, and the message ends up in logs."""
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:
        return f"'{parts.scheme}://{parts.hostname}/...' (the rest hidden)"
    return f"{url[:8]!r}... ({len(url)} characters, the rest hidden)"


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to, after the SSRF check."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise TransportError(f"cannot resolve {host}: {error}") from error
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private:
        refused = [a for a in addresses if not _public(a)]
        if refused:
            raise TransportError(
                f"refusing to send to {host} ({refused[0]}): a private, loopback or reserved address; "
                "configure the destination with allow_private=True if this is intended",
                permanent=True,
            )
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a pre-resolved address, with SNI and certificate checks for the original host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._ssl_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # As http.client's own connect does: it writes a request's headers and body apart, and with Nagle's
        # algorithm on the body waited for the server's delayed ACK of the headers (43 ms a post on a kept
        # connection, measured, against 0.5).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """Made at the first HTTPS post, not at import: loading the system's CA certificates takes about 20 ms,
    which every process importing forwarding (the first audited write on Django) would otherwise pay."""
    return ssl.create_default_context()


KEEP_IDLE = 4.0
"""Seconds a connection is kept unused before it is closed: under the shortest idle timeouts common servers
apply (Apache's and Node's 5 s), so a kept connection is rarely found closed by the server."""
KEEP_PER_HOST = 16
"""The most unused connections kept for one scheme, host, port and ``allow_private`` (one per post a process's
relays make at once: a webhook's ``parallel`` posts of each relay thread)."""

_Key = tuple[str, str, int, bool]
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux: ACK the answer's first segment at once. A server that writes an answer's headers and body apart without
TCP_NODELAY (Python's ``http.server`` does) holds the body until the headers are ACKed, and on a kept connection
Linux delays that ACK up to 40 ms: 44 ms a post instead of 0.4 on loopback, measured (a new connection's first
ACKs are quick anyway)."""


class _KeptConnections:
    """Connections whose answer was read to its end, kept for the next post to the same place. A process
    forked from this one starts with none (the parent's sockets must not be shared) and with a lock of its own
    (a fork while another thread held the parent's would have left the child's held for good)."""

    def __init__(self) -> None:
        self._forget()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[_Key, list[tuple[float, http.client.HTTPConnection]]] = {}

    def take(self, key: _Key) -> http.client.HTTPConnection | None:
        """The most recently used connection kept for ``key``, or None; the stale ones are closed."""
        now = time.monotonic()
        stale: list[http.client.HTTPConnection] = []
        found = None
        with self._lock:
            for kept_key, kept in list(self._idle.items()):
                fresh = [(at, c) for at, c in kept if now - at < KEEP_IDLE]
                stale.extend(c for at, c in kept if now - at >= KEEP_IDLE)
                if kept_key == key and fresh:
                    found = fresh.pop()[1]
                if fresh:
                    self._idle[kept_key] = fresh
                else:
                    del self._idle[kept_key]
        for connection in stale:
            connection.close()
        return found

    def give_back(self, key: _Key, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            kept = self._idle.setdefault(key, [])
            if len(kept) < KEEP_PER_HOST:
                kept.append((time.monotonic(), connection))
                return
        connection.close()

    def close_all(self) -> None:
        """Close every kept connection (tests; a host app shutting down need not: they are closed at exit)."""
        with self._lock:
            kept, self._idle = self._idle, {}
        for connections in kept.values():
            for _, connection in connections:
                connection.close()


kept_connections = _KeptConnections()


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float = 10.0, allow_private: bool = False
) -> Response:
    """POST ``body``; return the answer whatever its status (3xx included: redirects are never followed).

    Raises :class:`TransportError` when no answer came.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (parts.scheme, host, port, allow_private)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    all_headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Content-Length": str(len(body)),
                   "User-Agent": "audit-middleware", **headers}
    connection = kept_connections.take(key)
    if connection is not None:
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            return _request(connection, key, path, body, all_headers)
        except ConnectionError:
            pass  # closed by the server while kept (nothing was answered): once more on a new connection
        except (OSError, http.client.HTTPException) as error:
            raise _no_answer(parts.scheme, host, port, error) from error
    address = resolve(host, port, allow_private)
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(host, address, port, timeout, _default_ssl_context())
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        return _request(connection, key, path, body, all_headers)
    except (OSError, http.client.HTTPException) as error:
        raise _no_answer(parts.scheme, host, port, error) from error


def _request(connection: http.client.HTTPConnection, key: _Key, path: str, body: bytes,
             headers: dict[str, str]) -> Response:
    """One request on ``connection``: kept for the next post when its answer was read to the end and the server
    keeps it open, closed otherwise (an error included)."""
    kept = False
    try:
        connection.request("POST", path, body=body, headers=headers)
        if _QUICKACK is not None and connection.sock is not None:
            connection.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        answer = connection.getresponse()
        data = answer.read(64 * 1024)
        response = Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)
        if answer.isclosed() and not answer.will_close:
            kept_connections.give_back(key, connection)
            kept = True
        return response
    finally:
        if not kept:
            connection.close()


def _no_answer(scheme: str, host: str, port: int, error: BaseException) -> TransportError:
    kind = "timed out" if isinstance(error, TimeoutError | socket.timeout) else type(error).__name__
    # Never the path or query: a Slack webhook URL's path is its secret, and this text is stored and shown.
    return TransportError(f"POST {scheme}://{host}:{port}: {kind}: {error}")
