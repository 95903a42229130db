"""Forwarding throughput and delay: relays draining the outbox to a local receiver.

    python benchmarks/forwarding.py --backend sqlite --backend postgresql --backend mariadb

For each database:

* throughput: N events already in the outbox, then 1 and then 4 relay processes (``audit-middleware forward
  --batch 100``) drain them to a local Segment-like receiver and, separately, to a webhook receiver (one
  request per event). Events/s counts from the receiver's first request to its last. The baseline, measured
  in the same run, is one process POSTing the same requests straight to the receiver with no database.
* delay: a writer commits 200 events/s (one per transaction) for D seconds while one relay (``--poll 1``, the
  default, then ``--poll 0.1``) forwards them; p50/p99 of receiver arrival time minus commit time. The same
  with the in-process drainer (woken after each commit). The rate actually achieved is printed: on a busy
  machine the writer may not keep up.
"""


import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _workload import median  # noqa: E402
from sqlalchemy_capture import drop_database, fresh_database  # noqa: E402

WRITE_KEY = "wk_bench"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RELAY = "import sys; from audit_middleware.cli import main; sys.exit(main())"


class Receiver:
    """Accepts Segment batches and webhooks; stamps the arrival time of every message id."""

    def __init__(self, nodelay: bool = True, context: Any = None) -> None:
        """``context``: an ``ssl.SSLContext`` to serve HTTPS with (``webhook_latency.py --https``)."""
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # An answer's headers and body go out as two writes: without TCP_NODELAY the body waits for the
            # client's ACK of the headers, which a client may delay by 40 ms on a kept connection (servers in
            # production set it: nginx, Node). webhook_latency.py measures a receiver without it too.
            disable_nagle_algorithm = nodelay

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                if self.path == "/v1/batch":
                    ids = [item["messageId"][len("audit-"):] for item in json.loads(raw)["batch"]]
                else:
                    ids = [self.headers["webhook-id"]]
                with receiver.lock:
                    for i in ids:
                        receiver.arrivals.setdefault(i, now)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base = f"{'https' if context else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def span(self) -> float:
        with self.lock:
            times = list(self.arrivals.values())
        return max(times) - min(times)


def destinations(kind: str, base: str) -> list[Any]:
    from audit_middleware.forwarding import SegmentDestination, WebhookDestination

    if kind == "segment":
        return [SegmentDestination(WRITE_KEY, host=base, allow_private=True)]
    return [WebhookDestination(base + "/hook", SECRET, allow_private=True, name="webhook")]


def make_app(url: str, kind: str, base: str) -> Any:
    from sqlalchemy import String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

    from audit_middleware.adapters.sqlalchemy import track

    class Base(DeclarativeBase):
        pass

    class Warehouse(Base):
        __tablename__ = "warehouses"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        enabled: Mapped[bool] = mapped_column(default=True)

    engine = create_engine(url, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}))
    Base.metadata.create_all(engine)
    session = sessionmaker(engine)
    auditor = track(session, destinations=destinations(kind, base))
    auditor.create_tables()
    auditor.outbox.set_enabled("ws_1", kind, True)
    return engine, session, auditor, Warehouse


def fill(session: Any, model: Any, n: int) -> None:
    from audit_middleware import in_workspace

    with in_workspace("ws_1"), session() as s:
        for start in range(0, n, 500):
            s.add_all([model(name=f"w{i}") for i in range(start, min(n, start + 500))])
            s.commit()


def waiting(engine: Any, auditor: Any) -> int:
    from sqlalchemy import func, select

    table = auditor.outbox.tables.deliveries
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(table)).scalar_one())


def relays(url: str, workdir: str, count: int, *args: str) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", RELAY, "forward", "--database-url", url, "--config",
                              "bench_config:DESTINATIONS", "--quiet", *args], cwd=workdir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.send_signal(signal.SIGTERM)
    for p in processes:
        p.wait(60)


def baseline(kind: str, base: str, n: int, receiver: Receiver) -> float:
    """Events/s of the same requests sent straight from one process, no database involved."""
    from audit_middleware import Actor
    from audit_middleware.events import AuditEvent
    from audit_middleware.ids import new_event_id

    (destination,) = destinations(kind, base)
    receiver.reset()
    events = [AuditEvent(new_event_id(), __import__("datetime").datetime.now(), "Warehouse Created",
                         "Warehouses", "created", Actor.user("1", "a"), "Warehouse", str(i), f"w{i}", "ws_1",
                         {"name": [None, f"w{i}"]}) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 100):
        destination.deliver(events[i:i + 100])
    return n / (time.perf_counter() - start)


