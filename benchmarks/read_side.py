"""Read side at scale: the admin view's first page and CSV export over a large trail.

    python benchmarks/read_side.py --backend sqlite --backend postgresql --events 1000000
    python benchmarks/read_side.py --backend mariadb --events 1000000

Generates the events once per backend (kept between runs in benchmarks/out/ for SQLite and in the PostgreSQL
or MariaDB database ``audit_bench_read_<N>``; ``--fresh`` regenerates), then measures at the store level:
- the first page (50 rows) filtered by actor + event + a 30-day window, and by resource: p50 / p99 over
  many random filters;
- CSV export of one workspace through ``CsvExport`` (what the admin views and the CLI use: PostgreSQL's COPY
  on PostgreSQL, the stored rows formatted in Python elsewhere): rows/s and the exporting process's peak RSS
  growth, in a subprocess, for two export sizes (RSS must not grow with the row count). The capped one stops
  after 5,000 rows, so its rows/s is also how soon the first rows come.
The same pages' full response time through the Flask and Django admin views: ``benchmarks/admin_pages.py``.
The events' context is a request's, as the adapters record it: its id, method, path, IP address and user agent
(a browser's for people: Chrome's and Safari's hold a comma, which the CSV quotes; a script's for access tokens).
Trails generated before 2026-12-07, 22:00 UTC hold only the id, the address and ``Mozilla/5.0`` for everybody,
which needs no quoting: ``--fresh`` makes them again.

    python benchmarks/read_side.py --backend sqlite --events 1000000 --workspaces 0 --no-analyze --before REV

``--workspaces 0``: an app without workspaces (every event without one; the pages asked over every workspace,
as the admin of an app without a workspace loader asks them). ``--no-analyze``: the database left without the
planner statistics the generator otherwise gathers (ANALYZE), as an app's SQLite database usually is
(PostgreSQL's autovacuum and MariaDB gather theirs anyway). ``--before REV``: the same pages also through the
code at git revision REV, on a copy of the database whose audit indexes REV's ``create_tables()`` built, and
the same export through that code, on the trail itself.
``--unscoped``: the pages asked over every workspace of a trail that has several (a platform's own admin
mounted without a workspace loader; the CLI's export without ``--workspace``).

    python benchmarks/read_side.py --backend sqlite --backend postgresql --store django --unscoped

``--store django``: the first pages read by the Django store (``DjangoStore().query``) instead of the SQLAlchemy
store, in a process of their own configuring Django on the same trail (its model reads the ``audit_events`` table
the generator made: on PostgreSQL the column is ``timestamp``, holding UTC, where Django's migration makes it
``timestamptz``). ``DJANGO_OPTIONS`` (JSON) sets the database's ``OPTIONS``, e.g.
``{"server_side_binding": true, "prepare_threshold": 5}``. Both stores: ``--store sqlalchemy --store django``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(__file__))
from _revision import before_variant  # noqa: E402
from _workload import median, out_dir  # noqa: E402

if TYPE_CHECKING:
    from audit_middleware import EventQuery
    from audit_middleware.catalog import EventCatalog

PG = os.environ.get("AUDIT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MARIADB = os.environ.get("AUDIT_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
WORKSPACES = 20
ACTORS = 400
RESOURCES = 20_000
NAMES = [f"{r} {v}" for r in ("Source", "Warehouses", "Integrations", "Audience", "Space", "Tracking Plan")
         for v in ("Created", "Modified", "Deleted", "Enabled", "Disabled")] + ["Warehouse Run Failed"]
CATEGORY = "Cat"
USER_AGENTS = (  # what people's browsers send (Chrome's and Safari's hold a comma, which CSV quotes), and a script's
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
TOKEN_USER_AGENT = "python-requests/2.32.3"


def database_name(n: int, workspaces: int = WORKSPACES, analyze: bool = True) -> str:
    """The generated trail's name: its size, and how it differs from the default (20 workspaces, ANALYZE)."""
    return (f"audit_bench_read_{n}" + ("" if workspaces == WORKSPACES else f"_ws{workspaces}")
            + ("" if analyze else "_noanalyze"))


def url_for(backend: str, n: int, workspaces: int = WORKSPACES, analyze: bool = True, suffix: str = "") -> str:
    name = database_name(n, workspaces, analyze) + suffix
    if backend == "sqlite":
        out = out_dir()
        return f"sqlite:///{out}/{name.replace('audit_bench_read_', 'read-')}.sqlite3"
    if backend == "mariadb":
        return f"{MARIADB}/{name}?charset=utf8mb4"
    return f"{PG}/{name}"


