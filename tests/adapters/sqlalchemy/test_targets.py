"""track() accepts a sessionmaker, a scoped_session or a Session class, and remove() undoes it."""

from __future__ import annotations

from sqlalchemy import String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, scoped_session, sessionmaker

from audit_middleware.adapters.sqlalchemy import audit_events, track


def models():
    class Base(DeclarativeBase):
        pass

    class Source(Base):
        __tablename__ = "sources"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))

    return Base, Source


def names(engine) -> list[str]:
    with engine.connect() as c:
        return [r.event for r in c.execute(select(audit_events.c.event).order_by(audit_events.c.id))]


def test_scoped_session_and_session_subclass_targets(tmp_path):
    Base, Source = models()
    engine = create_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    Base.metadata.create_all(engine)

    scoped = scoped_session(sessionmaker(engine))
    auditor = track(scoped)
    auditor.create_tables()
    scoped.add(Source(name="a"))
    scoped.commit()
    scoped.remove()
    auditor.remove()

    class AppSession(Session):
        pass

    auditor2 = track(AppSession, bind=engine)
    with AppSession(engine) as s:
        s.add(Source(name="b"))
        s.commit()
    auditor2.remove()
    with AppSession(engine) as s:
        s.add(Source(name="not captured after remove()"))
        s.commit()
    assert names(engine) == ["Source Created", "Source Created"]
    assert "Source Modified" in auditor2.catalog
    engine.dispose()


def test_models_mapped_before_track_are_in_the_catalog_at_once(tmp_path):
    _, Source = models()
    engine = create_engine(f"sqlite:///{tmp_path}/t.sqlite3")
    auditor = track(sessionmaker(engine))
    assert "Source Deleted" in auditor.catalog
    assert "Source Enabled" not in auditor.catalog
    auditor.remove()
    engine.dispose()
