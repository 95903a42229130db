"""What the database alone charges for an audit event: the floor under the per-write target.

    python benchmarks/write_floor.py --backend sqlite --backend sqlite-wal --backend postgresql --rounds 5

No ORM and no audit-middleware code on the timed path: the driver (sqlite3, psycopg 3, PyMySQL) sends
prepared text, so each variant's cost over the baseline is what the event row costs the database and the
network, whatever Python builds it. The event row is a real one: audit-middleware records one "Warehouse
Created" through the SQLAlchemy adapter (actor, request context, row hash) before the timed loops, and every
timed event row carries its values under a fresh id. Each (variant, round) runs on a fresh database, the
variants interleaved in every round, N writes each (default 2,000), one transaction per write.

Variants:

- ``baseline``: the warehouse INSERT alone, in autocommit (one statement, one round trip).
- ``event, 1 trip``: the warehouse INSERT and the event INSERT in one transaction, sent as one query text
  (PostgreSQL runs a multi-statement text in one implicit transaction; MariaDB gets ``BEGIN; ...; COMMIT``).
  What a trigger or a statement folded with the save costs.
- ``event, 3 trips`` (PostgreSQL; MariaDB sends 4): BEGIN, the warehouse INSERT, then the event INSERT with
  the COMMIT, as audit-middleware sends an autocommit Django save on psycopg 3 (on PyMySQL: BEGIN, INSERT,
  INSERT, COMMIT, as it sends one since 2026-12-06 evening).
- ``event, autocommit toggled`` (MariaDB): ``SET AUTOCOMMIT = 0``, the two INSERTs, COMMIT, ``SET AUTOCOMMIT =
  1``: five round trips, as Django's ``atomic()`` sends them on PyMySQL (and as an audited autocommit save went
  until 2026-12-06 evening).
- ``event, no read indexes``: as ``event, 1 trip`` on an audit table without its secondary indexes (the
  ones the admin view's filters and the retention purge read through), to show what those cost each write.

``sqlite`` uses SQLite's default rollback journal, ``sqlite-wal`` the same file in WAL mode. The timed event
rows carry ids from the library's generator (time-ordered, as stored; random UUIDs until 2026-12-07).

    python benchmarks/write_floor.py --backend sqlite --backend postgresql --rounds 7 --batch 10000

``--batch N``: the floor under the batched-create target instead: ``batch, ORM alone`` is the capture
benchmarks' unaudited batch (N SQLAlchemy ORM creates in one transaction), ``batch, ORM and event rows`` the same
with N event rows, made before the clock starts, stored in that transaction by the driver as the adapters store
a large transaction's (SQLite, MariaDB: multi-row INSERTs of 60 rows; PostgreSQL: one COPY). What is added is
what storing the rows costs the driver and the database, with no Python of ours making them.
"""


import argparse
import os
import sys
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _workload import N_WRITES, median, out_dir, timed  # noqa: E402
from sqlalchemy_capture import drop_database, fresh_database, new_row  # noqa: E402

from audit_middleware.ids import new_event_id  # noqa: E402

VARIANTS = ("baseline", "event, 1 trip", "event, 3 trips", "event, autocommit toggled", "event, no read indexes")
BACKENDS = ("sqlite", "sqlite-wal", "postgresql", "mariadb")
WAREHOUSE_COLUMNS = ("name", "slug", "enabled", "schedule", "settings", "owner_id", "created_at", "updated_at")


def schema(url: str) -> tuple[Any, Any, list[Any]]:
    """The warehouse table, the library's audit table and one real event row (its stored values)."""
    from sqlalchemy import JSON, Integer, String, create_engine, select
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

    from audit_middleware import Actor, RequestContext, acting_as, request_context
    from audit_middleware.adapters.sqlalchemy import track

    class Base(DeclarativeBase):
        pass

    class Warehouse(Base):
        __tablename__ = "warehouses"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(200))
        slug: Mapped[str] = mapped_column(String(200))
        enabled: Mapped[bool] = mapped_column(default=True)
        schedule: Mapped[str] = mapped_column(String(50))
        settings: Mapped[dict] = mapped_column(JSON)
        owner_id: Mapped[int] = mapped_column(Integer)
        created_at: Mapped[datetime]
        updated_at: Mapped[datetime]

    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    auditor = track(Session)
    auditor.create_tables()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with acting_as(Actor.user("7", "ada@example.com")), request_context(RequestContext(
            ip="203.0.113.9", user_agent="bench/1.0", request_id="r-1", method="POST", path="/warehouses")):
        with Session() as s:
            s.add(Warehouse(name="Warehouse 1", slug="warehouse-1", schedule="hourly",
                            settings={"region": "eu", "retries": 3}, owner_id=7, created_at=now, updated_at=now))
            s.commit()
    table = auditor.table
    with engine.begin() as c:
        event_row = list(c.execute(select(*[col for col in table.c])).one())
        c.execute(table.delete())
        c.execute(Warehouse.__table__.delete())
    auditor.remove()
    return engine, table, event_row, Warehouse


