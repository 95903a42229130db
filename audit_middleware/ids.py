"""Time-ordered event ids (UUID version 7), monotonic within a process, and random request ids (version 4)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timezone

_lock = threading.Lock()
_last_ms = 0
_seq = 0
_POOL_SIZE = 4096
_pool = ""  # hex digits of random bytes from os.urandom, taken 16 at a time: one system call per 512 ids
_taken = 0
_prefix_ms = -1
_prefix = ""  # the id's text up to its counter ("0193a1b2-c3d4-7") for the millisecond _prefix_ms
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""The first hex digit of the fourth group: the RFC 4122 variant (binary 10) and two random bits."""


def _forget_pool() -> None:
    """In a forked child (a prefork web server's worker): draw new random bytes, or the child's ids would
    repeat the parent's random bits."""
    global _pool, _taken
    _pool, _taken = "", 0


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_pool)


def new_event_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, then a counter and random bits (the operating system's
    CSPRNG, drawn 4 KiB at a time).

    Ids made in one process sort in creation order, even within one millisecond. The text is put together from
    the millisecond's prefix (made once per millisecond) and hex digits of the random pool, without the
    128-bit integer ``str(UUID(int=...))`` would format.
    """
    global _last_ms, _seq, _pool, _taken, _prefix_ms, _prefix
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                _seq = 0
        else:
            _seq = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave headroom in the 12-bit counter
        _last_ms = ms
        seq = _seq
        if ms != _prefix_ms:
            text = f"{ms:012x}"
            _prefix_ms, _prefix = ms, f"{text[:8]}-{text[8:]}-7"
        prefix = _prefix
        taken = _taken
        if taken >= len(_pool):
            _pool, taken = os.urandom(_POOL_SIZE).hex(), 0
        _taken = taken + 16
        rand = _pool[taken:taken + 16]
    return f"{prefix}{seq:03x}-{_VARIANT[rand[0]]}{rand[1:4]}-{rand[4:]}"


_V4_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)  # all but the version and variant bits
_V4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_request_id() -> str:
    """A random UUID (version 4) as 32 hex digits, what ``uuid.uuid4().hex`` gives, at half its cost: the id of a
    request that came without an ``X-Request-Id``."""
    return f"{int.from_bytes(os.urandom(16), 'big') & _V4_KEEP | _V4_SET:032x}"


def event_id_time(event_id: str) -> datetime:
    """The millisecond a UUIDv7 id was made, as an aware UTC datetime."""
    ms = uuid.UUID(event_id).int >> 80
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
