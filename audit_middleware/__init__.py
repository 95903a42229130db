"""audit-middleware: a complete audit trail for Flask, Django and SQLAlchemy apps."""

from __future__ import annotations

from .actors import Actor
from .catalog import EventCatalog, EventDefinition
from .config import AuditConfig
from .context import (
    RequestContext,
    acting_as,
    current_actor,
    extra_context,
    in_workspace,
    request_context,
    suspend_auditing,
)
from .errors import AuditError, AuditWriteError, InvalidFilterError, UncapturedWriteError, UnknownEventError
from .events import AuditEvent
from .query import EventQuery, Page
from .revert import RevertConflict, RevertError, RevertNeedsConfirmation

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AuditConfig",
    "AuditError",
    "AuditEvent",
    "AuditWriteError",
    "EventCatalog",
    "EventDefinition",
    "EventQuery",
    "InvalidFilterError",
    "Page",
    "RequestContext",
    "RevertConflict",
    "RevertError",
    "RevertNeedsConfirmation",
    "UncapturedWriteError",
    "UnknownEventError",
    "__version__",
    "acting_as",
    "current_actor",
    "extra_context",
    "in_workspace",
    "request_context",
    "suspend_auditing",
]
