"""The audit tables as SQLAlchemy Core tables, importable for Alembic autogenerate.

Alembic: ``target_metadata = [Base.metadata, audit_middleware.adapters.sqlalchemy.schema.metadata]``, or put the
tables into your own metadata with :func:`define_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql

TIMESTAMP = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

NAME_LENGTH = 255


@dataclass(frozen=True)
class AuditTables:
    events: Table


def define_tables(metadata: MetaData, prefix: str = "audit_") -> AuditTables:
    """Add the audit tables to ``metadata`` (names start with ``prefix``)."""
    name = f"{prefix}events"
    events = Table(
        name,
        metadata,
        Column("id", String(36), primary_key=True),
        Column("occurred_at", TIMESTAMP, nullable=False),
        Column("event", String(200), nullable=False),
        Column("category", String(100), nullable=False),
        Column("action", String(100), nullable=False),
        Column("actor_type", String(16), nullable=False),
        Column("actor_id", String(NAME_LENGTH)),
        Column("actor_name", String(NAME_LENGTH)),
        Column("resource_type", String(100)),
        Column("resource_id", String(NAME_LENGTH)),
        Column("resource_name", String(NAME_LENGTH)),
        Column("workspace_id", String(100)),
        Column("changes", JSON_TEXT),
        Column("context", JSON_TEXT),
        Column("details", JSON_TEXT),
        # Every admin filter leads with the workspace and ends with time, so the first page of newest
        # events is an index range scan whatever the filter.
        Index(f"ix_{name}_ws_time", "workspace_id", "occurred_at", "id"),
        Index(f"ix_{name}_ws_actor", "workspace_id", "actor_id", "occurred_at"),
        Index(f"ix_{name}_ws_actor_name", "workspace_id", "actor_name", "occurred_at"),
        Index(f"ix_{name}_ws_event", "workspace_id", "event", "occurred_at"),
        Index(f"ix_{name}_ws_resource", "workspace_id", "resource_type", "resource_id", "occurred_at"),
        Index(f"ix_{name}_time", "occurred_at"),
    )
    return AuditTables(events)


metadata = MetaData()
tables = define_tables(metadata)
audit_events = tables.events
