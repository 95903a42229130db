"""One HTTP POST with the standard library: a timeout, no redirects followed, and an SSRF guard.

The guard resolves the host once, refuses private, loopback, link-local, multicast and reserved addresses
(unless the destination was configured with ``allow_private=True``), and connects to exactly the address it
checked, so a DNS answer that changes between the check and the connection cannot slip through.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
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
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """Made at the first HTTPS post, not at import: loading the system's CA certificates takes about 20 ms,
    which every process importing forwarding (the first audited write on Django) would otherwise pay."""
    return ssl.create_default_context()


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float = 10.0, allow_private: bool = False
) -> Response:
    """POST ``body``; return the answer whatever its status (3xx included: redirects are never followed).

    Raises :class:`TransportError` when no answer came.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve(host, port, allow_private)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(host, address, port, timeout, _default_ssl_context())
    else:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
    all_headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Content-Length": str(len(body)),
                   "User-Agent": "audit-middleware", **headers}
    try:
        connection.request("POST", path, body=body, headers=all_headers)
        answer = connection.getresponse()
        data = answer.read(64 * 1024)
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)
    except (OSError, http.client.HTTPException) as error:
        kind = "timed out" if isinstance(error, TimeoutError | socket.timeout) else type(error).__name__
        # Never the path or query: a Slack webhook URL's path is its secret, and this text is stored and shown.
        raise TransportError(f"POST {parts.scheme}://{host}:{port}: {kind}: {error}") from error
    finally:
        connection.close()
