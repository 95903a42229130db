"""Every benchmark command of ``benchmarks/README.md`` runs, at a few writes, and prints what it promises.

The benchmarks are how issue 7's figures are measured (``benchmarks/RESULTS.md``); a command that no longer runs
(an adapter's internals renamed under it) is a figure nobody can measure again. Each test runs one command as
documented, with tiny sizes, in a scratch directory (``AUDIT_BENCH_OUT``), and checks its table: every variant's
row with its figures, and what the benchmark counts that does not depend on the machine's speed (SQL statements
a write, audit rows recorded, events recorded against requests made). Timings are never asserted.

Run by ``tox -e benchmarks``, which installs ``benchmarks/requirements.txt`` (the peers: never library
dependencies). PostgreSQL unreachable skips those runs (fails under ``AUDIT_REQUIRE_DATABASES``, as in CI); so does
wrk missing (``apt-get install -y wrk``; ``.ci/run`` installs it). ``batch_instructions.py`` (valgrind: a minute
and more even at 3 writes) runs only with ``AUDIT_LONG_TESTS=1``; ``request_instructions.py`` (5 minutes) not at all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import PG_HOST, admin_url, long_tests, require_databases, unavailable

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?"
LONG = long_tests()


def run(script: str, *args: str, workdir: Path, timeout: float = 600) -> str:
    """Run ``benchmarks/<script> args`` from ``workdir`` (its scratch files there too); its standard output."""
    env = {**os.environ, "AUDIT_BENCH_OUT": str(workdir), "AUDIT_BENCH_PG": PG_HOST, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"{script} {' '.join(args)} exited with {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done.stdout


def table_rows(output: str, heading: str) -> dict[str, list[str]]:
    """The Markdown table after the line containing ``heading``: its rows' cells by first cell."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if heading in line), None)
    assert start is not None, f"no {heading!r} in:\n{output[-3000:]}"
    first = next((i for i in range(start, len(lines)) if lines[i].startswith("|")), len(lines))
    body = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(body) >= 2 and set(body[1][0]) <= {"-"}, f"no table after {heading!r} in:\n{output[-3000:]}"
    return {cells[0]: cells[1:] for cells in body[2:]}  # after the header and its rule


def numbers(cell: str) -> list[float]:
    return [float(found.replace(",", "")) for found in re.findall(NUMBER, cell)]


