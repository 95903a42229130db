"""The built wheel holds every module, template, migration, static file and py.typed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA_SUFFIXES = {".html", ".css", ".js", ".txt", ".typed"}


def expected_files() -> set[str]:
    """Every file the wheel must contain, named as installed (adapters/ becomes audit_middleware/adapters/)."""
    expected = set()
    for top, installed in (("audit_middleware", "audit_middleware"), ("adapters", "audit_middleware/adapters")):
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix == ".py" or path.suffix in DATA_SUFFIXES or path.name == "py.typed":
                expected.add(f"{installed}/{path.relative_to(ROOT / top).as_posix()}")
    return expected


def test_wheel_contains_modules_templates_migrations_and_py_typed(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("audit_middleware-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = expected_files()
    assert "audit_middleware/py.typed" in expected
    assert "audit_middleware/adapters/sqlalchemy/__init__.py" in expected
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel: {missing}"
    assert not any(n.startswith(("tests/", "adapters/")) for n in names)
