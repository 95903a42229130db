"""No SQL is built by string formatting from values: ruff's S608 runs on the package, and every place that
formats SQL text at all (identifiers only, values bound) is counted here per file, so a new one fails until
a reviewer has read it and updated the count."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("audit_middleware", "adapters")

#: (file, count) of S608 suppressions: each formats quoted identifiers and ``%s`` marks, never a value
REVIEWED_S608 = Counter({
    "adapters/django/store.py": 6, "adapters/django/outbox.py": 3, "adapters/sqlalchemy/store.py": 1,
    "audit_middleware/export.py": 1,  # PostgreSQL's CSV COPY around the store's own SELECT, its marks bound
    "adapters/django/one_statement.py": 1,  # the start of the UPDATE Django makes, compared with it, never sent
})
#: (file, count) of f-strings that start an SQL statement: quoted identifiers from the models or schema,
#: module constants and ``%s`` marks only, every value bound
REVIEWED_FORMATTED_SQL = Counter({
    "audit_middleware/integrity.py": 3,        # the append-only trigger: the events table's name
    "adapters/sqlalchemy/integrity.py": 1,     # set_config with the PURGE_SETTING constant
    "adapters/django/outbox.py": 3,            # quote_name()d identifiers, %s marks
    "adapters/django/store.py": 7,             # quote_name()d identifiers, %s marks; the ORM's page SQL merged,
                                               # its ids selected from it, and joined laterally to a list of %s
                                               # marks; the recursive listing of workspaces (one %s mark); the
                                               # UPDATE Django made (its values %s marks) around the event INSERT
    "adapters/django/one_statement.py": 1,     # the start of the UPDATE Django makes, compared with it, never sent
    "adapters/sqlalchemy/store.py": 1,         # the dialect's quoted table and columns, ? or %s marks
})
FORMATTED_SQL = re.compile(
    r"""\bf(?:"{3}|'{3}|"|')\s*(?:SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|TRUNCATE|GRANT|WITH)\b""")


def sources() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py") if "migrations" not in p.parts)


def test_s608_is_enabled_for_the_package():
    """pyproject selects S608 and ignores it only under tests/ and benchmarks/."""
    text = (ROOT / "pyproject.toml").read_text()
    select = re.search(r"^select = \[(.*)\]", text, re.M)
    assert select and '"S608"' in select.group(1)
    for line in re.findall(r"^\"([^\"]+)\" = \[[^\]]*\"S608\"", text, re.M):
        assert line.startswith(("tests/", "benchmarks/")), line


def test_ruff_s608_finds_no_sql_built_from_strings():
    """ruff --select S608 over the package reports nothing (suppressions are counted below)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists() and shutil.which("ruff") is None:
        pytest.skip("ruff is not installed in this environment")
    result = subprocess.run([ruff, "check", "--no-cache", "--select", "S608", *PACKAGE_DIRS], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_suppression_and_formatted_statement_is_a_reviewed_one():
    """A new ``noqa: S608`` or f-string SQL statement fails here until it is checked (identifiers only) and
    listed."""
    suppressed: Counter[str] = Counter()
    formatted: Counter[str] = Counter()
    for path in sources():
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        suppressed[name] += len(re.findall(r"noqa:[^\n]*\bS608\b", text))
        formatted[name] += len(FORMATTED_SQL.findall(text))
    assert +suppressed == REVIEWED_S608
    assert +formatted == REVIEWED_FORMATTED_SQL
