"""Tamper evidence on Django: row hashes written by capture, sealed digests, ``manage.py audit_verify``."""

from datetime import datetime, timedelta, timezone
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from testapp.models import Warehouse

from audit_middleware import Actor, in_workspace
from audit_middleware.adapters.django.integrity import DjangoIntegrity
from audit_middleware.adapters.django.models import AuditDigest, AuditEvent
from audit_middleware.adapters.django.store import DjangoStore
from audit_middleware.events import AuditEvent as CoreEvent
from audit_middleware.ids import new_event_id

from .conftest import events


def seed():
    for i in range(6):
        for workspace in ("ws_1", "ws_2"):
            with in_workspace(workspace):
                Warehouse.objects.create(name=f"{workspace}-{i}", capacity=i)


def verify(**options):
    out = StringIO()
    call_command("audit_verify", "--seal-delay", "0", stdout=out, **options)
    return out.getvalue()


def table():
    return connection.ops.quote_name("audit_events")


def test_capture_signs_rows_and_an_untouched_trail_verifies():
    seed()
    assert all(row.row_hash for row in AuditEvent.objects.all())
    assert verify().startswith("trail intact: 12 event(s) in 2 workspace chain(s), 12 sealed in 2 digest(s)")


def test_an_edited_row_and_a_deleted_row_are_located():
    seed()
    DjangoIntegrity().seal(delay=timedelta(0))
    ws1 = events(workspace_id="ws_1")
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table()} SET changes = %s WHERE id = %s", ['{"name":[null,"x"]}', ws1[1].id])  # noqa: S608
        cursor.execute(f"DELETE FROM {table()} WHERE id = %s", [ws1[3].id])  # noqa: S608
    report = DjangoIntegrity().verify(delay=timedelta(0))
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", ws1[1].id), ("deleted", ws1[3].id)]
    with pytest.raises(CommandError, match=f"first: ALTERED: event {ws1[1].id}"):
        verify()


def test_a_forged_row_is_found_and_purging_is_not_tampering():
    now = datetime.now(timezone.utc)
    DjangoStore().append([CoreEvent(new_event_id(), now - timedelta(days=d), "Warehouse Created", "Warehouses",
                                    "created", Actor.system("seed"), workspace_id="ws_1") for d in (200, 100, 3, 2)])
    call_command("audit_purge", "--yes", stdout=StringIO())
    report = DjangoIntegrity().verify(delay=timedelta(0))
    assert report.ok and (report.events, report.purged) == (2, 2)
    kept = events()
    forged_at = kept[0].occurred_at + (kept[1].occurred_at - kept[0].occurred_at) / 2
    AuditEvent.objects.create(id=new_event_id(), occurred_at=forged_at, event="Warehouse Deleted",
                              category="Warehouses", action="deleted", actor_type="user", actor_id="99",
                              workspace_id="ws_1", row_hash="0" * 64)
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("audit_verify", "--seal-delay", "0", "--all", stdout=out)
    assert {line.split(":")[0] for line in out.getvalue().splitlines()} == {"ALTERED", "INSERTED"}


def test_saved_heads_catch_a_truncated_chain(tmp_path):
    heads = str(tmp_path / "heads.json")
    seed()
    call_command("audit_verify", "--seal-delay", "0", "--heads", heads, stdout=StringIO())
    AuditDigest.objects.filter(workspace_id="ws_2").delete()
    AuditEvent.objects.filter(workspace_id="ws_2").delete()
    assert DjangoIntegrity().verify(delay=timedelta(0)).ok  # from the inside nothing is missing
    with pytest.raises(CommandError, match="whole chain of this workspace is gone"):
        call_command("audit_verify", "--seal-delay", "0", "--heads", heads, stdout=StringIO())


def test_append_only_guard_on_postgresql_lets_only_the_purge_delete():
    if connection.vendor != "postgresql":
        pytest.skip("the append-only guard is a PostgreSQL trigger")
    from django.db import DatabaseError, transaction

    now = datetime.now(timezone.utc)
    DjangoStore().append([CoreEvent(new_event_id(), now - timedelta(days=d), "Warehouse Created", "Warehouses",
                                    "created", Actor.system("seed")) for d in (120, 1)])
    DjangoIntegrity().install_append_only_guard()
    try:
        for statement in (f"UPDATE {table()} SET event = 'x'", f"DELETE FROM {table()}"):  # noqa: S608
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), \
                    connection.cursor() as cursor:
                cursor.execute(statement)
        call_command("audit_purge", "--yes", stdout=StringIO())
        assert AuditEvent.objects.count() == 1 and DjangoIntegrity().verify(delay=timedelta(0)).ok
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS audit_events_append_only ON {table()}")
