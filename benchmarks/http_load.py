"""Requests per second over loopback, with a real load generator (wrk) against real WSGI servers
(gunicorn), of a Flask app and a Django site with and without audit-middleware.

    apt-get install -y wrk                                   # the load generator
    .venv/bin/pip install -r benchmarks/requirements.txt     # gunicorn (benchmark-only)
    .venv/bin/python benchmarks/http_load.py --framework flask --framework django \\
        --backend sqlite --backend postgresql --rounds 5 --duration 5s

The apps are in ``benchmarks/http_apps/`` (one module per framework, configured by environment variables).
For each framework and backend, two databases are created (a SQLite file each, or a fresh PostgreSQL
database each, dropped at the end), each seeded with a user and 100 warehouses, and two gunicorn servers
(sync worker, 1 worker) listen on random loopback ports: one app without audit-middleware, one with it
(Flask: ``AuditTrail(app, db)``; Django: the app, ``AuditMiddleware`` and the admin URLs). Both apps are the
same otherwise: the same signed-in user's session cookie on every request (Flask-Login; Django sessions and
auth), CSRF on Django's POST route, the actor resolved the way the README describes.

Routes: ``GET /hello`` (changes nothing) and ``POST /warehouses/<id>`` (``login_required``; loads one row,
changes ``schedule`` and ``settings``, commits one transaction; ids go round-robin over the 100 rows and every
request sends new values, so every audited request records one "Warehouse Modified"). wrk
(``-t1 -c4`` by default: one thread, four connections; a short fixed duration per run) drives one server at a
time; the two variants alternate in every round (without, with; then with, without). Printed: median
requests/s, with ÷ without, milliseconds added per request, median p50 latency, the gunicorn worker's CPU time
per request (steadier than wall time on a shared machine), the issue's targets, and the audit events the
audited server wrote against the write requests wrk completed.

Targets (the project's issue): the read-only route no more than 5% lower (ratio >= 0.95); the write route no
more than the capture target (at most x1.15 per write, i.e. ratio >= 0.87, and at most +0.2 ms per write).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _workload import median  # noqa: E402

PG = os.environ.get("AUDIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
VARIANTS = ("without", "with")
ROUTES = ("hello", "write")
FRAMEWORKS = {"flask": "http_apps.flask_app:create_app()", "django": "http_apps.django_app:application"}
READ_TARGET = 0.95
WRITE_TARGET_RATIO = 1 / 1.15
WRITE_TARGET_ADDED_MS = 0.2

# One wrk script for both routes (args: route, nonce, rows). For the write route every request gets the
# next id round-robin and values no earlier request sent (the nonce is unique per run), so it always changes
# the row. done() prints the summary as JSON for the parent to read.
WRK_SCRIPT = r"""
local route, nonce, rows, counter = "hello", 0, 1, 0
local hello, headers
init = function(args)
  route, nonce, rows = args[1], tonumber(args[2]), tonumber(args[3])
