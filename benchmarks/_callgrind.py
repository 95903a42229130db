"""Counting a process's instructions with ``valgrind --tool=callgrind`` (the count of the same process does not
depend on what else the machine is doing): the total, and the inclusive count of some C functions."""

from __future__ import annotations

import os
import re
import subprocess


def instructions(command: list[str], env: dict[str, str], workdir: str, functions: dict[str, str],
                 cwd: str | None = None) -> dict[str, int]:
    """Run ``command`` under callgrind; ``{"total": n, key: n of functions[key] (inclusive), ...}``."""
    out = os.path.join(workdir, f"callgrind-{os.urandom(6).hex()}.out")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command], check=True,
                   capture_output=True, text=True, env={**env, "PYTHONHASHSEED": "0"}, cwd=cwd)
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], check=True, capture_output=True,
                               text=True).stdout
    os.remove(out)
    total = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", annotated)
    result = {"total": int(total.group(1).replace(",", "")) if total else 0}
    for key, function in functions.items():
        found = re.search(rf"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:{function} ", annotated, re.MULTILINE)
        result[key] = int(found.group(1).replace(",", "")) if found else 0
    return result
