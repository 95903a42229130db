"""A small app per test: models, an engine on the chosen database, a sessionmaker and its auditor."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import JSON, Enum, ForeignKey, LargeBinary, Numeric, String, Text, Uuid, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from audit_middleware.adapters.sqlalchemy import SQLAlchemyAuditor, track


class Tier(enum.Enum):
    FREE = "free"
    BUSINESS = "business"


@dataclass
class App:
    engine: Any
    Session: Any
    auditor: SQLAlchemyAuditor
    Warehouse: Any
    Label: Any
    Note: Any
    Membership: Any

    def events(self, **filters: Any) -> list[Any]:
        """Every stored event, oldest first, read straight from the database."""
        table = self.auditor.table
        with self.engine.connect() as c:
            rows = c.execute(select(table).order_by(table.c.occurred_at, table.c.id)).mappings().all()
        from audit_middleware.store import event_from_row

        events = [event_from_row(r) for r in rows]
        return [e for e in events if all(getattr(e, k) == v for k, v in filters.items())]


def make_app(url: str, **options: Any) -> App:
    class Base(DeclarativeBase):
        pass

    class Warehouse(Base):
        __tablename__ = "warehouses"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(200))
        slug: Mapped[str | None] = mapped_column(String(200))
        enabled: Mapped[bool] = mapped_column(default=True)
        schedule: Mapped[str | None] = mapped_column(String(50))
        settings: Mapped[dict | None] = mapped_column(JSON)
        owner_id: Mapped[int | None]
        password: Mapped[str | None] = mapped_column(String(200))
        amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(20, 6))
        external_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
        blob: Mapped[bytes | None] = mapped_column(LargeBinary)
        tier: Mapped[Tier | None] = mapped_column(Enum(Tier))
        notes: Mapped[str | None] = mapped_column(Text)
        created_at: Mapped[dt.datetime | None]

    class Label(Base):
        __tablename__ = "labels"
        __audit__ = {"resource": "Tag", "category": "Tagging", "exclude": ["internal"], "toggle": "visible",
                     "label": "title"}
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(100))
        visible: Mapped[bool] = mapped_column(default=True)
        internal: Mapped[str | None] = mapped_column(String(100))

    class Note(Base):
        __tablename__ = "notes"
        __audit__ = False
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(String(100))

    class Membership(Base):
        __tablename__ = "memberships"
        user_id: Mapped[int] = mapped_column(primary_key=True)
        warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"), primary_key=True)
        role: Mapped[str] = mapped_column(String(20))

    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    auditor = track(Session, **options)
    auditor.create_tables()
    return App(engine, Session, auditor, Warehouse, Label, Note, Membership)


@pytest.fixture
def app(database_url: str):
    application = make_app(database_url)
    yield application
    application.auditor.remove()
    application.engine.dispose()
