"""Time-ordered event ids (UUID version 7), monotonic within a process."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timezone

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_event_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, then a counter and random bits.

    Ids made in one process sort in creation order, even within one millisecond.
    """
    global _last_ms, _seq
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
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFFFFFFFFFFFFFF
    text = f"{(ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand:032x}"  # str(UUID(int=...)), faster
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def event_id_time(event_id: str) -> datetime:
    """The millisecond a UUIDv7 id was made, as an aware UTC datetime."""
    ms = uuid.UUID(event_id).int >> 80
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
