"""Flask: AUDIT_TRAIL_SIGNING_KEY signs the rows, and the trail verifies with that key only."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from audit_middleware.integrity import Signer

from .conftest import dispose, make_app


def test_the_signing_key_from_the_app_config_signs_rows(database_url):
    test_app = make_app(database_url, AUDIT_TRAIL_SIGNING_KEY="flask-key")
    try:
        owner = test_app.client("ada@a.example")
        owner.post("/warehouses", data={"name": "Production"})
        with test_app.app.app_context():
            auditor = test_app.audit.auditor
            with test_app.db.engine.connect() as connection:
                row = connection.execute(select(auditor.table)).mappings().one()
            assert row["row_hash"] == Signer("flask-key").row_hash(row) != Signer(None).row_hash(row)
            assert auditor.verify(delay=timedelta(0)).ok
    finally:
        dispose(test_app)
