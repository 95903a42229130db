"""Per-save overhead of auditing with Django: no auditing vs audit-middleware vs django-auditlog vs
django-simple-history, all installed in the same environment and measured in the same run.

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e ".[django,postgresql,mysql]" \\
        -r benchmarks/requirements.txt
    /tmp/bench/bin/python benchmarks/django_capture.py --backend sqlite --backend postgresql --rounds 3

Each (variant, round) runs in a fresh subprocess (Django configures itself once per process) on a fresh
database, variants interleaved in every round. Phases, all through the ORM in autocommit mode as a web
request would: create N rows (``objects.create``), update two fields of each (``get``, change, ``save``),
delete each (``delete``), and create 10,000 rows inside one ``transaction.atomic()``. Prints medians, the
ratio to the unaudited baseline, microseconds added per write, and the SQL statements each save issued.
"""

import argparse
import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _workload import N_BATCH, N_WRITES, median, timed  # noqa: E402

VARIANTS = ("baseline", "audit-middleware", "auditlog", "simple-history")
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


def run_variant(variant, database, n, batch):
    """Runs inside the subprocess: configure Django for ``variant`` and time each phase."""
    if database["ENGINE"].endswith("mysql"):
        import pymysql

        pymysql.install_as_MySQLdb()
    os.environ["BENCH_VARIANT"] = variant
    import django
    from django.conf import settings

    apps = ["django.contrib.contenttypes", "django.contrib.auth", "django_bench_app"]
    apps += {"audit-middleware": ["audit_middleware.adapters.django"], "auditlog": ["auditlog"],
             "simple-history": ["simple_history"]}.get(variant, [])
    settings.configure(
        DATABASES={"default": database}, INSTALLED_APPS=apps, USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField", SECRET_KEY="bench",
    )
    django.setup()
    from django.apps import apps as registry
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)  # the apps with migrations (auth first: history rows point at users)
    with connection.schema_editor() as editor:
        for model in registry.get_app_config("django_bench_app").get_models():
            editor.create_model(model)
    from django_bench_app.models import Warehouse

    if variant == "audit-middleware":
        from audit_middleware import Actor, acting_as

        scope = acting_as(Actor.user("7", "ada@example.com"))
    else:
        from contextlib import nullcontext

        scope = nullcontext()

    def make(i):
        return Warehouse.objects.create(name=f"Warehouse {i}", write_key="wk_secret", capacity=i, notes="x")

    ids = []

    def create():
        ids.extend(make(i).pk for i in range(n))

    def update():
        for pk in ids:
            w = Warehouse.objects.get(pk=pk)
            w.name = f"{w.name} (renamed)"
            w.enabled = not w.enabled
            w.save()

    def delete():
        for w in list(Warehouse.objects.filter(pk__in=ids)):
            w.delete()

    def batch_create():
        with transaction.atomic():
            for i in range(batch):
                make(i)

    with scope:
        results = {"create": timed(create), "update": timed(update), "delete": timed(delete),
                   "batch": timed(batch_create)}
        w = Warehouse.objects.first()
        w.capacity += 1
        with CaptureQueriesContext(connection) as queries:
            w.save()
        results["save_statements"] = [q["sql"].split()[0] + (" (events)" if "audit_events" in q["sql"] else "")
                                      for q in queries.captured_queries]
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=N_WRITES)
    parser.add_argument("--batch", type=int, default=N_BATCH)
    parser.add_argument("--workdir", default="benchmarks/out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, json.loads(args.database), args.n, args.batch)))
        return
    os.makedirs(args.workdir, exist_ok=True)
    variants = args.variant or list(VARIANTS)
    for backend in args.backend or ["sqlite"]:
        samples = {v: {p: [] for p in PHASES} for v in variants}
        statements = {}
        for _ in range(args.rounds):
            for variant in variants:
                database, name = fresh_database(backend, os.path.abspath(args.workdir))
                try:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", variant, "--database", json.dumps(database),
                         "--n", str(args.n), "--batch", str(args.batch)],
                        check=True, capture_output=True, text=True,
                    ).stdout
                finally:
                    drop_database(backend, name)
                    if name is None and os.path.exists(database["NAME"]):
                        os.remove(database["NAME"])
                result = json.loads(out.strip().splitlines()[-1])
                statements[variant] = result.pop("save_statements")
                for phase in PHASES:
                    samples[variant][phase].append(result[phase])
        print(f"\n## {backend}: {args.n} writes per phase, batch of {args.batch}, median of {args.rounds} rounds")
        print("| variant | " + " | ".join(f"{p} (µs/write)" for p in PHASES) + " | statements per save |")
        print("|---|" + "---|" * (len(PHASES) + 1))
        base = {p: median(samples["baseline"][p]) if "baseline" in samples else None for p in PHASES}
        for variant in variants:
            cells = []
            for phase in PHASES:
                count = args.batch if phase == "batch" else args.n
                value = median(samples[variant][phase])
                cell = f"{value / count * 1e6:.0f}"
                if base[phase] and variant != "baseline":
                    cell += f" (×{value / base[phase]:.2f}, +{(value - base[phase]) / count * 1e6:.0f})"
                cells.append(cell)
            print(f"| {variant} | " + " | ".join(cells) + f" | {', '.join(statements[variant])} |")


if __name__ == "__main__":
    main()
