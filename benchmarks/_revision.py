"""Another revision of the code, to measure it alongside the working tree (``--before REV`` of the scripts)."""

from __future__ import annotations

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
    return package
