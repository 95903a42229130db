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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

sys.path.insert(0, os.path.dirname(__file__))
from _workload import median  # noqa: E402

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


def url_for(backend: str, n: int) -> str:
    if backend == "sqlite":
        out = os.path.join(os.path.dirname(__file__), "out")
        os.makedirs(out, exist_ok=True)
        return f"sqlite:///{out}/read-{n}.sqlite3"
    if backend == "mariadb":
        return f"{MARIADB}/audit_bench_read_{n}?charset=utf8mb4"
    return f"{PG}/audit_bench_read_{n}"


def ensure_database(backend: str, n: int, fresh: bool) -> str:
    from sqlalchemy import create_engine, func, select, text

    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore, audit_events

    url = url_for(backend, n)
    if backend == "mariadb":
        admin = create_engine(f"{MARIADB}/test", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            if fresh:
                c.execute(text(f"DROP DATABASE IF EXISTS audit_bench_read_{n}"))
            c.execute(text(f"CREATE DATABASE IF NOT EXISTS audit_bench_read_{n} CHARACTER SET utf8mb4"))
        admin.dispose()
    elif backend == "postgresql":
        admin = create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            exists = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                               {"n": f"audit_bench_read_{n}"}).first()
            if exists and fresh:
                c.execute(text(f"DROP DATABASE audit_bench_read_{n} WITH (FORCE)"))
                exists = None
            if not exists:
                c.execute(text(f"CREATE DATABASE audit_bench_read_{n}"))
        admin.dispose()
    elif fresh and os.path.exists(url.split("///", 1)[1]):
        os.remove(url.split("///", 1)[1])
    store = SQLAlchemyStore.from_url(url)
    store.create_tables()
    with store.engine.connect() as c:
        have = c.execute(select(func.count()).select_from(audit_events)).scalar_one()
    if have < n:
        generate(store, n - have)
    store.close()
    return url


def generate(store, n: int) -> None:
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
                workspace_id=f"ws_{a % WORKSPACES}", changes={"name": [f"old {i}", f"new {i}"]},
                context={"ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "request_id": f"r-{i}"},
            ))
        with store.engine.begin() as c:
            insert_events(c, events)
        if start % 100_000 == 0:
            print(f"  generated {start + len(events):,} / {n:,} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
    with store.engine.begin() as c:
        if store.engine.dialect.name == "postgresql":
            c.exec_driver_sql("ANALYZE audit_events")
        elif store.engine.dialect.name == "mysql":
            c.exec_driver_sql("ANALYZE TABLE audit_events").fetchall()
        elif store.engine.dialect.name == "sqlite":
            c.exec_driver_sql("ANALYZE")


def define_events(catalog: EventCatalog) -> None:
    """Define the generated events in an app's catalog, as a host app defines its verbs (the admin views
    refuse an event filter the catalog does not know)."""
    catalog.extend((name, CATEGORY) for name in NAMES)


def query_shapes(rng: random.Random, now: datetime) -> dict[str, Callable[[], EventQuery]]:
    """The first page's filter shapes: each a maker of random 50-row queries, one workspace each (``now`` naive
    UTC). ``benchmarks/admin_pages.py`` asks the admin views the same shapes."""
    from audit_middleware import EventQuery

    def by_actor(with_event: bool = True) -> EventQuery:
        a = rng.randrange(1, ACTORS)
        actor = f"user{a}@example.com" if a % 10 else f"tok_{a}"
        if not with_event:
            return EventQuery(actor=actor, limit=50).for_workspace(f"ws_{a % WORKSPACES}")
        return EventQuery(
            actor=actor, events=(rng.choice(NAMES),), since=now - timedelta(days=30), limit=50,
        ).for_workspace(f"ws_{a % WORKSPACES}")

    return {
        "actor + event + 30 days": by_actor,
        "resource": lambda: EventQuery(
            resource_type="Warehouse", resource_id=str(rng.randrange(RESOURCES)), limit=50,
        ).for_workspace(f"ws_{rng.randrange(WORKSPACES)}"),
        "actor only": lambda: by_actor(with_event=False),
        "workspace, no filter": lambda: EventQuery(limit=50).for_workspace(f"ws_{rng.randrange(WORKSPACES)}"),
    }


def first_pages(url: str, runs: int) -> dict[str, dict[str, float]]:
    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore.from_url(url)
    shapes = query_shapes(random.Random(7), datetime.now(timezone.utc).replace(tzinfo=None))
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
    store.close()
    return results


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--export-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        print(json.dumps(export_child(args.export_child[0], args.export_child[1], int(args.export_child[2]))))
        return
    for backend in args.backend or ["sqlite"]:
        url = ensure_database(backend, args.events, args.fresh)
        pages = first_pages(url, args.runs)
        print(f"\n### Read side, SQLAlchemy store, {backend}, {args.events:,} events "
              f"({WORKSPACES} workspaces, {ACTORS} actors, {RESOURCES:,} resources, 90 days)")
        print("| first page (50 rows) | p50 | p99 |\n|---|---|---|")
        for label, r in pages.items():
            print(f"| {label} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms |")
        print("\n| CSV export of one workspace | rows | rows/s | peak RSS | RSS growth |\n|---|---|---|---|---|")
        for limit_rows in (5_000, 10**9):
            out = subprocess.run([sys.executable, __file__, "--export-child", url, "ws_3", str(limit_rows)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| up to {limit_rows:,} rows | {r['rows']:,} | {r['rows_per_s']:,.0f} | "
                  f"{r['peak_rss_mb']:.0f} MB | {r['rss_growth_mb']:.1f} MB |")


if __name__ == "__main__":
    main()
