"""A failure while building an event never breaks the host's write, unless the model is must-record."""

from __future__ import annotations

import pytest
from sqlalchemy import PickleType, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from audit_middleware.adapters.sqlalchemy import track
from audit_middleware.signals import capture_failed


class Unprintable:
    """A column value that cannot be turned into JSON (its str() raises)."""

    def __str__(self) -> str:
        raise RuntimeError("cannot describe me")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unprintable)

    __hash__ = object.__hash__


def build(tmp_path, must_record: bool):
    class Base(DeclarativeBase):
        pass

    class Blob(Base):
        __tablename__ = "blobs"
        __audit__ = {"must_record": must_record}
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(20))
        payload: Mapped[object] = mapped_column(PickleType)

    engine = create_engine(f"sqlite:///{tmp_path}/f.sqlite3")
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    auditor = track(Session)
    auditor.create_tables()
    return engine, Session, auditor, Blob


def count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(table)).scalar_one()


def test_capture_error_is_logged_counted_and_signalled_and_the_write_goes_ahead(tmp_path, caplog):
    engine, Session, auditor, Blob = build(tmp_path, must_record=False)
    failures = []

    def on_failure(sender, error):
        failures.append(error)

    with capture_failed.connected_to(on_failure, sender=auditor):
        with Session() as s:
            s.add(Blob(name="x", payload=Unprintable()))
            s.commit()
    assert count(engine, Blob.__table__) == 1
    assert auditor.recorder.errors.count == 1 and isinstance(auditor.recorder.errors.last, RuntimeError)
    assert [type(f) for f in failures] == [RuntimeError]
    assert "could not capture an event" in caplog.text
    auditor.remove()
    engine.dispose()


def test_must_record_models_fail_the_write_instead(tmp_path):
    engine, Session, auditor, Blob = build(tmp_path, must_record=True)
    with Session() as s:
        s.add(Blob(name="x", payload=Unprintable()))
        with pytest.raises(RuntimeError, match="cannot describe me"):
            s.commit()
    assert count(engine, Blob.__table__) == 0
    assert auditor.recorder.errors.count == 0
    auditor.remove()
    engine.dispose()
