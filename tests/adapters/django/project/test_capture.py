"""Capture on the Django ORM: saves, deletes, toggles, m2m, bulk operations and transactions."""

from contextlib import contextmanager
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import django
import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from testapp.models import Ignored, Item, Source, Tag, Warehouse

from audit_middleware import Actor, acting_as, in_workspace, suspend_auditing
from audit_middleware.adapters.django import get_auditor, record
from audit_middleware.adapters.django.models import AuditEvent
from audit_middleware.export import export_csv
from audit_middleware.testing import capture_events

from ....awkward_csv import assert_exports_the_awkward_events, awkward_events
from ....libpq_trace import libpq_messages
from ....paging import ids_by_pages
from ....sqlite_files import (
    assert_plain_multi_row_inserts_would_show_a_statement_journal,
    open_temporary_files,
)
from .conftest import audit_inserts, events, is_audit_insert, names, statements


def test_create_modify_delete_record_events_with_diffs():
    """A model's create, change and delete each record one event with the field diff."""
    w = Warehouse.objects.create(name="Production", capacity="10.50")
    w.name = "Prod BigQuery"
    w.save()
    pk = w.pk
    w.delete()
    created, modified, deleted = events()
    assert [created.event, modified.event, deleted.event] == [
        "Warehouse Created", "Warehouse Modified", "Warehouse Deleted"]
    assert created.category == "Warehouses" and created.resource_id == str(pk)
    assert created.changes["name"] == [None, "Production"] and created.changes["capacity"] == [None, "10.50"]
    assert modified.changes == {"name": ["Production", "Prod BigQuery"]}
    assert modified.resource_name == "Prod BigQuery"
    assert deleted.changes["name"] == ["Prod BigQuery", None] and deleted.resource_id == str(pk)


def test_save_without_change_records_nothing_and_text_values_are_not_changes():
    """Saving an unchanged row, or assigning "3" to a field that holds 3, records no Modified event."""
    w = Warehouse.objects.create(name="A", capacity=3)
    w = Warehouse.objects.get(pk=w.pk)
    w.save()
    w.capacity = "3.00"
    w.save()
    assert names() == ["Warehouse Created"]


def test_toggle_flip_gives_enabled_disabled_and_other_fields_a_modified():
    """Flipping the toggle field records Disabled/Enabled; other fields changed with it give Modified."""
    w = Warehouse.objects.create(name="A")
    w.enabled = False
    w.save()
    w.enabled = True
    w.notes = "back on"
    w.save()
    got = events()
    assert [e.event for e in got] == ["Warehouse Created", "Warehouse Disabled", "Warehouse Enabled",
                                      "Warehouse Modified"]
    assert got[1].changes == {"enabled": [True, False]}
    assert got[3].changes == {"notes": ["", "back on"]}


def test_audit_options_rename_resource_custom_toggle_and_exclude():
    """__audit__ renames the resource, picks the toggle and leaves out excluded fields."""
    s = Source.objects.create(title="Site", sync_cursor="c1")
    s.is_live = True
    s.sync_cursor = "c2"
    s.save()
    s.sync_cursor = "c3"
    s.save()
    got = events()
    assert [e.event for e in got] == ["Data Source Created", "Data Source Enabled"]
    assert got[0].category == "Sources" and "sync_cursor" not in got[0].changes
    assert got[1].resource_name == "Site"


def test_sensitive_fields_are_masked():
    """write_key (default list) and iban (EXTRA_MASKED_FIELDS) keep only the fact that they changed."""
    w = Warehouse.objects.create(name="A", write_key="sk_live_123")
    w.write_key = "sk_live_456"
    w.save()
    Item.objects.create(name="i", iban="DE89370400440532013000")
    got = events()
    assert got[0].changes["write_key"] == [None, "[masked]"]
    assert got[1].changes == {"write_key": ["[masked]", "[masked]"]}
    assert got[2].changes["iban"] == [None, "[masked]"]
    assert "sk_live" not in str(list(AuditEvent.objects.values_list("changes", flat=True)))


def test_opted_out_and_bookkeeping_models_are_not_audited():
    """__audit__ = False models, sessions, content types and the audit table itself record nothing."""
    from django.contrib.contenttypes.models import ContentType
    from django.contrib.sessions.backends.db import SessionStore

    Ignored.objects.create(name="x")
    SessionStore().create()
    ContentType.objects.get_for_model(Ignored)
    assert names() == []
    assert "Ignored Created" not in get_auditor().catalog


def test_saving_a_loaded_row_costs_no_extra_select():
    """Old values come from the snapshot taken when the row was loaded: save = UPDATE + event INSERT (on
    PostgreSQL one statement). What reached the server is read from psycopg there: with values bound in the
    server, Django's query log shows the UPDATE it asked for, not the statement sent."""
    w = Warehouse.objects.create(name="A")
    w = Warehouse.objects.get(pk=w.pk)
    w.name = "B"
    with audit_inserts(connection) as inserts, CaptureQueriesContext(connection) as queries, \
            cursor_texts() as sent:
        w.save()
    texts = sent if connection.vendor == "postgresql" else statements(queries)
    assert not any(s.upper().startswith("SELECT") for s in texts), texts
    written = [s for s in texts if is_audit_insert(s)] + [s for how, s in inserts if how == "commit"]
    assert len(written) == 1, (texts, inserts)
    assert names()[-1] == "Warehouse Modified"


def test_instance_never_loaded_gets_its_old_values_with_one_select():
    """Saving Warehouse(pk=..., ...) built by hand still diffs against what the database held."""
    w = Warehouse.objects.create(name="A", kind="redshift")
    again = Warehouse(pk=w.pk, name="B", kind="redshift", enabled=True, write_key="", capacity=0, notes="")
    again.save()
    assert events()[-1].changes == {"name": ["A", "B"]}


def test_deferred_field_set_then_saved_diffs_against_the_database():
    """A field deferred at load and then assigned is diffed against its stored value."""
    w = Warehouse.objects.create(name="A", notes="old")
    w = Warehouse.objects.defer("notes").get(pk=w.pk)
    w.notes = "new"
    w.save()
    assert events()[-1].changes == {"notes": ["old", "new"]}


def test_update_fields_limits_the_diff_to_the_saved_fields():
    """save(update_fields=[...]) records only the fields written."""
    w = Warehouse.objects.create(name="A")
    w.name = "B"
    w.notes = "not saved"
    w.save(update_fields=["name"])
    assert events()[-1].changes == {"name": ["A", "B"]}


def test_refresh_from_db_resets_the_snapshot():
    """After refresh_from_db, a change made elsewhere is not reported as this instance's change."""
    w = Warehouse.objects.create(name="A")
    Warehouse.objects.filter(pk=w.pk).update(name="B")
    w.refresh_from_db()
    w.notes = "n"
    w.save()
    assert events()[-1].changes == {"notes": ["", "n"]}


def test_m2m_add_remove_clear_and_reverse_record_owner_modified():
    """Many-to-many changes from either side record "<Owner> Modified" with the old and new id lists."""
    item = Item.objects.create(name="i")
    a, b, c = (Tag.objects.create(name=n) for n in "abc")
    item.tags.add(a, b)
    item.tags.remove(a)
    c.items.add(item)
    item.tags.clear()
    got = [e for e in events() if e.event == "Item Modified"]
    assert [e.changes for e in got] == [
        {"tags": [[], sorted([a.pk, b.pk])]},
        {"tags": [sorted([a.pk, b.pk]), [b.pk]]},
        {"tags": [[b.pk], sorted([b.pk, c.pk])]},
        {"tags": [sorted([b.pk, c.pk]), []]},
    ]
    assert all(e.resource_id == str(item.pk) and e.resource_name == "i" for e in got)


def test_queryset_update_records_one_event_per_row_with_diffs():
    """QuerySet.update() (F expressions included) records Modified per affected row."""
    w1 = Warehouse.objects.create(name="A", capacity=1)
    w2 = Warehouse.objects.create(name="B", capacity=2)
    Warehouse.objects.create(name="C", capacity=3, kind="other")
    assert Warehouse.objects.filter(kind="bigquery").update(capacity=F("capacity") + 10) == 2
    got = [e for e in events() if e.event == "Warehouse Modified"]
    assert sorted((e.resource_id, e.changes["capacity"][1], e.resource_name) for e in got) == sorted(
        [(str(w1.pk), "11.00", "A"), (str(w2.pk), "12.00", "B")])
    Warehouse.objects.filter(kind="other").update(enabled=False)
    assert names()[-1] == "Warehouse Disabled"


@pytest.fixture
def write_sizes(monkeypatch):
    """How many events each write of waiting events wrote, in order (the real writes run)."""
    from audit_middleware.adapters.django import capture

    sizes: list[int] = []
    real = capture.insert_events

    def counted(connection_, events_, **kwargs):
        sizes.append(len(events_))
        return real(connection_, events_, **kwargs)

    monkeypatch.setattr(capture, "insert_events", counted)
    return sizes


def test_queryset_update_reads_only_the_columns_it_assigns_with_the_id_and_label():
    """The SELECTs around QuerySet.update() read the columns it assigns, the id and the label (the name),
    not the rest of the row; the events are the same."""
    w = Warehouse.objects.create(name="A", capacity=1, notes="long text the update never touches")
    table = Warehouse._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        Warehouse.objects.filter(pk=w.pk).update(capacity=F("capacity") + 1)
    selects = [sql for sql in statements(queries) if sql.upper().startswith("SELECT") and table in sql]
    assert len(selects) == 2, selects  # the old values, then the new ones by id
    for sql in selects:
        assert "capacity" in sql and '"name"' in sql.replace("`", '"') and "notes" not in sql, sql
    assert events()[-1].changes == {"capacity": ["1.00", "2.00"]} and events()[-1].resource_name == "A"


