"""Webhook throughput of one relay when the receiver is a network's round trip away, for the code as it is and,
with ``--before REV``, as it was at a git revision (interleaved, in the same run).

    python benchmarks/webhook_latency.py --rtt 0 --rtt 20 --rtt 80 --before REV

A webhook is one POST per event, so a relay's webhook throughput is bound by the time each POST takes, and a
new connection per POST adds a TCP handshake to each (and a TLS handshake over HTTPS). On loopback a handshake
costs nearly nothing, so ``forwarding.py`` cannot show it: here the receiver (``forwarding.py``'s) sits behind a
loopback proxy that holds every chunk it passes ``RTT / 2`` milliseconds in each direction, and holds a new
connection's first request one ``RTT`` more (the round trip of the TCP handshake a real network charges before
a request can be sent). Plain HTTP: a TLS handshake, which a real HTTPS endpoint charges on top, is not
modelled, so a new connection costs here less than it would over HTTPS. ``--https`` adds, for each RTT, a row with
the receiver serving HTTPS (a self-signed certificate made with ``openssl``, trusted by the relay through
``SSL_CERT_FILE``): a new connection then costs a TLS 1.3 handshake too, one round trip more and its CPU.

``--nagle``: one row more, the relay posting straight to a receiver without ``TCP_NODELAY`` (no proxy), which
writes an answer's headers and body apart (Python's ``http.server`` does): on a kept connection its body waits
for the client's ACK of the headers, which Linux delays up to 40 ms unless the client asks for a quick ACK.

``--parallel N`` (repeatable; default 1 and 4): the webhook's ``parallel`` (its events posted N at a time), one
variant each; the code of ``--before`` is run with its own defaults.

For each RTT: ``--events`` events in the outbox of a SQLite file (a database on loopback would add nothing the
two variants differ by), then one ``audit-middleware forward`` process drains them to the webhook; events/s
from the receiver's first request to its last, median of ``--rounds``; the variants alternate in every round.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from _revision import before_variant  # noqa: E402
from _workload import median  # noqa: E402
from forwarding import RELAY, SECRET, Receiver, fill, make_app, stop  # noqa: E402


class LatencyProxy:
    """Passes TCP connections on to ``target`` (host, port), each chunk held ``rtt / 2`` seconds on its way in
    either direction, and a new connection's first chunk from the client ``rtt`` seconds more. Chunks keep their
    order and are held from the moment they arrive (not one after the other): what a link's latency does."""

    def __init__(self, target: tuple[str, int], rtt: float) -> None:
        self.target = target
        self.rtt = rtt
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            self.connections += 1
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._link(client, upstream, self.rtt)  # the handshake's round trip, before the first request
            self._link(upstream, client, 0.0)

    def _link(self, source: socket.socket, sink: socket.socket, first_extra: float) -> None:
        held: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def receive() -> None:
            extra = first_extra
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                held.put((time.monotonic() + self.rtt / 2 + extra, data))
                extra = 0.0
                if not data:
                    return

        def send() -> None:
            while True:
                due, data = held.get()
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if not data:
                    try:
                        sink.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=receive, daemon=True).start()
        threading.Thread(target=send, daemon=True).start()


