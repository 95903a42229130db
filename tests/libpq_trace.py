"""What libpq sends to PostgreSQL, read from its own trace: the tests' view of the wire, independent of the code
under test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SENT = re.compile(r"^[^\t\n]+\tF\t\d+\t(\w+)\t?(.*)$", re.MULTILINE)  # "<time>\tF\t<length>\t<message>\t<payload>"


@contextmanager
def libpq_messages(pgconn: Any, directory: Path) -> Iterator[list[tuple[str, str]]]:
    """The messages libpq sends on ``pgconn`` (psycopg's ``connection.pgconn``) while the block runs, as
    ``(kind, text)`` (``("Query", ' "COMMIT"')``, ``("CopyData", ...)``, ``("Parse", ...)``); the list is filled
    when the block exits."""
    trace = directory / "libpq.trace"
    sent: list[tuple[str, str]] = []
    with open(trace, "w") as sink:
        pgconn.trace(sink.fileno())
        try:
            yield sent
        finally:
            pgconn.untrace()
    sent += _SENT.findall(trace.read_text())
