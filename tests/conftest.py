"""Shared fixtures. The databases tests run on: a SQLite file, PostgreSQL and MariaDB on loopback.

``AUDIT_TEST_DATABASES`` (comma separated: sqlite, postgresql, mariadb; default all three) chooses them.
A database that cannot be reached is skipped, unless ``AUDIT_REQUIRE_DATABASES=1`` (set by ``.ci/run``), which
turns the skip into a failure. Each test session works in databases of its own (``audit_test_<pid>``), so
several test runs on one machine never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

BACKENDS = ("sqlite", "postgresql", "mariadb")
PG_HOST = os.environ.get("AUDIT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MARIADB_HOST = os.environ.get("AUDIT_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


def selected_backends() -> list[str]:
    chosen = [b.strip() for b in os.environ.get("AUDIT_TEST_DATABASES", ",".join(BACKENDS)).split(",") if b.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"AUDIT_TEST_DATABASES: unknown backend(s) {sorted(unknown)}; use {BACKENDS}")
    return chosen


def require_databases() -> bool:
    return os.environ.get("AUDIT_REQUIRE_DATABASES", "") not in ("", "0", "false", "no")


def long_tests() -> bool:
    """``AUDIT_LONG_TESTS=1``: the long variants (more examples, more events, server restarts) run too."""
    return os.environ.get("AUDIT_LONG_TESTS", "") not in ("", "0", "false", "no")


def unavailable(backend: str, reason: str) -> None:
    message = f"{backend} is not reachable: {reason}"
    if require_databases():
        pytest.fail(message + " (AUDIT_REQUIRE_DATABASES is set, so this fails instead of skipping)")
    pytest.skip(message)


def server_url(backend: str) -> str:
    """``backend``'s server, without a database."""
    return PG_HOST if backend == "postgresql" else MARIADB_HOST


def admin_url(backend: str) -> str:
    """The URL of the database on ``backend``'s server that test databases are created and dropped from."""
    return f"{server_url(backend)}/{'postgres' if backend == 'postgresql' else 'test'}"


class ServerDatabases:
    """Creates throwaway databases on the PostgreSQL and MariaDB servers and drops them at the end."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []
        self.errors: dict[str, str] = {}

    def new(self, backend: str) -> str:
        """A URL of a fresh, empty database on ``backend``'s server."""
        from sqlalchemy import create_engine, text

        if backend in self.errors:
            unavailable(backend, self.errors[backend])
        name = f"audit_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            engine = create_engine(admin_url(backend), isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                if backend == "postgresql":
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
                else:
                    connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
            engine.dispose()
        except Exception as error:  # any connection problem means: not reachable here
            self.errors[backend] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
            unavailable(backend, self.errors[backend])
        self.created.append((backend, name))
        suffix = "?charset=utf8mb4" if backend == "mariadb" else ""
        return f"{server_url(backend)}/{name}{suffix}"

    def drop_all(self) -> None:
        """Drop every database made, eight at a time (PostgreSQL takes about 0.1 s a DROP DATABASE, most of it
        waiting on the disk; a session makes hundreds)."""
        from concurrent.futures import ThreadPoolExecutor

        from sqlalchemy import create_engine, text

        engines = {backend: create_engine(admin_url(backend), isolation_level="AUTOCOMMIT", pool_size=8)
                   for backend in {backend for backend, _ in self.created}}

        def drop(created: tuple[str, str]) -> None:
            backend, name = created
            with engines[backend].connect() as connection:
                if backend == "postgresql":
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))

        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(drop, self.created))
        finally:
            for engine in engines.values():
                engine.dispose()
        self.created.clear()


@contextmanager
def server_databases() -> Iterator[ServerDatabases]:
    databases = ServerDatabases()
    try:
        yield databases
    finally:
        databases.drop_all()

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(), scope="session")


@pytest.fixture(scope="session")
def _server_databases() -> Iterator[object]:
    with server_databases() as databases:
        yield databases


@pytest.fixture
def database_url(backend: str, tmp_path: object, _server_databases: object) -> str:
    """A URL of a fresh, empty database on ``backend`` (a SQLite file, or a new PostgreSQL/MariaDB database)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/audit.sqlite3"
    return _server_databases.new(backend)  # type: ignore[attr-defined, no-any-return]
