"""Write overhead of auditing with SQLAlchemy: baseline vs audit-middleware vs SQLAlchemy-Continuum.

    python benchmarks/sqlalchemy_capture.py --backend sqlite --backend postgresql --rounds 3

Each (variant, round) runs in a fresh subprocess on a fresh database, variants interleaved in every round.
Phases: create N rows one transaction each (as N web requests would), update two fields of each (load,
change, commit), delete each, and create 10,000 rows in one transaction. Prints medians, ratios to the
unaudited baseline measured in the same run, and milliseconds added per write. ``--phase batch`` (or
``create``, ``update``, ``delete``; repeatable) times only those phases (the rows an update or delete needs are
still made first, untimed), for more rounds of one phase in the same time. ``--before REV`` adds audit-middleware
as it was at git revision REV, a variant of its own interleaved with the others (as in ``django_capture.py``).
"""


import argparse
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from _revision import before_variant, with_before  # noqa: E402
from _workload import N_BATCH, N_WRITES, median, out_dir, timed, without_copy  # noqa: E402

VARIANTS = ("baseline", "audit-middleware", "continuum", "audit-middleware-unpipelined", "audit-middleware-no-copy",
            "audit-middleware-copy-per-chunk")
# audit-middleware-unpipelined (PostgreSQL): event rows written at flush, not sent with the COMMIT (what
# sending them with the COMMIT saves); audit-middleware-no-copy (PostgreSQL): more than 16 event rows go as
# INSERTs in psycopg's pipeline, not as one COPY (what the COPY saves); audit-middleware-copy-per-chunk
# (PostgreSQL): a large flush's events go as one COPY a chunk, each waited for, instead of one COPY kept open
# for the flush (what storing rows while the next are made saves); none is run unless named with --variant
DEFAULT_VARIANTS = VARIANTS[:-3]
PHASES = ("create", "update", "delete", "batch")
PG = os.environ.get("AUDIT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MARIADB = os.environ.get("AUDIT_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


def fresh_database(backend: str, workdir: str) -> tuple[str, str | None]:
    from sqlalchemy import create_engine, text

    if backend == "sqlite":
        return f"sqlite:///{workdir}/bench-{uuid.uuid4().hex[:8]}.sqlite3", None
    name = f"audit_bench_{uuid.uuid4().hex[:10]}"
    base, admin = (PG, "postgres") if backend == "postgresql" else (MARIADB, "test")
    engine = create_engine(f"{base}/{admin}", isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{base}/{name}", name


def drop_database(backend: str, name: str | None) -> None:
    if name is None:
        return
    from sqlalchemy import create_engine, text

    base, admin = (PG, "postgres") if backend == "postgresql" else (MARIADB, "test")
    engine = create_engine(f"{base}/{admin}", isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    engine.dispose()


def setup_variant(variant: str, url: str) -> tuple:
    """The benchmark's app for ``variant`` on ``url``: ``(Warehouse, Session, engine, sql_count, scope,
    auditor)``; ``sql_count[0]`` counts SQL statements (the event rows sent with a psycopg COMMIT too), ``scope``
    is the context managers to enter (audit-middleware: an actor and request context)."""
    from sqlalchemy import JSON, String, create_engine, event
    from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column, sessionmaker

    if variant == "continuum":
        from sqlalchemy_continuum import make_versioned

        make_versioned(user_cls=None)

    class Base(DeclarativeBase):
        pass

    class Warehouse(Base):
        __tablename__ = "warehouses"
        if variant == "continuum":
            __versioned__: dict[str, object] = {}
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(200))
        slug: Mapped[str] = mapped_column(String(200))
        enabled: Mapped[bool] = mapped_column(default=True)
        schedule: Mapped[str] = mapped_column(String(50))
        settings: Mapped[dict] = mapped_column(JSON)
        owner_id: Mapped[int]
        created_at: Mapped[datetime]
        updated_at: Mapped[datetime]

    configure_mappers()
    engine = create_engine(url)
    if url.startswith("sqlite") and os.environ.get("BENCH_SQLITE_WAL"):
        event.listen(engine, "connect", lambda dbapi_connection, _: dbapi_connection.execute("PRAGMA journal_mode=WAL"))
    sql_count = [0]  # counted once count_statements() listens (the event rows sent with a psycopg COMMIT always)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    scope: list = []
    auditor = None
    if variant.startswith("audit-middleware"):
        from audit_middleware import Actor, RequestContext, acting_as, request_context
        from audit_middleware.adapters.sqlalchemy import track

        auditor = track(Session)
        auditor.create_tables()
        # On psycopg the event INSERT goes with the COMMIT, past SQLAlchemy's cursor events: count it too
        from audit_middleware.adapters.sqlalchemy import with_commit

        send = with_commit.send_with_commit

        def counted(driver_connection, statements):  # type: ignore[no-untyped-def]
            sql_count[0] += len(statements)
            return send(driver_connection, statements)

        with_commit.send_with_commit = counted
        if variant == "audit-middleware-unpipelined":
            with_commit.can_hold = lambda connection: False
        if variant == "audit-middleware-no-copy":
            from audit_middleware.adapters.sqlalchemy import store

            without_copy(store)
        if variant == "audit-middleware-copy-per-chunk":
            from audit_middleware.adapters.sqlalchemy.capture import SessionCapture

            SessionCapture.open_copy = lambda self, session, bind_arguments, connection: None  # type: ignore[method-assign]
        scope = [acting_as(Actor.user("7", "ada@example.com")),
                 request_context(RequestContext(ip="203.0.113.9", user_agent="bench/1.0", request_id="r-1",
                                                method="POST", path="/warehouses"))]
    return Warehouse, Session, engine, sql_count, scope, auditor


def count_statements(engine: Any, sql_count: list[int]) -> None:
    """From now on, count in ``sql_count[0]`` the SQL statements ``engine`` sends. Only after the timed phases:
    an engine listener is somebody watching, and audit-middleware then sends SQLite's event rows through
    SQLAlchemy (as the listener expects) instead of straight to sqlite3."""
    from sqlalchemy import event

    event.listen(engine, "before_cursor_execute", lambda *a, **k: sql_count.__setitem__(0, sql_count[0] + 1))


def new_row(Warehouse, i: int, now: datetime):  # type: ignore[no-untyped-def]
    """One benchmark row, not yet added to a session."""
    return Warehouse(name=f"Warehouse {i}", slug=f"warehouse-{i}", schedule="hourly",
                     settings={"region": "eu", "retries": 3}, owner_id=7, created_at=now, updated_at=now)


def phase_writes(Warehouse, Session, now: datetime) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The per-write phases, one session and transaction each: ``create(n)`` returns the new rows' ids,
    ``update(ids)`` loads each row and changes two fields, ``delete(ids)`` loads and deletes each row."""

    def create(n: int) -> list[int]:
        ids = []
        for i in range(n):
            with Session() as s:
                w = new_row(Warehouse, i, now)
                s.add(w)
                s.commit()
                ids.append(w.id)
        return ids

    def update(ids: list[int]) -> None:
        for i, pk in enumerate(ids):
            with Session() as s:
                w = s.get(Warehouse, pk)
                w.schedule = "daily"
                w.name = f"Warehouse {i} (renamed)"
                s.commit()

    def delete(ids: list[int]) -> None:
        for pk in ids:
            with Session() as s:
                s.delete(s.get(Warehouse, pk))
                s.commit()

    return {"create": create, "update": update, "delete": delete}


def run_variant(variant: str, url: str, n: int, batch: int, phases: tuple[str, ...] = PHASES) -> dict[str, float]:
    """Runs inside the subprocess: build the app for ``variant`` and time each of ``phases``."""
    Warehouse, Session, engine, sql_count, scope, auditor = setup_variant(variant, url)
    for cm in scope:
        cm.__enter__()
    now = datetime.now(timezone.utc).replace(tzinfo=None)

    writes = phase_writes(Warehouse, Session, now)
    ids: list[int] = []

    def create() -> None:
        ids.extend(writes["create"](n))

    def batched() -> None:
        with Session() as s:
            s.add_all([new_row(Warehouse, i, now) for i in range(batch)])
            s.commit()

    result: dict[str, float] = {}
    for phase, fn in (("create", create), ("update", lambda: writes["update"](ids)),
                      ("delete", lambda: writes["delete"](ids)), ("batch", batched)):
        if phase in phases:
            result[phase] = timed(fn)
        elif phase == "create" and {"update", "delete"} & set(phases):
            fn()  # the rows the timed update or delete needs
    bytes_per_event(variant, url, engine, auditor, result)
    # Statements per write, counted after the timed phases (see count_statements) on 50 more writes and a batch
    counted = 50
    count_statements(engine, sql_count)
    ids.clear()
    for phase, fn in (("create", lambda: ids.extend(writes["create"](counted))),
                      ("update", lambda: writes["update"](ids)), ("delete", lambda: writes["delete"](ids)),
                      ("batch", batched)):
        if phase not in phases:
            if phase == "create" and {"update", "delete"} & set(phases):
                fn()  # the rows the counted update or delete needs
            continue
        before = sql_count[0]
        fn()
        result[f"{phase}_sql"] = (sql_count[0] - before) / (batch if phase == "batch" else counted)
    engine.dispose()
    return result


def bytes_per_event(variant: str, url: str, engine: Any, auditor: Any, result: dict[str, float]) -> None:
    """PostgreSQL: the event table's size over its rows, into ``result["bytes_per_event"]``."""
    if variant.startswith("audit-middleware"):
        from sqlalchemy import func, select, text

        with engine.connect() as c:
            count = c.execute(select(func.count()).select_from(auditor.table)).scalar_one()
            if url.startswith("postgresql"):
                size = c.execute(text("SELECT pg_total_relation_size('audit_events')")).scalar_one()
                result["bytes_per_event"] = size / count
            elif url.startswith("sqlite"):
                result["bytes_per_event"] = None  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=N_WRITES)
    parser.add_argument("--batch", type=int, default=N_BATCH)
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--phase", action="append", choices=PHASES,
                        help="time only this phase (repeatable; default: all four)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--async-commit", action="store_true",
                        help="PostgreSQL synchronous_commit=off: commits do not wait for the disk, whose latency "
                             "varies more than a round trip costs")
    parser.add_argument("--sqlite-wal", action="store_true",
                        help="SQLite in WAL mode (PRAGMA journal_mode=WAL on every connection) instead of its default "
                             "rollback journal")
    parser.add_argument("--before", metavar="REV",
                        help="also run audit-middleware as it was at git revision REV, a variant of its own")
    args = parser.parse_args()
    if args.sqlite_wal:
        os.environ["BENCH_SQLITE_WAL"] = "1"  # read by the children
    if args.child:
        print(json.dumps(run_variant(args.child[0], args.child[1], args.n, args.batch, tuple(args.phase or PHASES))))
        return
    variants = args.variant or list(DEFAULT_VARIANTS)
    workdir = out_dir()
    paths = before_variant(args.before, workdir)
    variants = with_before(variants, paths)
    for backend in args.backend or ["sqlite"]:
        results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for variant in order:
                url, name = fresh_database(backend, workdir)
                if args.async_commit and backend == "postgresql":
                    url += "?options=-csynchronous_commit%3Doff"
                env = {**os.environ, "PYTHONPATH": paths[variant]} if variant in paths else None
                try:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "audit-middleware" if variant in paths else variant,
                         url, "--n", str(args.n), "--batch", str(args.batch), *(f"--phase={p}" for p in args.phase or ())],
                        check=True, capture_output=True, text=True, env=env,
                    ).stdout
                finally:
                    drop_database(backend, name)
                results[variant].append(json.loads(out.strip().splitlines()[-1]))
        report(backend, args, results)


