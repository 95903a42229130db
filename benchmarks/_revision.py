"""Another revision of the code, to measure it alongside the working tree (``--before REV`` of the scripts)."""

from __future__ import annotations

import compileall
import os
import subprocess
import tarfile

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
    # Compiled now, as the working tree's modules already are: otherwise the first of the two processes a count
    # compares (run side by side) compiles the package and writes its bytecode while the other may find it
    # written, and the difference between them carries that compilation (+28,000 instructions a request on the
    # Flask write route of request_instructions.py, seen on 2026-12-05 with the same code both ways).
    compileall.compile_dir(package, quiet=1)
    return package


def runs_with_before(before: str | None, workdir: str) -> list[tuple[str, str, str | None]]:
    """``(label, variant, PYTHONPATH)`` of the runs a ``--before REV`` script compares: the baseline, audit-middleware
    at REV (when given, exported into ``workdir``) and audit-middleware as it is."""
    runs: list[tuple[str, str, str | None]] = [("baseline", "baseline", None),
                                               ("audit-middleware", "audit-middleware", None)]
    if before:
        runs.insert(1, (f"audit-middleware at {before}", "audit-middleware", export_revision(before, workdir)))
    return runs