@pytest.fixture
def postgresql() -> None:
    """PostgreSQL on loopback, as the benchmarks expect it (``AUDIT_BENCH_PG``)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url("postgresql"))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any connection problem means: not reachable here
        unavailable("postgresql", f"{type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        engine.dispose()


def needs_tool(name: str) -> None:
    if shutil.which(name) is None:
        message = f"{name} is not installed: apt-get install -y {name}"
        if require_databases():
            pytest.fail(message + " (AUDIT_REQUIRE_DATABASES is set, so this fails instead of skipping)")
        pytest.skip(message)


def test_sqlalchemy_capture_writes_one_statement_more_than_the_baseline(tmp_path: Path, postgresql: None) -> None:
    output = run("sqlalchemy_capture.py", "--backend", "sqlite", "--backend", "postgresql", "--rounds", "1",
                 "--n", "10", "--batch", "100", workdir=tmp_path)
    for backend in ("sqlite", "postgresql"):
        rows = table_rows(output, f"### SQLAlchemy, {backend}:")
        assert set(rows) == {"baseline", "audit-middleware", "continuum"}, rows
        for variant in ("audit-middleware", "continuum"):
            assert all(numbers(cell) for cell in rows[variant][:4]), rows[variant]  # ratio and ms added, each phase
        baseline = numbers(rows["baseline"][4])
        ours = numbers(rows["audit-middleware"][4])
        assert len(baseline) == len(ours) == 3, (baseline, ours)
        # create, update, delete: the event row, and nothing else (no SELECT of old values)
        assert ours == [b + 1 for b in baseline], (backend, baseline, ours)
    pg = table_rows(output, "### SQLAlchemy, postgresql:")
    assert numbers(pg["audit-middleware"][5])[0] > 100  # bytes stored per event


def test_django_capture_records_an_event_per_write_with_every_peer(tmp_path: Path, postgresql: None) -> None:
    output = run("django_capture.py", "--backend", "sqlite", "--backend", "postgresql", "--rounds", "1",
                 "--n", "10", "--batch", "100", workdir=tmp_path)
    # An update's statements, as Django's query log shows them: on PostgreSQL the UPDATE and its event row go as
    # one statement (one round trip, as the unaudited save)
    statements = {"sqlite": "BEGIN, UPDATE, INSERT (audit), COMMIT",
                  "postgresql": "UPDATE+INSERT (audit) in one statement"}
    for backend, peers in (("sqlite", set()), ("postgresql", {"pghistory"})):
        rows = table_rows(output, f"## {backend}: 10 writes per phase")
        assert set(rows) == {"baseline", "audit-middleware", "auditlog", "simple-history", "easy-audit"} | peers, rows
        ours = rows["audit-middleware"]
        assert all(len(numbers(cell)) == 3 for cell in ours[:4]), ours  # µs, ratio, µs added; each phase
        assert ours[4] == statements[backend], ours[4]
        assert ours[5] == "10/20/30/130", ours[5]  # audit rows after create, update, delete, batch: one a write
        assert rows["baseline"][4] == "UPDATE"


def test_django_capture_prices_the_transaction_alone_and_shows_each_variants_statements(tmp_path: Path) -> None:
    # baseline-in-atomic: the unaudited save in transaction.atomic(), in an autocommit run; --atomic: every variant's
    # writes in a block, and the statements shown are those of a save in one
    output = run("django_capture.py", "--backend", "sqlite", "--variant", "baseline", "--variant", "baseline-in-atomic",
                 "--rounds", "1", "--n", "10", "--batch", "100", workdir=tmp_path)
    rows = table_rows(output, "## sqlite: 10 writes per phase")
    assert set(rows) == {"baseline", "baseline-in-atomic"}, rows
    assert rows["baseline"][4] == "UPDATE"
    assert rows["baseline-in-atomic"][4] == "BEGIN, UPDATE, COMMIT"
    assert all(len(numbers(cell)) == 3 for cell in rows["baseline-in-atomic"][:4]), rows  # µs, ratio, µs added
    assert rows["baseline-in-atomic"][5] == "0/0/0/0"
    atomic = run("django_capture.py", "--backend", "sqlite", "--variant", "baseline", "--variant", "audit-middleware",
                 "--atomic", "--rounds", "1", "--n", "10", "--batch", "100", workdir=tmp_path)
    rows = table_rows(atomic, "## sqlite, each write in transaction.atomic(): 10 writes per phase")
    assert rows["baseline"][4] == "BEGIN, UPDATE, COMMIT"
    assert rows["audit-middleware"][4] == "BEGIN, UPDATE, INSERT (audit), COMMIT"


def test_write_floor_prices_the_event_row_alone(tmp_path: Path, postgresql: None) -> None:
    output = run("write_floor.py", "--backend", "sqlite", "--backend", "postgresql", "--rounds", "1", "--n", "10",
                 workdir=tmp_path)
    rows = [line for line in output.splitlines() if line.startswith(("| sqlite |", "| postgresql |"))]
    variants = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]) for line in rows}
    assert {("sqlite", "baseline"), ("sqlite", "event, 1 trip"), ("postgresql", "baseline"),
            ("postgresql", "event, 1 trip")} <= variants, variants
    assert all(numbers(line.split("|")[3]) for line in rows), rows
    batch = run("write_floor.py", "--backend", "sqlite", "--rounds", "1", "--batch", "50", workdir=tmp_path)
    assert "| sqlite | batch, ORM and event rows |" in batch, batch


def test_tamper_overhead_seals_and_verifies(tmp_path: Path) -> None:
    output = run("tamper_overhead.py", "--backend", "sqlite", "--rounds", "1", "--n", "10", "--batch", "100",
                 workdir=tmp_path)
    rows = table_rows(output, "### Tamper evidence, sqlite")
    assert {"baseline", "audit-nohash", "audit-hmac"} <= set(rows), rows
    sealed = re.search(r"seal (\d+) events .* verify them", output)
    assert sealed and int(sealed.group(1)) > 0, output


def test_bulk_statements_record_every_row(tmp_path: Path) -> None:
    output = run("bulk_statements.py", "--orm", "sqlalchemy", "--orm", "django", "--backend", "sqlite",
                 "--rows", "200", "--rounds", "1", workdir=tmp_path)
    for orm in ("sqlalchemy", "django"):
        heading = f"## {orm}, sqlite: one statement over 200 rows"
        lines = output.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(heading))
        measured = {(cells[0], cells[1]) for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in lines[start + 3:start + 9])}
        assert measured == {(v, s) for v in ("baseline", "audit-middleware") for s in ("insert", "update", "delete")}


def test_flask_requests_records_an_event_per_update(tmp_path: Path) -> None:
    output = run("flask_requests.py", "--backend", "sqlite", "--rounds", "1", "--hello", "20", "--updates", "10",
                 workdir=tmp_path)
    recorded = re.search(r"events recorded by the audited app: (\d+) \(expected (\d+)\)", output)
    assert recorded and recorded.group(1) == recorded.group(2), output
    assert re.search(r"^update\s+median\s+\d+\s+\d+\s+[\d.]+", output, re.MULTILINE), output


def test_read_side_pages_and_export(tmp_path: Path) -> None:
    """The pages and the export, each also through the code at ``--before REV`` (here HEAD)."""
    output = run("read_side.py", "--backend", "sqlite", "--events", "2000", "--runs", "3", "--before", "HEAD",
                 workdir=tmp_path)
    pages = table_rows(output, "| first page (50 rows)")
    assert set(pages) == {"actor + event + 30 days", "resource", "actor only", "event only",
                          "workspace, no filter"}, pages
    assert all(len(numbers(" ".join(cells))) == 4 for cells in pages.values()), pages  # p50 and p99, now and REV
    export = table_rows(output, "| CSV export of one workspace")
    assert list(export) == ["up to 5,000 rows", "up to 5,000 rows (audit-middleware at HEAD)", "up to 1,000,000,000 rows",
                            "up to 1,000,000,000 rows (audit-middleware at HEAD)"], export
    rows = [numbers(cells[0])[0] for cells in export.values()]
    assert rows[2] > 0 and rows[2] == rows[3] and rows[0] == rows[1], export
    assert list(tmp_path.glob("read-2000*.sqlite3")), "the trail is kept in AUDIT_BENCH_OUT"


def test_admin_pages_answer_through_both_frameworks(tmp_path: Path) -> None:
    output = run("admin_pages.py", "--backend", "sqlite", "--events", "2000", "--runs", "3", workdir=tmp_path)
    for framework in ("flask", "django"):
        assert f"- {framework}: rows shown in the first 50 responses checked: the same as the SQLAlchemy store's" \
            in output, output
        assert re.search(rf"- {framework}: CSV download of one workspace, \d+ rows", output), output


def test_forwarding_drains_the_outbox(tmp_path: Path) -> None:
    output = run("forwarding.py", "--backend", "sqlite", "--events", "200", "--seconds", "1", "--rate", "40",
                 "--rounds", "1", workdir=tmp_path)
    for kind in ("segment", "webhook"):
        for relays in (1, 4):
            assert re.search(rf"sqlite\s+{kind} {relays} relay\(s\):\s+{NUMBER} events/s", output), output
    assert re.search(r"sqlite\s+delay at \d+ events/s \(in-process drainer\): p50 \d+ ms", output), output


def test_webhook_latency_keeps_connections(tmp_path: Path) -> None:
    output = run("webhook_latency.py", "--rtt", "0", "--events", "20", "--rounds", "1", workdir=tmp_path)
    rows = table_rows(output, "| RTT |")
    assert list(rows) == ["0 ms"], rows
    one, four = rows["0 ms"]
    assert numbers(one)[1:] == [1, 1], one  # one at a time: one connection, kept for every post
    assert numbers(four)[1:] == [4, 4], four  # four at a time: four connections


def test_http_load_counts_an_event_per_write_request(tmp_path: Path) -> None:
    needs_tool("wrk")
    output = run("http_load.py", "--framework", "flask", "--framework", "django", "--backend", "sqlite",
                 "--rounds", "1", "--duration", "1s", "--warmup", "1s", "--workdir", str(tmp_path), workdir=tmp_path)
    assert "WARNING" not in output, output
    for framework in ("flask", "django"):
        assert f"## {framework}, sqlite" in output, output
    assert len(re.findall(r"^write\s+\d+\s+\d+\s+[\d.]+", output, re.MULTILINE)) == 2, output
    autocommit = run("http_load.py", "--framework", "django", "--backend", "sqlite", "--autocommit-save", "--rounds", "1",
                     "--duration", "1s", "--warmup", "1s", "--workdir", str(tmp_path), workdir=tmp_path)
    assert "WARNING" not in autocommit and "## django, sqlite, saves in autocommit" in autocommit, autocommit


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="a minute and more under valgrind: only with AUDIT_LONG_TESTS=1")
def test_batch_instructions_counts_both_variants(tmp_path: Path) -> None:
    needs_tool("valgrind")
    output = run("batch_instructions.py", "--backend", "sqlite", "--phase", "create", "--size", "3",
                 workdir=tmp_path)
    rows = table_rows(output, "## Django, sqlite: 3 creates")
    assert set(rows) == {"baseline", "audit-middleware"}, rows
    assert numbers(rows["audit-middleware"][2])[0] > numbers(rows["baseline"][2])[0] > 0, rows  # per create