end
request = function()
  if route == "hello" then
    if not hello then hello = wrk.format("GET", "/hello") end
    return hello
  end
  if not headers then
    headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  counter = counter + 1
  local body = "schedule=s" .. nonce .. "-" .. counter .. "&batch_size=" .. (nonce * 1000000 + counter)
  return wrk.format("POST", "/warehouses/" .. ((counter % rows) + 1), headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %.0f, "duration_us": %.0f, "connect": %.0f, "read": %.0f, "write": %.0f, ' ..
    '"status": %.0f, "timeout": %.0f, "p50_us": %.1f, "p99_us": %.1f, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass
class Run:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # the gunicorn worker's CPU time per request
    socket_errors: int


@dataclass
class Server:
    framework: str
    variant: str
    database: dict[str, Any]
    headers: dict[str, str]
    process: subprocess.Popen[bytes]
    port: int
    log: str
    write_requests: int = 0  # completed by wrk, warm-up included
    runs: dict[str, list[Run]] = field(default_factory=dict)


# -- databases ---------------------------------------------------------------------------------------------

def fresh_database(backend: str, workdir: str) -> tuple[dict[str, Any], Callable[[], None]]:
    if backend == "sqlite":
        path = os.path.join(workdir, f"http-bench-{uuid.uuid4().hex[:8]}.sqlite3")

        def remove() -> None:
            for suffix in ("", "-journal", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)

        return {"backend": "sqlite", "name": path}, remove
    import psycopg

    server = urlsplit(PG)
    name = f"audit_bench_{uuid.uuid4().hex[:10]}"
    admin = {"host": server.hostname, "port": server.port or 5432, "user": server.username or "postgres"}
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return {"backend": "postgresql", "name": name, **admin}, drop


def audit_events(database: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(event, actor type, actor name, count) in the audit table."""
    sql = ("SELECT event, actor_type, COALESCE(actor_name, ''), COUNT(*) FROM audit_events "
           "GROUP BY event, actor_type, actor_name ORDER BY 4 DESC")
    if database["backend"] == "sqlite":
        import sqlite3

        connection = sqlite3.connect(database["name"])
        try:
            return [tuple(row) for row in connection.execute(sql)]  # type: ignore[misc]
        finally:
            connection.close()
    import psycopg

    params = {k: database[k] for k in ("host", "port", "user")}
    with psycopg.connect(dbname=database["name"], **params) as connection:
        return [tuple(row) for row in connection.execute(sql)]  # type: ignore[misc]


# -- servers -----------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(database: dict[str, Any], audited: bool) -> dict[str, str]:
    env = dict(os.environ, HTTP_BENCH_DATABASE=json.dumps(database), HTTP_BENCH_AUDITED="1" if audited else "0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    return env


def pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(framework: str, variant: str, database: dict[str, Any], workdir: str,
                 cpu: int | None) -> Server:
    env = child_env(database, variant == "with")
    setup = subprocess.run([sys.executable, __file__, "--child-setup", framework], env=env,
                           capture_output=True, text=True)
    if setup.returncode:
        raise SystemExit(f"{framework}/{variant}: setup failed:\n{setup.stderr}")
    headers = json.loads(setup.stdout.strip().splitlines()[-1])
    port = free_port()
    log = os.path.join(workdir, f"gunicorn-{framework}-{variant}-{port}.log")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--worker-class", "sync", "--pythonpath", HERE, "--error-logfile", log, "--log-level", "warning",
         FRAMEWORKS[framework]],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(cpu),
    )
    server = Server(framework, variant, database, headers, process, port, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{framework}/{variant}: gunicorn exited ({process.returncode}):\n{read(log)}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/hello")
            if connection.getresponse().status == 200:
                connection.close()
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise SystemExit(f"{framework}/{variant}: not answering on port {port}:\n{read(log)}")
        time.sleep(0.1)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()[-4000:]
    except OSError:
        return ""


def worker_cpu_seconds(server: Server) -> float | None:
    """User + system CPU seconds of the gunicorn worker (the master's one child), from /proc (Linux)."""
    pid = server.process.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        if len(children) != 1:
            return None
        with open(f"/proc/{children[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# -- the load generator ------------------------------------------------------------------------------------

def run_wrk(server: Server, route: str, nonce: int, args: argparse.Namespace, script: str,
            duration: str) -> Run:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}", "--timeout", "10s",
               "-s", script]
    for name, value in {"User-Agent": "wrk", **server.headers}.items():
        command += ["-H", f"{name}: {value}"]
    from http_apps import ROWS

    command += [f"http://127.0.0.1:{server.port}", "--", route, str(nonce), str(ROWS)]
    cpu_before = worker_cpu_seconds(server)
    out = subprocess.run(command, capture_output=True, text=True, preexec_fn=pinned(args.wrk_cpu))
    cpu_after = worker_cpu_seconds(server)
    if out.returncode:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    rps_match = re.search(r"^Requests/sec:\s+([\d.]+)", out.stdout, re.MULTILINE)
    json_match = re.search(r"^WRKJSON (.*)$", out.stdout, re.MULTILINE)
    if not rps_match or not json_match:
        raise SystemExit(f"could not read wrk's output:\n{out.stdout}\n{out.stderr}")
    summary = json.loads(json_match.group(1))
    requests = int(summary["requests"])
    if summary["status"] or not requests:
        raise SystemExit(f"{server.framework}/{server.variant} {route}: {summary['status']} responses with an "
                         f"error status out of {requests}; server log:\n{read(server.log)}\n{out.stdout}")
    if route == "write":
        server.write_requests += requests
    cpu_us = None
    if cpu_before is not None and cpu_after is not None:
        cpu_us = (cpu_after - cpu_before) / requests * 1e6
    socket_errors = sum(int(summary[k]) for k in ("connect", "read", "write", "timeout"))
    return Run(float(rps_match.group(1)), requests, summary["p50_us"] / 1000, summary["p99_us"] / 1000, cpu_us,
               socket_errors)


# -- the report --------------------------------------------------------------------------------------------

def verdict(route: str, ratio: float, added_ms: float) -> str:
    if route == "hello":
        return f"ratio >= {READ_TARGET:.2f}: {'met' if ratio >= READ_TARGET else 'NOT MET'}"
    met = ratio >= WRITE_TARGET_RATIO and added_ms <= WRITE_TARGET_ADDED_MS
    return f"ratio >= {WRITE_TARGET_RATIO:.2f}, <= +{WRITE_TARGET_ADDED_MS} ms: {'met' if met else 'NOT MET'}"


def report(framework: str, backend: str, servers: dict[str, Server], args: argparse.Namespace) -> None:
    atomic = ", ATOMIC_REQUESTS" if args.atomic_requests and framework == "django" else ""
    atomic += ", saves in autocommit" if args.autocommit_save and framework == "django" else ""
    print(f"\n## {framework}, {backend}{atomic}: wrk -t{args.threads} -c{args.connections} -d{args.duration}, "
          f"median of {args.rounds} round(s)")
    print(f"{'route':<6} {'without req/s':>13} {'with req/s':>11} {'with/without':>12} {'added ms/req':>12} "
          f"{'p50 ms w/o / with':>18} {'worker CPU us/req w/o / with':>29}  target")
    for route in ROUTES:
        without, with_ = servers["without"].runs[route], servers["with"].runs[route]
        rps_without, rps_with = median([r.rps for r in without]), median([r.rps for r in with_])
        ratio, added_ms = rps_with / rps_without, (1 / rps_with - 1 / rps_without) * 1000
        p50 = f"{median([r.p50_ms for r in without]):.2f} / {median([r.p50_ms for r in with_]):.2f}"
        cpus = [[r.cpu_us for r in runs if r.cpu_us is not None] for runs in (without, with_)]
        cpu = f"{median(cpus[0]):.0f} / {median(cpus[1]):.0f}" if all(cpus) else "n/a"
        print(f"{route:<6} {rps_without:>13.0f} {rps_with:>11.0f} {ratio:>12.3f} {added_ms:>+12.3f} {p50:>18} "
              f"{cpu:>29}  {verdict(route, ratio, added_ms)}")
    for variant in VARIANTS:
        for route in ROUTES:
            runs = servers[variant].runs[route]
            errors = sum(r.socket_errors for r in runs)
            print(f"  per round, {route:<5} {variant:<7}: " + " ".join(f"{r.rps:.0f}" for r in runs)
                  + " req/s" + (f" ({errors} socket errors)" if errors else ""))
    audited = servers["with"]
    events = audit_events(audited.database)
    modified = sum(n for event, *_, n in events if event == "Warehouse Modified")
    runs = args.rounds + 1  # and the warm-up
    print("  audit events in the audited database: "
          + "; ".join(f"{event} by {kind} {name or '-'}: {n}" for event, kind, name, n in events))
    print(f"  write requests wrk completed against it: {audited.write_requests} (warm-up included; up to "
          f"{args.connections} per run can complete after wrk stops, so expect {audited.write_requests} to "
          f"{audited.write_requests + args.connections * runs})")
    if not audited.write_requests <= modified <= audited.write_requests + args.connections * runs:
        print("  WARNING: the audit event count does not match the write requests")


def bench(framework: str, backend: str, args: argparse.Namespace, workdir: str, script: str,
          nonce: list[int]) -> None:
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for variant in VARIANTS:
            database, drop = fresh_database(backend, workdir)
            stack.callback(drop)
            server = start_server(framework, variant, database, workdir, args.server_cpu)
            stack.callback(stop_server, server)
            servers[variant] = server
        for variant in VARIANTS:  # warm-up: imports, connections, caches
            for route in ROUTES:
                nonce[0] += 1
                run_wrk(servers[variant], route, nonce[0], args, script, args.warmup)
        for round_no in range(args.rounds):
            order = VARIANTS if round_no % 2 == 0 else tuple(reversed(VARIANTS))
            for route in ROUTES:
                for variant in order:
                    nonce[0] += 1
                    run = run_wrk(servers[variant], route, nonce[0], args, script, args.duration)
                    servers[variant].runs.setdefault(route, []).append(run)
        for server in servers.values():
            stop_server(server)  # before counting, so no request is still being written
        report(framework, backend, servers, args)


def child_setup(framework: str) -> None:
    """In a subprocess (Django configures itself once per process): create and seed the database, print the
    headers of a signed-in user's requests."""
    sys.path.insert(0, HERE)
    if framework == "flask":
        from http_apps import flask_app

        headers = flask_app.setup()
    else:
        from http_apps import django_app

        headers = django_app.setup()
    print(json.dumps(headers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", action="append", choices=tuple(FRAMEWORKS))
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", default="5s", help="wrk's -d per measured run")
    parser.add_argument("--warmup", default="1s", help="wrk's -d per warm-up run (each route and variant)")
    parser.add_argument("--threads", type=int, default=1, help="wrk's -t")
    parser.add_argument("--connections", type=int, default=4, help="wrk's -c")
    parser.add_argument("--atomic-requests", action="store_true",
                        help="Django: ATOMIC_REQUESTS = True (each request one transaction), with and without the "
                             "trail alike")
    parser.add_argument("--autocommit-save", action="store_true",
                        help="Django: the write view saves outside transaction.atomic(), each save a transaction of "
                             "its own (Django's default; on PostgreSQL the audited update is then one statement)")
    parser.add_argument("--conn-max-age", type=int, default=None,
                        help="Django: CONN_MAX_AGE (default: 0 on SQLite, Django's own default; 600 on PostgreSQL)")
    parser.add_argument("--pin", action="store_true",
                        help="pin wrk to CPU 0 and the gunicorn servers to CPU 1 (sched_setaffinity)")
    parser.add_argument("--workdir", default=None,
                        help="SQLite files and gunicorn logs (default: a temp dir, removed at the end)")
    parser.add_argument("--child-setup", choices=tuple(FRAMEWORKS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_setup:
        child_setup(args.child_setup)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk (the HTTP load generator) is not installed. Install it with "
                         "`apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS), "
                         "or build it from https://github.com/wg/wrk.")
    import importlib.util

    if importlib.util.find_spec("gunicorn") is None:
        raise SystemExit(f"gunicorn is not installed in {sys.prefix}: "
                         f"{sys.executable} -m pip install -r benchmarks/requirements.txt")
    args.server_cpu, args.wrk_cpu = (1, 0) if args.pin else (None, None)
    if args.atomic_requests:
        os.environ["HTTP_BENCH_ATOMIC_REQUESTS"] = "1"  # read by the Django app in each server
    if args.conn_max_age is not None:
        os.environ["HTTP_BENCH_CONN_MAX_AGE"] = str(args.conn_max_age)
    if args.autocommit_save:
        os.environ["HTTP_BENCH_AUTOCOMMIT_SAVE"] = "1"  # read by the Django app in each server
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="http-bench-")
    os.makedirs(workdir, exist_ok=True)
    script = os.path.join(workdir, "http_load.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)

    from importlib.metadata import version

    print(f"python={sys.version.split()[0]} gunicorn={version('gunicorn')} flask={version('flask')} "
          f"django={version('django')} sqlalchemy={version('sqlalchemy')} "
          f"{subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.split(' [')[0]} "
          f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.2f} pin={args.pin} workdir={workdir}")
    nonce = [0]
    try:
        for backend in args.backend or ["sqlite"]:
            for framework in args.framework or list(FRAMEWORKS):
                bench(framework, backend, args, workdir, script, nonce)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