def test_a_queryset_update_of_many_rows_writes_its_events_a_few_chunks_at_a_time(write_sizes):
    """A QuerySet.update() over 2,600 rows makes and emits its events 500 rows at a time, so they are written
    once more than 1,000 wait (in its transaction), never all at once; every row gets its event."""
    with suspend_auditing():
        Warehouse.objects.bulk_create([Warehouse(name=f"w{i}") for i in range(2600)])
    assert Warehouse.objects.update(notes="y") == 2600
    assert sum(write_sizes) == 2600 and max(write_sizes) <= 1500, write_sizes
    modified = [e for e in events() if e.event == "Warehouse Modified"]
    assert sorted(e.resource_name for e in modified) == sorted(f"w{i}" for i in range(2600))
    assert all(e.changes == {"notes": ["", "y"]} for e in modified)


def test_a_bulk_create_of_many_objects_writes_its_events_a_few_chunks_at_a_time(write_sizes):
    """bulk_create() of 2,600 objects makes and emits its Created events 500 at a time, so they are written once
    more than 1,000 wait, never all at once; every object gets its event, with its id."""
    objs = Warehouse.objects.bulk_create([Warehouse(name=f"w{i}") for i in range(2600)])
    assert sum(write_sizes) == 2600 and max(write_sizes) <= 1500, write_sizes
    created = [e for e in events() if e.event == "Warehouse Created"]
    assert sorted(e.resource_id for e in created) == sorted(str(o.pk) for o in objs)


def test_bulk_create_and_bulk_update_record_per_row():
    """bulk_create records Created per object (with its id); bulk_update records what changed per row."""
    objs = Warehouse.objects.bulk_create([Warehouse(name=f"w{i}") for i in range(3)])
    created = [e for e in events() if e.event == "Warehouse Created"]
    assert len(created) == 3
    assert sorted(e.resource_id for e in created) == sorted(str(o.pk) for o in objs)
    objs[0].name = "renamed"
    objs[1].enabled = False
    Warehouse.objects.bulk_update(objs, ["name", "enabled"])
    tail = events()[3:]
    assert sorted((e.event, e.resource_id) for e in tail) == sorted(
        [("Warehouse Modified", str(objs[0].pk)), ("Warehouse Disabled", str(objs[1].pk))])


def test_bulk_update_of_instances_built_by_hand_reads_old_values_once():
    """Instances not loaded from the database get their old values from one SELECT per chunk."""
    w = Warehouse.objects.create(name="A")
    other = Warehouse(pk=w.pk, name="B")
    Warehouse.objects.bulk_update([other], ["name"])
    assert events()[-1].changes == {"name": ["A", "B"]}


def test_queryset_delete_records_per_row_including_cascades():
    """QuerySet.delete() records Deleted for every row, and for rows removed by cascade."""
    w = Warehouse.objects.create(name="A")
    Item.objects.create(name="i1", warehouse=w)
    Item.objects.create(name="i2", warehouse=w)
    Warehouse.objects.filter(pk=w.pk).delete()
    deleted = [e for e in events() if e.action == "deleted"]
    assert sorted(e.event for e in deleted) == ["Item Deleted", "Item Deleted", "Warehouse Deleted"]
    assert {e.resource_name for e in deleted} == {"A", "i1", "i2"}


def test_rolled_back_atomic_block_leaves_no_event():
    """An exception inside transaction.atomic() rolls back the change and its events alike."""
    with pytest.raises(RuntimeError), transaction.atomic():
        Warehouse.objects.create(name="A")
        Warehouse.objects.update(name="B")
        raise RuntimeError
    assert names() == [] and not Warehouse.objects.exists()


def test_rolled_back_savepoint_drops_only_its_events():
    """A nested atomic block that rolls back drops its events, stored and announced alike. Kept: the outer
    block's events, those of a nested block released before it (they belong to the outer block by then), and
    those recorded after it, which never join the batch of the rolled-back block."""
    with capture_events() as seen, transaction.atomic():
        Warehouse.objects.create(name="kept")
        with transaction.atomic():
            Warehouse.objects.create(name="released")
        try:
            with transaction.atomic():
                Warehouse.objects.create(name="dropped")
                raise ValueError
        except ValueError:
            pass
        Warehouse.objects.create(name="outer, after")
        with transaction.atomic():
            Warehouse.objects.create(name="also kept")
    expected = ["kept", "released", "outer, after", "also kept"]
    assert [e.resource_name for e in events()] == expected
    assert [e.resource_name for e in seen] == expected


def test_reading_inside_a_transaction_sees_its_own_events_and_rollback_still_applies():
    """Events wait for the commit, but a read of the audit table inside the transaction sees them; a later
    savepoint rollback does not lose the events recorded before it."""
    with transaction.atomic():
        Warehouse.objects.create(name="A")
        assert names() == ["Warehouse Created"]
        try:
            with transaction.atomic():
                Warehouse.objects.create(name="B")
                assert len(names()) == 2
                raise ValueError
        except ValueError:
            pass
        Warehouse.objects.create(name="C")
    assert sorted(e.resource_name for e in events()) == ["A", "C"]


def test_event_recorded_signal_fires_after_commit_only():
    """event_recorded is sent once the transaction commits, never for a rolled-back one."""
    with capture_events() as seen:
        with transaction.atomic():
            Warehouse.objects.create(name="A")
            assert seen.names() == []
        with pytest.raises(RuntimeError), transaction.atomic():
            Warehouse.objects.create(name="B")
            raise RuntimeError
    assert seen.names() == ["Warehouse Created"]


def test_many_saves_in_one_transaction_write_their_events_in_one_statement():
    """Inside a transaction, events are buffered and inserted with one executemany at the commit; on psycopg
    that statement goes to the server with the COMMIT."""
    with audit_inserts(connection) as inserts, transaction.atomic():
        for i in range(5):
            Warehouse.objects.create(name=f"w{i}")
    assert [how for how, _ in inserts] == ["commit" if connection.vendor == "postgresql" else "cursor"]
    assert len(names()) == 5


def test_acting_as_workspace_and_suspend():
    """acting_as names the actor of commands and jobs, in_workspace scopes, suspend_auditing silences."""
    with acting_as(Actor.system("nightly-sync")), in_workspace("ws_9"):
        Warehouse.objects.create(name="A")
    with suspend_auditing():
        Warehouse.objects.create(name="B")
    (event,) = events()
    assert event.actor == Actor.system("nightly-sync") and event.workspace_id == "ws_9"


def test_record_app_verb_and_unknown_name():
    """record() writes an app-defined event; an unknown name raises with a suggestion."""
    from audit_middleware.errors import UnknownEventError

    get_auditor().catalog.define("Warehouse Run Failed", "Warehouses", resource="Warehouse")
    w = Warehouse.objects.create(name="A")
    record("Warehouse Run Failed", w, details={"error": "quota"})
    last = events()[-1]
    assert (last.event, last.resource_id, last.resource_name, last.details) == (
        "Warehouse Run Failed", str(w.pk), "A", {"error": "quota"})
    with pytest.raises(UnknownEventError, match="Warehouse Run Failed"):
        record("Warehouse Run Fialed", w)


def test_uninstall_and_reinstall_are_clean_and_idempotent():
    """uninstall() removes every hook (no event, patches gone); install() twice patches once."""
    from django.db.models.query import QuerySet

    auditor = get_auditor()
    auditor.uninstall()
    try:
        assert not hasattr(QuerySet.__dict__["update"], "__wrapped__")
        Warehouse.objects.create(name="A")
        Warehouse.objects.update(name="B")
        assert names() == []
    finally:
        auditor.install()
        auditor.install()
    wrapped = QuerySet.__dict__["update"]
    assert hasattr(wrapped, "__wrapped__") and not hasattr(wrapped.__wrapped__, "__wrapped__")
    Warehouse.objects.create(name="C")
    assert names() == ["Warehouse Created"]


def test_autocommit_save_commits_row_and_event_together():
    """Outside any atomic block the save runs in the adapter's own transaction: row and event together."""
    assert connection.get_autocommit() and not connection.in_atomic_block
    w = Warehouse.objects.create(name="A")
    assert connection.get_autocommit() and not connection.in_atomic_block
    assert events()[0].resource_id == str(w.pk)


@contextmanager
def driver_commands():
    """The commands psycopg sends on its own (BEGIN, COMMIT, ROLLBACK: ``Connection._exec_command``), spied on
    the connection itself; the real method runs."""
    driver = connection.connection
    sent = []
    real = driver._exec_command

    def spy(command, *args, **kwargs):
        sent.append(bytes(command).decode())
        return real(command, *args, **kwargs)

    driver._exec_command = spy
    try:
        yield sent
    finally:
        del driver._exec_command


@contextmanager
def cursor_texts():
    """The query texts given to psycopg cursors' ``execute`` (what goes to the server, BEGIN included, which
    Django 4.2's query log leaves out), spied on ``psycopg.Cursor``, which every psycopg cursor class
    inherits ``execute`` from; the real method runs."""
    import psycopg

    texts = []
    real = psycopg.Cursor.execute

    def spy(self, query, *args, **kwargs):
        texts.append(query)
        return real(self, query, *args, **kwargs)

    psycopg.Cursor.execute = spy
    try:
        yield texts
    finally:
        psycopg.Cursor.execute = real


def autocommit_write(write, w):
    """One audited write outside any block: ``create`` (returns the new row), or ``update`` or ``delete`` of
    ``w`` (returns it)."""
    if write == "create":
        return Warehouse.objects.create(name="A")
    if write == "update":
        w.name = "B"
        w.save()
    else:
        w.delete()
    return w


postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="BEGIN is folded on psycopg 3 only")