def run_variant(backend: str, variant: str, url: str, n: int) -> float:
    """Seconds for ``n`` writes of ``variant`` on a fresh database at ``url``."""
    from sqlalchemy import text

    engine, table, event_row, _ = schema(url)
    if variant == "event, no read indexes":
        with engine.begin() as c:
            for index in table.indexes:
                c.execute(text(f"DROP INDEX {index.name}" + (f" ON {table.name}" if backend == "mariadb" else "")))
    placeholder = "?" if backend.startswith("sqlite") else "%s"
    insert_warehouse = (f"INSERT INTO warehouses ({', '.join(WAREHOUSE_COLUMNS)}) "
                        f"VALUES ({', '.join([placeholder] * len(WAREHOUSE_COLUMNS))})")
    insert_event = (f"INSERT INTO {table.name} ({', '.join(c.name for c in table.c)}) "
                    f"VALUES ({', '.join([placeholder] * len(table.c))})")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    warehouses = [(f"Warehouse {i}", f"warehouse-{i}", True, "hourly", '{"region": "eu", "retries": 3}', 7, now, now)
                  for i in range(n)]
    events = [[new_event_id()] + event_row[1:] for _ in range(n)]
    engine.dispose()
    if backend.startswith("sqlite"):
        return _sqlite(url.removeprefix("sqlite:///"), backend == "sqlite-wal", variant, insert_warehouse,
                       insert_event, warehouses, events)
    if backend == "postgresql":
        return _postgresql(url, variant, insert_warehouse, insert_event, warehouses, events)
    return _mariadb(url, variant, insert_warehouse, insert_event, warehouses, events)


def _sqlite(path: str, wal: bool, variant: str, insert_warehouse: str, insert_event: str,
            warehouses: list[tuple[Any, ...]], events: list[list[Any]]) -> float:
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)  # autocommit: BEGIN and COMMIT as sent
    if wal:
        connection.execute("PRAGMA journal_mode=WAL")
    execute = connection.execute

    def baseline() -> None:
        for w in warehouses:
            execute(insert_warehouse, w)

    def with_event() -> None:
        for w, e in zip(warehouses, events, strict=True):
            execute("BEGIN")
            execute(insert_warehouse, w)
            execute(insert_event, e)
            execute("COMMIT")

    try:
        return timed(baseline if variant == "baseline" else with_event)
    finally:
        connection.close()


def _postgresql(url: str, variant: str, insert_warehouse: str, insert_event: str,
                warehouses: list[tuple[Any, ...]], events: list[list[Any]]) -> float:
    import psycopg

    connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    cursor = psycopg.ClientCursor(connection)  # client-side binding: several statements in one text
    mogrify = cursor.mogrify
    execute = cursor.execute
    # The texts are built before the clock starts: what is timed is the database and the round trips.
    if variant == "baseline":
        texts = [(mogrify(insert_warehouse, w),) for w in warehouses]
    elif variant == "event, 3 trips":
        texts = [("BEGIN", mogrify(insert_warehouse, w), mogrify(insert_event, e) + "; COMMIT")
                 for w, e in zip(warehouses, events, strict=True)]
    else:
        texts = [(mogrify(insert_warehouse, w) + "; " + mogrify(insert_event, e),)
                 for w, e in zip(warehouses, events, strict=True)]

    def run() -> None:
        for parts in texts:
            for part in parts:
                execute(part)

    try:
        return timed(run)
    finally:
        connection.close()


