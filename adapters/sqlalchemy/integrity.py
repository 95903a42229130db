"""Tamper evidence on SQLAlchemy: the :class:`~audit_middleware.integrity.IntegrityBackend` over the events and
digests tables, and the optional PostgreSQL append-only guard."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, Table, and_, func, insert, or_, select, text, union, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from audit_middleware.events import utc_naive
from audit_middleware.integrity import (
    DEFAULT_SEAL_BATCH,
    DEFAULT_SEAL_DELAY,
    PURGE_SETTING,
    Digest,
    Key,
    Signer,
    VerifyReport,
    append_only_guard_sql,
    purge_marker,
    seal,
    verify,
)

from .schema import AuditTables


class SQLAlchemyIntegrity:
    """Seal and verify the trail in ``tables`` (see :mod:`audit_middleware.integrity`)."""

    def __init__(self, engine: Engine, tables: AuditTables, signer: Signer) -> None:
        if tables.digests is None:
            raise RuntimeError(f"no digests table was defined beside {tables.events.name}: use define_tables()")
        self.engine = engine
        self.events_table = tables.events
        self.digests_table: Table = tables.digests
        self.signer = signer

    # -- IntegrityBackend --------------------------------------------------------------------------------

    def _ws(self, workspace: str) -> ColumnElement[bool]:
        c = self.events_table.c
        return or_(c.workspace_id.is_(None), c.workspace_id == "") if workspace == "" else c.workspace_id == workspace

    def workspaces(self) -> list[str]:
        e, d = self.events_table.c, self.digests_table.c
        statement = union(select(func.coalesce(e.workspace_id, "")).distinct(), select(d.workspace_id).distinct())
        with self.engine.connect() as connection:
            return sorted({str(w) for w in connection.execute(statement).scalars()})

    def _digest(self, row: Mapping[str, Any]) -> Digest:
        return Digest(
            workspace=row["workspace_id"], seq=row["seq"], kind=row["kind"], last_at=row["last_at"],
            last_id=row["last_id"], count=row["count"], entries=row["entries"], entries_hash=row["entries_hash"],
            prev_hash=row["prev_hash"], digest_hash=row["digest_hash"], purged_before=row["purged_before"],
            created_at=row["created_at"],
        )

    def last_digest(self, workspace: str) -> Digest | None:
        d = self.digests_table.c
        statement = select(self.digests_table).where(d.workspace_id == workspace).order_by(d.seq.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(statement).mappings().first()
        return self._digest(row) if row is not None else None

    def digests(self, workspace: str) -> Iterator[Digest]:
        d = self.digests_table.c
        statement = select(self.digests_table).where(d.workspace_id == workspace).order_by(d.seq)
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
        return iter([self._digest(r) for r in rows])

    def _after(self, key: Key) -> ColumnElement[bool]:
        c = self.events_table.c
        return or_(c.occurred_at > key[0], and_(c.occurred_at == key[0], c.id > key[1]))

    def sealable(self, workspace: str, after: Key | None, until: datetime, limit: int) -> list[tuple[str, datetime]]:
        c = self.events_table.c
        clauses = [self._ws(workspace), c.occurred_at < until]
        if after is not None:
            clauses.append(self._after(after))
        statement = select(c.id, c.occurred_at).where(*clauses).order_by(c.occurred_at, c.id).limit(limit)
        with self.engine.connect() as connection:
            return [(r.id, r.occurred_at) for r in connection.execute(statement)]

    def events(self, workspace: str, after: Key | None, upto: Key | None) -> Iterator[Mapping[str, Any]]:
        c = self.events_table.c
        clauses = [self._ws(workspace)]
        if after is not None:
            clauses.append(self._after(after))
        if upto is not None:
            clauses.append(or_(c.occurred_at < upto[0], and_(c.occurred_at == upto[0], c.id <= upto[1])))
        statement = select(self.events_table).where(*clauses).order_by(c.occurred_at, c.id)
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=5000).execute(statement)
            yield from result.mappings()

    def events_by_id(self, ids: Sequence[str]) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = []
        with self.engine.connect() as connection:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                rows += connection.execute(select(self.events_table).where(self.events_table.c.id.in_(chunk))).mappings().all()
        return rows

    def add_digest(self, digest: Digest) -> bool:
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(self.digests_table).values(
                    workspace_id=digest.workspace, seq=digest.seq, kind=digest.kind, last_at=digest.last_at,
                    last_id=digest.last_id, count=digest.count, entries=digest.entries,
                    entries_hash=digest.entries_hash, prev_hash=digest.prev_hash, digest_hash=digest.digest_hash,
                    purged_before=digest.purged_before, created_at=digest.created_at,
                ))
        except IntegrityError:
            return False
        return True

    # -- operations -------------------------------------------------------------------------------------

    def seal(self, *, delay: timedelta = DEFAULT_SEAL_DELAY, batch: int = DEFAULT_SEAL_BATCH) -> int:
        """Seal every event older than ``delay``; returns how many digests were written."""
        until = datetime.now(timezone.utc).replace(tzinfo=None) - delay
        return seal(self, self.signer, until=until, batch=batch)

    def verify(self, *, seal_first: bool = True, delay: timedelta = DEFAULT_SEAL_DELAY,
               expected_heads: Mapping[str, Sequence[Any]] | None = None) -> VerifyReport:
        """Seal what is old enough (unless ``seal_first=False``), then check the whole trail (and that the
        chain heads saved from an earlier report are still there)."""
        if seal_first:
            self.seal(delay=delay)
        return verify(self, self.signer, expected_heads)

    def before_purge(self, before: datetime) -> None:
        """Seal everything older than ``before``, then record the purge in every chain before rows go."""
        before = utc_naive(before)
        seal(self, self.signer, until=before)
        for workspace in self.workspaces():
            for _attempt in range(5):  # a sealer may take the next seq meanwhile: then link after it
                if self.add_digest(purge_marker(self.last_digest(workspace), workspace, before, self.signer)):
                    break

    def after_purge(self, before: datetime) -> None:
        """Drop the event lists of digests whose every event is now gone (their hashes keep chaining)."""
        d = self.digests_table.c
        with self.engine.begin() as connection:
            connection.execute(update(self.digests_table).where(
                d.kind == "seal", d.last_at < before, d.entries.is_not(None)).values(entries=None))

    def install_append_only_guard(self) -> None:
        """PostgreSQL only: a trigger that rejects UPDATE and DELETE on the events table unless the
        transaction set ``audit_middleware.purge`` (as :meth:`SQLAlchemyStore.purge` does)."""
        if self.engine.dialect.name != "postgresql":
            raise RuntimeError("the append-only guard is a PostgreSQL trigger; this engine is "
                               f"{self.engine.dialect.name}")
        with self.engine.begin() as connection:
            for statement in append_only_guard_sql(self.events_table.name):
                connection.execute(text(statement))


def allow_purge(connection: Any) -> None:
    """Mark this PostgreSQL transaction as the retention purge (the append-only guard lets it delete)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT set_config('{PURGE_SETTING}', 'on', true)"))
