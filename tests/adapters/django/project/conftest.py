"""Django set up once for this process, on the database the environment names (see audit_django_settings)."""

import os
from contextlib import contextmanager

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "audit_django_settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

from audit_middleware import suspend_auditing  # noqa: E402
from audit_middleware.adapters.django.models import AuditDigest, AuditEvent  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _schema():
    call_command("migrate", verbosity=0, interactive=False)
    yield
    connections.close_all()


@pytest.fixture(autouse=True)
def _clean(_schema):
    yield
    from rest_framework.authtoken.models import Token
    from testapp import models

    with suspend_auditing():
        for model in (models.Item, models.Tag, models.Warehouse, models.Source, models.Ignored,
                      models.ApiToken, models.Membership, Token):
            model._base_manager.all().delete()
        User.objects.all().delete()
    AuditEvent.objects.all().delete()
    AuditDigest.objects.all().delete()  # a seal of deleted events would read as tampering to the next test


def is_audit_insert(sql):
    """Whether ``sql`` writes event rows: ``INSERT INTO`` the audit table, or ``INSERT OR FAIL INTO`` it (several
    rows on SQLite, see ``audit_middleware.store.event_insert``)."""
    text = sql.upper()  # an executemany's logged text starts "5 times: "
    return ("INSERT INTO" in text or "INSERT OR FAIL INTO" in text) and "AUDIT_EVENTS" in text


@contextmanager
def audit_inserts(connection):
    """The INSERTs into the audit table that the block sends, as ``(how, sql)``: ``"cursor"`` through Django's
    cursor, ``"commit"`` with the COMMIT (psycopg pipeline, past Django's query log). Filled when the block
    exits; the real functions run."""
    from django.test.utils import CaptureQueriesContext

    from audit_middleware.adapters.django import store

    found = []
    real = store.send_with_commit

    def spy(driver_connection, statements):
        found.extend(("commit", sql) for sql, _ in statements)
        return real(driver_connection, statements)

    store.send_with_commit = spy
    try:
        with CaptureQueriesContext(connection) as queries:
            yield found
    finally:
        store.send_with_commit = real
    found[:0] = [("cursor", q["sql"]) for q in queries.captured_queries if is_audit_insert(q["sql"])]


def statements(queries):
    """The statements a ``CaptureQueriesContext`` saw, as the server ran them: a BEGIN sent in one text with
    the block's first statement (``BEGIN; INSERT ...``, PostgreSQL, see ``folded_begin``) counts as two."""
    sent = []
    for query in queries.captured_queries:
        sql = query["sql"].lstrip()
        if sql.startswith("BEGIN; "):
            sent += ["BEGIN", sql[len("BEGIN; "):]]
        else:
            sent.append(sql)
    return sent


def events(**filters):
    """Every committed event (oldest first) as core events."""
    return [row.to_event() for row in AuditEvent.objects.filter(**filters).order_by("occurred_at", "id")]


def names(**filters):
    return [e.event for e in events(**filters)]