def _mariadb(url: str, variant: str, insert_warehouse: str, insert_event: str,
             warehouses: list[tuple[Any, ...]], events: list[list[Any]]) -> float:
    import pymysql
    from pymysql.constants import CLIENT
    from sqlalchemy.engine import make_url

    u = make_url(url)
    connection = pymysql.connect(host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
                                 database=u.database, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
    cursor = connection.cursor()
    mogrify = cursor.mogrify
    if variant == "baseline":
        texts = [(mogrify(insert_warehouse, w),) for w in warehouses]
    elif variant == "event, 3 trips":
        texts = [("BEGIN", mogrify(insert_warehouse, w), mogrify(insert_event, e), "COMMIT")
                 for w, e in zip(warehouses, events, strict=True)]
    elif variant == "event, autocommit toggled":
        texts = [("SET AUTOCOMMIT = 0", mogrify(insert_warehouse, w), mogrify(insert_event, e), "COMMIT",
                  "SET AUTOCOMMIT = 1") for w, e in zip(warehouses, events, strict=True)]
    else:
        texts = [(f"BEGIN; {mogrify(insert_warehouse, w)}; {mogrify(insert_event, e)}; COMMIT",)
                 for w, e in zip(warehouses, events, strict=True)]

    def run() -> None:
        for parts in texts:
            for part in parts:
                cursor.execute(part)
                while cursor.nextset():
                    pass

    try:
        return timed(run)
    finally:
        connection.close()


BATCH_VARIANTS = ("batch, ORM alone", "batch, ORM and event rows")
ROWS_PER_INSERT = 60  # event rows a multi-row INSERT, as the adapters send them on SQLite and MariaDB


def run_batch(backend: str, variant: str, url: str, n: int) -> float:
    """Seconds for ``n`` SQLAlchemy ORM creates in one transaction (the capture benchmarks' batched create,
    unaudited), with ``n`` event rows made beforehand stored in the same transaction by the driver (SQLite and
    MariaDB: multi-row INSERTs of 60; PostgreSQL: one COPY), as the adapters store a large transaction's."""
    from sqlalchemy.orm import sessionmaker

    engine, table, event_row, warehouse = schema(url)
    if backend == "sqlite-wal":
        with engine.connect() as c:
            c.exec_driver_sql("PRAGMA journal_mode=WAL")
    columns = ", ".join(c.name for c in table.c)
    events = [[new_event_id()] + event_row[1:] for _ in range(n)]
    store = variant == "batch, ORM and event rows"
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    session = sessionmaker(engine)

    def run() -> None:
        with session() as s:
            s.add_all([new_row(warehouse, i, now) for i in range(n)])
            s.flush()
            if store:
                driver = s.connection().connection.driver_connection
                if backend == "postgresql":
                    with driver.cursor() as cursor, cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                        for row in events:
                            copy.write_row(row)
                else:
                    cursor = driver.cursor()
                    mark = "(" + ", ".join(["?" if backend.startswith("sqlite") else "%s"] * len(table.c)) + ")"
                    for at in range(0, n, ROWS_PER_INSERT):
                        chunk = events[at:at + ROWS_PER_INSERT]
                        cursor.execute(f"INSERT INTO {table.name} ({columns}) VALUES {', '.join([mark] * len(chunk))}",
                                       [v for row in chunk for v in row])
            s.commit()

    try:
        return timed(run)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=N_WRITES)
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="instead: N ORM creates in one transaction, alone and with N event rows made beforehand")
    args = parser.parse_args()
    workdir = out_dir()
    print(f"| backend | variant | µs a {'row' if args.batch else 'write'} (median) | added | rounds |")
    print("|---|---|---|---|---|")
    for backend in args.backend or ["sqlite"]:
        variants = [v for v in VARIANTS if not (backend.startswith("sqlite") and v == "event, 3 trips")
                    and (backend == "mariadb" or v != "event, autocommit toggled")]
        n = args.batch or args.n
        if args.batch:
            variants = list(BATCH_VARIANTS)
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
                url, name = fresh_database("sqlite" if backend.startswith("sqlite") else backend, workdir)
                try:
                    run = run_batch if args.batch else run_variant
                    seconds[variant].append(run(backend, variant, url, n))
                finally:
                    drop_database("sqlite" if backend.startswith("sqlite") else backend, name)
                    if backend.startswith("sqlite"):
                        for suffix in ("", "-journal", "-wal", "-shm"):
                            path = url.removeprefix("sqlite:///") + suffix
                            if os.path.exists(path):
                                os.remove(path)
        base = median(seconds[variants[0]]) / n * 1e6
        for variant in variants:
            us = median(seconds[variant]) / n * 1e6
            spread = " / ".join(f"{s / n * 1e6:.{1 if args.batch else 0}f}" for s in seconds[variant])
            added = "" if variant == variants[0] else f"+{us - base:.{1 if args.batch else 0}f} µs (×{us / base:.2f})"
            print(f"| {backend} | {variant} | {us:.{1 if args.batch else 0}f} | {added} | {spread} |", flush=True)


if __name__ == "__main__":
    main()
