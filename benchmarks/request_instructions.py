"""Instructions, not seconds: what a request costs the Flask and Django apps of ``http_load.py`` with and without
audit-middleware, counted by ``valgrind --tool=callgrind`` in process (the WSGI app called directly: the web
server's own work, which dilutes ours over HTTP, is not counted).

    .venv/bin/python benchmarks/request_instructions.py --framework flask --framework django [--requests 2000]
        [--write] [--conn-max-age 600] [--before REV] [--backend postgresql]

For each framework and variant, two processes run under callgrind, side by side: one builds the app on a
fresh SQLite file, or with ``--backend postgresql`` on a fresh PostgreSQL database (``http_apps``'
``setup()``: migrate, seed, sign in), warms it with 50 requests and then serves ``--requests`` more, the other
stops after the warm-up; a request's instructions are the difference divided by ``--requests``. Routes: ``GET
/hello`` (changes nothing) and, with ``--write``, ``POST /warehouses/<id>`` (updates one row). On PostgreSQL
the client's side of each round trip is counted (psycopg, the socket calls' user-space part), not the server's
work nor the time waiting for it. Needs valgrind; about 2 minutes a framework and route. ``--before REV`` also counts the audited apps with audit-middleware as it was at git
revision REV (exported onto ``PYTHONPATH``, as ``batch_instructions.py`` does).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _callgrind import instructions  # noqa: E402
from _revision import export_revision  # noqa: E402
from http_load import fresh_database  # noqa: E402

WARM_UP = 50


def child(framework: str, route: str, requests: int) -> None:
    if framework == "django":
        from http_apps import django_app

        headers = django_app.setup()
        app = django_app.application
    else:
        from http_apps import flask_app

        headers = flask_app.setup()
        app = flask_app.create_app()

    def start_response(status: str, _headers: list, _exc_info: object = None) -> None:
        assert status.startswith("200"), status

    def environ(i: int) -> dict:
        body = b""
        base = {"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "wsgi.url_scheme": "http",
                "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
                "HTTP_USER_AGENT": "bench/1.0", "HTTP_COOKIE": headers["Cookie"]}
        if route == "hello":
            base.update(REQUEST_METHOD="GET", PATH_INFO="/hello")
        else:
            body = f"schedule=@every-{i}&batch_size={i % 500 + 1}".encode()
            base.update(REQUEST_METHOD="POST", PATH_INFO=f"/warehouses/{i % 100 + 1}",
                        CONTENT_TYPE="application/x-www-form-urlencoded", CONTENT_LENGTH=str(len(body)),
                        HTTP_X_CSRFTOKEN=headers.get("X-CSRFToken", ""))
        return {**base, "wsgi.input": io.BytesIO(body)}

    for i in range(WARM_UP + requests):
        b"".join(app(environ(i), start_response))


def count(framework: str, route: str, audited: str, requests: int, workdir: str, pythonpath: str | None = None,
          backend: str = "sqlite") -> int:
    """Instructions of a child process serving ``requests`` after the warm-up, on a database of its own (a
    SQLite file, or a PostgreSQL database created for it and dropped after; ``pythonpath``: audit-middleware
    exported from another revision, first on the path)."""
    database, drop = fresh_database(backend, workdir)
    env = {**os.environ, "HTTP_BENCH_AUDITED": audited, "HTTP_BENCH_DATABASE": json.dumps(database),
           **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    try:
        return instructions([sys.executable, __file__, "--child", framework, route, str(requests)], env, workdir,
                            {}, cwd=os.path.dirname(os.path.abspath(__file__)))["total"]
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", action="append", choices=("flask", "django"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="also the route that updates one row")
    parser.add_argument("--conn-max-age", type=int, default=None,
                        help="Django: CONN_MAX_AGE (default 0, Django's: SQLite opened and its schema read per request)")
    parser.add_argument("--before", metavar="REV", help="also count the audited apps with audit-middleware as of "
                                                           "this git revision")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the apps' database: a SQLite file (default) or PostgreSQL on loopback "
                             "(AUDIT_BENCH_PG), where the instructions include psycopg's and not the server's")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    routes = ["hello", "write"] if args.write else ["hello"]
    if args.conn_max_age is not None:
        os.environ["HTTP_BENCH_CONN_MAX_AGE"] = str(args.conn_max_age)  # read by the Django app in each child
    persistent = f", Django CONN_MAX_AGE {os.environ.get('HTTP_BENCH_CONN_MAX_AGE') or 0}"
    backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[args.backend]
    print(f"\n## Instructions a request, in process (callgrind), {backend}, {args.requests:,} requests{persistent}")
    print("| framework | route | without audit-middleware | with | ratio | added |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        variants: list[tuple[str, str, str | None]] = [("0", "with", None), ("1", "with", None)]
        if args.before:
            variants.insert(1, ("1", f"with, at {args.before}", export_revision(args.before, workdir)))
        for framework in args.framework or ["flask", "django"]:
            for route in routes:
                per_request = []
                for audited, label, pythonpath in variants:
                    with ThreadPoolExecutor(2) as pool:
                        runs = [pool.submit(count, framework, route, audited, n, workdir, pythonpath, args.backend)
                                for n in (args.requests, 0)]
                        served, warmed = (run.result() for run in runs)
                    per_request.append((label, (served - warmed) / args.requests))
                without = per_request[0][1]
                for label, with_ in per_request[1:]:
                    print(f"| {framework} | {route} ({label}) | {without:,.0f} | {with_:,.0f} | "
                          f"×{with_ / without:.3f} | {with_ - without:+,.0f} |")


if __name__ == "__main__":
    main()