def throughput(backend: str, kind: str, n: int, relay_count: int, receiver: Receiver, workdir: str) -> float:
    url, name = fresh_database(backend, workdir)
    try:
        engine, session, auditor, model = make_app(url, kind, receiver.base)
        fill(session, model, n)
        receiver.reset()
        processes = relays(url, workdir, relay_count, "--batch", "100", "--poll", "0.2")
        try:
            deadline = time.monotonic() + 600
            while receiver.count() < n and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop(processes)
        assert receiver.count() == n, f"only {receiver.count()} of {n} arrived"
        rate = n / receiver.span()
        auditor.remove()
        engine.dispose()
        return rate
    finally:
        drop_database(backend, name)


def delays(backend: str, rate: int, seconds: float, receiver: Receiver, workdir: str, drainer: bool,
           poll: float = 1.0) -> tuple[float, float, int]:
    from audit_middleware import in_workspace
    from audit_middleware.signals import event_recorded

    url, name = fresh_database(backend, workdir)
    committed: dict[str, float] = {}

    def stamp(sender: Any, events: list[Any], **_: Any) -> None:
        now = time.time()
        for e in events:
            committed[e.id] = now

    try:
        engine, session, auditor, model = make_app(url, "segment", receiver.base)
        event_recorded.connect(stamp, weak=False)
        receiver.reset()
        processes: list[subprocess.Popen[bytes]] = []
        handle = None
        if drainer:
            handle = auditor.start_drainer(poll=1.0)
        else:
            processes = relays(url, workdir, 1, "--batch", "100", "--poll", str(poll))
            time.sleep(2)  # let the relay start before the clock runs
        total = int(rate * seconds)
        start = time.perf_counter()
        with in_workspace("ws_1"), session() as s:
            for i in range(total):
                due = start + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                s.add(model(name=f"w{i}"))
                s.commit()
        deadline = time.monotonic() + 120
        while receiver.count() < total and time.monotonic() < deadline:
            time.sleep(0.05)
        stop(processes)
        if handle is not None:
            handle.disconnect()
            handle.stop()
        event_recorded.disconnect(stamp)
        with receiver.lock:
            lags = sorted(receiver.arrivals[i] - committed[i] for i in committed if i in receiver.arrivals)
        achieved = total / (time.perf_counter() - start)
        assert len(lags) == total, f"{len(lags)} of {total} arrived"
        auditor.remove()
        engine.dispose()
        return lags[len(lags) // 2] * 1000, lags[int(len(lags) * 0.99)] * 1000, round(achieved)
    finally:
        drop_database(backend, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql", "mariadb"])
    parser.add_argument("--events", type=int, default=20_000, help="events drained in the throughput runs")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady-rate run")
    parser.add_argument("--rate", type=int, default=200, help="events/s of the steady-rate run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput runs per figure (the median is shown)")
    args = parser.parse_args()
    if args.events < 200:  # the rate runs from the first batch's arrival to the last's: one batch has no span
        parser.error("--events: at least 200 (two of the relays' batches of 100)")
    receiver = Receiver()
    workdir = tempfile.mkdtemp(prefix="audit-bench-")
    try:
        with open(os.path.join(workdir, "bench_config.py"), "w") as handle:
            handle.write(textwrap.dedent(f"""
                from audit_middleware.forwarding import SegmentDestination, WebhookDestination
                DESTINATIONS = [SegmentDestination({WRITE_KEY!r}, host={receiver.base!r}, allow_private=True),
                                WebhookDestination({receiver.base + "/hook"!r}, {SECRET!r}, allow_private=True)]
            """))
        for kind in ("segment", "webhook"):
            n = args.events if kind == "segment" else min(args.events, 5000)
            base_rate = median([baseline(kind, receiver.base, n, receiver) for _ in range(args.rounds)])
            print(f"baseline {kind}: direct POSTs, no database: {base_rate:,.0f} events/s", flush=True)
            for backend in args.backend or ["sqlite"]:
                for count in (1, 4):
                    rate = median([throughput(backend, kind, n, count, receiver, workdir)
                                   for _ in range(args.rounds)])
                    print(f"{backend:10} {kind:7} {count} relay(s): {rate:8,.0f} events/s "
                          f"({rate / base_rate:.2f}x baseline; {n} events, median of {args.rounds})", flush=True)
        for backend in args.backend or ["sqlite"]:
            for drainer, poll in ((False, 1.0), (False, 0.1), (True, 1.0)):
                p50, p99, achieved = delays(backend, args.rate, args.seconds, receiver, workdir, drainer, poll)
                how = "in-process drainer" if drainer else f"1 relay, --poll {poll:g}"
                print(f"{backend:10} delay at {achieved} events/s ({how}): p50 {p50:.0f} ms, p99 {p99:.0f} ms",
                      flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
