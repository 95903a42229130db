"""Tamper evidence on the Django ORM: the :class:`~audit_middleware.integrity.IntegrityBackend` over the
``audit_events`` and ``audit_digests`` tables (``manage.py audit_verify`` and ``audit_purge`` use it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import Q

from audit_middleware.integrity import (
    DEFAULT_SEAL_BATCH,
    DEFAULT_SEAL_DELAY,
    Digest,
    Key,
    VerifyReport,
    append_only_guard_sql,
    purge_marker,
    seal,
    verify,
)
from audit_middleware.store import EVENT_COLUMNS

from . import conf
from .models import AuditDigest
from .models import AuditEvent as AuditEventRow
from .store import db_time

_ROW_COLUMNS = (*EVENT_COLUMNS, "row_hash")
_DIGEST_FIELDS = ("workspace_id", "seq", "kind", "last_at", "last_id", "count", "entries", "entries_hash",
                  "prev_hash", "digest_hash", "purged_before", "created_at")


def _naive(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


class DjangoIntegrity:
    """Seal and verify the trail of database ``using`` with the configured signing key."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using or router.db_for_write(AuditEventRow)
        self.signer = conf.signer()

    def _events(self) -> Any:
        return AuditEventRow._base_manager.using(self.using)

    def _digests(self) -> Any:
        return AuditDigest._base_manager.using(self.using)

    @staticmethod
    def _ws(workspace: str) -> Q:
        return Q(workspace_id__isnull=True) | Q(workspace_id="") if workspace == "" else Q(workspace_id=workspace)

    @staticmethod
    def _after(key: Key) -> Q:
        at = db_time(key[0])
        return Q(occurred_at__gt=at) | Q(occurred_at=at, id__gt=key[1])

    # -- IntegrityBackend --------------------------------------------------------------------------------

    def workspaces(self) -> list[str]:
        found = {w or "" for w in self._events().values_list("workspace_id", flat=True).distinct()}
        found |= set(self._digests().values_list("workspace_id", flat=True).distinct())
        return sorted(found)

    @staticmethod
    def _digest(row: Mapping[str, Any]) -> Digest:
        return Digest(
            workspace=row["workspace_id"], seq=row["seq"], kind=row["kind"], last_at=_naive(row["last_at"]),
            last_id=row["last_id"], count=row["count"], entries=row["entries"], entries_hash=row["entries_hash"],
            prev_hash=row["prev_hash"], digest_hash=row["digest_hash"],
            purged_before=_naive(row["purged_before"]), created_at=_naive(row["created_at"]),
        )

    def last_digest(self, workspace: str) -> Digest | None:
        row = self._digests().filter(workspace_id=workspace).order_by("-seq").values(*_DIGEST_FIELDS).first()
        return self._digest(row) if row is not None else None

    def digests(self, workspace: str) -> Iterator[Digest]:
        rows = self._digests().filter(workspace_id=workspace).order_by("seq").values(*_DIGEST_FIELDS)
        return iter([self._digest(r) for r in rows])

    def sealable(self, workspace: str, after: Key | None, until: datetime, limit: int) -> list[tuple[str, datetime]]:
        q = self._ws(workspace) & Q(occurred_at__lt=db_time(until))
        if after is not None:
            q &= self._after(after)
        rows = self._events().filter(q).order_by("occurred_at", "id").values_list("id", "occurred_at")[:limit]
        return [(event_id, _naive(at) or at) for event_id, at in rows]

    def events(self, workspace: str, after: Key | None, upto: Key | None) -> Iterator[Mapping[str, Any]]:
        q = self._ws(workspace)
        if after is not None:
            q &= self._after(after)
        if upto is not None:
            at = db_time(upto[0])
            q &= Q(occurred_at__lt=at) | Q(occurred_at=at, id__lte=upto[1])
        return self._events().filter(q).order_by("occurred_at", "id").values(*_ROW_COLUMNS).iterator(chunk_size=5000)

    def events_by_id(self, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        for start in range(0, len(ids), 500):
            rows += list(self._events().filter(id__in=list(ids[start:start + 500])).values(*_ROW_COLUMNS))
        return rows

    def add_digest(self, digest: Digest) -> bool:
        values = {name: getattr(digest, name) for name in _DIGEST_FIELDS if name not in ("workspace_id",)}
        for name in ("last_at", "purged_before", "created_at"):
            if values[name] is not None:
                values[name] = db_time(values[name])
        try:
            with transaction.atomic(using=self.using):
                self._digests().create(workspace_id=digest.workspace, **values)
        except IntegrityError:
            return False
        return True

    # -- operations -------------------------------------------------------------------------------------

    def seal(self, *, delay: timedelta = DEFAULT_SEAL_DELAY, batch: int = DEFAULT_SEAL_BATCH) -> int:
        until = datetime.now(timezone.utc).replace(tzinfo=None) - delay
        return seal(self, self.signer, until=until, batch=batch)

    def verify(self, *, seal_first: bool = True, delay: timedelta = DEFAULT_SEAL_DELAY,
               expected_heads: Mapping[str, Sequence[Any]] | None = None) -> VerifyReport:
        if seal_first:
            self.seal(delay=delay)
        return verify(self, self.signer, expected_heads)

    def before_purge(self, before: datetime) -> None:
        before = _naive(before) or before
        seal(self, self.signer, until=before)
        for workspace in self.workspaces():
            for _attempt in range(5):  # a sealer may take the next seq meanwhile: then link after it
                if self.add_digest(purge_marker(self.last_digest(workspace), workspace, before, self.signer)):
                    break

    def after_purge(self, before: datetime) -> None:
        self._digests().filter(kind="seal", last_at__lt=db_time(before), entries__isnull=False).update(entries=None)

    def install_append_only_guard(self) -> None:
        """PostgreSQL only: a trigger rejecting UPDATE and DELETE on ``audit_events`` except from
        ``audit_purge`` (see :func:`audit_middleware.integrity.append_only_guard_sql`)."""
        from django.db import connections

        connection = connections[self.using]
        if connection.vendor != "postgresql":
            raise RuntimeError(f"the append-only guard is a PostgreSQL trigger; this database is {connection.vendor}")
        with transaction.atomic(using=self.using), connection.cursor() as cursor:
            for statement in append_only_guard_sql(AuditEventRow._meta.db_table):
                cursor.execute(statement)
