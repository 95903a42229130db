"""The transactional outbox on SQLAlchemy: delivery rows written with the events, claimed by relays.

Write side: :meth:`SQLAlchemyOutbox.write` runs on the host's connection, in its transaction, right after the
event rows (one SELECT of the workspaces' On destinations, one executemany). Relay side: :meth:`claim`
leases due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB/MySQL (in READ COMMITTED,
walking the claim index in id order, so only the rows taken are locked) and with one ``UPDATE ... RETURNING``
on SQLite (which serialises writers); :meth:`settle` records outcomes only for rows still leased under the
claim's token, so a relay whose lease expired cannot overwrite the relay that took over.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import ClaimedDelivery, Destination, Forwarding, Settlement, workspace_key
from audit_middleware.forwarding.page import DestinationState
from audit_middleware.forwarding.relay import as_forwarding
from audit_middleware.store import event_from_row

from .schema import AuditTables
from .store import insert_events

EngineSource = Engine | Any


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class SQLAlchemyOutbox:
    """Delivery rows and forwarding state in the audit database.

    :param engine: the engine of the audit tables (or a callable returning it).
    :param destinations: the configured destinations.
    :param tables: the audit tables (from :func:`~audit_middleware.adapters.sqlalchemy.define_tables`).
    """

    def __init__(self, engine: EngineSource, destinations: Forwarding | Iterable[Destination],
                 tables: AuditTables) -> None:
        self._engine = engine
        self.forwarding = as_forwarding(destinations)
        self.tables = tables

    @property
    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()  # type: ignore[no-any-return]

    def after_fork(self) -> None:
        """In a forked child: never reuse the parent's pooled connections."""
        self.engine.dispose(close=False)

    # -- write side (inside the host's transaction) --------------------------------------------------------

    def write(self, connection: Connection, events: Sequence[AuditEvent]) -> int:
        """Write the delivery rows of ``events`` on ``connection``; returns how many."""
        if not events or not self.forwarding:
            return 0
        f = self.tables.forwarding.c
        workspaces = sorted({workspace_key(e.workspace_id) for e in events})
        enabled = {
            (row.workspace_id, row.destination)
            for row in connection.execute(
                select(f.workspace_id, f.destination).where(f.enabled.is_(True), f.workspace_id.in_(workspaces))
            )
        }
        if not enabled:
            return 0
        planned = self.forwarding.plan(events, enabled)
        if not planned:
            return 0
        now = _now()
        connection.execute(insert(self.tables.deliveries), [
            {"event_id": p.event_id, "destination": p.destination, "workspace_id": p.workspace_id,
             "status": p.status, "due_at": now, "attempts": 0, "last_error": p.error, "created_at": now}
            for p in planned
        ])
        return len(planned)

    # -- relay side ------------------------------------------------------------------------------------------

    def claim(self, destination: str, limit: int, lease: float, token: str
              ) -> tuple[list[ClaimedDelivery], dict[str, AuditEvent]]:
        d = self.tables.deliveries
        c = d.c
        now = _now()
        until = now + timedelta(seconds=lease)
        due = and_(c.destination == destination, c.status == "pending", c.due_at <= now)
        lease_values = {"lease_owner": token, "due_at": until, "attempts": c.attempts + 1}
        columns = (c.id, c.event_id, c.destination, c.workspace_id, c.attempts)
        with self.engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                with connection.begin():
                    # One statement: SQLite takes the write lock first, so two relays cannot take one row.
                    ids = select(c.id).where(due).order_by(c.id).limit(limit).scalar_subquery()
                    rows = connection.execute(
                        update(d).where(c.id.in_(ids)).values(**lease_values).returning(*columns)
                    ).all()
                    events = self._events(connection, [r.event_id for r in rows])
            else:
                connection.execution_options(isolation_level="READ COMMITTED")
                with connection.begin():
                    ids_list = list(connection.execute(
                        select(c.id).where(due).order_by(c.id).limit(limit).with_for_update(skip_locked=True)
                    ).scalars())
                    if not ids_list:
                        return [], {}
                    connection.execute(update(d).where(c.id.in_(ids_list)).values(**lease_values))
                    rows = connection.execute(select(*columns).where(c.id.in_(ids_list))).all()
                    events = self._events(connection, [r.event_id for r in rows])
        claimed = sorted(
            (ClaimedDelivery(int(r.id), r.event_id, r.destination, r.workspace_id, int(r.attempts)) for r in rows),
            key=lambda delivery: delivery.id,
        )
        return claimed, events

    def _events(self, connection: Connection, ids: Sequence[str]) -> dict[str, AuditEvent]:
        if not ids:
            return {}
        table = self.tables.events
        found: dict[str, AuditEvent] = {}
        unique = sorted(set(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            for row in connection.execute(select(table).where(table.c.id.in_(chunk))).mappings():
                event = event_from_row(row)
                found[event.id] = event
        return found

    def settle(self, token: str, settlements: Sequence[Settlement]) -> None:
        if not settlements:
            return
        d = self.tables.deliveries
        c = d.c
        f = self.tables.forwarding
        now = _now()
        sent = [s.delivery.id for s in settlements if s.outcome.kind == "sent"]
        others = [
            {
                "b_id": s.delivery.id,
                "b_status": {"retry": "pending", "dead": "dead", "disable": "paused"}[s.outcome.kind],
                "b_due": now + timedelta(seconds=s.delay),
                "b_code": s.outcome.status,
                "b_error": (s.outcome.error or "")[:2000],
            }
            for s in settlements if s.outcome.kind != "sent"
        ]
        successes = {(s.delivery.workspace_id, s.delivery.destination) for s in settlements
                     if s.outcome.kind == "sent"}
        errors = {(s.delivery.workspace_id, s.delivery.destination): (s.outcome.error or "")[:2000]
                  for s in settlements if s.outcome.kind != "sent"}
        with self.engine.begin() as connection:
            for start in range(0, len(sent), 500):
                connection.execute(delete(d).where(c.id.in_(sent[start:start + 500]), c.lease_owner == token))
            if others:
                connection.execute(
                    update(d).where(c.id == bindparam("b_id"), c.lease_owner == token).values(
                        status=bindparam("b_status"), due_at=bindparam("b_due"), lease_owner=None,
                        last_status=bindparam("b_code"), last_error=bindparam("b_error"),
                    ),
                    others,
                )
            for workspace, destination in sorted(successes):
                connection.execute(update(f).where(f.c.workspace_id == workspace, f.c.destination == destination)
                                   .values(last_success_at=now))
            for (workspace, destination), error in sorted(errors.items()):
                connection.execute(update(f).where(f.c.workspace_id == workspace, f.c.destination == destination)
                                   .values(last_error_at=now, last_error=error))

    def disable(self, destination: str, reason: str) -> None:
        d, f = self.tables.deliveries, self.tables.forwarding
        now = _now()
        with self.engine.begin() as connection:
            connection.execute(update(f).where(f.c.destination == destination, f.c.enabled.is_(True))
                               .values(enabled=False, disabled_reason=reason[:2000], updated_at=now))
            connection.execute(update(d).where(d.c.destination == destination, d.c.status == "pending")
                               .values(status="paused"))

    # -- what owners do (the Forwarding page) -------------------------------------------------------------

    def set_enabled(self, workspace_id: str | None, destination: str, enabled: bool) -> None:
        """Turn ``destination`` On or Off for a workspace. Off pauses its waiting deliveries; On resumes them
        (and clears a ``disabled_reason`` left by a relay)."""
        self.forwarding.get(destination)
        workspace = workspace_key(workspace_id)
        d, f = self.tables.deliveries, self.tables.forwarding
        now = _now()
        values = {"enabled": enabled, "disabled_reason": None, "updated_at": now}
        key = and_(f.c.workspace_id == workspace, f.c.destination == destination)
        mine = and_(d.c.workspace_id == workspace, d.c.destination == destination)
        with self.engine.begin() as connection:
            if connection.execute(update(f).where(key).values(**values)).rowcount == 0:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(f).values(workspace_id=workspace, destination=destination,
                                                            **values))
                except IntegrityError:  # someone else saved it meanwhile
                    connection.execute(update(f).where(key).values(**values))
            if enabled:
                connection.execute(update(d).where(mine, d.c.status == "paused").values(status="pending", due_at=now))
            else:
                connection.execute(update(d).where(mine, d.c.status == "pending").values(status="paused"))

    def states(self, workspace_id: str | None) -> list[DestinationState]:
        """Every configured destination with its On/Off and delivery state in the workspace."""
        workspace = workspace_key(workspace_id)
        d, f = self.tables.deliveries, self.tables.forwarding
        with self.engine.connect() as connection:
            settings = {r.destination: r for r in connection.execute(select(f).where(f.c.workspace_id == workspace))}
            counts: dict[tuple[str, str], int] = {
                (r.destination, r.status): int(r.n)
                for r in connection.execute(
                    select(d.c.destination, d.c.status, func.count().label("n"))
                    .where(d.c.workspace_id == workspace).group_by(d.c.destination, d.c.status)
                )
            }
        result = []
        for destination in self.forwarding:
            row = settings.get(destination.name)
            result.append(DestinationState(
                name=destination.name, kind=destination.kind, title=destination.title,
                enabled=bool(row.enabled) if row is not None else False,
                disabled_reason=row.disabled_reason if row is not None else None,
                backlog=counts.get((destination.name, "pending"), 0),
                paused=counts.get((destination.name, "paused"), 0),
                dead=counts.get((destination.name, "dead"), 0),
                last_success_at=row.last_success_at if row is not None else None,
                last_error_at=row.last_error_at if row is not None else None,
                last_error=row.last_error if row is not None else None,
            ))
        return result

    def dead(self, workspace_id: str | None, destination: str | None = None, limit: int = 50
             ) -> list[dict[str, Any]]:
        """Dead deliveries of a workspace, newest first, with their event's name."""
        d, e = self.tables.deliveries, self.tables.events
        clauses = [d.c.workspace_id == workspace_key(workspace_id), d.c.status == "dead"]
        if destination is not None:
            clauses.append(d.c.destination == destination)
        statement = (
            select(d.c.id, d.c.event_id, d.c.destination, d.c.attempts, d.c.last_status, d.c.last_error,
                   d.c.created_at, e.c.event, e.c.occurred_at)
            .select_from(d.outerjoin(e, e.c.id == d.c.event_id))
            .where(*clauses).order_by(d.c.id.desc()).limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(r) for r in connection.execute(statement).mappings()]

    def retry(self, workspace_id: str | None, delivery_ids: Sequence[int] | None = None,
              destination: str | None = None) -> int:
        """Make dead deliveries due again now (all of the workspace's, or those given); returns how many."""
        d = self.tables.deliveries
        clauses = [d.c.workspace_id == workspace_key(workspace_id), d.c.status == "dead"]
        if delivery_ids is not None:
            clauses.append(d.c.id.in_(list(delivery_ids)))
        if destination is not None:
            clauses.append(d.c.destination == destination)
        with self.engine.begin() as connection:
            return int(connection.execute(
                update(d).where(*clauses).values(status="pending", due_at=_now(), attempts=0, lease_owner=None)
            ).rowcount)

    def send_test(self, event: AuditEvent, destination: str) -> None:
        """Record ``event`` with one delivery to ``destination`` only (the page's "Send test event")."""
        self.forwarding.get(destination)
        now = _now()
        with self.engine.begin() as connection:
            insert_events(connection, [event], self.tables.events)
            connection.execute(insert(self.tables.deliveries).values(
                event_id=event.id, destination=destination, workspace_id=workspace_key(event.workspace_id),
                status="pending", due_at=now, attempts=0, created_at=now))

    def counts(self) -> dict[str, int]:
        """Delivery rows by status, over every workspace (for tests, monitoring and benchmarks)."""
        d = self.tables.deliveries
        with self.engine.connect() as connection:
            return {r.status: int(r.n) for r in connection.execute(
                select(d.c.status, func.count().label("n")).group_by(d.c.status))}
