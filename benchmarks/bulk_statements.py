"""Bulk statements: what auditing every row of one INSERT, UPDATE or DELETE statement costs, in time and memory.

    .venv/bin/python benchmarks/bulk_statements.py --orm sqlalchemy --orm django --backend sqlite \\
        --backend postgresql --rows 100000 --rounds 3 [--before REV]

The statement a user runs to change many rows at once: SQLAlchemy ``session.execute(insert(Warehouse),
rows)`` (its ORM bulk INSERT), ``session.execute(update(Warehouse).values(schedule="daily"))`` or
``delete(Warehouse)`` and one ``commit()`` (and SQLAlchemy's legacy ``session.bulk_insert_mappings(Warehouse, rows)``
and ``bulk_update_mappings(Warehouse, [{"id": ..., "schedule": "daily"}, ...])``: ``--statement
insert-mappings``, ``update-mappings``); Django ``Warehouse.objects.bulk_create(objects, batch_size=1000)``,
``Warehouse.objects.update(notes="y")`` or ``Warehouse.objects.all().delete()`` in autocommit
(``--statement`` picks some). The rows to update or delete are made first, unaudited and a chunk at a time (so
making them does not set the process's peak memory); the rows to insert are built before the clock starts. Each
(variant, statement, round) runs in a fresh process on a fresh database; variants are interleaved in every
round. Reported: the statement's wall time (median of the rounds), microseconds a row, and how much the
process's peak resident memory grew during the statement (``ru_maxrss`` after it minus the resident size
before it; the median). The unaudited baseline's statement is a single SQL statement; the audited one also
reads each row's old values (and for an UPDATE its new ones) and writes one event a row. ``--before REV`` adds
audit-middleware as it was at git revision REV (exported onto ``PYTHONPATH``, as ``batch_instructions.py``
does). Django's DELETE goes through its collector, which loads every row as an instance when a model has
delete receivers, audited or not by this library (django-auditlog and django-simple-history alike).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import django_capture  # noqa: E402
import sqlalchemy_capture  # noqa: E402
from _revision import runs_with_before  # noqa: E402
from _workload import median  # noqa: E402

MAKE_CHUNK = 5_000
STATEMENTS = ("insert", "update", "delete")
LEGACY = ("insert-mappings", "update-mappings")  # SQLAlchemy's bulk_insert_mappings() / bulk_update_mappings()


def rss_mb() -> float:
    """The resident size of this process now, in MB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(orm: str, variant: str, database: Any, statement: str, rows: int) -> dict[str, float]:
    if orm == "sqlalchemy":
        from sqlalchemy import delete, insert, update

        from audit_middleware import suspend_auditing

        Warehouse, Session, engine, _count, scopes, _auditor = sqlalchemy_capture.setup_variant(variant, database)
        for scope in scopes:
            scope.__enter__()
        now = datetime.now(timezone.utc).replace(tzinfo=None)

        def values(start: int, stop: int) -> list[dict[str, Any]]:
            return [{"name": f"Warehouse {i}", "slug": f"warehouse-{i}", "enabled": True, "schedule": "hourly",
                     "settings": {"region": "eu", "retries": 3}, "owner_id": 7, "created_at": now, "updated_at": now}
                    for i in range(start, stop)]

        inserting = statement.startswith("insert")
        new_rows = values(0, rows) if inserting else []
        changes = [{"id": i, "schedule": "daily"} for i in range(1, rows + 1)] if statement == "update-mappings" else []
        with suspend_auditing():
            for start in range(0, 0 if inserting else rows, MAKE_CHUNK):
                with engine.begin() as connection:
                    connection.execute(insert(Warehouse.__table__), values(start, min(rows, start + MAKE_CHUNK)))

        def run() -> None:
            with Session() as session:
                if statement == "insert":
                    session.execute(insert(Warehouse), new_rows)
                elif statement == "insert-mappings":
                    session.bulk_insert_mappings(Warehouse, new_rows)
                elif statement == "update-mappings":
                    session.bulk_update_mappings(Warehouse, changes)
                else:
                    session.execute(update(Warehouse).values(schedule="daily") if statement == "update"
                                    else delete(Warehouse))
                session.commit()
    else:
        if statement.endswith("-mappings"):
            raise SystemExit(f"{statement} is SQLAlchemy's")
        Warehouse, _request, _per_write, scope, _models = django_capture.setup_variant(variant, database)
        scope.__enter__()
        from audit_middleware import suspend_auditing

        def objects(start: int, stop: int) -> list[Any]:
            return [Warehouse(name=f"Warehouse {i}", write_key="wk_secret", capacity=i, notes="x")
                    for i in range(start, stop)]

        new_objects = objects(0, rows) if statement == "insert" else []
        with suspend_auditing():
            for start in range(0, rows if statement != "insert" else 0, MAKE_CHUNK):
                Warehouse.objects.bulk_create(objects(start, min(rows, start + MAKE_CHUNK)))

        def run() -> None:
            if statement == "insert":
                Warehouse.objects.bulk_create(new_objects, batch_size=1000)
            elif statement == "update":
                Warehouse.objects.update(notes="y")
            else:
                Warehouse.objects.all().delete()
    import gc

    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "grew_mb": max(0.0, peak_mb() - before)}


def measured(orm: str, variant: str, backend: str, statement: str, rows: int, workdir: str,
             pythonpath: str | None) -> dict[str, float]:
    module = sqlalchemy_capture if orm == "sqlalchemy" else django_capture
    database, name = module.fresh_database(backend, workdir)
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", orm, variant, json.dumps(database), statement, str(rows)],
            check=True, capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        module.drop_database(backend, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orm", action="append", choices=("sqlalchemy", "django"))
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="REV", help="also measure audit-middleware as of this git revision")
    parser.add_argument("--statement", action="append", choices=STATEMENTS + LEGACY)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        orm, variant, database, statement, rows = args.child
        print(json.dumps(child(orm, variant, json.loads(database), statement, int(rows))))
        return
    with tempfile.TemporaryDirectory() as workdir:
        runs = runs_with_before(args.before, workdir)
        for orm in args.orm or ["sqlalchemy", "django"]:
            for backend in args.backend or ["sqlite"]:
                print(f"\n## {orm}, {backend}: one statement over {args.rows:,} rows, median of {args.rounds} rounds")
                print("| variant | statement | seconds | µs a row | peak memory grew by |")
                print("|---|---|---|---|---|")
                for statement in args.statement or STATEMENTS:
                    if orm == "django" and statement in LEGACY:
                        continue
                    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in runs}
                    for round_ in range(args.rounds):
                        order = runs if round_ % 2 == 0 else runs[::-1]
                        for label, variant, pythonpath in order:
                            results[label].append(measured(orm, variant, backend, statement, args.rows, workdir,
                                                           pythonpath))
                    for label, _, _ in runs:
                        seconds = median([r["seconds"] for r in results[label]])
                        grew = median([r["grew_mb"] for r in results[label]])
                        print(f"| {label} | {statement} | {seconds:.2f} | {seconds / args.rows * 1e6:.1f} | "
                              f"{grew:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