def report(backend: str, args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    phases = [p for p in PHASES if p in (args.phase or PHASES)]
    base = {p: median([r[p] for r in results["baseline"]]) for p in phases} if "baseline" in results else None
    commits = ", synchronous_commit=off" if args.async_commit and backend == "postgresql" else ""
    commits += ", WAL" if args.sqlite_wal and backend == "sqlite" else ""
    print(f"\n### SQLAlchemy, {backend}{commits}: N={args.n} one transaction each, batch={args.batch}, "
          f"{args.rounds} rounds, medians")
    titles = {"create": "create", "update": "update", "delete": "delete", "batch": "batched create"}
    counted = [p for p in ("create", "update", "delete") if p in phases]
    print("| variant | " + " | ".join(titles[p] for p in phases)
          + (f" | SQL per write ({'/'.join(p[0] for p in counted)})" if counted else "") + " | bytes/event |")
    print("|---|" + "---|" * (len(phases) + bool(counted) + 1))
    for variant, runs in results.items():
        cells = []
        for p in phases:
            m = median([r[p] for r in runs])
            per = p == "batch" and args.batch or args.n
            if base is not None and variant != "baseline":
                added = (m - base[p]) / per * 1000
                cells.append(f"{m / base[p]:.2f} (+{added:.3f} ms)")
            else:
                cells.append(f"{m:.2f} s ({m / per * 1000:.3f} ms/write)")
        if counted:
            cells.append("/".join(f"{median([r[p + '_sql'] for r in runs]):.1f}" for p in counted))
        size = runs[-1].get("bytes_per_event")
        print(f"| {variant} | " + " | ".join(cells) + f" | {'' if size is None else f'{size:.0f}'} |")

if __name__ == "__main__":
    main()
