"""Another revision of the code, to measure it alongside the working tree (``--before REV`` of the scripts)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_revision(revision: str, into: str) -> str:
    """The package as it was at ``revision``, laid out as installed (the adapters inside it)."""
    archive = os.path.join(into, "source.tar")
    subprocess.run(["git", "-C", ROOT, "archive", "-o", archive, revision, "audit_middleware", "adapters"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(os.path.join(into, "source"), filter="data")
    package = os.path.join(into, "package")
    os.makedirs(package)
    os.rename(os.path.join(into, "source", "audit_middleware"), os.path.join(package, "audit_middleware"))
    os.rename(os.path.join(into, "source", "adapters"), os.path.join(package, "audit_middleware", "adapters"))
    return package


def runs_with_before(before: str | None, workdir: str) -> list[tuple[str, str, str | None]]:
    """``(label, variant, PYTHONPATH)`` of the runs a ``--before REV`` script compares: the baseline, audit-middleware
    at REV (when given, exported into ``workdir``) and audit-middleware as it is."""
    runs: list[tuple[str, str, str | None]] = [("baseline", "baseline", None),
                                               ("audit-middleware", "audit-middleware", None)]
    if before:
        runs.insert(1, (f"audit-middleware at {before}", "audit-middleware", export_revision(before, workdir)))
    return runs


def before_variant(before: str | None, workdir: str) -> dict[str, str]:
    """``{"audit-middleware at REV": PYTHONPATH}`` for a capture benchmark's ``--before REV`` (the code exported
    into a temporary directory under ``workdir``, removed at exit); empty without one."""
    if not before:
        return {}
    exported = tempfile.mkdtemp(dir=workdir)
    atexit.register(shutil.rmtree, exported, True)
    return {f"audit-middleware at {before}": export_revision(before, exported)}


def with_before(variants: list[str], paths: dict[str, str]) -> list[str]:
    """``variants`` with :func:`before_variant`'s labels placed just before ``audit-middleware`` (at the end
    without it)."""
    at = variants.index("audit-middleware") if "audit-middleware" in variants else len(variants)
    return [*variants[:at], *paths, *variants[at:]]