@postgresql_only
def test_an_autocommit_save_or_delete_sends_its_begin_with_its_first_statement():
    """An audited create or delete outside a transaction takes two round trips on PostgreSQL, not three:
    ``BEGIN; INSERT ...`` in one text (psycopg sends no BEGIN of its own), then the event row with the COMMIT
    (for a delete, Django's collector opens that block). An update of a loaded row takes one: the UPDATE and
    its event row in one statement, no BEGIN and no COMMIT (see ``one_statement``). Afterwards the connection
    autocommits again and no execute wrapper is left behind."""
    if connection.settings_dict["OPTIONS"].get("server_side_binding"):
        pytest.skip("values bound in the server: psycopg sends one statement a text, no BEGIN to fold into it")
    connection.ensure_connection()
    w = None
    for write in ("create", "update", "delete"):
        with driver_commands() as commands, audit_inserts(connection) as inserts, cursor_texts() as sent:
            w = autocommit_write(write, w)
        if write == "update":
            assert len(sent) == 1 and sent[0].startswith('WITH changed AS (UPDATE "testapp_warehouse" SET '), sent
            assert is_audit_insert(sent[0]) and commands == [], commands
            assert "commit" not in [how for how, _ in inserts], inserts  # (Django 4.2's log shows the UPDATE)
        else:
            verb = {"create": "INSERT", "delete": "DELETE"}[write]
            folded = [sql for sql in sent if sql.startswith("BEGIN; ")]  # a delete first reads its cascades
            assert len(folded) == 1 and folded[0].startswith(f"BEGIN; {verb} "), (write, sent)
            assert "BEGIN" not in commands, (write, commands)  # psycopg's own BEGIN would be a round trip
            assert [how for how, _ in inserts] == ["commit"], (write, inserts)
        assert connection.get_autocommit() and connection.connection.autocommit
        assert connection.execute_wrappers == []
    assert names() == ["Warehouse Created", "Warehouse Modified", "Warehouse Deleted"]
    assert not Warehouse.objects.exists()


@contextmanager
def _checked(table, check):
    """``table`` with the CHECK constraint ``check`` (PostgreSQL) inside the block."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT one_statement_check CHECK ({check})")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS one_statement_check")


@postgresql_only
def test_an_autocommit_update_and_its_events_are_one_statement_with_the_updates_row_count():
    """A loaded row saved outside a transaction: the UPDATE and its event rows (two here, Disabled and
    Modified) in one statement, nothing else sent; event_recorded after it, once; the snapshot moves on, so
    the next save records only its own change; a save that changes nothing sends the UPDATE alone."""
    w = Warehouse.objects.create(name="A")
    w = Warehouse.objects.get(pk=w.pk)
    w.enabled, w.name = False, "B"
    with capture_events() as seen, driver_commands() as commands, cursor_texts() as sent:
        w.save()
    assert len(sent) == 1 and sent[0].startswith("WITH changed AS (UPDATE ") and sent[0].count("INSERT INTO") == 2
    assert commands == [] and connection.execute_wrappers == [] and connection.connection.autocommit
    assert seen.names() == ["Warehouse Disabled", "Warehouse Modified"]
    assert names() == ["Warehouse Created", "Warehouse Disabled", "Warehouse Modified"]
    assert events()[-1].changes == {"name": ["A", "B"]}
    w.capacity = 5
    w.save()
    assert events()[-1].changes == {"capacity": ["0.00", 5]} and len(events()) == 4
    with cursor_texts() as sent:
        w.save()
    assert len(sent) == 1 and sent[0].startswith('UPDATE "testapp_warehouse" SET ') and len(events()) == 4


@postgresql_only
def test_an_autocommit_update_that_fails_before_its_statement_leaves_no_wrapper_behind():
    """A ``pre_save`` receiver raises: nothing is sent, the save's execute wrapper is gone, and the next
    statements of the connection (an unaudited read, an audited save) go as they would."""
    from django.db.models.signals import pre_save

    def refuse(sender, instance, **kwargs):
        if instance.name == "refused":
            raise ValueError("refused")

    w = Warehouse.objects.create(name="A")
    w = Warehouse.objects.get(pk=w.pk)
    pre_save.connect(refuse, sender=Warehouse, dispatch_uid="refuse")
    try:
        w.name = "refused"
        with cursor_texts() as sent, pytest.raises(ValueError, match="refused"):
            w.save()
    finally:
        pre_save.disconnect(sender=Warehouse, dispatch_uid="refuse")
    assert sent == [] and connection.execute_wrappers == []
    assert Warehouse.objects.get(pk=w.pk).name == "A"
    w.name = "B"
    w.save()
    assert names() == ["Warehouse Created", "Warehouse Modified"]


@postgresql_only
def test_an_update_another_execute_wrapper_rewrites_is_saved_in_a_transaction():
    """An app's execute wrapper (outside the adapter's) puts a statement before the UPDATE, as
    django-pghistory's does (``SELECT set_config(...); UPDATE ...``): that text is no read to let through nor
    the UPDATE Django made, so the save goes in a transaction, its event row with the COMMIT."""
    if connection.settings_dict["OPTIONS"].get("server_side_binding"):
        pytest.skip("values bound in the server: one statement a text, so no wrapper can prefix one")

    def prefix(execute, sql, params, many, context):
        return execute("SELECT 1; " + sql if sql.startswith("UPDATE ") else sql, params, many, context)

    w = Warehouse.objects.create(name="A")
    w = Warehouse.objects.get(pk=w.pk)
    w.name = "B"
    with connection.execute_wrapper(prefix), driver_commands() as commands, audit_inserts(connection) as inserts, \
            cursor_texts() as sent:
        w.save()
    assert [sql.split(" (")[0][:16] for sql in sent] == ['SELECT 1; UPDATE'], sent
    assert commands[:1] == ["BEGIN"] and [how for how, _ in inserts] == ["commit"], (commands, inserts)
    assert names() == ["Warehouse Created", "Warehouse Modified"] and connection.execute_wrappers == []


@postgresql_only
def test_an_autocommit_update_whose_event_the_database_refuses_changes_nothing():
    """The event row refused (a CHECK on the audit table): the save fails with AuditWriteError and the row keeps
    its values, as in a block; the row's own error (a CHECK on the app's table) is the error an unaudited save
    gets, with nothing recorded; the next save works."""
    from audit_middleware import AuditWriteError

    w = Warehouse.objects.create(name="A")
    w = Warehouse.objects.get(pk=w.pk)
    w.name = "bad"
    with _checked("audit_events", "resource_name <> 'bad'"), \
            pytest.raises(AuditWriteError, match="could not write 1 audit event.*not saved"):
        w.save()
    assert Warehouse.objects.get(pk=w.pk).name == "A" and names() == ["Warehouse Created"]
    w.name = "worse"
    with _checked("testapp_warehouse", "name <> 'worse'"), pytest.raises(IntegrityError, match="one_statement_check"):
        w.save()
    assert Warehouse.objects.get(pk=w.pk).name == "A" and names() == ["Warehouse Created"]
    assert connection.get_autocommit() and connection.execute_wrappers == []
    w = Warehouse.objects.get(pk=w.pk)
    w.name = "good"
    w.save()
    assert names() == ["Warehouse Created", "Warehouse Modified"] and events()[-1].changes == {"name": ["A", "good"]}


@postgresql_only
@pytest.mark.parametrize("changed", [True, False], ids=["changed", "unchanged"])
def test_an_autocommit_update_of_a_row_deleted_meanwhile_inserts_it_in_a_transaction(changed):
    """The UPDATE finds no row (deleted by someone else): it inserts no event row (changed) or none was made
    (unchanged), and Django's INSERT of the row that follows runs in a transaction with its Created event, sent
    with the COMMIT."""
    w = Warehouse.objects.create(name="A")
    w = Warehouse.objects.get(pk=w.pk)
    Warehouse.objects.filter(pk=w.pk)._raw_delete(connection.alias)  # no signal: as another process would
    if changed:
        w.name = "B"
    with driver_commands() as commands, audit_inserts(connection) as inserts, cursor_texts() as sent:
        w.save()
    first = "WITH changed AS" if changed else 'UPDATE "testapp_warehouse" SET'
    assert len(sent) == 2 and sent[0].startswith(first) and sent[1].startswith('INSERT INTO "testapp_warehouse"'), sent
    assert commands[:1] == ["BEGIN"], commands  # the INSERT in a transaction, its event row with the COMMIT
    assert [how for how, _ in inserts if how == "commit"] == ["commit"], inserts
    assert names() == ["Warehouse Created", "Warehouse Created"]
    assert Warehouse.objects.get(pk=w.pk).name == ("B" if changed else "A")
    assert connection.get_autocommit() and connection.execute_wrappers == []


@postgresql_only
def test_after_a_folded_begin_blocks_are_still_transactions():
    """The folding turns psycopg's autocommit back on for the block; every block after it, audited or not,
    and one armed that ran no statement, still rolls back as one transaction."""
    from audit_middleware.adapters.django.folded_begin import fold_begin

    Warehouse.objects.create(name="folded")
    with transaction.atomic():
        fold_begin(connections["default"])  # armed, and no statement follows
    assert connection.execute_wrappers == []  # disarmed as the block ended
    for model in (Ignored, Warehouse):
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            model.objects.create(name="rolled back")
            model.objects.create(name="rolled back too")
            1 / 0  # noqa: B018
        assert not model.objects.filter(name__startswith="rolled back").exists(), model
    assert connection.execute_wrappers == [] and connection.connection.autocommit
    assert [e.resource_name for e in events()] == ["folded"]


@postgresql_only
def test_a_first_statement_sent_past_djangos_cursor_still_runs_in_the_transaction():
    """Armed, the block's first statement goes to the psycopg connection directly (as a ``callproc`` or a
    ``COPY`` would, past Django's execute wrappers): psycopg sends its own BEGIN for it, the audited save after
    it is not folded, and the block rolls both back."""
    from audit_middleware.adapters.django.folded_begin import fold_begin

    table = connection.ops.quote_name(Ignored._meta.db_table)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        fold_begin(connections["default"])
        with driver_commands() as commands:
            connection.connection.execute(f"INSERT INTO {table} (name) VALUES ('past the wrapper')")  # noqa: S608
        assert commands == ["BEGIN"]
        with cursor_texts() as sent:
            Warehouse.objects.create(name="rolled back")
        assert sent[0].startswith("INSERT ")
        1 / 0  # noqa: B018
    assert not Ignored.objects.exists() and not Warehouse.objects.exists()
    assert connection.execute_wrappers == [] and names() == []


@postgresql_only
def test_a_first_statement_refused_before_it_reaches_the_server_leaves_psycopg_to_begin():
    """The block's first statement fails in psycopg (a NUL in text), so its BEGIN never went: psycopg's
    autocommit is off again and the next statement begins the transaction as usual, rolled back with the
    block."""
    from django.db import DataError

    from audit_middleware.adapters.django.folded_begin import fold_begin

    with pytest.raises(ZeroDivisionError), transaction.atomic():
        fold_begin(connections["default"])  # the connection itself, not django.db's proxy of it
        with pytest.raises(DataError, match="NUL"), connection.cursor() as cursor:
            cursor.execute("SELECT %s", ["a\x00b"])
        assert not connection.connection.autocommit
        Ignored.objects.create(name="rolled back")
        1 / 0  # noqa: B018
    assert not Ignored.objects.exists()


@postgresql_only
@pytest.mark.parametrize("setting", ["server-side binding", "isolation level"])
def test_where_psycopg_must_begin_itself_nothing_is_folded(setting):
    """A cursor that binds on the server sends one statement per message; a connection with an isolation level
    begins with ``BEGIN ISOLATION LEVEL ...``: nothing is folded, psycopg sends its own BEGIN, and the row and
    its event still commit together."""
    import psycopg

    connection.ensure_connection()
    driver = connection.connection
    factory, level = driver.cursor_factory, driver.isolation_level
    if setting == "server-side binding":
        driver.cursor_factory = psycopg.Cursor
    else:
        driver.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with driver_commands() as commands, cursor_texts() as sent:
            Warehouse.objects.create(name="A")
    finally:
        driver.cursor_factory, driver.isolation_level = factory, level
    begin = "BEGIN" if setting == "server-side binding" else "BEGIN ISOLATION LEVEL REPEATABLE READ"
    assert commands[:1] == [begin] and sent[0].startswith("INSERT ") and not any("BEGIN" in sql for sql in sent)
    assert connection.get_autocommit() and connection.execute_wrappers == []
    assert names() == ["Warehouse Created"] and Warehouse.objects.count() == 1


def test_with_autocommit_turned_off_by_hand_events_commit_and_roll_back_with_the_apps_transaction():
    """Manual transactions (``set_autocommit(False)``): no block of the adapter commits, so events are written
    at once into the open transaction: the app's commit keeps them, its rollback and a rolled-back block drop
    them. (They used to wait for an outermost commit that never came, and were lost.)"""
    transaction.set_autocommit(False)
    try:
        with transaction.atomic():
            Warehouse.objects.create(name="in a block")
        Warehouse.objects.create(name="bare save")
        with pytest.raises(ValueError), transaction.atomic():
            Warehouse.objects.create(name="block rolled back")
            raise ValueError
        transaction.commit()
        Warehouse.objects.create(name="transaction rolled back")
        transaction.rollback()
    finally:
        transaction.set_autocommit(True)
    kept = ["bare save", "in a block"]
    assert sorted(Warehouse.objects.values_list("name", flat=True)) == kept
    assert sorted(e.resource_name for e in events()) == kept


@contextmanager
def mysql_commands():
    """Every query text the MySQL driver sends (cursor statements, BEGIN, COMMIT, ROLLBACK and SET autocommit
    alike: PyMySQL sends each through ``Connection._execute_command``), spied on the connection itself; the
    real method runs."""
    from pymysql.constants import COMMAND

    driver = connection.connection
    sent = []
    real = driver._execute_command

    def spy(command, sql):
        if command == COMMAND.COM_QUERY:
            sent.append(sql if isinstance(sql, str) else bytes(sql).decode())  # executemany sends a bytearray
        return real(command, sql)

    driver._execute_command = spy
    try:
        yield sent
    finally:
        del driver._execute_command


mysql_only = pytest.mark.skipif(connection.vendor != "mysql", reason="autocommit is toggled on MySQL only")


@mysql_only
def test_an_autocommit_save_on_mysql_begins_without_toggling_autocommit():
    """An audited write outside a transaction on MariaDB takes four round trips, not five: BEGIN, the write's
    statement, the event row, COMMIT; no ``SET autocommit`` either way (a delete's block is Django's collector's:
    it begins so too), and the connection autocommits afterwards (Django's flag and the server's). An
    unaudited delete and the app's own blocks begin as Django begins them."""
    connection.ensure_connection()
    verbs = {"create": "INSERT INTO `testapp_warehouse`", "update": "UPDATE `testapp_warehouse`",
             "delete": "DELETE FROM `testapp_warehouse`"}
    w = None
    for write in ("create", "update", "delete"):
        with mysql_commands() as sent:
            w = autocommit_write(write, w)
        if write == "delete":  # the collector reads the rows that cascade first, outside the transaction
            sent = [sql for sql in sent if not sql.startswith("SELECT ")]
        assert len(sent) == 4, (write, sent)
        assert sent[0] == "BEGIN" and sent[1].startswith(verbs[write]), (write, sent)
        assert sent[2].startswith("INSERT INTO `audit_events`") and sent[3] == "COMMIT", (write, sent)
        assert connection.get_autocommit() and connection.connection.get_autocommit()
        assert "_start_transaction_under_autocommit" not in connections["default"].__dict__
    assert names() == ["Warehouse Created", "Warehouse Modified", "Warehouse Deleted"]
    Warehouse.objects.bulk_create([Warehouse(name="C"), Warehouse(name="D")])
    with mysql_commands() as sent:  # a bulk operation's block is the adapter's too
        Warehouse.objects.filter(name__in=["C", "D"]).update(notes="bulk")
    assert sent[0] == "BEGIN" and sent[-1] == "COMMIT" and not any("AUTOCOMMIT" in sql for sql in sent), sent
    assert [e.changes["notes"] for e in events(event="Warehouse Modified")[1:]] == [["", "bulk"]] * 2
    ignored = Ignored.objects.create(name="not audited")
    with mysql_commands() as sent:
        ignored.delete()
    assert sent[-1].startswith("DELETE FROM `testapp_ignored`") and "BEGIN" not in sent, sent  # as Django does
    assert "_start_transaction_under_autocommit" not in connections["default"].__dict__
    with transaction.atomic(), mysql_commands() as sent:
        Warehouse.objects.create(name="in a block")
    assert not any(sql in ("BEGIN", "COMMIT") for sql in sent)


