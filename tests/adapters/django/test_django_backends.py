"""Runs the Django test project (``project/``) once per database, the three runs in parallel.

Django binds its settings, and so its databases, once per process; each backend therefore gets its own
pytest subprocess with ``AUDIT_DJANGO_DB`` / ``AUDIT_DJANGO_DB_URL`` naming a fresh database created (and
dropped at the end) by the shared ``_server_databases`` fixture. Run one backend by hand with::

    AUDIT_DJANGO_INNER=1 AUDIT_DJANGO_DB=sqlite PYTHONPATH=tests/adapters/django/project \\
        .venv/bin/pytest tests/adapters/django/project
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ...conftest import selected_backends

PROJECT = Path(__file__).resolve().parent / "project"
TIMEOUT = 420


class Run:
    def __init__(self, backend: str, url: str, log: Path, prepared: bool = False) -> None:
        self.backend = backend
        self.log = log
        env = {
            **os.environ,
            "AUDIT_DJANGO_INNER": "1",
            "AUDIT_DJANGO_DB": backend,
            "AUDIT_DJANGO_DB_URL": url,
            "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if prepared:  # values bound in the server, statements prepared by psycopg (see the settings)
            env["AUDIT_DJANGO_PG_PREPARED"] = "1"
        if backend == "sqlite":
            env["AUDIT_DJANGO_BROWSER"] = "1"  # the headless Chromium test needs one database only
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", str(PROJECT), "-p", "no:cacheprovider", "-p", "no:django",
             "-q", "-rfEs"],
            cwd=PROJECT, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
        )

    def wait(self) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = -1
        self.handle.close()
        return code, self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def django_runs(_server_databases: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start every backend's run at once; each test below waits for its own."""
    runs: dict[str, Any] = {}
    base = tmp_path_factory.mktemp("django")
    for backend in selected_backends():
        try:
            url = (f"sqlite:///{base}/audit-django.sqlite3" if backend == "sqlite"
                   else _server_databases.new(backend))
        except (pytest.skip.Exception, pytest.fail.Exception) as outcome:
            runs[backend] = outcome
            continue
        runs[backend] = Run(backend, url, base / f"{backend}.log")
        if backend == "postgresql":
            runs[PREPARED] = Run(backend, _server_databases.new(backend), base / f"{PREPARED}.log", prepared=True)
    yield runs
    for run in runs.values():
        if isinstance(run, Run) and run.process.poll() is None:
            run.process.kill()
            run.process.wait()


PREPARED = "postgresql, values bound in the server and statements prepared"


def test_django_suite_passes_on_the_database(backend: str, django_runs: dict[str, Any]) -> None:
    """The whole Django test project (capture, middleware, admin views, commands, migrations) passes on
    this database."""
    run = django_runs[backend]
    if isinstance(run, BaseException):
        raise run
    code, output = run.wait()
    tail = "\n".join(output.splitlines()[-60:])
    assert code == 0, f"Django suite on {backend} exited {code}:\n{tail}"
    assert " passed" in output, f"Django suite on {backend} ran no test:\n{tail}"
    print(f"[{backend}] {output.splitlines()[-1]}")


def test_django_suite_passes_on_postgresql_with_prepared_statements(django_runs: dict[str, Any]) -> None:
    """The same suite on PostgreSQL with ``OPTIONS={"server_side_binding": True, "prepare_threshold": 5}`` (what
    the README suggests where admin pages are read over every workspace): psycopg prepares the page statements,
    which PostgreSQL then plans once."""
    if "postgresql" not in selected_backends():
        pytest.skip("PostgreSQL is not among AUDIT_TEST_DATABASES")
    test_django_suite_passes_on_the_database(PREPARED, django_runs)
