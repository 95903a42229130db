"""Instructions, not seconds: what a batch of creates in one transaction costs with and without
audit-middleware, on Django or SQLAlchemy, counted by ``valgrind --tool=callgrind``, so that two versions of the
code can be compared on a machine whose timings swing more than the difference (the count of the same process
does not depend on what else the machine is doing).

    .venv/bin/python benchmarks/batch_instructions.py --backend sqlite --size 10000 [--orm sqlalchemy] [--before 3676a4f]

For each variant, two processes run under callgrind: one sets the app up (``django_capture.setup_variant`` or
``sqlalchemy_capture.setup_variant``: the model, and for audit-middleware an actor and request context) and
runs one batch of ``--size`` creates in one transaction (Django: ``objects.create()`` inside one
``transaction.atomic()``; SQLAlchemy: ``add_all()`` and one ``commit()``), the other sets up alike and runs none; the batch's instructions are the difference (the two run side by side). ``--before REV`` adds audit-middleware as it was at
git revision REV (exported into a temporary directory, put first on ``PYTHONPATH``). Also reported: the
instructions spent in the garbage collector (``gc_collect_main``) and in the sqlite3 module's
``cursor.execute`` (SQLite's own work, statement and index updates included), each over the whole process,
batch minus no batch. Needs valgrind (``apt-get install valgrind``); about 2 minutes a variant at 10,000
(SQLite).

``--phase create``, ``update`` or ``delete`` counts ``--size`` writes one transaction each instead, as the capture
benchmarks' per-write phases run them (``django_capture.phase_writes``, ``sqlalchemy_capture.phase_writes``; the
rows an update or delete needs are made first in both processes). ``--atomic`` runs each Django write inside
``transaction.atomic()``, so the baseline pays for a transaction too.

``--without PART`` (Django, repeatable) adds a variant of audit-middleware with parts of the capture switched off,
to see where its instructions go: ``send`` (SQLite: the event rows are made, hashes included, but not sent to
the database), ``hash`` (no row hash), ``write`` (nothing written: no rows made), ``build`` (no event made: the capture
runs up to the recorder), ``receiver`` (no ``post_save`` receiver: the patched ``save_base`` alone). Each
``--without`` is one variant, its parts comma-separated (``--without write,build``). Measurement only: the events
of such a variant are incomplete or missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import django_capture  # noqa: E402
import sqlalchemy_capture  # noqa: E402
from _callgrind import instructions  # noqa: E402
from _revision import runs_with_before  # noqa: E402

FUNCTIONS = {"gc": "gc_collect_main", "sqlite": "pysqlite_cursor_execute"}
ATOMIC = "AUDIT_BENCH_ATOMIC"  # set for the child: Django's per-write phases run each write in transaction.atomic()
WITHOUT = "AUDIT_BENCH_WITHOUT"  # set for the child: the parts of Django's capture to switch off (--without)
PARTS = ("send", "hash", "write", "build", "receiver")


def switch_off(parts: set[str]) -> None:
    """Switch ``parts`` of the Django capture off in this (child) process, once it is set up (``--without``)."""
    from django.db.models import signals

    from audit_middleware.adapters.django import capture, store
    from audit_middleware.integrity import Signer
    from audit_middleware.recorder import Recorder

    if "send" in parts:
        def rows_only(_executor: Any, connection: Any, events: Any, _mark: str) -> None:
            step = store._rows_per_statement(connection)  # the rows of one INSERT at a time, as they are sent
            for start in range(0, len(events), step):
                store._stored_rows(connection, events[start:start + step])

        store._execute_inserts = rows_only
    if "hash" in parts:
        Signer.values_hash = lambda _self, _values: "0" * 64  # type: ignore[method-assign]
    if "write" in parts:
        capture.insert_events = lambda _connection, _events, **_: None
    if "build" in parts:
        Recorder.change_events = lambda _self, *_a, **_k: []  # type: ignore[method-assign]
    if "receiver" in parts:
        signals.post_save.receivers = []
        signals.post_save.sender_receivers_cache.clear()


def child(orm: str, variant: str, database: Any, batches: int, size: int, phase: str = "batch") -> None:
    """One process to count: set ``variant`` up, then (``batches`` times) the ``phase``: ``batch`` creates
    ``size`` rows in one transaction; ``create``, ``update`` and ``delete`` write ``size`` rows one transaction
    each, as the capture benchmarks' phases do (the rows to update or delete are created first, uncounted:
    the process without the phase creates them too)."""
    if orm == "sqlalchemy":
        Warehouse, Session, _engine, _count, scopes, _auditor = sqlalchemy_capture.setup_variant(variant, database)
        for scope in scopes:
            scope.__enter__()
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if phase != "batch":
            writes = sqlalchemy_capture.phase_writes(Warehouse, Session, now)
            ids = writes["create"](size) if phase != "create" else []
            for _ in range(batches):
                writes[phase](size) if phase == "create" else writes[phase](ids)
            return
        for _ in range(batches):
            with Session() as session:
                session.add_all([sqlalchemy_capture.new_row(Warehouse, i, now) for i in range(size)])
                session.commit()
        return
    Warehouse, _request, per_write, scope, _models = django_capture.setup_variant(
        variant, database, atomic=bool(os.environ.get(ATOMIC)))
    if os.environ.get(WITHOUT):
        switch_off(set(os.environ[WITHOUT].split(",")))
    from django.db import transaction

    with scope:
        if phase != "batch":
            writes = django_capture.phase_writes(Warehouse, per_write)
            ids = writes["create"](size) if phase != "create" else []
            for _ in range(batches):
                writes[phase](size) if phase == "create" else writes[phase](ids)
            return
        for _ in range(batches):
            with transaction.atomic():
                for i in range(size):
                    Warehouse.objects.create(name=f"Warehouse {i}", write_key="wk_secret", capacity=i, notes="x")


def counted(orm: str, variant: str, backend: str, batches: int, size: int, workdir: str,
            pythonpath: str | None, phase: str = "batch", atomic: bool = False, without: str = "") -> dict:
    """Run the child under callgrind: its total instructions and those of FUNCTIONS (inclusive)."""
    module = sqlalchemy_capture if orm == "sqlalchemy" else django_capture
    database, name = module.fresh_database(backend, workdir)
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}), **({ATOMIC: "1"} if atomic else {}),
           WITHOUT: without}
    try:
        return instructions([sys.executable, __file__, "--child", orm, variant, json.dumps(database), str(batches),
                             str(size), phase], env, workdir, FUNCTIONS, cwd=os.path.dirname(os.path.abspath(__file__)))
    finally:
        module.drop_database(backend, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "mariadb"), default="sqlite")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--before", metavar="REV", help="also count audit-middleware as of this git revision")
    parser.add_argument("--orm", choices=("django", "sqlalchemy"), default="django")
    parser.add_argument("--phase", choices=("batch", "create", "update", "delete"), default="batch",
                        help="batch: SIZE creates in one transaction; create, update, delete: SIZE writes, one "
                             "transaction each (autocommit saves on Django)")
    parser.add_argument("--atomic", action="store_true",
                        help="Django, per-write phases: each write inside transaction.atomic() (as under "
                             "ATOMIC_REQUESTS), so the baseline pays for a transaction too")
    parser.add_argument("--without", action="append", default=[], metavar="PART[,PART]",
                        help=f"Django: also count audit-middleware with these parts of capture off ({', '.join(PARTS)});"
                             " one variant each time it is given")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        orm, variant, database, batches, size, phase = args.child
        child(orm, variant, json.loads(database), int(batches), int(size), phase)
        return
    with tempfile.TemporaryDirectory() as workdir:
        for parts in args.without:
            if args.orm != "django" or not set(parts.split(",")) <= set(PARTS):
                parser.error(f"--without takes Django's parts {', '.join(PARTS)}, comma-separated: not {parts!r}")
            if "send" in parts.split(",") and args.backend != "sqlite":
                parser.error("--without send: SQLite only (PostgreSQL's rows go as a COPY or with the COMMIT)")
        runs = [(*run, "") for run in runs_with_before(args.before, workdir)]
        runs += [(f"audit-middleware without {parts}", "audit-middleware", None, parts) for parts in args.without]
        framework = "SQLAlchemy" if args.orm == "sqlalchemy" else "Django"
        what = (f"{args.size:,} creates in one transaction" if args.phase == "batch"
                else f"{args.size:,} {args.phase}s, one transaction each"
                + (" (`transaction.atomic()`)" if args.atomic else ""))
        unit = "create" if args.phase == "batch" else args.phase
        print(f"\n## {framework}, {args.backend}: {what}, instructions (callgrind)")
        print(f"| variant | instructions | ratio to baseline | per {unit} | garbage collector | sqlite3 execute |")
        print("|---|---|---|---|---|---|")
        base = None
        for label, variant, pythonpath, parts in runs:
            with ThreadPoolExecutor(2) as pool:  # the two processes side by side: counts do not depend on it
                runs_of = [pool.submit(counted, args.orm, variant, args.backend, batches, args.size, workdir, pythonpath,
                                       args.phase, args.atomic, parts)
                           for batches in (1, 0)]
                with_batch, without = (run.result() for run in runs_of)
            batch = {key: with_batch[key] - without[key] for key in with_batch}
            base = base or batch
            ratio = f"×{batch['total'] / base['total']:.2f}" if batch is not base else ""
            print(f"| {label} | {batch['total'] / 1e9:.2f} × 10⁹ | {ratio} | {batch['total'] / args.size:,.0f} | "
                  f"{batch['gc'] / 1e9:.3f} × 10⁹ | {batch['sqlite'] / 1e9:.3f} × 10⁹ |")


if __name__ == "__main__":
    main()