def ensure_database(backend: str, n: int, fresh: bool, workspaces: int = WORKSPACES, analyze: bool = True) -> str:
    from sqlalchemy import create_engine, func, select, text

    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore, audit_events

    url = url_for(backend, n, workspaces, analyze)
    name = database_name(n, workspaces, analyze)
    if backend == "mariadb":
        admin = create_engine(f"{MARIADB}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            if fresh:
                c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            c.execute(text(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4"))
        admin.dispose()
    elif backend == "postgresql":
        admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            exists = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                               {"n": name}).first()
            if exists and fresh:
                c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
                exists = None
            if not exists:
                c.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    elif fresh and os.path.exists(sqlite_path(url)):
        os.remove(sqlite_path(url))
    store = SQLAlchemyStore.from_url(url)
    store.create_tables()
    with store.engine.connect() as c:
        have = c.execute(select(func.count()).select_from(audit_events)).scalar_one()
    if have < n:
        generate(store, n - have, workspaces, analyze)
    store.close()
    return url


def generate(store, n: int, workspaces: int = WORKSPACES, analyze: bool = True) -> None:
    from audit_middleware.actors import Actor
    from audit_middleware.adapters.sqlalchemy.store import insert_events
    from audit_middleware.events import AuditEvent
    from audit_middleware.ids import new_event_id

    rng = random.Random(42)
    now = datetime.now(timezone.utc)
    started = time.perf_counter()
    batch = 5000
    for start in range(0, n, batch):
        events = []
        for i in range(start, min(n, start + batch)):
            a = rng.randrange(ACTORS)
            r = rng.randrange(RESOURCES)
            events.append(AuditEvent(
                new_event_id(), now - timedelta(seconds=rng.uniform(0, 90 * 86400)), rng.choice(NAMES), CATEGORY,
                "x", Actor.user(str(a), f"user{a}@example.com") if a % 10 else Actor.token(f"tok_{a}", f"ci-{a}"),
                resource_type="Warehouse", resource_id=str(r), resource_name=f"Warehouse {r}",
                workspace_id=f"ws_{a % workspaces}" if workspaces else None, changes={"name": [f"old {i}", f"new {i}"]},
                context={"ip": "203.0.113.9", "user_agent": USER_AGENTS[a % 3] if a % 10 else TOKEN_USER_AGENT,
                         "request_id": f"r-{i}", "method": "POST", "path": f"/warehouses/{r}"},
            ))
        with store.engine.begin() as c:
            insert_events(c, events)
        if start % 100_000 == 0:
            print(f"  generated {start + len(events):,} / {n:,} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
    if analyze:
        gather_statistics(store)


def gather_statistics(store) -> None:
    """The planner statistics of the trail's database (ANALYZE), as the generator leaves it by default."""
    with store.engine.begin() as c:
        if store.engine.dialect.name == "postgresql":
            c.exec_driver_sql("ANALYZE audit_events")
        elif store.engine.dialect.name == "mysql":
            c.exec_driver_sql("ANALYZE TABLE audit_events").fetchall()
        elif store.engine.dialect.name == "sqlite":
            c.exec_driver_sql("ANALYZE")


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL."""
    return url.split("///", 1)[1]


def define_events(catalog: EventCatalog) -> None:
    """Define the generated events in an app's catalog, as a host app defines its verbs (the admin views
    refuse an event filter the catalog does not know)."""
    catalog.extend((name, CATEGORY) for name in NAMES)


def query_shapes(rng: random.Random, now: datetime, workspaces: int = WORKSPACES,
                 unscoped: bool = False) -> dict[str, Callable[[], EventQuery]]:
    """The first page's filter shapes: each a maker of random 50-row queries, one workspace each (``now`` naive
    UTC; over every workspace when the trail has none, or when ``unscoped``). ``benchmarks/admin_pages.py`` asks
    the admin views the same shapes."""
    from audit_middleware import EventQuery

    def scoped(query: EventQuery, n: int) -> EventQuery:
        return query.for_workspace(f"ws_{n % workspaces}") if workspaces and not unscoped else query

    def by_actor(with_event: bool = True) -> EventQuery:
        a = rng.randrange(1, ACTORS)
        actor = f"user{a}@example.com" if a % 10 else f"tok_{a}"
        if not with_event:
            return scoped(EventQuery(actor=actor, limit=50), a)
        return scoped(EventQuery(actor=actor, events=(rng.choice(NAMES),), since=now - timedelta(days=30), limit=50), a)

    return {
        "actor + event + 30 days": by_actor,
        "resource": lambda: scoped(EventQuery(
            resource_type="Warehouse", resource_id=str(rng.randrange(RESOURCES)), limit=50,
        ), rng.randrange(max(workspaces, 1))),
        "actor only": lambda: by_actor(with_event=False),
        "event only": lambda: scoped(EventQuery(events=(rng.choice(NAMES),), limit=50), rng.randrange(max(workspaces, 1))),
        "workspace, no filter": lambda: scoped(EventQuery(limit=50), rng.randrange(max(workspaces, 1))),
    }


def cache_sqlite_file(url: str) -> None:
    """Read a SQLite trail's file once, so that its pages are in the OS page cache, as a copy just written is:
    otherwise ``--before``'s fresh copy would be read warm and the original cold."""
    if url.startswith("sqlite:///"):
        with open(sqlite_path(url), "rb") as database:
            while database.read(1 << 24):
                pass


def first_pages(url: str, runs: int, workspaces: int = WORKSPACES, unscoped: bool = False,
                store: Any = None) -> dict[str, dict[str, float]]:
    """p50 and p99 of each shape's first page: ``runs`` random filters after 20 to warm the caches, read by
    ``store`` (default: a SQLAlchemy store on ``url``, closed after)."""
    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore

    cache_sqlite_file(url)
    own = store is None
    store = SQLAlchemyStore.from_url(url) if own else store
    shapes = query_shapes(random.Random(7), datetime.now(timezone.utc).replace(tzinfo=None), workspaces, unscoped)
    results: dict[str, dict[str, float]] = {}
    for label, make in shapes.items():
        for _ in range(20):  # warm the caches
            store.query(make())
        times = []
        for _ in range(runs):
            q = make()
            start = time.perf_counter()
            store.query(q)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        results[label] = {"p50_ms": median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}
    if own:
        store.close()
    return results


DJANGO_OPTIONS = "DJANGO_OPTIONS"  # JSON: the Django database's OPTIONS for --store django


def django_store(url: str) -> Any:
    """Django configured in this (child) process on the trail at ``url`` (persistent connection, as in
    production; ``DJANGO_OPTIONS`` from the environment), and a ``DjangoStore`` reading its ``audit_events``."""
    import django
    from django.conf import settings
    from sqlalchemy.engine import make_url

    where = make_url(url)
    options = json.loads(os.environ.get(DJANGO_OPTIONS) or "{}")
    if where.get_backend_name() == "sqlite":
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": where.database}
    else:
        engine = "postgresql" if where.get_backend_name() == "postgresql" else "mysql"
        if engine == "mysql":
            import pymysql

            pymysql.install_as_MySQLdb()
            options = {"charset": "utf8mb4", **options}
        database = {"ENGINE": f"django.db.backends.{engine}", "NAME": where.database, "HOST": where.host,
                    "PORT": str(where.port), "USER": where.username, "PASSWORD": where.password or ""}
    settings.configure(DATABASES={"default": {**database, "CONN_MAX_AGE": 600, "OPTIONS": options}}, USE_TZ=True,
                       INSTALLED_APPS=["audit_middleware.adapters.django"],
                       DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")
    django.setup()
    from audit_middleware.adapters.django.store import DjangoStore

    return DjangoStore()


def django_pages(url: str, runs: int, workspaces: int, unscoped: bool) -> dict[str, dict[str, float]]:
    """:func:`first_pages` through the Django store, in a process of its own (Django's settings are the
    process's)."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--django-pages-child", url, str(runs), str(workspaces),
         "1" if unscoped else "0"], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def export_child(url: str, workspace: str, limit_rows: int) -> dict[str, float]:
    from audit_middleware import EventQuery
    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore
    from audit_middleware.export import CsvExport

    store = SQLAlchemyStore.from_url(url)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    export = CsvExport(store, EventQuery().for_workspace(workspace))
    start = time.perf_counter()
    with open(os.devnull, "w") as sink:
        for chunk in export:
            sink.write(chunk)
            if export.rows >= limit_rows:
                break
    elapsed = time.perf_counter() - start
    rows = export.rows + 1
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.close()
    return {"rows": rows - 1, "rows_per_s": (rows - 1) / elapsed, "rss_growth_mb": (rss_after - rss_before) / 1024,
            "peak_rss_mb": rss_after / 1024}


def copy_database(backend: str, url: str, copy_url: str) -> None:
    """A copy of the generated trail, to be read by another revision's code."""
    if backend == "sqlite":
        source, target = sqlite_path(url), sqlite_path(copy_url)
        if os.path.exists(target):
            os.remove(target)
        shutil.copyfile(source, target)
        return
    if backend != "postgresql":
        sys.exit("--before copies SQLite and PostgreSQL trails only")
    from sqlalchemy import create_engine, text

    admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{copy_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{copy_url.rsplit("/", 1)[1]}" TEMPLATE "{url.rsplit("/", 1)[1]}"'))
    admin.dispose()


def pages_of_revision(url: str, runs: int, workspaces: int, analyze: bool, unscoped: bool
                      ) -> dict[str, dict[str, float]]:
    """Runs under another revision's package (``--before``): the audit table's indexes dropped and built again
    as that revision's ``create_tables()`` defines them, then the first pages."""
    from sqlalchemy import text

    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore, audit_events

    store = SQLAlchemyStore.from_url(url)
    with store.engine.begin() as c:
        for index in audit_events.indexes:
            c.execute(text(f"DROP INDEX {index.name}"))
    store.create_tables()
    if analyze:
        gather_statistics(store)
    store.close()
    return first_pages(url, runs, workspaces, unscoped)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--workspaces", type=int, default=WORKSPACES,
                        help="workspaces the events are spread over; 0: none (an app without workspaces: the pages "
                             "are asked over every workspace)")
    parser.add_argument("--unscoped", action="store_true",
                        help="ask the pages over every workspace although the trail has several (a platform's own "
                             "admin, mounted without a workspace loader; the CLI's export without --workspace)")
    parser.add_argument("--no-analyze", action="store_true",
                        help="leave the database without planner statistics (no ANALYZE after generating)")
    parser.add_argument("--before", metavar="REV",
                        help="also read the first pages through the code at git revision REV, on a copy of the "
                             "trail whose audit indexes REV built, and export the trail itself with that code")
    parser.add_argument("--store", action="append", choices=("sqlalchemy", "django"),
                        help="which store reads the first pages (default sqlalchemy; repeat for both): django runs "
                             "them in a process configuring Django on the same trail")
    parser.add_argument("--export-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--django-pages-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--pages-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        print(json.dumps(export_child(args.export_child[0], args.export_child[1], int(args.export_child[2]))))
        return
    if args.pages_child:
        url, runs, workspaces, analyze, unscoped = args.pages_child
        print(json.dumps(pages_of_revision(url, int(runs), int(workspaces), analyze == "1", unscoped == "1")))
        return
    if args.django_pages_child:
        url, runs, workspaces, unscoped = args.django_pages_child
        print(json.dumps(first_pages(url, int(runs), int(workspaces), unscoped == "1", django_store(url))))
        return
    stores = args.store or ["sqlalchemy"]
    if args.before and stores != ["sqlalchemy"]:
        parser.error("--before reads through the SQLAlchemy store only")
    analyze = not args.no_analyze
    workdir = out_dir()
    before = before_variant(args.before, workdir)
    for backend in args.backend or ["sqlite"]:
        url = ensure_database(backend, args.events, args.fresh, args.workspaces, analyze)
        spread = (f"{args.workspaces} workspaces" + (", pages over every workspace" if args.unscoped else "")
                  if args.workspaces else "no workspaces: pages over every workspace")
        for store in stores:
            if store == "django":
                columns = {"now": django_pages(url, args.runs, args.workspaces, args.unscoped)}
            else:
                columns = {"now": first_pages(url, args.runs, args.workspaces, args.unscoped)}
            for label, path in before.items():
                copy_url = url_for(backend, args.events, args.workspaces, analyze, suffix="_before")
                copy_database(backend, url, copy_url)
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--pages-child", copy_url, str(args.runs),
                     str(args.workspaces), "1" if analyze else "0", "1" if args.unscoped else "0"],
                    check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, cwd=workdir)
                columns[label] = json.loads(out.stdout.strip().splitlines()[-1])
            options = os.environ.get(DJANGO_OPTIONS) if store == "django" else None
            print(f"\n### Read side, {'Django' if store == 'django' else 'SQLAlchemy'} store, {backend}, "
                  f"{args.events:,} events ({spread}, {ACTORS} actors, {RESOURCES:,} resources, 90 days"
                  f"{'' if analyze else ', no ANALYZE'}{f', OPTIONS {options}' if options else ''})")
            print("| first page (50 rows) | " + " | ".join(f"p50 {c} | p99 {c}" for c in columns) + " |\n|---|"
                  + "---|---|" * len(columns))
            for label in columns["now"]:
                print(f"| {label} | " + " | ".join(f"{r[label]['p50_ms']:.2f} ms | {r[label]['p99_ms']:.2f} ms"
                                                   for r in columns.values()) + " |")
        if args.workspaces == 0 or args.unscoped or "sqlalchemy" not in stores:
            continue  # the export below is one workspace's, through the SQLAlchemy store
        print("\n| CSV export of one workspace (SQLAlchemy store) | rows | rows/s | peak RSS | RSS growth |\n|---|---|---|---|---|")
        for limit_rows in (5_000, 10**9):
            for label, path in {"": None, **{f" ({label})": path for label, path in before.items()}}.items():
                env = {**os.environ, "PYTHONPATH": path} if path else None  # REV's code on the same trail
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--export-child", url, "ws_3",
                                      str(limit_rows)], check=True, capture_output=True, text=True, env=env,
                                     cwd=workdir).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| up to {limit_rows:,} rows{label} | {r['rows']:,} | {r['rows_per_s']:,.0f} | "
                      f"{r['peak_rss_mb']:.0f} MB | {r['rss_growth_mb']:.1f} MB |")


if __name__ == "__main__":
    main()