def drain_rate(url_base: str, n: int, workdir: str, env: dict[str, str], receiver: Receiver) -> float:
    """Events/s of one relay process (``env`` added to its environment: ``PYTHONPATH`` for another revision,
    ``BENCH_PARALLEL`` for the webhook's ``parallel``) draining ``n`` webhook deliveries to ``url_base``."""
    database = os.path.join(workdir, f"outbox-{time.monotonic_ns()}.sqlite3")
    url = f"sqlite:///{database}"
    engine, session, auditor, model = make_app(url, "webhook", url_base)
    fill(session, model, n)
    auditor.remove()
    engine.dispose()
    receiver.reset()
    relay = subprocess.Popen([sys.executable, "-c", RELAY, "forward", "--database-url", url, "--config",
                              "bench_config:DESTINATIONS", "--quiet", "--batch", "100", "--poll", "0.2"],
                             cwd=workdir, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while receiver.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop([relay])
        os.remove(database)
    assert receiver.count() == n, f"only {receiver.count()} of {n} arrived"
    return n / receiver.span()


def server_context(workdir: str) -> ssl.SSLContext:
    """A TLS server context with a fresh self-signed certificate for 127.0.0.1, which the relays trust: its file is
    put in ``SSL_CERT_FILE`` (read by the relay processes' default SSL context)."""
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.environ["SSL_CERT_FILE"] = cert
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt", type=float, action="append", help="round trip in ms (repeatable; default 0, 20)")
    parser.add_argument("--events", type=int, default=300, help="events drained a run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also the code at git revision REV")
    parser.add_argument("--parallel", type=int, action="append",
                        help="the webhook's parallel, one variant each (repeatable; default 1 and 4)")
    parser.add_argument("--https", action="store_true", help="also each RTT with the receiver serving HTTPS")
    parser.add_argument("--nagle", action="store_true",
                        help="also straight to a receiver without TCP_NODELAY, no proxy")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="audit-bench-webhook-")
    receiver = Receiver()
    target = ("127.0.0.1", int(receiver.base.rsplit(":", 1)[1]))
    variants: dict[str, dict[str, str]] = {
        **{label: {"PYTHONPATH": path} for label, path in before_variant(args.before, workdir).items()},
        **{f"parallel={n}": {"BENCH_PARALLEL": str(n)} for n in args.parallel or [1, 4]},
    }
    try:
        print("| RTT | " + " | ".join(f"{label}: events/s (connections)" for label in variants) + " |\n|---|"
              + "---|" * len(variants), flush=True)
        rows: list[tuple[str, Receiver, LatencyProxy | None]] = [
            (f"{rtt:g} ms", receiver, LatencyProxy(target, rtt / 1000)) for rtt in args.rtt or [0.0, 20.0]]
        if args.https:
            secure = Receiver(context=server_context(workdir))
            secure_target = ("127.0.0.1", int(secure.base.rsplit(":", 1)[1]))
            rows += [(f"{rtt:g} ms, HTTPS", secure, LatencyProxy(secure_target, rtt / 1000))
                     for rtt in args.rtt or [0.0, 20.0]]
        if args.nagle:
            rows.append(("0 ms, straight to a receiver without TCP_NODELAY", Receiver(nodelay=False), None))
        for row, row_receiver, proxy in rows:
            scheme = row_receiver.base.split(":", 1)[0]
            base = f"{scheme}://127.0.0.1:{proxy.port}" if proxy else row_receiver.base
            with open(os.path.join(workdir, "bench_config.py"), "w") as handle:
                handle.write(textwrap.dedent(f"""
                    import os
                    from audit_middleware.forwarding import WebhookDestination
                    PARALLEL = {{"parallel": int(os.environ["BENCH_PARALLEL"])}} if "BENCH_PARALLEL" in os.environ else {{}}
                    DESTINATIONS = [WebhookDestination({base + "/hook"!r}, {SECRET!r}, allow_private=True,
                                                       name="webhook", **PARALLEL)]
                """))
            rates: dict[str, list[float]] = {label: [] for label in variants}
            connections: dict[str, list[int]] = {label: [] for label in variants}
            for round_number in range(args.rounds):
                order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
                for label in order:
                    opened = proxy.connections if proxy else 0
                    rate = drain_rate(base, args.events, workdir, variants[label], row_receiver)
                    rates[label].append(rate)
                    if proxy:
                        connections[label].append(proxy.connections - opened)
            print(f"| {row} | " + " | ".join(
                f"{median(rates[label]):,.1f}" + (f" ({min(connections[label])} to {max(connections[label])})"
                                                  if proxy else "")
                for label in variants) + " |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
