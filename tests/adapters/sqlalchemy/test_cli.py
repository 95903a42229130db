"""The ``audit-middleware`` console command: export and purge on a database URL."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from audit_middleware import Actor
from audit_middleware.cli import main
from audit_middleware.events import AuditEvent
from audit_middleware.export import CSV_COLUMNS
from audit_middleware.ids import new_event_id


def seed(app) -> None:
    now = datetime.now(timezone.utc)
    app.auditor.store.append([
        AuditEvent(new_event_id(), now - timedelta(days=d), name, "Warehouses", "x", Actor.user("7", "ada"),
                   workspace_id=ws)
        for d, name, ws in [(1, "Warehouse Created", "ws_1"), (2, "Warehouse Deleted", "ws_1"),
                            (3, "Warehouse Created", "ws_2"), (120, "Warehouse Created", "ws_1")]
    ])


def test_export_writes_filtered_csv_to_a_file(app, tmp_path, database_url):
    seed(app)
    out = tmp_path / "trail.csv"
    assert main(["export", "--database-url", database_url, "--event", "Warehouse Created",
                 "--workspace", "ws_1", "--output", str(out)]) == 0
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[1] for r in rows[1:]] == ["Warehouse Created", "Warehouse Created"]


def test_export_to_stdout_and_bad_filter_message(app, database_url, capsys):
    seed(app)
    main(["export", "--database-url", database_url, "--since", (datetime.now() - timedelta(days=2, hours=12)).date().isoformat()])
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 + 2 or len(rows) == 1 + 3
    with pytest.raises(SystemExit, match="--since: 'lastweek' is not an ISO 8601"):
        main(["export", "--database-url", database_url, "--since", "lastweek"])


def test_purge_removes_events_past_the_retention(app, database_url):
    seed(app)
    assert main(["purge", "--database-url", database_url, "--yes"]) == 0
    assert len(app.events()) == 3
    assert main(["purge", "--database-url", database_url, "--retention-days", "2", "--yes"]) == 0
    assert len(app.events()) == 1


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).with_name("audit-middleware")
    url = f"sqlite:///{tmp_path}/empty.sqlite3"
    from sqlalchemy import create_engine

    from audit_middleware.adapters.sqlalchemy import SQLAlchemyStore

    SQLAlchemyStore(create_engine(url)).create_tables()
    result = subprocess.run([str(script), "export", "--database-url", url], capture_output=True, text=True,
                            env={**os.environ}, check=True)
    assert result.stdout.startswith("occurred_at,event,category")
    assert "exported 0 event(s)" in result.stderr
    missing = subprocess.run([str(script), "export"], capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != "AUDIT_DATABASE_URL"})
    assert missing.returncode != 0 and "--database-url" in missing.stderr
