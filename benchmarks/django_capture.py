"""Per-save overhead of auditing with Django: no auditing vs audit-middleware vs django-auditlog vs
django-simple-history vs django-pghistory vs django-easy-audit, all installed in the same environment and
measured in the same run.

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[django,postgresql,mysql]" \\
        -r benchmarks/requirements.txt
    /tmp/bench/bin/python benchmarks/django_capture.py --backend sqlite --backend postgresql --rounds 3

Each (variant, round) runs in a fresh subprocess (Django configures itself once per process) on a fresh
database, variants interleaved in every round. Phases, all through the ORM in autocommit mode as a web
request would: create N rows (``objects.create``), update two fields of each (``get``, change, ``save``),
delete each (``delete``), and create 10,000 rows inside one ``transaction.atomic()``. Prints medians, the
ratio to the unaudited baseline, microseconds added per write, the SQL statements each save issued, the audit
rows after each phase (the child also asserts that every phase recorded rows) and the bytes stored per event.
``--atomic`` runs each create, update and delete inside ``transaction.atomic()`` instead (as a request under
``ATOMIC_REQUESTS = True``: the baseline then pays a BEGIN and a COMMIT too; ``--variant baseline-in-atomic`` adds,
in an autocommit run, the unaudited writes each in ``transaction.atomic()``: what the transaction an audited
autocommit write must open costs by itself); ``--sqlite-wal`` puts SQLite in
WAL mode instead of its default rollback journal. ``--before REV`` adds audit-middleware as it was at git
revision REV, a variant of its own interleaved with the others: a change measured in wall time, in the same
run (``batch_instructions.py --before`` counts instructions, which miss what the server does meanwhile).

Peers and how each runs:

- ``audit-middleware``: with an actor and a request's context (IP address, user agent, request id, method,
  path) attached for the whole run (``acting_as``, ``request_context``), as the issue's targets ask and as
  ``sqlalchemy_capture.py`` runs it; until 2026-12-06 midday this benchmark attached the actor only.
- ``auditlog`` (django-auditlog, signals) and ``simple-history`` (django-simple-history, signals): no actor.
- ``pghistory`` (django-pghistory 3.x, PostgreSQL triggers; skipped on other backends): the Warehouse model is
  tracked with ``pghistory.track(InsertEvent(), UpdateEvent(), DeleteEvent())``, applied after
  ``django.setup()`` since the benchmark model module is shared; its event table is created like the other
  benchmark tables and pgtrigger's schema editor installs the triggers with it. Its request context is on:
  every write (the whole batch, as one request) runs inside ``pghistory.context(user=..., url=...)``, as its
  ``HistoryMiddleware`` does per request; the context rows count as stored bytes.
- ``easy-audit`` (django-easy-audit, signals, rows written in ``on_commit``): CRUD events for Warehouse only (auth
  and request events off), with a saved user attached the way its middleware does (``set_current_user``);
  by default it re-reads that user for every event.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _revision import before_variant, with_before  # noqa: E402
from _workload import N_BATCH, N_WRITES, median, out_dir, timed, without_copy  # noqa: E402

VARIANTS = ("baseline", "audit-middleware", "auditlog", "simple-history", "pghistory", "easy-audit",
            "audit-middleware-unpipelined", "audit-middleware-unfolded", "audit-middleware-no-copy",
            "audit-middleware-toggling", "baseline-in-atomic")
POSTGRESQL_ONLY = ("pghistory", "audit-middleware-unpipelined", "audit-middleware-unfolded",
                   "audit-middleware-no-copy")
MARIADB_ONLY = ("audit-middleware-toggling",)
# audit-middleware-unpipelined: the event INSERT sent before the COMMIT instead of with it (what sending
# it with the COMMIT saves); audit-middleware-unfolded: psycopg sends the BEGIN of an audited autocommit write
# on its own round trip, not in one text with the first statement (what folded_begin saves);
# audit-middleware-no-copy: more than 16 event rows go as INSERTs in psycopg's pipeline, not as one COPY (what
# the COPY saves); audit-middleware-toggling (MariaDB): the audited write's transaction begins as Django's
# atomic() begins one, SET autocommit=0 ... COMMIT, SET autocommit=1, not with BEGIN (what own_block saves);
# baseline-in-atomic: no auditing, each create, update and delete in transaction.atomic() (what the transaction
# an audited autocommit write needs costs by itself: the row and its event must commit together);
# none of the five is run unless named with --variant
DEFAULT_VARIANTS = VARIANTS[:-5]
PHASES = ("create", "update", "delete", "batch")
PG = os.environ.get("AUDIT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
MARIADB = os.environ.get("AUDIT_BENCH_MARIADB", "mysql://root@127.0.0.1:3306")


def _server(backend):
    return urlsplit(PG if backend == "postgresql" else MARIADB)


def fresh_database(backend, workdir):
    if backend == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3",
                "NAME": f"{workdir}/bench-{uuid.uuid4().hex[:8]}.sqlite3"}, None
    name = f"audit_bench_{uuid.uuid4().hex[:10]}"
    server = _server(backend)
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(host=server.hostname, port=server.port, user=server.username,
                             dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        engine = "django.db.backends.postgresql"
    else:
        import pymysql

        c = pymysql.connect(host=server.hostname, port=server.port, user=server.username)
        c.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        c.close()
        engine = "django.db.backends.mysql"
    return {"ENGINE": engine, "NAME": name, "HOST": server.hostname, "PORT": str(server.port),
            "USER": server.username or "", "PASSWORD": ""}, name


def drop_database(backend, name):
    if name is None:
        return
    server = _server(backend)
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(host=server.hostname, port=server.port, user=server.username,
                             dbname="postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        import pymysql

        c = pymysql.connect(host=server.hostname, port=server.port, user=server.username)
        c.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        c.close()


def storage(connection, tables):
    """Bytes the audit ``tables`` hold: (allocated with their indexes, row data or None), and how measured."""
    quote = connection.ops.quote_name
    allocated = payload = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for table in tables:
                cursor.execute(f"SELECT pg_total_relation_size(%s), (SELECT COALESCE(SUM(pg_column_size(r.*)), 0) "  # noqa: S608
                               f"FROM {quote(table)} r)", [table])
                size, rows = cursor.fetchone()
                allocated, payload = allocated + size, payload + rows
            return allocated, payload, ("PostgreSQL: allocated = pg_total_relation_size (heap, TOAST, indexes) "
                                        "grown by the create phase; row = SUM(pg_column_size(row))")
        if connection.vendor == "sqlite":
            try:
                for table in tables:
                    cursor.execute("SELECT COALESCE(SUM(pgsize), 0), COALESCE(SUM(CASE WHEN name = %s THEN payload END), 0) "
                                   "FROM dbstat WHERE name = %s OR name IN "
                                   "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s)",
                                   [table, table, table])
                    size, rows = cursor.fetchone()
                    allocated, payload = allocated + size, payload + rows
                return allocated, payload, ("SQLite: allocated = dbstat pages of the table and its indexes grown by "
                                            "the create phase; row = dbstat payload of the table's records")
            except Exception:  # noqa: BLE001 - SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
                payload = 0
                for table in tables:
                    columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
                    lengths = " + ".join(f"COALESCE(LENGTH({quote(c)}), 0)" for c in columns)
                    cursor.execute(f"SELECT COALESCE(SUM({lengths}), 0) FROM {quote(table)}")  # noqa: S608
                    payload += cursor.fetchone()[0]
                return None, payload, "SQLite without dbstat: row = SUM(LENGTH(column)) (numbers as text); no allocated size"
        for table in tables:
            cursor.execute(f"ANALYZE TABLE {quote(table)}")
            cursor.fetchall()
            cursor.execute("SELECT data_length + index_length FROM information_schema.tables "
                           "WHERE table_schema = DATABASE() AND table_name = %s", [table])
            allocated += cursor.fetchone()[0]
        return allocated, None, ("MariaDB: allocated = information_schema data_length + index_length after ANALYZE "
                                 "TABLE (InnoDB estimates, 16 KiB pages) grown by the create phase; row: not measured")


def setup_variant(variant, database, atomic=False):
    """Configure Django for ``variant`` in this (child) process and create the tables. Returns the benchmark
    model, what a request around each write adds (``request``, ``per_write``), the scope to run in (an actor
    for audit-middleware) and the audit models."""
    if database["ENGINE"].endswith("mysql"):
        import pymysql

        pymysql.install_as_MySQLdb()
    if variant in POSTGRESQL_ONLY and not database["ENGINE"].endswith("postgresql"):
        raise SystemExit(f"{variant} needs PostgreSQL")
    if variant == "baseline-in-atomic":
        atomic = True
    os.environ["BENCH_VARIANT"] = variant
    import django
    from django.conf import settings

    apps = ["django.contrib.contenttypes", "django.contrib.auth", "django_bench_app"]
    apps += {"audit-middleware": ["audit_middleware.adapters.django"],
             "audit-middleware-unpipelined": ["audit_middleware.adapters.django"],
             "audit-middleware-unfolded": ["audit_middleware.adapters.django"],
             "audit-middleware-no-copy": ["audit_middleware.adapters.django"],
             "audit-middleware-toggling": ["audit_middleware.adapters.django"], "auditlog": ["auditlog"],
             "simple-history": ["simple_history"], "pghistory": ["pgtrigger", "pghistory"],
             "easy-audit": ["django.contrib.sessions", "easyaudit"]}.get(variant, [])  # easyaudit imports Session
    extra = {}
    if variant == "easy-audit":  # CRUD events of the benchmark model only
        extra = {"DJANGO_EASY_AUDIT_WATCH_AUTH_EVENTS": False, "DJANGO_EASY_AUDIT_WATCH_REQUEST_EVENTS": False,
                 "DJANGO_EASY_AUDIT_REGISTERED_CLASSES": ["django_bench_app.Warehouse"]}
    settings.configure(
        DATABASES={"default": database}, INSTALLED_APPS=apps, USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField", SECRET_KEY="bench", **extra,
    )
    django.setup()
    from contextlib import contextmanager, nullcontext

    from django.apps import apps as registry
    from django.core.management import call_command
    from django.db import connection, transaction
    from django_bench_app.models import Warehouse

    request = nullcontext  # what a request around each write adds (pghistory: its context; --atomic: a transaction)
    if variant == "pghistory":
        import pghistory

        # The decorator, applied here rather than in the shared model module; creates WarehouseEvent in the same app.
        pghistory.track(pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent(),
                        model_name="WarehouseEvent")(Warehouse)

        def request():
            return pghistory.context(user=7, url="/warehouses/")

    per_write = request
    if atomic:  # as ATOMIC_REQUESTS wraps each request (pghistory's middleware, inside it, adds its context)
        @contextmanager
        def per_write():
            with transaction.atomic(), request():
                yield

    call_command("migrate", verbosity=0)  # the apps with migrations (auth first: history rows point at users)
    with connection.schema_editor() as editor:  # pgtrigger's schema editor installs Meta.triggers with the table
        for model in registry.get_app_config("django_bench_app").get_models():
            editor.create_model(model)

    if variant.startswith("audit-middleware"):
        from audit_middleware import Actor, RequestContext, acting_as, request_context
        from audit_middleware.adapters.django.models import AuditEvent

        if variant == "audit-middleware-unpipelined":
            from audit_middleware.adapters.django import capture

            capture.commit_with_events = lambda connection, events: False
        if variant == "audit-middleware-unfolded":
            from audit_middleware.adapters.django import capture

            capture.fold_begin = lambda connection: None
        if variant == "audit-middleware-toggling":
            from audit_middleware.adapters.django import capture

            capture.own_block = lambda connection, using: transaction.atomic(using=using, savepoint=False)
            capture.arm_begin = lambda connection: None
        if variant == "audit-middleware-no-copy":
            from audit_middleware.adapters.django import store

            without_copy(store)

        @contextmanager
        def in_request():  # an actor and a request's context, as the SQLAlchemy benchmark attaches them
            with acting_as(Actor.user("7", "ada@example.com")), request_context(RequestContext(
                    ip="203.0.113.9", user_agent="bench/1.0", request_id="r-1", method="POST", path="/warehouses")):
                yield

        scope = in_request()
        audit_models = [AuditEvent]
    elif variant == "easy-audit":
        from django.contrib.auth.models import User
        from easyaudit.middleware.easyaudit import set_current_user
        from easyaudit.models import CRUDEvent

        set_current_user(User.objects.create(id=7, username="ada", email="ada@example.com"))
        scope = nullcontext()
        audit_models = [CRUDEvent]
    else:
        scope = nullcontext()
        if variant == "auditlog":
            from auditlog.models import LogEntry

            audit_models = [LogEntry]
        elif variant == "simple-history":
            audit_models = [Warehouse.history.model]
        elif variant == "pghistory":
            from pghistory.models import Context

            audit_models = [registry.get_model("django_bench_app", "WarehouseEvent"), Context]
        else:
            audit_models = []
    return Warehouse, request, per_write, scope, audit_models


def make_row(Warehouse, i):
    return Warehouse.objects.create(name=f"Warehouse {i}", write_key="wk_secret", capacity=i, notes="x")


def phase_writes(Warehouse, per_write):
    """The per-write phases, each write inside ``per_write()``: ``create(n)`` returns the new rows' ids,
    ``update(ids)`` loads each row and changes two fields, ``delete(ids)`` deletes each row."""

    def create(n):
        ids = []
        for i in range(n):
            with per_write():
                ids.append(make_row(Warehouse, i).pk)
        return ids

    def update(ids):
        for pk in ids:
            with per_write():
                w = Warehouse.objects.get(pk=pk)
                w.name = f"{w.name} (renamed)"
                w.schedule = "@daily"  # the same two fields as sqlalchemy_capture.py: one audit row per save
                w.save()

    def delete(ids):
        for w in list(Warehouse.objects.filter(pk__in=ids)):
            with per_write():
                w.delete()

    return {"create": create, "update": update, "delete": delete}


def run_variant(variant, database, n, batch, atomic=False):
    """Runs inside the subprocess: configure Django for ``variant`` and time each phase."""
    Warehouse, request, per_write, scope, audit_models = setup_variant(variant, database, atomic)
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    tables = [m._meta.db_table for m in audit_models]

    def audit_rows():
        if not tables:
            return 0
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(tables[0])}")  # noqa: S608
            return cursor.fetchone()[0]

    writes = phase_writes(Warehouse, per_write)
    ids = []

    def create():
        ids.extend(writes["create"](n))

    def batch_create():
        with request(), transaction.atomic():
            for i in range(batch):
                make_row(Warehouse, i)

    results = {"rows": {}}
    io = SQLiteIO(connection) if connection.vendor == "sqlite" else None
    with scope:
        empty = storage(connection, tables)
        for phase, fn in (("create", create), ("update", lambda: writes["update"](ids)),
                          ("delete", lambda: writes["delete"](ids)), ("batch", batch_create)):
            if io is not None:
                io.start()
            results[phase] = timed(fn)
            if io is not None:
                results.setdefault("io", {})[phase] = io.stop()
            results["rows"][phase] = audit_rows()
            if phase == "create":
                full = storage(connection, tables)
                events = results["rows"]["create"]
                results["bytes"] = [None if full[i] is None or not events else (full[i] - empty[i]) / events
                                    for i in (0, 1)]
                results["bytes_measured"] = full[2]
        if tables:  # every phase recorded events
            counts = [0, *results["rows"].values()]
            assert all(b > a for a, b in zip(counts, counts[1:], strict=False)), f"{variant} recorded no rows in a phase: {counts}"
        if variant == "pghistory":  # the context was attached to every event
            event_model = audit_models[0]
            assert not event_model.objects.filter(pgh_context__isnull=True).exists(), "pghistory events without context"
        if variant == "easy-audit":
            assert not audit_models[0].objects.filter(user__isnull=True).exists(), "easy-audit events without user"
        w = Warehouse.objects.first()
        w.capacity += 1
        sent_with_commit = []
        if variant.startswith("audit-middleware"):  # on psycopg the event INSERT goes with the COMMIT, past Django's log
            from audit_middleware.adapters.django import store

            send = store.send_with_commit

            def counted(driver, statements):
                sent_with_commit.extend([*(label(sql, tables) for sql, _ in statements), "COMMIT"])
                send(driver, statements)

            store.send_with_commit = counted
        with CaptureQueriesContext(connection) as queries, per_write():  # as the phases save (--atomic: in a block)
            w.save()
        statements = [label(q["sql"], tables) for q in queries.captured_queries]
        # Django logs a BEGIN when its block starts (psycopg sends it with the first statement, if at all); one
        # that went in one text with that statement is the statement's "BEGIN+" label.
        statements = [s for s, after in zip(statements, [*statements[1:], ""], strict=True)
                      if not (s == "BEGIN" and after.startswith("BEGIN+"))]
        if sent_with_commit and statements[-1] == "COMMIT":  # Django logs its COMMIT, which sends nothing now
            statements[-1] = " + ".join(sent_with_commit) + " (one round trip)"
        results["save_statements"] = statements
    return results


class SQLiteIO:
    """Where an SQLite phase's time goes besides Python: the seconds spent in Django's COMMIT (the
    journal synced, the transaction's pages written and synced, the journal deleted: SQLite's durable write)
    and the bytes this process wrote (``wchar`` of ``/proc/self/io``: the rollback journal's copies of the
    pages a transaction changes, then the pages themselves; in WAL, the pages appended to the log)."""

    def __init__(self, connection):
        self.in_commit = 0.0
        from django.db import connections

        wrapper = type(connections[connection.alias])
        commit = wrapper._commit
        this = self

        def timed_commit(self):
            start = time.perf_counter()
            try:
                return commit(self)
            finally:
                this.in_commit += time.perf_counter() - start

        wrapper._commit = timed_commit

    @staticmethod
    def _written():
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))

    def start(self):
        self.in_commit, self.written = 0.0, self._written()

    def stop(self):
        return [self.in_commit, self._written() - self.written]


def label(sql, tables):
    """A captured statement as its verb, marked when it writes the audit table (pghistory: the prefix it injects;
    audit-middleware: a BEGIN sent in one text with the statement, an UPDATE and its event rows in one)."""
    if sql.startswith("SELECT set_config('pghistory.context_id'"):
        return "set_config+" + label(sql.split("; ", 1)[1], tables)
    if sql.startswith("BEGIN; "):
        return "BEGIN+" + label(sql[len("BEGIN; "):], tables)
    if sql.startswith("WITH changed AS (UPDATE "):  # audit-middleware's one-statement update (PostgreSQL)
        return "UPDATE+INSERT (audit) in one statement"
    return sql.split()[0] + (" (audit)" if any(t in sql for t in tables) else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=N_WRITES)
    parser.add_argument("--batch", type=int, default=N_BATCH)
    parser.add_argument("--workdir", default=None, help="scratch files (default: $AUDIT_BENCH_OUT, else benchmarks/out)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--async-commit", action="store_true",
                        help="PostgreSQL synchronous_commit=off: commits do not wait for the disk, whose latency "
                             "varies more than a round trip costs")
    parser.add_argument("--sqlite-wal", action="store_true",
                        help="SQLite in WAL mode (PRAGMA journal_mode=WAL on every connection) instead of its default "
                             "rollback journal")
    parser.add_argument("--atomic", action="store_true",
                        help="each create, update and delete inside transaction.atomic(), as a request under "
                             "ATOMIC_REQUESTS = True (the default: autocommit saves, one transaction each)")
    parser.add_argument("--before", metavar="REV",
                        help="also run audit-middleware as it was at git revision REV (exported into the workdir, "
                             "first on PYTHONPATH), interleaved with the others as a variant of its own")
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, json.loads(args.database), args.n, args.batch, args.atomic)))
        return
    args.workdir = args.workdir or out_dir()
    os.makedirs(args.workdir, exist_ok=True)
    paths = before_variant(args.before, os.path.abspath(args.workdir))
    for backend in args.backend or ["sqlite"]:
        variants = [v for v in args.variant or DEFAULT_VARIANTS
                    if (backend == "postgresql" or v not in POSTGRESQL_ONLY)
                    and (backend == "mariadb" or v not in MARIADB_ONLY)]
        skipped = [v for v in args.variant or DEFAULT_VARIANTS if v not in variants]
        variants = with_before(variants, paths)
        samples = {v: {p: [] for p in PHASES} for v in variants}
        io = {v: {p: [] for p in PHASES} for v in variants}  # SQLite: [seconds in COMMIT, bytes written] a round
        statements, rows, stored, measured = {}, {}, {}, set()
        for _ in range(args.rounds):
            for variant in variants:
                database, name = fresh_database(backend, os.path.abspath(args.workdir))
                if args.async_commit and backend == "postgresql":
                    database["OPTIONS"] = {"options": "-c synchronous_commit=off"}
                if args.sqlite_wal and backend == "sqlite":
                    database["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL"}
                env = {**os.environ, "PYTHONPATH": paths[variant]} if variant in paths else None
                try:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", "audit-middleware" if variant in paths else variant,
                         "--database", json.dumps(database), "--n", str(args.n), "--batch", str(args.batch),
                         *(["--atomic"] if args.atomic else [])],
                        check=False, capture_output=True, text=True, env=env,
                    )
                finally:
                    drop_database(backend, name)
                    for suffix in ("", "-wal", "-shm") if name is None else ():
                        if os.path.exists(database["NAME"] + suffix):
                            os.remove(database["NAME"] + suffix)
                if out.returncode:
                    sys.exit(f"{variant} on {backend} failed:\n{out.stderr}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                statements[variant] = result.pop("save_statements")
                rows[variant] = result["rows"]
                stored.setdefault(variant, []).append(result.get("bytes", [None, None]))
                measured.add(result.get("bytes_measured"))
                for phase in PHASES:
                    samples[variant][phase].append(result[phase])
                    if "io" in result:
                        io[variant][phase].append(result["io"][phase])
        commits = ", synchronous_commit=off" if args.async_commit and backend == "postgresql" else ""
        commits += ", WAL" if args.sqlite_wal and backend == "sqlite" else ""
        commits += ", each write in transaction.atomic()" if args.atomic else ""
        print(f"\n## {backend}{commits}: {args.n} writes per phase, batch of {args.batch}, median of {args.rounds} rounds")
        for variant in skipped:
            print(f"(skipped {variant}: {'MariaDB' if variant in MARIADB_ONLY else 'PostgreSQL'} only)")
        print("| variant | " + " | ".join(f"{p} (µs/write)" for p in PHASES)
              + " | statements per save | audit rows after each phase | bytes per event (row; allocated) |")
        print("|---|" + "---|" * (len(PHASES) + 3))
        base = {p: median(samples["baseline"][p]) if "baseline" in samples else None for p in PHASES}
        for variant in variants:
            cells = []
            for phase in PHASES:
                count = args.batch if phase == "batch" else args.n
                value = median(samples[variant][phase])
                cell = f"{value / count * 1e6:.0f}"
                if base[phase] and variant != "baseline":
                    cell += f" (×{value / base[phase]:.2f}, {(value - base[phase]) / count * 1e6:+.0f})"
                cells.append(cell)
            saves = ", ".join(statements[variant])
            if variant == "pghistory":
                saves += " (+ trigger: event INSERT and context upsert, not visible as statements)"
            counts = "/".join(str(rows[variant][p]) for p in PHASES)
            sizes = ["-" if any(s[i] is None for s in stored[variant])
                     else f"{median([s[i] for s in stored[variant]]):.0f}" for i in (0, 1)]
            print(f"| {variant} | " + " | ".join(cells) + f" | {saves} | {counts} | {sizes[1]}; {sizes[0]} |")
        print("\nStatements: captured by Django's query log for one autocommit save of a loaded row; (audit) = writes "
              "the audit table; work done by database triggers is not a statement and is not shown.")
        print("Bytes per event, measured after the create phase over the audit table(s) (pghistory: its event and "
              "context tables) divided by the events the create phase recorded, median over rounds:")
        for how in sorted(m for m in measured if m):
            print(f"  {how}")
        print("  Allocated sizes grow by whole pages: with few writes per phase they mostly measure page granularity.")
        if backend == "sqlite":
            print_sqlite_io(io, variants, args)


def print_sqlite_io(io, variants, args):
    """The SQLite table of what each write's transaction costs the disk: the bytes the process wrote a write and,
    with ``--atomic`` (every variant's write then ends in Django's COMMIT), the time in that COMMIT, medians."""
    in_commit = args.atomic
    print("\nSQLite, a write's durable part, median of the rounds: "
          + ("µs in Django's COMMIT (SQLite syncs the journal, writes and syncs the pages, deletes the journal) and "
             if in_commit else "")
          + "KB the process wrote (/proc/self/io wchar: the journal's copies of the pages the transaction "
            "changes, then the pages; in WAL the pages appended to the log)")
    print("| variant | " + " | ".join(PHASES) + " |\n|---|" + "---|" * len(PHASES))
    base = {p: io["baseline"][p] for p in PHASES} if "baseline" in io else None
    for variant in variants:
        cells = []
        for phase in PHASES:
            count = args.batch if phase == "batch" else args.n
            values = io[variant][phase]
            commit, written = (median([v[i] for v in values]) / count for i in (0, 1))
            cell = f"{written / 1024:.1f} KB"
            if in_commit:
                cell = f"{commit * 1e6:.0f} µs, " + cell
            if base and variant != "baseline":
                b_commit, b_written = (median([v[i] for v in base[phase]]) / count for i in (0, 1))
                added = f"{(written - b_written) / 1024:+.1f} KB"
                cell += f" ({(commit - b_commit) * 1e6:+.0f} µs, {added})" if in_commit else f" ({added})"
            cells.append(cell)
        print(f"| {variant} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
