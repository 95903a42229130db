"""The shared benchmark workload: a Warehouse with about 8 fields, and the write phases."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

N_WRITES = 2000
N_BATCH = 10_000
OUT_ENV = "AUDIT_BENCH_OUT"


def out_dir() -> str:
    """Where benchmarks keep their files between runs (generated trails, scratch databases): ``$AUDIT_BENCH_OUT``,
    else ``benchmarks/out``; made if missing."""
    path = os.environ.get(OUT_ENV) or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    os.makedirs(path, exist_ok=True)
    return path


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def without_copy(*store_modules: Any) -> None:
    """Turn off PostgreSQL's COPY of many event rows (``audit_middleware.copy_rows``) in this process, for the
    ``audit-middleware-no-copy`` variants: the rows go as INSERTs (an executemany, in psycopg's pipeline), as
    before COPY was used. ``store_modules`` are the adapter modules that imported ``copy_statement``."""
    from audit_middleware import copy_rows

    def no_copy(insert_sql: str) -> None:
        return None

    copy_rows.copy_statement = no_copy  # type: ignore[assignment]  # what commit_pipeline imports when sending
    for module in store_modules:
        module.copy_statement = no_copy
