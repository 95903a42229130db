"""Exceptions raised by audit-middleware, each saying what was wrong and how to fix it."""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every error audit-middleware raises."""


class UnknownEventError(AuditError, LookupError):
    """An event name that the catalog does not define was recorded."""

    def __init__(self, name: str, suggestion: str | None) -> None:
        self.name = name
        self.suggestion = suggestion
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"Unknown audit event {name!r}.{hint} Define it once with "
            f"catalog.define({name!r}, category=...) before recording it."
        )


class InvalidFilterError(AuditError, ValueError):
    """A query filter value was rejected; ``parameter`` names the offending filter."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.message = message
        super().__init__(f"Invalid value for {parameter!r}: {message}")


class EventTooLargeError(AuditError, ValueError):
    """An event is larger than a destination accepts."""


class AuditWriteError(AuditError):
    """Writing audit rows failed, so the host's write was not committed either."""


class UncapturedWriteError(AuditError):
    """A write capture cannot record (it says why and what to do instead). Logged and counted like any capture
    failure; raised, before the write runs, for a model whose events must be recorded."""