@mysql_only
def test_on_mysql_a_driver_without_begin_gets_djangos_way(monkeypatch):
    """A MySQL driver without PyMySQL's ``get_autocommit()`` and ``begin()`` (MySQL Connector/Python has
    neither): the audited save's block begins as Django begins it, toggling autocommit, and still commits the
    row with its event."""
    import pymysql

    monkeypatch.delattr(pymysql.connections.Connection, "begin")
    connection.ensure_connection()
    with mysql_commands() as sent:
        Warehouse.objects.create(name="A")
    assert sent[0] == "SET AUTOCOMMIT = 0" and sent[-2:] == ["COMMIT", "SET AUTOCOMMIT = 1"], sent
    assert names() == ["Warehouse Created"] and Warehouse.objects.get().name == "A"


def test_the_delete_collector_is_wrapped_only_where_a_database_is_mysql():
    """The wrapper that begins an audited delete's block with BEGIN is installed where a database is MySQL or
    MariaDB only, and an alias whose backend cannot load does not stop the adapter from installing."""
    from django.db.models.deletion import Collector

    from audit_middleware.adapters.django.capture import _uses_mysql

    connections.settings["unloadable"] = {"ENGINE": "django.db.backends.no_such_backend"}
    try:
        uses_mysql = _uses_mysql()
    finally:
        del connections.settings["unloadable"]
    assert uses_mysql == (connection.vendor == "mysql")
    assert hasattr(Collector.__dict__["delete"], "__wrapped__") == uses_mysql


@mysql_only
def test_on_mysql_an_autocommit_saves_transaction_is_still_one_transaction():
    """The save begun with BEGIN under the server's autocommit: a receiver failing after a nested save rolls
    the row, the nested row and every event back; a savepoint inside it rolls back alone; ``on_commit``
    callbacks run after the COMMIT (the server then has no transaction open), never before; the next save is
    its own transaction again."""
    from django.db.models.signals import post_save
    from pymysql.constants import SERVER_STATUS

    seen = []

    def after_commit():
        seen.append(bool(connection.connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS))

    def receiver(sender, instance, created, **kwargs):  # type: ignore[no-untyped-def]
        if created:
            transaction.on_commit(after_commit)
            Item.objects.create(name=f"item of {instance.name}", warehouse=instance)
            assert connection.connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS
            try:  # a savepoint of that transaction, rolled back alone
                with transaction.atomic():
                    Item.objects.create(name="rolled back to its savepoint", warehouse=instance)
                    raise ValueError("the savepoint rolls back")
            except ValueError:
                pass
            if instance.name == "refused":
                raise RuntimeError("the receiver refuses")

    post_save.connect(receiver, sender=Warehouse, dispatch_uid="test-mysql-begin")
    try:
        with pytest.raises(RuntimeError, match="refuses"):
            Warehouse.objects.create(name="refused")
        assert seen == [] and connection.get_autocommit() and connection.connection.get_autocommit()
        Warehouse.objects.create(name="kept")
    finally:
        post_save.disconnect(sender=Warehouse, dispatch_uid="test-mysql-begin")
    assert seen == [False]  # run once, for the save that committed, after its COMMIT
    assert list(Warehouse.objects.values_list("name", flat=True)) == ["kept"]
    assert list(Item.objects.values_list("name", flat=True)) == ["item of kept"]
    assert sorted(names()) == ["Item Created", "Warehouse Created"]
    with connection.cursor() as cursor:  # a statement of the app's own, outside any block: it autocommits
        cursor.execute("UPDATE testapp_warehouse SET notes = 'autocommitted'")
    assert not connection.connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS


