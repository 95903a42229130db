"""Audit trail for plain SQLAlchemy: ``auditor = track(Session)``.

Needs SQLAlchemy 2.0.32 or newer: ``pip install "audit-middleware[sqlalchemy]"``.
"""

from __future__ import annotations

try:
    import sqlalchemy
except ImportError as error:  # pragma: no cover - exercised by the no-extras tox env
    raise ImportError(
        'audit_middleware.adapters.sqlalchemy needs SQLAlchemy: pip install "audit-middleware[sqlalchemy]"'
    ) from error

from .auditor import SQLAlchemyAuditor, track
from .outbox import DestinationState, SQLAlchemyOutbox
from .schema import AuditTables, audit_events, define_tables, metadata
from .store import SQLAlchemyStore

__all__ = [
    "AuditTables",
    "DestinationState",
    "SQLAlchemyAuditor",
    "SQLAlchemyOutbox",
    "SQLAlchemyStore",
    "audit_events",
    "define_tables",
    "metadata",
    "sqlalchemy",
    "track",
]
