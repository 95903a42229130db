"""What tamper evidence costs writers: capture with row hashes (HMAC-SHA256) vs the same capture without them.

    python benchmarks/tamper_overhead.py --backend sqlite --backend postgresql --backend mariadb --rounds 5

Variants, interleaved in every round, each (variant, round) in a fresh subprocess on a fresh database:
``baseline`` (no auditing), ``audit-nohash`` (audit-middleware with hashing switched off: a signer whose
row_hash returns None) and ``audit-hmac`` (the shipped default with a signing key). Phases: N creates, one
transaction each (as N web requests would); N updates of two fields; a 10,000-row batch in one transaction.
The figure that matters is ``audit-hmac / audit-nohash`` in the same run. Then, once per backend, the cost of
the other half of the design, off the write path: sealing and verifying the events written.
"""


import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))
from _workload import N_BATCH, N_WRITES, median, out_dir, timed  # noqa: E402
from sqlalchemy_capture import drop_database, fresh_database  # noqa: E402

VARIANTS = ("baseline", "audit-nohash", "audit-hmac")
PHASES = ("create", "update", "batch")


class NoHash:
    """A signer that signs nothing: the write path exactly as before tamper evidence."""

    keyed = False

    def row_hash(self, row: object) -> None:
        return None

    def values_hash(self, values: object) -> None:  # what the insert path calls (audit_middleware.store)
        return None


def run_variant(variant: str, url: str, n: int, batch: int) -> dict[str, float]:
    from sqlalchemy import JSON, String, create_engine
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

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
        owner_id: Mapped[int]
        created_at: Mapped[datetime]

    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    auditor = None
    if variant != "baseline":
        from audit_middleware import Actor, RequestContext, acting_as, request_context
        from audit_middleware.adapters.sqlalchemy import track
        from audit_middleware.adapters.sqlalchemy.store import set_signer

        auditor = track(Session, signing_key="bench-signing-key")
        auditor.create_tables()
        if variant == "audit-nohash":
            set_signer(auditor.table, NoHash())  # type: ignore[arg-type]
        acting_as(Actor.user("7", "ada@example.com")).__enter__()
        request_context(RequestContext(ip="203.0.113.9", user_agent="bench/1.0", request_id="r-1",
                                       method="POST", path="/warehouses")).__enter__()
    now = datetime.now(timezone.utc).replace(tzinfo=None)

    def row(i: int) -> "Warehouse":
        return Warehouse(name=f"Warehouse {i}", slug=f"warehouse-{i}", schedule="hourly",
                         settings={"region": "eu", "retries": 3}, owner_id=7, created_at=now)

    ids: list[int] = []

    def create() -> None:
        for i in range(n):
            with Session() as s:
                w = row(i)
                s.add(w)
                s.commit()
                ids.append(w.id)

    def update() -> None:
        for i, pk in enumerate(ids):
            with Session() as s:
                w = s.get(Warehouse, pk)
                w.schedule = "daily"
                w.name = f"Warehouse {i} (renamed)"
                s.commit()

    def batched() -> None:
        with Session() as s:
            s.add_all([row(i) for i in range(batch)])
            s.commit()

    result: dict[str, float] = {}
    for phase, fn in (("create", create), ("update", update), ("batch", batched)):
        cpu = time.process_time()
        result[phase] = timed(fn)
        result[f"{phase}_cpu"] = time.process_time() - cpu  # this process only: robust on a busy machine
    if variant == "audit-hmac":
        assert auditor is not None
        result["seal"] = timed(lambda: auditor.seal(delay=timedelta(0)))
        report = None

        def check() -> None:
            nonlocal report
            report = auditor.verify(seal_first=False)

        result["verify"] = timed(check)
        assert report is not None and report.ok, report
        result["events"] = report.events
    engine.dispose()
    return result


def hmac_per_row(rows: int = 100_000) -> float:
    """Microseconds to hash one typical row, in this process (the pure CPU cost added to each write)."""
    from audit_middleware import Actor
    from audit_middleware.events import AuditEvent
    from audit_middleware.ids import new_event_id
    from audit_middleware.integrity import Signer
    from audit_middleware.store import event_to_row

    event = AuditEvent(new_event_id(), datetime.now(timezone.utc), "Warehouse Modified", "Warehouses", "modified",
                       Actor.user("7", "ada@example.com"), "Warehouse", "42", "Production", "ws_1",
                       {"schedule": ["hourly", "daily"], "name": ["Warehouse 1", "Warehouse 1 (renamed)"]},
                       {"ip": "203.0.113.9", "user_agent": "bench/1.0", "request_id": "r-1"})
    row = event_to_row(event)
    signer = Signer("bench-signing-key")
    best = min(timed(lambda: [signer.row_hash(row) for _ in range(rows)]) for _ in range(3))
    return best / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", action="append", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=N_WRITES)
    parser.add_argument("--batch", type=int, default=N_BATCH)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child[0], args.child[1], args.n, args.batch)))
        return
    workdir = out_dir()
    print(f"row hash alone: {hmac_per_row():.2f} µs per event (HMAC-SHA256 over the canonical row, best of 3)")
    for backend in args.backend or ["sqlite"]:
        results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            for variant in order:
                url, name = fresh_database(backend, workdir)
                try:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", variant, url, "--n", str(args.n), "--batch",
                         str(args.batch)], check=True, capture_output=True, text=True,
                    ).stdout
                finally:
                    drop_database(backend, name)
                    if url.startswith("sqlite:///"):
                        os.remove(url[len("sqlite:///"):])
                results[variant].append(json.loads(out.strip().splitlines()[-1]))
        report(backend, args, results)


def report(backend: str, args: argparse.Namespace, results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\n### Tamper evidence, {backend}: N={args.n} one transaction each, batch={args.batch}, "
          f"{args.rounds} rounds, medians: wall seconds / CPU seconds of the app process")
    print("| variant | create | update | batched create |")
    print("|---|---|---|---|")
    med = {v: {p: median([r[p] for r in runs]) for p in [*PHASES, *(f"{p}_cpu" for p in PHASES)]}
           for v, runs in results.items()}
    for variant in VARIANTS:
        print(f"| {variant} | " + " | ".join(
            f"{med[variant][p]:.3f} / {med[variant][p + '_cpu']:.3f}" for p in PHASES) + " |")
    for label, suffix in (("wall", ""), ("CPU", "_cpu")):
        cells = []
        for p in PHASES:
            per = args.batch if p == "batch" else args.n
            hashed, plain = med["audit-hmac"][p + suffix], med["audit-nohash"][p + suffix]
            cells.append(f"{hashed / plain:.3f} ({(hashed - plain) / per * 1e6:+.1f} µs/event)")
        print(f"| **hmac / nohash, {label}** | " + " | ".join(cells) + " |")
    hmac_runs = results["audit-hmac"]
    events = median([r["events"] for r in hmac_runs])
    seal, verify = median([r["seal"] for r in hmac_runs]), median([r["verify"] for r in hmac_runs])
    print(f"\nOff the write path: seal {events:.0f} events in {seal:.3f} s ({events / seal:,.0f}/s), "
          f"verify them in {verify:.3f} s ({events / verify:,.0f}/s)")

if __name__ == "__main__":
    main()
