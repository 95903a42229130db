"""Capture with more than one database: each change's events go to the audit table of the database the change
is written to, in the same transaction. ``default`` is the run's backend; ``other`` and ``bare`` are SQLite files
(see audit_django_settings), ``bare`` without the audit table."""

import io
import os

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from testapp.models import Item, Warehouse

from audit_middleware import suspend_auditing
from audit_middleware.adapters.django import get_auditor, get_store, record
from audit_middleware.adapters.django.models import AuditEvent
from audit_middleware.errors import AuditWriteError


@pytest.fixture(scope="module", autouse=True)
def _second_databases(_schema):
    for alias in ("other", "bare"):
        call_command("migrate", database=alias, verbosity=0, interactive=False)
    yield
    for alias in ("other", "bare"):
        connections[alias].close()
        os.remove(connections[alias].settings_dict["NAME"])


@pytest.fixture(autouse=True)
def _clean_second_databases():
    yield
    with suspend_auditing():
        for alias in ("other", "bare"):
            Item._base_manager.using(alias).all().delete()
            Warehouse._base_manager.using(alias).all().delete()
    AuditEvent.objects.using("other").all().delete()


def trail(alias):
    """The events stored in ``alias``'s audit table, oldest first, as ``(event, resource_id, changes)``."""
    rows = AuditEvent.objects.using(alias).order_by("occurred_at", "id")
    return [(e.event, e.resource_id, e.changes) for e in (row.to_event() for row in rows)]


def test_saves_in_a_second_database_record_there_and_not_in_the_default_one():
    """create, save and delete on another database write their events to that database's audit table."""
    w = Warehouse.objects.using("other").create(name="Other", capacity=2)
    w.name = "Other, renamed"
    w.save()
    pk = w.pk
    w.delete()
    assert [(event, resource_id, changes["name"]) for event, resource_id, changes in trail("other")] == [
        ("Warehouse Created", str(pk), [None, "Other"]),
        ("Warehouse Modified", str(pk), ["Other", "Other, renamed"]),
        ("Warehouse Deleted", str(pk), ["Other, renamed", None]),
    ]
    created, modified, deleted = (changes for _, _, changes in trail("other"))
    assert created["write_key"] == [None, "[masked]"] and deleted["capacity"] == [2, None]
    assert modified == {"name": ["Other", "Other, renamed"]}
    assert trail("default") == []
    page = get_auditor().query(using="other", resource_id=str(pk))
    assert [e.event for e in page.events] == ["Warehouse Deleted", "Warehouse Modified", "Warehouse Created"]
    assert get_store("other").get(page.events[0].id) == page.events[0]


def test_each_databases_transaction_keeps_its_own_events():
    """A rolled-back block on ``other`` leaves no row and no event there, while a change committed on ``default``
    inside it keeps its event; the opposite way round alike."""
    with pytest.raises(RuntimeError), transaction.atomic(using="other"):
        Warehouse.objects.using("other").create(name="rolled back")
        Warehouse.objects.create(name="committed on default")  # autocommit: default is not in a block
        raise RuntimeError("boom")
    assert not Warehouse.objects.using("other").exists() and trail("other") == []
    assert [(e, c["name"]) for e, _, c in trail("default")] == [("Warehouse Created", [None, "committed on default"])]

    with pytest.raises(RuntimeError), transaction.atomic():
        Warehouse.objects.create(name="rolled back on default")
        Warehouse.objects.using("other").create(name="committed on other")
        raise RuntimeError("boom")
    assert [(e, c["name"]) for e, _, c in trail("other")] == [("Warehouse Created", [None, "committed on other"])]
    assert [c["name"][1] for _, _, c in trail("default")] == ["committed on default"]


def test_bulk_operations_and_app_events_on_a_second_database_record_there():
    """bulk_create, QuerySet.update and delete (with its cascade), and record() of an instance loaded from
    ``other``, all write to ``other``'s audit table."""
    get_auditor().catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    made = Warehouse.objects.using("other").bulk_create([Warehouse(name=f"W{i}") for i in range(3)])
    Item.objects.using("other").create(name="item", warehouse=made[0])
    Warehouse.objects.using("other").filter(name="W1").update(notes="bulk")
    record("Warehouse Run Failed", Warehouse.objects.using("other").get(name="W2"), details={"error": "quota"})
    Warehouse.objects.using("other").filter(name="W0").delete()
    got = [(e.event, e.resource_name, e.changes.get("notes"), e.details)
           for e in (row.to_event() for row in AuditEvent.objects.using("other").order_by("occurred_at", "id"))]
    assert got[:6] == [
        ("Warehouse Created", "W0", [None, ""], {}), ("Warehouse Created", "W1", [None, ""], {}),
        ("Warehouse Created", "W2", [None, ""], {}),
        ("Item Created", "item", None, {}),
        ("Warehouse Modified", "W1", ["", "bulk"], {}),
        ("Warehouse Run Failed", "W2", None, {"error": "quota"}),
    ]
    assert sorted(got[6:]) == [("Item Deleted", "item", None, {}), ("Warehouse Deleted", "W0", ["", None], {})]
    assert trail("default") == []


def test_a_database_without_the_audit_table_refuses_audited_changes_and_keeps_nothing_of_them():
    """Where the audit table was not migrated, an audited save fails with AuditWriteError naming the event, and
    neither the row nor part of the transaction stays; with auditing suspended the app can still write there."""
    with pytest.raises(AuditWriteError, match="Warehouse Created, ...[)] to database 'bare'"):
        Warehouse.objects.using("bare").create(name="unaudited")
    assert not Warehouse.objects.using("bare").exists()
    with pytest.raises(AuditWriteError, match="Warehouse Created"), transaction.atomic(using="bare"):
        Warehouse.objects.using("bare").create(name="in a block")
    assert not Warehouse.objects.using("bare").exists()
    with suspend_auditing():
        Warehouse.objects.using("bare").create(name="suspended")
    assert list(Warehouse.objects.using("bare").values_list("name", flat=True)) == ["suspended"]
    assert trail("default") == [] and trail("other") == []


def test_the_commands_read_the_database_they_are_given():
    """``audit_export --database other`` exports that database's events, and the default one's without it."""
    Warehouse.objects.using("other").create(name="on other")
    Warehouse.objects.create(name="on default")
    exported = {}
    for alias in ("other", None):
        out = io.StringIO()
        call_command("audit_export", *(["--database", alias] if alias else []), stdout=out)
        exported[alias] = out.getvalue()
    assert "on other" in exported["other"] and "on default" not in exported["other"]
    assert "on default" in exported[None] and "on other" not in exported[None]