@contextmanager
def sqlite_statements():
    """Every statement SQLite runs on the connection (``set_trace_callback``), BEGIN and COMMIT included."""
    driver = connection.connection
    ran = []
    driver.set_trace_callback(ran.append)
    try:
        yield ran
    finally:
        driver.set_trace_callback(None)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's BEGIN")
@pytest.mark.parametrize("mode", [None, "IMMEDIATE"])
def test_on_sqlite_an_autocommit_saves_transaction_begins_through_the_driver(mode, monkeypatch):
    """The adapter's block around an audited save outside a transaction sends its BEGIN with the sqlite3
    connection itself, not through a Django cursor made for it (Django's ``_start_transaction_under_autocommit``
    is not called), in the transaction mode the connection asks for (Django 5.1's
    ``OPTIONS["transaction_mode"]``). Watched by an execute wrapper or the query log, it goes as Django sends
    it, and they see it. A failing save rolls back."""
    wrapper = connections["default"]  # the connection itself, not django.db's proxy of it
    djangos = []
    real = type(wrapper)._start_transaction_under_autocommit
    monkeypatch.setattr(type(wrapper), "_start_transaction_under_autocommit",
                        lambda self: djangos.append(self) or real(self))
    wrapper.ensure_connection()
    had, previous = "transaction_mode" in wrapper.__dict__, wrapper.__dict__.get("transaction_mode")  # Django 5.1+
    wrapper.transaction_mode = mode
    wrapped = []

    def seen(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        wrapped.append(sql)
        return execute(sql, params, many, context)

    try:
        with sqlite_statements() as ran:
            Warehouse.objects.create(name="A")
        assert djangos == []
        with connection.execute_wrapper(seen):
            Warehouse.objects.create(name="wrapped")
        with CaptureQueriesContext(connection) as queries:
            Warehouse.objects.create(name="logged")
        assert len(djangos) == 2
        with pytest.raises(IntegrityError), sqlite_statements() as failed:
            Warehouse.objects.create(name="B", id=Warehouse.objects.get(name="A").id)
    finally:
        if had:
            wrapper.transaction_mode = previous
        else:
            del wrapper.transaction_mode
    begin = f"BEGIN {mode}" if mode else "BEGIN"
    djangos_begin = begin if django.VERSION >= (5, 1) else "BEGIN"  # Django 4.2 has no transaction mode
    assert [sql.split(" (")[0] for sql in ran] == [
        begin, 'INSERT INTO "testapp_warehouse"', 'INSERT INTO "audit_events"', "COMMIT"], ran
    assert wrapped[0] == djangos_begin and queries.captured_queries[0]["sql"] == djangos_begin
    assert failed[-3] == begin and failed[-2].startswith('INSERT INTO "testapp_warehouse"'), failed
    assert failed[-1] == "ROLLBACK", failed
    assert connection.get_autocommit() and not wrapper.connection.in_transaction  # rolled back
    assert "_start_transaction_under_autocommit" not in wrapper.__dict__
    assert names() == ["Warehouse Created"] * 3


def test_a_failing_event_write_with_the_commit_fails_the_save_and_leaves_the_connection_usable():
    """The event row is refused by the database at the commit (PostgreSQL: sent with the COMMIT; elsewhere
    written just before it): the save raises, nothing of it is kept, and the next save works."""
    from audit_middleware import AuditWriteError

    try:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "ALTER TABLE audit_events ADD CONSTRAINT audit_no_bad CHECK (resource_name <> 'bad')")
        elif connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("CREATE TRIGGER audit_no_bad BEFORE INSERT ON audit_events "
                               "WHEN NEW.resource_name = 'bad' BEGIN SELECT RAISE(ABORT, 'bad'); END")
        else:
            pytest.skip("checked on PostgreSQL and SQLite")
        with pytest.raises(AuditWriteError, match="could not write 1 audit event.*not saved"):
            Warehouse.objects.create(name="bad")
        assert Warehouse.objects.count() == 0
        Warehouse.objects.create(name="good")
        assert [e.resource_name for e in events()] == ["good"]
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_no_bad")
            else:
                cursor.execute("DROP TRIGGER IF EXISTS audit_no_bad")


def test_saves_through_a_proxy_model_are_the_concrete_models_events():
    """A proxy model's save is recorded once, as the concrete model's resource."""
    from testapp.models import LiveWarehouse

    w = LiveWarehouse.objects.create(name="P")
    w.enabled = False
    w.save()
    assert names() == ["Warehouse Created", "Warehouse Disabled"]


def test_testcase_capture_on_commit_callbacks_sees_the_signal_without_a_commit():
    """Inside a transaction that never commits (a TestCase), captureOnCommitCallbacks(execute=True) delivers
    event_recorded, and the events are readable through the model."""
    from django.test import TestCase

    with transaction.atomic():
        with capture_events() as seen, TestCase.captureOnCommitCallbacks(execute=True):
            Warehouse.objects.create(name="in a test")
        assert seen.names() == ["Warehouse Created"]
        assert names() == ["Warehouse Created"]
        transaction.set_rollback(True)
    assert names() == []


def test_a_change_whose_events_cannot_be_written_is_not_committed():
    """If the event rows cannot be written at the commit, the transaction rolls back: no change without its
    event (AuditWriteError). DDL is transactional on SQLite and PostgreSQL only."""
    from audit_middleware.errors import AuditWriteError

    if connection.vendor == "mysql":
        pytest.skip("MariaDB commits DDL implicitly, so the table cannot be hidden inside a transaction")
    with pytest.raises(AuditWriteError, match="Warehouse Created"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_events RENAME TO audit_events_hidden")
        Warehouse.objects.create(name="never")
    assert not Warehouse.objects.exists() and names() == []


def test_a_failing_capture_hook_never_breaks_the_write():
    """An error while building an event (here a workspace loader that raises) is logged and counted, sent as
    capture_failed, and the host's write goes through without the event."""
    from audit_middleware.context import RequestScope, request_scope
    from audit_middleware.signals import capture_failed

    def broken() -> str:
        raise LookupError("tenant service down")

    failures = []

    def receive(sender, error, **_):
        failures.append(error)

    auditor = get_auditor()
    before = auditor.recorder.errors.count
    capture_failed.connect(receive)
    try:
        with request_scope(RequestScope(workspace_loader=broken)):
            Warehouse.objects.create(name="still saved")
    finally:
        capture_failed.disconnect(receive)
    assert Warehouse.objects.filter(name="still saved").exists() and names() == []
    assert auditor.recorder.errors.count == before + 1 and isinstance(failures[0], LookupError)


def test_export_from_stored_rows_is_the_csv_of_the_events():
    """The Django store's CSV export reads stored values (no model instances); it must give exactly the CSV
    the events themselves give."""
    from audit_middleware import EventQuery
    from audit_middleware.adapters.django.store import DjangoStore
    from audit_middleware.export import export_csv, iter_csv
    from audit_middleware.store import iter_events

    with in_workspace("ws_csv"), acting_as(Actor.token("tok_1", "=HYPERLINK(1)")):
        w = Warehouse.objects.create(name="-2+3", capacity="1.00")
        w.name = 'Prod, "quoted"\nsecond line'
        w.save()
        w.delete()
    store = DjangoStore()
    query = EventQuery().for_workspace("ws_csv")
    exported = "".join(export_csv(store, query))
    assert exported == "".join(iter_csv(iter_events(store, query)))
    assert exported.count("'=HYPERLINK(1)") == 3 and "'-2+3" in exported


def test_actor_filter_matches_id_or_name_once_each_newest_first_across_pages():
    """The Django store's actor filter: one ordered query per match (id, name), merged; keyset pages walk
    every matching event once."""
    from datetime import datetime, timedelta, timezone

    from audit_middleware import EventQuery
    from audit_middleware.adapters.django.store import DjangoStore
    from audit_middleware.events import AuditEvent as Event
    from audit_middleware.ids import new_event_id

    actors = [Actor.user("ada@example.com", "ada@example.com"), Actor.user("7", "ada@example.com"),
              Actor.token("ada@example.com", "a token"), Actor.user("8", "bob@example.com")]
    now = datetime.now(timezone.utc)
    events = [Event(new_event_id(), now - timedelta(minutes=n), "Warehouse Created", "Warehouses", "created",
                    actors[n % 4], workspace_id="ws_actor") for n in range(22)]
    store = DjangoStore()
    store.append(events)
    expected = [e.id for e in sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True)
                if e.actor.name != "bob@example.com"]
    seen = ids_by_pages(store, EventQuery(actor="ada@example.com", limit=4).for_workspace("ws_actor"))
    assert seen == expected and len(expected) == 17


