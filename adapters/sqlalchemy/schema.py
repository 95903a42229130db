"""The audit tables as SQLAlchemy Core tables, importable for Alembic autogenerate.

Alembic: ``target_metadata = [Base.metadata, audit_middleware.adapters.sqlalchemy.schema.metadata]``, or put the
tables into your own metadata with :func:`define_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql

from audit_middleware.store import NAME_LENGTH

TIMESTAMP = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


@dataclass(frozen=True)
class AuditTables:
    events: Table
    #: the transactional outbox: one row per (event, destination) until it is sent (see outbox.py)
    deliveries: Table
    #: per workspace and destination: On/Off and delivery state (never secrets: they live in configuration)
    forwarding: Table
    #: sealed digests chaining each workspace's row hashes (tamper evidence, see integrity.py)
    digests: Table | None = None


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
        # HMAC-SHA256 of the row's canonical JSON (audit_middleware.integrity): tamper evidence
        Column("row_hash", String(64)),
        # Every admin filter leads with the workspace and ends with the page's order (time, then id), so the
        # first page of newest events is an index range scan whatever the filter, and the index of the
        # filter is the one that gives the rows in page order: SQLite's planner picks it even without
        # statistics (no ANALYZE), where with an index ending in time alone it walked the workspace's time
        # index instead (seconds at a million events).
        Index(f"ix_{name}_ws_time", "workspace_id", "occurred_at", "id"),
        # The actor filter matches id or name, one query each: the actor's rows in page order, the event
        # in the key so "this actor + this event" is filtered in the index without reading other rows.
        Index(f"ix_{name}_ws_actor_time", "workspace_id", "actor_id", "occurred_at", "id", "event"),
        Index(f"ix_{name}_ws_actor_name_time", "workspace_id", "actor_name", "occurred_at", "id", "event"),
        Index(f"ix_{name}_ws_event", "workspace_id", "event", "occurred_at", "id"),
        Index(f"ix_{name}_ws_resource", "workspace_id", "resource_type", "resource_id", "occurred_at", "id"),
        Index(f"ix_{name}_time", "occurred_at"),
    )
    deliveries_name = f"{prefix}deliveries"
    deliveries = Table(
        deliveries_name,
        metadata,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("destination", String(100), nullable=False),
        Column("workspace_id", String(100), nullable=False),
        Column("status", String(8), nullable=False),  # pending, paused (destination off) or dead
        Column("due_at", TIMESTAMP, nullable=False),  # next attempt, or the end of the current lease
        Column("attempts", Integer, nullable=False, default=0),
        Column("lease_owner", String(32)),
        Column("last_status", Integer),
        Column("last_error", Text),
        Column("created_at", TIMESTAMP, nullable=False),
        # A claim walks this index in id order and stops after the batch, so with FOR UPDATE SKIP LOCKED
        # it locks only the rows it takes.
        Index(f"ix_{deliveries_name}_claim", "destination", "status", "id"),
        Index(f"ix_{deliveries_name}_ws", "workspace_id", "destination", "status"),
    )
    forwarding_name = f"{prefix}forwarding"
    forwarding = Table(
        forwarding_name,
        metadata,
        Column("workspace_id", String(100), primary_key=True),  # "" for events without a workspace
        Column("destination", String(100), primary_key=True),
        Column("enabled", Boolean, nullable=False, default=False),
        Column("disabled_reason", Text),
        Column("last_success_at", TIMESTAMP),
        Column("last_error_at", TIMESTAMP),
        Column("last_error", Text),
        Column("updated_at", TIMESTAMP, nullable=False),
    )
    digests_name = f"{prefix}digests"
    digests = Table(
        digests_name,
        metadata,
        # One chain per workspace; the primary key lets concurrent sealers race safely (one insert wins).
        Column("workspace_id", String(100), primary_key=True),  # "" for events without a workspace
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("kind", String(8), nullable=False),  # seal or purge
        Column("last_at", TIMESTAMP),
        Column("last_id", String(36)),
        Column("count", Integer, nullable=False),
        Column("entries", JSON_TEXT),  # "<id> <occurred_at>" lines; None once retention purged them all
        Column("entries_hash", String(64), nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("digest_hash", String(64), nullable=False),
        Column("purged_before", TIMESTAMP),
        Column("created_at", TIMESTAMP, nullable=False),
    )
    return AuditTables(events, deliveries, forwarding, digests)


def tables_of(events: Table) -> AuditTables:
    """The audit tables defined together with ``events`` (by :func:`define_tables`, same prefix)."""
    assert events.metadata is not None
    prefix = events.name[: -len("events")]
    found = events.metadata.tables
    return AuditTables(events, found[f"{prefix}deliveries"], found[f"{prefix}forwarding"],
                       found.get(f"{prefix}digests"))


metadata = MetaData()
tables = define_tables(metadata)
audit_events = tables.events
