"""The shared benchmark workload: a Warehouse with about 8 fields, and the write phases."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

N_WRITES = 2000
N_BATCH = 10_000


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