def test_store_pages_are_compiled_once_per_shape_and_run_with_each_querys_own_values():
    """The Django store compiles a page's SQL once per shape of query and runs it with each query's values:
    many queries of the same shapes, values changing every time (times, event lists, actors, cursors), each
    give exactly the events their filter matches, newest first; an actor page is one statement."""
    import random
    from datetime import datetime, timedelta, timezone

    from audit_middleware import EventQuery
    from audit_middleware.adapters.django.store import DjangoStore
    from audit_middleware.events import AuditEvent as Event
    from audit_middleware.ids import new_event_id

    now = datetime.now(timezone.utc)
    actors = [Actor.user("1", "ada"), Actor.user("2", "bob"), Actor.token("tok_3", "ci"), Actor.system("cron")]
    verbs = ["Warehouse Created", "Warehouse Modified", "Warehouse Deleted"]
    events = [Event(new_event_id(), now - timedelta(minutes=7 * n), verbs[n % 3], "Warehouses", "x",
                    actors[n % 4], resource_type="Warehouse", resource_id=str(n % 5), workspace_id="ws_shapes")
              for n in range(60)]
    store = DjangoStore()
    store.append(events)
    newest = sorted(events, key=lambda e: (e.occurred_at, e.id), reverse=True)
    rng = random.Random(5)
    naive_now = now.replace(tzinfo=None)
    for _ in range(12):
        actor = rng.choice(actors)
        since = naive_now - timedelta(minutes=rng.randrange(100, 400))
        queries = [
            EventQuery(actor=rng.choice([actor.id, actor.name]), events=tuple(rng.sample(verbs, 2)), since=since,
                       until=since + timedelta(minutes=rng.randrange(60, 200)), limit=3),
            EventQuery(actor_type=actor.type, resource_type="Warehouse", resource_id=str(rng.randrange(5)),
                       limit=4),
            EventQuery(events=(rng.choice(verbs),), category="Warehouses", limit=5),
        ]
        for query in queries:
            query = query.for_workspace("ws_shapes")
            expected = [e.id for e in newest if query.matches(e)]
            assert expected and ids_by_pages(store, query) == expected, query
    with CaptureQueriesContext(connection) as queries:
        page = store.query(EventQuery(actor="ada", limit=3).for_workspace("ws_shapes"))
    assert len(queries.captured_queries) == 1 and [e.actor.id for e in page.events] == ["1", "1", "1"]


