"""The transactional outbox on Django: delivery rows written with the events, claimed by relays.

Write side: :meth:`DjangoOutbox.write` runs from ``store.insert_events`` on the connection and in the
transaction that writes the events (one SELECT of the workspaces' On destinations, one executemany). Relay
side: :meth:`claim` takes due rows with ``select_for_update(skip_locked=True)`` on PostgreSQL and
MariaDB/MySQL (Django runs MySQL in READ COMMITTED) and with one lease ``UPDATE`` on SQLite; :meth:`settle`
records outcomes only for rows still leased under the claim's token. Destinations come from
``AUDIT_TRAIL["DESTINATIONS"]`` (a list of destinations, or the dotted path of one or of a function returning
one).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Count, F
from django.utils.module_loading import import_string

from audit_middleware.events import AuditEvent
from audit_middleware.forwarding import ClaimedDelivery, Forwarding, Settlement, workspace_key
from audit_middleware.forwarding.page import DestinationState
from audit_middleware.forwarding.relay import as_forwarding
from audit_middleware.store import EVENT_COLUMNS, event_from_row

from . import conf
from .models import AuditDelivery, AuditForwarding
from .models import AuditEvent as AuditEventRow
from .store import db_time, insert_events

_STATUS = {"retry": "pending", "dead": "dead", "disable": "paused"}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def configured_forwarding() -> Forwarding | None:
    """``AUDIT_TRAIL["DESTINATIONS"]`` as a :class:`Forwarding` (cached until the setting changes)."""
    if "forwarding" not in conf._cache:
        value = conf.get("DESTINATIONS")
        if isinstance(value, str):
            value = import_string(value)
        if callable(value) and not isinstance(value, Forwarding):
            value = value()
        conf._cache["forwarding"] = as_forwarding(value) if value else None
    return conf._cache["forwarding"]  # type: ignore[no-any-return]


def get_outbox(using: str | None = None) -> DjangoOutbox | None:
    forwarding = configured_forwarding()
    return DjangoOutbox(forwarding, using) if forwarding else None


class DjangoOutbox:
    """Delivery rows and forwarding state in database ``using`` (default: where audit events are written)."""

    def __init__(self, forwarding: Forwarding, using: str | None = None) -> None:
        self.forwarding = forwarding
        self.using = using or router.db_for_write(AuditDelivery)

    def _deliveries(self) -> Any:
        return AuditDelivery.objects.using(self.using)

    def _settings(self) -> Any:
        return AuditForwarding.objects.using(self.using)

    # -- write side ------------------------------------------------------------------------------------------

    def write(self, connection: Any, events: Sequence[AuditEvent]) -> int:
        """Write the delivery rows of ``events`` on ``connection``, in its current transaction."""
        if not events:
            return 0
        quote = connection.ops.quote_name
        workspaces = sorted({workspace_key(e.workspace_id) for e in events})
        marks = ", ".join(["%s"] * len(workspaces))
        table = quote(AuditForwarding._meta.db_table)
        with connection.cursor() as cursor:
            # Identifiers are the model's own, quoted by the backend; every value is a bound parameter.
            cursor.execute(
                f"SELECT {quote('workspace_id')}, {quote('destination')} FROM {table} "  # noqa: S608
                f"WHERE {quote('enabled')} = %s AND {quote('workspace_id')} IN ({marks})",
                [True, *workspaces],
            )
            enabled = {(str(w), str(d)) for w, d in cursor.fetchall()}
            if not enabled:
                return 0
            planned = self.forwarding.plan(events, enabled)
            if not planned:
                return 0
            now = connection.ops.adapt_datetimefield_value(db_time(_now()))
            columns = ("event_id", "destination", "workspace_id", "status", "due_at", "attempts", "last_error",
                       "created_at")
            cursor.executemany(
                f"INSERT INTO {quote(AuditDelivery._meta.db_table)} "  # noqa: S608
                f"({', '.join(quote(c) for c in columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                [[p.event_id, p.destination, p.workspace_id, p.status, now, 0, p.error, now] for p in planned],
            )
        return len(planned)

    # -- relay side ------------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """A relay runs outside any request, so Django's per-request check of its connections never runs for
        it: after a database error, close the connection if it no longer works (the server ended the session:
        a restart, a failover, an idle timeout), so the next query opens a new one instead of failing forever."""
        connection = connections[self.using]
        if connection.errors_occurred and not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()

    def claim(self, destination: str, limit: int, lease: float, token: str
              ) -> tuple[list[ClaimedDelivery], dict[str, AuditEvent]]:
        self._recover()
        now = _now()
        until = db_time(now + timedelta(seconds=lease))
        due = self._deliveries().filter(destination=destination, status="pending", due_at__lte=db_time(now))
        lease_values = {"lease_owner": token, "due_at": until, "attempts": F("attempts") + 1}
        with transaction.atomic(using=self.using):
            if connections[self.using].vendor == "sqlite":
                # The UPDATE comes first, so SQLite takes its write lock before reading: two relays cannot
                # take one row.
                ids = due.order_by("id").values("id")[:limit]
                self._deliveries().filter(id__in=ids).update(**lease_values)
                rows = list(self._deliveries().filter(lease_owner=token).values(
                    "id", "event_id", "destination", "workspace_id", "attempts"))
            else:
                taken = list(due.select_for_update(skip_locked=True).order_by("id").values_list("id", flat=True)[:limit])
                if not taken:
                    return [], {}
                self._deliveries().filter(id__in=taken).update(**lease_values)
                rows = list(self._deliveries().filter(id__in=taken).values(
                    "id", "event_id", "destination", "workspace_id", "attempts"))
            events = {
                row["id"]: event_from_row(row)
                for row in AuditEventRow.objects.using(self.using)
                .filter(id__in={r["event_id"] for r in rows}).values(*EVENT_COLUMNS)
            }
        claimed = sorted((ClaimedDelivery(int(r["id"]), r["event_id"], r["destination"], r["workspace_id"],
                                          int(r["attempts"])) for r in rows), key=lambda d: d.id)
        return claimed, events

    def settle(self, token: str, settlements: Sequence[Settlement]) -> None:
        if not settlements:
            return
        self._recover()
        now = _now()
        sent = [s.delivery.id for s in settlements if s.outcome.kind == "sent"]
        connection = connections[self.using]
        adapt = connection.ops.adapt_datetimefield_value
        quote = connection.ops.quote_name
        others = [
            [_STATUS[s.outcome.kind], adapt(db_time(now + timedelta(seconds=s.delay))), s.outcome.status,
             (s.outcome.error or "")[:2000], s.delivery.id, token]
            for s in settlements if s.outcome.kind != "sent"
        ]
        successes = {(s.delivery.workspace_id, s.delivery.destination) for s in settlements
                     if s.outcome.kind == "sent"}
        errors = {(s.delivery.workspace_id, s.delivery.destination): (s.outcome.error or "")[:2000]
                  for s in settlements if s.outcome.kind != "sent"}
        with transaction.atomic(using=self.using):
            for start in range(0, len(sent), 500):
                self._deliveries().filter(id__in=sent[start:start + 500], lease_owner=token).delete()
            if others:
                with connection.cursor() as cursor:
                    cursor.executemany(
                        f"UPDATE {quote(AuditDelivery._meta.db_table)} SET {quote('status')} = %s, "  # noqa: S608
                        f"{quote('due_at')} = %s, {quote('lease_owner')} = NULL, {quote('last_status')} = %s, "
                        f"{quote('last_error')} = %s WHERE {quote('id')} = %s AND {quote('lease_owner')} = %s",
                        others,
                    )
            for workspace, destination in sorted(successes):
                self._settings().filter(workspace_id=workspace, destination=destination).update(
                    last_success_at=db_time(now))
            for (workspace, destination), error in sorted(errors.items()):
                self._settings().filter(workspace_id=workspace, destination=destination).update(
                    last_error_at=db_time(now), last_error=error)

    def disable(self, destination: str, reason: str) -> None:
        self._recover()
        with transaction.atomic(using=self.using):
            self._settings().filter(destination=destination, enabled=True).update(
                enabled=False, disabled_reason=reason[:2000], updated_at=db_time(_now()))
            self._deliveries().filter(destination=destination, status="pending").update(status="paused")

    # -- what owners do (the Forwarding page) -------------------------------------------------------------

    def set_enabled(self, workspace_id: str | None, destination: str, enabled: bool) -> None:
        self.forwarding.get(destination)
        workspace = workspace_key(workspace_id)
        now = db_time(_now())
        values = {"enabled": enabled, "disabled_reason": None, "updated_at": now}
        mine = self._deliveries().filter(workspace_id=workspace, destination=destination)
        with transaction.atomic(using=self.using):
            if not self._settings().filter(workspace_id=workspace, destination=destination).update(**values):
                try:
                    with transaction.atomic(using=self.using):
                        self._settings().create(workspace_id=workspace, destination=destination, **values)
                except IntegrityError:  # someone else saved it meanwhile
                    self._settings().filter(workspace_id=workspace, destination=destination).update(**values)
            if enabled:
                mine.filter(status="paused").update(status="pending", due_at=now)
            else:
                mine.filter(status="pending").update(status="paused")

    def states(self, workspace_id: str | None) -> list[DestinationState]:
        workspace = workspace_key(workspace_id)
        settings = {row.destination: row for row in self._settings().filter(workspace_id=workspace)}
        counts = {
            (r["destination"], r["status"]): int(r["n"])
            for r in self._deliveries().filter(workspace_id=workspace).order_by()
            .values("destination", "status").annotate(n=Count("id"))
        }
        result = []
        for destination in self.forwarding:
            row = settings.get(destination.name)
            result.append(DestinationState(
                name=destination.name, kind=destination.kind, title=destination.title,
                enabled=bool(row.enabled) if row else False,
                disabled_reason=row.disabled_reason if row else None,
                backlog=counts.get((destination.name, "pending"), 0),
                paused=counts.get((destination.name, "paused"), 0),
                dead=counts.get((destination.name, "dead"), 0),
                last_success_at=row.last_success_at if row else None,
                last_error_at=row.last_error_at if row else None,
                last_error=row.last_error if row else None,
            ))
        return result

    def dead(self, workspace_id: str | None, destination: str | None = None, limit: int = 50
             ) -> list[dict[str, Any]]:
        rows = self._deliveries().filter(workspace_id=workspace_key(workspace_id), status="dead")
        if destination is not None:
            rows = rows.filter(destination=destination)
        found = list(rows.order_by("-id").values("id", "event_id", "destination", "attempts", "last_status",
                                                 "last_error", "created_at")[:limit])
        names = dict(AuditEventRow.objects.using(self.using).filter(id__in=[r["event_id"] for r in found])
                     .values_list("id", "event"))
        for row in found:
            row["event"] = names.get(row["event_id"])
        return found

    def retry(self, workspace_id: str | None, delivery_ids: Sequence[int] | None = None,
              destination: str | None = None) -> int:
        rows = self._deliveries().filter(workspace_id=workspace_key(workspace_id), status="dead")
        if delivery_ids is not None:
            rows = rows.filter(id__in=list(delivery_ids))
        if destination is not None:
            rows = rows.filter(destination=destination)
        return int(rows.update(status="pending", due_at=db_time(_now()), attempts=0, lease_owner=None))

    def send_test(self, event: AuditEvent, destination: str) -> None:
        self.forwarding.get(destination)
        now = db_time(_now())
        with transaction.atomic(using=self.using):
            connection = connections[self.using]
            insert_events(connection, [event], forward=False)
            self._deliveries().create(event_id=event.id, destination=destination,
                                      workspace_id=workspace_key(event.workspace_id), status="pending",
                                      due_at=now, attempts=0, created_at=now)

    def counts(self) -> dict[str, int]:
        return {r["status"]: int(r["n"]) for r in
                self._deliveries().order_by().values("status").annotate(n=Count("id"))}
