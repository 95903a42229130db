"""The temporary files SQLite holds open in this process, read from ``/proc/self/fd``: the tests' view of what
SQLite writes besides the database and its journal, independent of the code under test."""

from __future__ import annotations

import os
import sqlite3

import pytest

_PREFIX = "etilqs_"  # SQLite's temporary files (statement journals, sorters): "sqlite_" backwards


def open_temporary_files() -> list[str]:
    """The paths of the SQLite temporary files this process has open (a statement journal is kept open, deleted
    from its directory, until its transaction ends)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd (Linux) to see SQLite's temporary files")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if os.path.basename(target).startswith(_PREFIX):
            found.append(target)
    return found


def assert_plain_multi_row_inserts_would_show_a_statement_journal(connection: sqlite3.Connection, table: str) -> None:
    """The control for a test that finds no statement journal: in ``connection``'s open transaction, which has
    written the event ``table``'s last pages already, 1,200 event-sized rows sent as plain 60-row ``INSERT INTO``
    statements (how event rows went before ``INSERT OR FAIL``) make SQLite keep one in a file, and this process
    sees it. The caller rolls the transaction back."""
    assert connection.in_transaction
    columns = "id, occurred_at, event, category, action, actor_type, changes"
    row = "(?, '2026-01-01 00:00:00', 'Control', 'Control', 'control', 'system', ?)"
    for statement in range(20):
        values = [value for i in range(60) for value in (f"control-{statement:02d}-{i:02d}", "x" * 400)]
        connection.execute(f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([row] * 60), values)  # noqa: S608
    assert open_temporary_files(), "plain 60-row INSERTs over pages the transaction wrote keep a statement journal"