def test_sqlite_reads_an_actor_and_event_page_through_the_actors_index():
    """On SQLite the page's event filter is an expression, so the planner (with statistics: ANALYZE) walks the
    actor's index in time order, checking the event in it, instead of every row of the event: 3 to 4 times
    faster on a large trail (benchmarks/RESULTS.md)."""
    if connection.vendor != "sqlite":
        pytest.skip("the planner choice this works around is SQLite's")
    from datetime import datetime, timedelta, timezone

    from audit_middleware import EventQuery
    from audit_middleware.adapters.django.store import DjangoStore
    from audit_middleware.events import AuditEvent as Event
    from audit_middleware.ids import new_event_id

    now = datetime.now(timezone.utc)
    verbs = [f"Warehouse Verb{v} Done" for v in range(30)]  # more events than actors: the planner's pick
    store = DjangoStore()
    store.append([Event(new_event_id(), now - timedelta(minutes=n), verbs[n % 30], "Warehouses", "x",
                        Actor.user(str(n % 7), f"user{n % 7}"), workspace_id="ws_plan") for n in range(2100)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    query = EventQuery(actor="user3", events=(verbs[3], verbs[10]), limit=3)
    with CaptureQueriesContext(connection) as queries:
        page = store.query(query.for_workspace("ws_plan"))
    assert [e.event for e in page.events] == [verbs[3], verbs[10], verbs[3]]  # rows 3, 10 and 213, newest first
    assert {e.actor.name for e in page.events} == {"user3"}
    (sql,) = [q["sql"] for q in queries.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql)
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "audit_ev_ws_actor" in plan and "audit_ev_ws_event" not in plan, plan


def test_a_page_statement_whose_values_the_backend_binds_differently_is_not_reused(monkeypatch):
    """Should the ORM bind a value differently from the store's own conversion (another backend), the markers
    are not found in the compiled statement: the store then runs a statement compiled for the query's own
    values, and keeps none, rather than a statement with a marker left in it."""
    from datetime import datetime, timedelta, timezone

    from audit_middleware import EventQuery
    from audit_middleware.adapters.django import store as store_module
    from audit_middleware.events import AuditEvent as Event
    from audit_middleware.ids import new_event_id

    now = datetime.now(timezone.utc)
    events = [Event(new_event_id(), now - timedelta(minutes=n), "Warehouse Created", "Warehouses", "created",
                    Actor.user(str(n % 3), f"user{n % 3}"), workspace_id="ws_bound") for n in range(9)]
    store = store_module.DjangoStore()
    store.append(events)
    monkeypatch.setattr(store_module, "_bound", lambda connection, name, value: ("not", "as bound", str(value)))
    monkeypatch.setattr(store_module, "_PAGES", {})
    query = EventQuery(actor="user1", since=(now - timedelta(hours=1)).replace(tzinfo=None), limit=2)
    assert ids_by_pages(store, query.for_workspace("ws_bound")) == [e.id for e in events if e.actor.id == "1"]
    assert store_module._PAGES == {}


def test_export_of_awkward_text_is_byte_for_byte_the_csv_of_the_events():
    """The Django store's export of text a CSV writer must quote or neutralise, in every column: on
    PostgreSQL written by the database (COPY, on a connection of its own), elsewhere formatted in Python from
    stored rows; both are the CSV of the events. Inside a transaction the export sees its uncommitted rows."""
    from audit_middleware import EventQuery
    from audit_middleware.adapters.django.store import DjangoStore

    store = DjangoStore()
    store.append(awkward_events("ws_awkward"))
    query = EventQuery().for_workspace("ws_awkward")
    assert_exports_the_awkward_events(store, query)
    assert (store.iter_csv_chunks(query) is not None) == (connection.vendor == "postgresql")
    with transaction.atomic():
        with in_workspace("ws_awkward"):
            Warehouse.objects.create(name="not committed yet")
        assert store.iter_csv_chunks(query) is None
        assert "not committed yet" in "".join(export_csv(store, query))


def test_an_export_stopped_early_closes_its_connection_and_leaves_the_threads_usable():
    """A download cancelled after its first chunk: the export stops, the connection it opened (PostgreSQL) is
    closed, and the thread's own connection keeps working (it was free between chunks)."""
    import time
    from datetime import datetime, timedelta, timezone

    from audit_middleware import EventQuery
    from audit_middleware.adapters.django.store import DjangoStore
    from audit_middleware.events import AuditEvent as Event
    from audit_middleware.ids import new_event_id

    def exporting_sessions():
        """Other sessions on this database whose last statement is an export's COPY (in any state)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND pid <> pg_backend_pid() AND query LIKE 'COPY (SELECT %%'")
            return cursor.fetchone()[0]

    now = datetime.now(timezone.utc)
    store = DjangoStore()
    store.append([Event(new_event_id(), now - timedelta(seconds=n), "Warehouse Created", "Warehouses", "created",
                        Actor.user("7", "ada"), workspace_id="ws_big") for n in range(3000)])
    query = EventQuery().for_workspace("ws_big")
    chunks = export_csv(store, query, rows_per_chunk=100)
    assert next(chunks).count("\r\n") == 101
    assert Warehouse.objects.count() == 0  # the thread's connection answers while the export is open
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        assert exporting_sessions() == 1
    chunks.close()
    if postgresql:  # its server process ends once the connection is closed
        deadline = time.monotonic() + 10
        while exporting_sessions() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporting_sessions() == 0
    assert store.count(query) == 3000
    assert "".join(export_csv(store, query)).count("\r\n") == 3001
    header = "occurred_at,event,category,actor_type,actor_id,actor_name,resource_type,resource_id,resource_name,"
    assert "".join(export_csv(store, EventQuery().for_workspace("nobody"))).startswith(header)
    assert "".join(export_csv(store, EventQuery().for_workspace("nobody"))).count("\r\n") == 1


def test_saves_of_one_block_are_announced_together_and_in_order_with_the_apps_callbacks():
    """The saves of one transaction are announced after its commit in one event_recorded call per run of
    saves, and the app's own on_commit callbacks keep their place between those runs."""
    order = []
    with capture_events() as seen:
        from audit_middleware.signals import event_recorded

        def note(_sender, events, **_):
            order.append([e.resource_name for e in events])

        event_recorded.connect(note, weak=False)
        try:
            with transaction.atomic():
                Warehouse.objects.create(name="a")
                Warehouse.objects.create(name="b")
                transaction.on_commit(lambda: order.append("app"))
                Warehouse.objects.create(name="c")
                with transaction.atomic():
                    Warehouse.objects.create(name="d")
                Warehouse.objects.create(name="e")
                assert order == []
        finally:
            event_recorded.disconnect(note)
    assert order == [["a", "b"], "app", ["c"], ["d"], ["e"]]
    assert [e.resource_name for e in seen] == ["a", "b", "c", "d", "e"]
    assert [e.resource_name for e in events()] == ["a", "b", "c", "d", "e"]


def test_a_transaction_of_more_events_than_one_insert_chunk_writes_them_all_with_their_hashes():
    """2,500 saves in one transaction (more than one 1,000-row chunk, and many 60-row SQLite statements):
    every event is written, in order, each with the hash of its own row."""
    from audit_middleware.adapters.django.integrity import DjangoIntegrity

    with capture_events() as seen, transaction.atomic():
        for i in range(2500):
            Warehouse.objects.create(name=f"w{i}")
    stored = list(AuditEvent.objects.order_by("occurred_at", "id").values_list("resource_name", flat=True))
    assert stored == [f"w{i}" for i in range(2500)] and len(seen) == 2500
    report = DjangoIntegrity().verify(delay=timedelta(0))
    assert report.ok, report.problems[:3]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's statement journal")
def test_a_large_transactions_event_rows_keep_no_sqlite_statement_journal():
    """A block of 1,100 saves writes its first 1,001 events as it goes and the rest before a read of the audit
    table, 60 rows a statement: SQLite keeps no statement journal for them (a temporary file of every page each
    statement changes that the transaction changed before: 96 MB for a 10,000-save transaction), as this process
    sees its open files while the transaction is open; plain 60-row INSERTs in the same transaction, as the rows
    went before, do make one (the check can see it). The rows are all there and verify."""
    from audit_middleware.adapters.django.integrity import DjangoIntegrity

    with transaction.atomic():
        for i in range(1100):
            Warehouse.objects.create(name=f"w{i}")
        assert AuditEvent.objects.count() == 1100  # the last 99 written too, in a 60-row and a 39-row statement
        assert open_temporary_files() == []
        assert DjangoIntegrity().verify(delay=timedelta(0)).ok
        assert_plain_multi_row_inserts_would_show_a_statement_journal(connection.connection, AuditEvent._meta.db_table)
        transaction.set_rollback(True)
    assert open_temporary_files() == [] and not AuditEvent.objects.exists()


def test_a_batch_whose_later_row_repeats_an_id_stores_none_of_its_rows():
    """Several events go in one statement (on SQLite an ``INSERT OR FAIL``, which stops at the bad row without
    undoing the rows before it): a batch whose 30th row repeats the first's id raises the database's error and
    stores none of its rows, as its transaction rolls back; the store works on afterwards."""
    from dataclasses import replace

    from audit_middleware.adapters.django.store import DjangoStore
    from audit_middleware.events import AuditEvent as Event
    from audit_middleware.ids import new_event_id

    now = datetime.now(dt_timezone.utc)
    batch = [Event(new_event_id(), now - timedelta(minutes=n), "Warehouse Created", "Warehouses", "created",
                   Actor.user("7", "ada")) for n in range(40)]
    batch[29] = replace(batch[29], id=batch[0].id)
    store = DjangoStore()
    with pytest.raises(IntegrityError):
        store.append(batch)
    assert not AuditEvent.objects.exists()
    store.append(batch[:29])
    assert AuditEvent.objects.count() == 29


@pytest.mark.skipif(connection.vendor != "sqlite", reason="a full disk simulated with SQLite's max_page_count")
def test_a_blocks_events_that_hit_a_full_disk_fail_the_block_and_leave_the_connection_usable():
    """Twenty rows changed in one block: their UPDATEs fit (same size, same pages), their events (one ``INSERT OR
    FAIL`` of 20 rows at the commit, for which SQLite keeps no statement journal, so a full disk part way ends
    SQLite's whole transaction) do not. The block raises AuditWriteError naming SQLite's error, nothing of it is
    committed, and the connection then commits the same changes with their events once there is room."""
    from audit_middleware import AuditWriteError

    big = 8000  # characters: the row lives in overflow pages; its event's diff (old and new) needs twice that
    pks = [Warehouse.objects.create(name=f"w{i}", notes="a" * big).pk for i in range(20)]

    def pragma(text):
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA {text}")
            return cursor.fetchone()[0]

    def limit_growth(spare_pages):
        pragma(f"max_page_count = {pragma('page_count') + spare_pages}")

    with connection.cursor() as cursor:
        cursor.execute("VACUUM")  # no free pages left by earlier tests: the events need new ones
    unlimited = pragma("max_page_count")
    limit_growth(6)
    try:
        with pytest.raises(AuditWriteError, match=r"(?s)could not write 20 audit event.*database or disk is full"):
            with transaction.atomic():
                for w in list(Warehouse.objects.filter(pk__in=pks)):
                    w.notes = "b" * big
                    w.save()
        assert set(Warehouse.objects.values_list("notes", flat=True)) == {"a" * big}
        assert names() == ["Warehouse Created"] * 20
        limit_growth(1000)
        with transaction.atomic():
            for w in list(Warehouse.objects.filter(pk__in=pks)):
                w.notes = "b" * big
                w.save()
    finally:
        pragma(f"max_page_count = {unlimited}")
    assert set(Warehouse.objects.values_list("notes", flat=True)) == {"b" * big}
    assert names().count("Warehouse Modified") == 20


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_many_events_go_as_a_copy_unless_someone_watches_and_a_refused_row_fails_the_block(tmp_path):
    """On psycopg 3, a block's events from COPY_MIN_ROWS on go as a COPY: with the COMMIT for up to 1,000
    (then the COMMIT), as the block goes for more, where nobody watches the queries (with a query log they go through
    Django's cursor as INSERTs). The rows read back exactly and verify; a row the database refuses fails the
    block with AuditWriteError carrying the database's error, and nothing is saved."""
    from audit_middleware import AuditWriteError
    from audit_middleware.adapters.django.integrity import DjangoIntegrity
    from audit_middleware.copy_rows import COPY_MIN_ROWS

    awkward = ["tab\there", "new\nline", "\\N", "\\.", "back\\slash", "it's", "é 日本 🙂"]
    copy = '"COPY ' + connection.ops.quote_name(AuditEvent._meta.db_table)
    for count in (COPY_MIN_ROWS, 1200):
        connection.ensure_connection()
        with libpq_messages(connection.connection.pgconn, tmp_path) as sent, transaction.atomic():
            for i in range(count):
                Warehouse.objects.create(name=f"{awkward[i % len(awkward)]} {count}-{i}")
        queries = [text.strip() for kind, text in sent if kind == "Query"]
        # over 1,000 events the block writes them as it goes (see _write_early): the first 1,001, then the rest
        assert sum(q.startswith(copy) for q in queries) == (1 if count <= 1000 else 2)
        assert queries[-1] == '"COMMIT"' and "CopyDone" in [kind for kind, _ in sent]
        assert not any("audit_events" in text for kind, text in sent if kind == "Parse")
    stored = list(AuditEvent.objects.order_by("occurred_at", "id").values_list("resource_name", flat=True))
    assert stored == [f"{awkward[i % len(awkward)]} {count}-{i}" for count in (COPY_MIN_ROWS, 1200)
                      for i in range(count)]
    assert DjangoIntegrity().verify(delay=timedelta(0)).ok

    with CaptureQueriesContext(connection) as logged, transaction.atomic():
        for i in range(1001):
            Warehouse.objects.create(name=f"logged {i}")
    assert sum("audit_events" in q["sql"] for q in logged.captured_queries) == 2  # executemany: 1,000, then 1
    assert AuditEvent.objects.filter(resource_name__startswith="logged").count() == 1001

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_events ADD CONSTRAINT no_bad CHECK (resource_name <> 'bad')")
    try:
        for count in (COPY_MIN_ROWS, 1200):
            with pytest.raises(AuditWriteError, match=r"(?s)could not write \d+ audit event.*not saved.*no_bad"), \
                    transaction.atomic():
                for i in range(count - 1):
                    Warehouse.objects.create(name=f"lost {i}")
                Warehouse.objects.create(name="bad")
        assert not Warehouse.objects.filter(name__startswith="lost").exists()
        assert not Warehouse.objects.filter(name="bad").exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_events DROP CONSTRAINT no_bad")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_a_copy_of_many_events_sends_them_a_chunk_at_a_time_so_the_server_stores_them_while_the_rest_are_made():
    """A block's 1,001st event writes its events as one COPY whose rows are made COPY_CHUNK at a time, each
    chunk sent as it is made: while the third chunk is being made, the server has stored rows of the first
    (pg_stat_progress_copy, seen from another session). Rows made a thousand at a time before any was sent
    left the server idle meanwhile."""
    import time

    import psycopg

    from audit_middleware.adapters.django import store
    from audit_middleware.copy_rows import COPY_CHUNK

    made_so_far = [0]
    stored_meanwhile: list[int] = []
    make = store._stored_rows
    observer = psycopg.connect(**connection.get_connection_params(), autocommit=True)

    def stored_rows(conn, chunk):  # type: ignore[no-untyped-def]
        if made_so_far[0] == 2 * COPY_CHUNK:
            deadline = time.monotonic() + 10
            while True:
                rows = observer.execute("SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy"
                                        " WHERE relid = 'audit_events'::regclass").fetchone()[0]
                if rows or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            stored_meanwhile.append(rows)
        made_so_far[0] += len(chunk)
        return make(conn, chunk)

    store._stored_rows = stored_rows
    try:
        with transaction.atomic():
            for i in range(1001):
                Warehouse.objects.create(name=f"streamed {i}")
    finally:
        store._stored_rows = make
        observer.close()
    assert made_so_far[0] == 1001
    assert len(stored_meanwhile) == 1 and stored_meanwhile[0] >= 1
    assert AuditEvent.objects.filter(resource_name__startswith="streamed").count() == 1001


def test_a_block_whose_events_are_written_as_it_goes_fails_loudly_when_one_is_refused():
    """Past 1,000 events a block writes them as it goes, inside the save that crosses the mark; a row the
    database refuses then fails that save with AuditWriteError (not counted or signalled as a capture failure,
    which would leave the block to roll back without a word at its exit), and nothing is saved."""
    from audit_middleware import AuditWriteError
    from audit_middleware.signals import capture_failed

    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"CREATE TRIGGER no_bad BEFORE INSERT ON {table} WHEN NEW.resource_name = 'bad' "
                           "BEGIN SELECT RAISE(ABORT, 'no_bad'); END")
        else:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT no_bad CHECK (resource_name <> 'bad')")
    failed: list[Exception] = []

    def note(sender, error, **kwargs):
        failed.append(error)

    capture_failed.connect(note, weak=False)
    try:
        with pytest.raises(AuditWriteError, match=r"(?s)could not write 1001 audit event.*not saved.*no_bad"):
            with transaction.atomic():
                for i in range(1001):
                    Warehouse.objects.create(name="bad" if i == 500 else f"lost {i}")
    finally:
        capture_failed.disconnect(note)
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute("DROP TRIGGER no_bad")
            else:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT no_bad")
    assert failed == []
    assert not Warehouse.objects.exists() and not AuditEvent.objects.exists()


def test_event_times_are_passed_to_the_database_as_django_passes_any_datetime():
    """Capture passes an event's time to the driver exactly as Django passes a DateTimeField's value (plain
    text on SQLite and MySQL in UTC, the aware moment on PostgreSQL), summer and winter, with and without
    microseconds."""
    from audit_middleware.adapters.django.store import _time_adapter, db_time

    wrapper = connections["default"]
    adapt = _time_adapter(wrapper)
    for moment in (datetime(2026, 1, 15, 8, 30, 0), datetime(2026, 7, 15, 8, 30, 0, 123456),
                   datetime(2026, 3, 29, 1, 30, 0, 5)):
        assert adapt(moment) == wrapper.ops.adapt_datetimefield_value(db_time(moment))


def test_a_connection_with_a_time_zone_of_its_own_gets_event_times_in_it():
    """Where the database stores local times (DATABASES' TIME_ZONE, on a backend without time zone support),
    event times are converted to that zone as Django converts every datetime, and read back as the same
    moment; PostgreSQL refuses such a setting and takes the aware moment."""
    from audit_middleware.adapters.django.store import _time_adapter, db_time

    wrapper = connections["default"]
    summer = datetime(2026, 7, 15, 8, 30, 0, 123456)
    if wrapper.features.supports_timezones:
        assert _time_adapter(wrapper)(summer) == db_time(summer)
        return
    saved = wrapper.settings_dict.get("TIME_ZONE")
    wrapper.settings_dict["TIME_ZONE"] = "Europe/Paris"
    for cached in ("timezone", "timezone_name"):
        wrapper.__dict__.pop(cached, None)
    try:
        adapt = _time_adapter(wrapper)
        assert adapt is not str and adapt(summer) == "2026-07-15 10:30:00.123456"
        Warehouse.objects.create(name="in Paris")
        (event,) = events()
        assert abs(event.occurred_at - datetime.now(dt_timezone.utc)) < timedelta(minutes=5)
    finally:
        wrapper.settings_dict["TIME_ZONE"] = saved
        for cached in ("timezone", "timezone_name"):
            wrapper.__dict__.pop(cached, None)
    assert _time_adapter(wrapper) is str


def test_a_transaction_of_more_events_than_a_chunk_writes_them_as_it_goes_and_keeps_them_only_for_a_listener():
    """Past 1,000 waiting events in the outermost block (no savepoint), they are written at once in its
    transaction instead of at the commit, and kept for event_recorded only when a receiver listens then: with
    one, every event is announced in order after the commit; without, none of the events recorded while nobody
    listened is announced to a receiver connected later (neither those written early nor those that waited for
    the commit), and every row is stored all the same; a rollback still drops every row."""
    from audit_middleware.adapters.django.capture import PENDING
    from audit_middleware.signals import event_recorded

    wrapper = connections["default"]
    late: list[str] = []

    def late_note(_sender, events, **_):
        late.extend(e.resource_name for e in events)

    try:
        with transaction.atomic():
            for i in range(1500):
                Warehouse.objects.create(name=f"quiet {i}")
            with wrapper.cursor() as cursor:  # raw SQL: not a read that writes the waiting events first
                cursor.execute(f"SELECT COUNT(*) FROM {AuditEvent._meta.db_table}")
                written = cursor.fetchone()[0]
            event_recorded.connect(late_note, weak=False)
        # 1,001 written once they were more than a chunk, the other 499 at the commit; recorded while nobody
        # listened, none is announced to the receiver connected after them.
        assert written == 1001 and late == []
    finally:
        event_recorded.disconnect(late_note)
    assert wrapper.__dict__.get(PENDING) in (None, [])
    assert [e.resource_name for e in events()] == [f"quiet {i}" for i in range(1500)]

    announced: list[list[str]] = []

    def note(_sender, events, **_):
        announced.append([e.resource_name for e in events])

    event_recorded.connect(note, weak=False)
    try:
        with transaction.atomic():
            for i in range(1500):
                Warehouse.objects.create(name=f"heard {i}")
            assert announced == []
        assert [name for call in announced for name in call] == [f"heard {i}" for i in range(1500)]
        announced.clear()
        with pytest.raises(RuntimeError), transaction.atomic():
            for i in range(1500):
                Warehouse.objects.create(name=f"rolled back {i}")
            raise RuntimeError("the view failed")
        assert announced == []
    finally:
        event_recorded.disconnect(note)
    assert not AuditEvent.objects.filter(resource_name__startswith="rolled back").exists()
    assert Warehouse.objects.filter(name__startswith="rolled back").count() == 0
    assert AuditEvent.objects.count() == 3000


def test_a_receiver_connected_inside_a_block_hears_the_saves_made_after_it_connected():
    """Saves made while nobody listens register no commit callback; once a receiver connects, the block's next
    saves are announced to it after the commit, in one call, and every save's row and event are stored."""
    from audit_middleware.signals import event_recorded

    heard: list[list[str]] = []

    def note(_sender, events, **_):
        heard.append([e.resource_name for e in events])

    wrapper = connections["default"]
    try:
        with transaction.atomic():
            Warehouse.objects.create(name="unheard")
            assert wrapper.run_on_commit == []
            event_recorded.connect(note, weak=False)
            Warehouse.objects.create(name="heard 1")
            Warehouse.objects.create(name="heard 2")
            assert len(wrapper.run_on_commit) == 1
    finally:
        event_recorded.disconnect(note)
    assert heard == [["heard 1", "heard 2"]]
    assert names() == ["Warehouse Created"] * 3


def test_events_that_cannot_be_written_early_roll_the_block_back_even_if_the_error_is_caught(monkeypatch):
    """When the events written early (past 1,000 in the outermost block) cannot be written, the save fails
    with AuditWriteError, and the block is marked for rollback: an app that catches the error inside the block
    still cannot commit those changes without their events."""
    from audit_middleware import AuditWriteError
    from audit_middleware.adapters.django import capture

    def refuse(connection, events, **_):
        raise RuntimeError("the audit table is full")

    caught = []
    with transaction.atomic():
        for i in range(1000):
            Warehouse.objects.create(name=f"kept out {i}")
        monkeypatch.setattr(capture, "insert_events", refuse)
        try:
            Warehouse.objects.create(name="kept out 1000")
        except AuditWriteError as error:
            caught.append(error)
        assert transaction.get_rollback()
    assert len(caught) == 1
    assert not Warehouse.objects.filter(name__startswith="kept out").exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the driver-direct write is SQLite's")
def test_on_sqlite_event_rows_skip_djangos_cursor_only_while_nobody_watches_its_queries(monkeypatch):
    """With no query log (DEBUG off, no CaptureQueriesContext) and no execute_wrapper, the event INSERT goes
    straight to sqlite3 (Django's SQLite cursor rewrites every statement's placeholders with a regular
    expression); watched, it goes through Django's cursor like any query, so the log and the wrappers see it.
    Either way the rows are the same: they read back and their hashes verify."""
    from django.db.backends.sqlite3.base import SQLiteCursorWrapper

    from audit_middleware.adapters.django.integrity import DjangoIntegrity

    through_django: list[str] = []
    real = SQLiteCursorWrapper.execute

    def spy(self, query, params=None):
        if is_audit_insert(query):
            through_django.append(query)
        return real(self, query, params)

    monkeypatch.setattr(SQLiteCursorWrapper, "execute", spy)
    Warehouse.objects.create(name="unwatched")
    with transaction.atomic():
        Warehouse.objects.create(name="unwatched in a block")
    assert through_django == []

    wrapped: list[str] = []

    def wrapper(execute, sql, params, many, context):
        wrapped.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        Warehouse.objects.create(name="wrapped")
    with CaptureQueriesContext(connection) as logged:
        Warehouse.objects.create(name="logged")
    assert len(through_django) == 2
    assert sum("audit_events" in sql for sql in wrapped) == 1
    assert sum("audit_events" in q["sql"] for q in logged.captured_queries) == 1
    assert [e.resource_name for e in events()] == ["unwatched", "unwatched in a block", "wrapped", "logged"]
    assert DjangoIntegrity().verify(delay=timedelta(0)).ok

    from audit_middleware.adapters.django.store import DjangoStore

    with pytest.raises(IntegrityError):  # the driver's error, raised as Django's (a duplicate event id)
        DjangoStore().append([events()[0]])
    assert len(through_django) == 2  # the failing append went straight to the driver too


def test_saves_inside_an_apps_post_save_receiver_record_with_the_outer_save_and_roll_back_with_it():
    """An app's post_save receiver that saves another audited model and the same instance again (nested saves
    while the outer audited save runs): every change records its event, in the outer save's transaction; the
    receiver raising rolls all of it back, events included."""
    from django.db.models.signals import post_save

    def receiver(sender, instance, created, **kwargs):  # type: ignore[no-untyped-def]
        if created:
            Item.objects.create(name=f"first item of {instance.name}", warehouse=instance)
            instance.notes = "set by the receiver"
            instance.save(update_fields=["notes"])
            if instance.name == "refused":
                raise RuntimeError("the receiver refuses")

    post_save.connect(receiver, sender=Warehouse, dispatch_uid="test-nested-saves")
    try:
        Warehouse.objects.create(name="A")
        with pytest.raises(RuntimeError, match="refuses"):
            Warehouse.objects.create(name="refused")
    finally:
        post_save.disconnect(sender=Warehouse, dispatch_uid="test-nested-saves")
    assert sorted(names()) == ["Item Created", "Warehouse Created", "Warehouse Modified"]
    modified = events(event="Warehouse Modified")[0]
    assert modified.changes["notes"] == ["", "set by the receiver"]
    assert not Warehouse.objects.filter(name="refused").exists()
    assert Item.objects.count() == 1
