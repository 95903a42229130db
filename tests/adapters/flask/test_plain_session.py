"""AuditTrail on a plain SQLAlchemy scoped_session (no Flask-SQLAlchemy), with a session-key user loader."""

from __future__ import annotations

from typing import Any

from flask import Flask, request, session
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker

from audit_middleware import Actor
from audit_middleware.adapters.flask import AuditTrail


class Base(DeclarativeBase):
    pass


class PlainSessionPipeline(Base):
    # A name no other test uses: auditors discover every mapped class in the process.
    __tablename__ = "pipelines"
    __audit__ = {"resource": "Pipeline"}
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(default=True)


def test_a_plain_scoped_session_is_audited_and_the_session_user_key_names_the_actor(database_url):
    engine = create_engine(database_url)
    Session = scoped_session(sessionmaker(bind=engine))
    Base.metadata.create_all(engine)
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", AUDIT_TRAIL_SESSION_USER_KEY="uid")
    loaded: list[str] = []

    def user_loader(user_id: str) -> Any:
        loaded.append(user_id)
        return Actor.user(user_id, f"user{user_id}@example.com")

    audit = AuditTrail(app, session=Session, can_view=lambda: session.get("uid") == "7", user_loader=user_loader)
    try:
        with app.app_context():
            audit.create_tables()

        @app.post("/login/<uid>")
        def login(uid: str) -> str:
            session["uid"] = uid
            return "ok"

        @app.post("/sources")
        def create() -> Any:
            source = PlainSessionPipeline(name=request.form["name"])
            Session.add(source)
            Session.commit()
            return {"id": source.id}

        @app.post("/sources/<int:source_id>/disable")
        def disable(source_id: int) -> str:
            Session.get(PlainSessionPipeline, source_id).enabled = False
            Session.commit()
            return "ok"

        @app.teardown_appcontext
        def remove(_: Any) -> None:
            Session.remove()

        client = app.test_client()
        client.post("/login/7")
        source_id = client.post("/sources", data={"name": "Website"}).json["id"]
        client.post(f"/sources/{source_id}/disable")
        assert loaded == ["7", "7"]  # once per request that records an event, not for the login request
        body = client.get("/admin/audit-trail/events.json").json
        assert [e["event"] for e in body["events"]] == ["Pipeline Disabled", "Pipeline Created"]
        assert {e["actor"]["name"] for e in body["events"]} == {"user7@example.com"}
        assert app.test_client().get("/admin/audit-trail/").status_code == 403
    finally:
        audit.auditor.remove()
        Session.remove()
        engine.dispose()
