"""Tamper evidence: row hashes, sealed digests, ``audit-middleware verify``, purge markers, concurrency."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text, update

from audit_middleware import Actor, acting_as, in_workspace
from audit_middleware.cli import main
from audit_middleware.events import AuditEvent
from audit_middleware.ids import new_event_id
from audit_middleware.integrity import Signer
from audit_middleware.store import STORED_COLUMNS, stored_rows

from .conftest import make_app

KEY = "test-signing-key"
NOW = timedelta(0)


@pytest.fixture
def app(database_url, monkeypatch):
    monkeypatch.setenv("AUDIT_SIGNING_KEY", KEY)  # what the CLI reads
    application = make_app(database_url, signing_key=KEY)
    yield application
    application.auditor.remove()
    application.engine.dispose()


def seed(app, per_workspace: int = 12) -> None:
    """Events in two workspaces, each from its own commit so they have distinct times."""
    with acting_as(Actor.user("7", "ada@example.com")):
        for i in range(per_workspace):
            for workspace in ("ws_1", "ws_2"):
                with in_workspace(workspace), app.Session() as session:
                    session.add(app.Warehouse(name=f"{workspace}-{i}"))
                    session.commit()


def ws1(app) -> list[AuditEvent]:
    return app.events(workspace_id="ws_1")


def verify(app):
    return app.auditor.verify(delay=NOW)


def test_an_untouched_trail_verifies_and_the_cli_says_so(app, database_url, capsys):
    seed(app)
    assert app.auditor.seal(delay=NOW) == 2  # one digest per workspace chain
    report = verify(app)
    assert report.ok, report.problems
    assert (report.events, report.sealed, report.unsealed, report.workspaces) == (24, 24, 0, 2)
    assert main(["verify", "--database-url", database_url, "--seal-delay", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trail intact: 24 event(s) in 2 workspace chain(s)") and "HMAC-SHA256" in out


def test_a_row_edited_in_sql_is_reported_by_id(app, database_url, capsys):
    seed(app)
    app.auditor.seal(delay=NOW)
    target = ws1(app)[5]
    with app.engine.begin() as c:
        c.execute(text("UPDATE audit_events SET changes = :changes WHERE id = :id"),
                  {"changes": '{"name":[null,"innocent"]}', "id": target.id})
    report = verify(app)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", target.id)]
    assert main(["verify", "--database-url", database_url, "--seal-delay", "0"]) == 1
    out = capsys.readouterr().out
    assert f"first: ALTERED: event {target.id}" in out and "workspace 'ws_1'" in out


def test_a_row_deleted_from_the_middle_is_reported_with_its_neighbours(app):
    seed(app)
    app.auditor.seal(delay=NOW)
    events = ws1(app)
    with app.engine.begin() as c:
        c.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": events[6].id})
    report = verify(app)
    assert [(p.kind, p.event_id) for p in report.problems] == [("deleted", events[6].id)]
    assert f"between {events[5].id} and {events[7].id}" in report.problems[0].detail


def test_forged_rows_are_found_with_or_without_a_valid_hash(app):
    seed(app)
    app.auditor.seal(delay=NOW)
    events = ws1(app)
    between = events[3].occurred_at + (events[4].occurred_at - events[3].occurred_at) / 2

    def forged(signer: Signer) -> dict:
        event = AuditEvent(new_event_id(), between, "Warehouse Deleted", "Warehouses", "deleted",
                           Actor.user("99", "mallory"), "Warehouse", "1", "ws_1-0", "ws_1")
        return dict(zip(STORED_COLUMNS, stored_rows([event], signer)[0], strict=True))

    without_key, with_key = forged(Signer("guessed")), forged(app.auditor.signer)
    unsigned = {**forged(Signer("x")), "row_hash": None}
    with app.engine.begin() as c:
        c.execute(insert(app.auditor.table), [without_key, with_key, unsigned])
    found = {(p.kind, p.event_id) for p in verify(app).problems}
    # Each is outside digest #1's list; the one hashed without the key, and the unsigned one, also fail alone.
    assert found == {
        ("altered", without_key["id"]), ("inserted", without_key["id"]),
        ("inserted", with_key["id"]),
        ("unsigned", unsigned["id"]), ("inserted", unsigned["id"]),
    }


def test_reordered_timestamps_are_reported(app):
    seed(app)
    app.auditor.seal(delay=NOW)
    events = ws1(app)
    first, second = events[2], events[8]
    table = app.auditor.table
    with app.engine.begin() as c:
        c.execute(update(table).where(table.c.id == first.id).values(occurred_at=second.occurred_at.replace(tzinfo=None)))
        c.execute(update(table).where(table.c.id == second.id).values(occurred_at=first.occurred_at.replace(tzinfo=None)))
    report = verify(app)
    assert {(p.kind, p.event_id) for p in report.problems if p.kind == "altered"} == {
        ("altered", first.id), ("altered", second.id)}
    assert report.first is not None and report.first.event_id == second.id  # it now sits earliest in time


def test_edited_or_removed_digests_break_the_chain(app):
    seed(app, per_workspace=5)
    app.auditor.seal(delay=NOW)
    for workspace in ("ws_1", "ws_2"):
        with app.Session() as session, in_workspace(workspace):
            session.add(app.Warehouse(name="later"))
            session.commit()
    app.auditor.seal(delay=NOW)
    digests = app.auditor.store.integrity().digests_table
    with app.engine.begin() as c:
        c.execute(update(digests).where(digests.c.workspace_id == "ws_1", digests.c.seq == 2).values(count=9))
        c.execute(digests.delete().where(digests.c.workspace_id == "ws_2", digests.c.seq == 1))
    report = verify(app)
    assert sorted((p.workspace, p.detail) for p in report.problems if p.kind == "digest") == [
        ("ws_1", "digest #2 does not match its hash (edited, or signed with another key)"),
        ("ws_2", "digest #1 is missing (next is #2)"),
    ]


def test_purging_by_retention_is_not_tampering_but_deleting_a_kept_row_is(app):
    now = datetime.now(timezone.utc)
    old = [AuditEvent(new_event_id(), now - timedelta(days=d), "Warehouse Created", "Warehouses", "created",
                      Actor.system("seed"), workspace_id="ws_1") for d in (200, 150, 100, 95, 10, 5)]
    app.auditor.store.append(old)
    app.auditor.seal(delay=NOW)
    assert app.auditor.purge() == 4
    report = verify(app)
    assert report.ok, report.problems
    assert (report.purged, report.sealed) == (4, 2)
    with app.engine.begin() as c:
        c.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": old[4].id})
    assert [(p.kind, p.event_id) for p in verify(app).problems] == [("deleted", old[4].id)]


def test_a_purge_without_earlier_seals_still_verifies(app, database_url):
    now = datetime.now(timezone.utc)
    app.auditor.store.append([AuditEvent(new_event_id(), now - timedelta(days=d), "Warehouse Created",
                                         "Warehouses", "created", Actor.system("seed")) for d in (120, 100, 3)])
    assert main(["purge", "--database-url", database_url, "--yes"]) == 0
    report = verify(app)
    assert report.ok and report.events == 1 and report.purged == 2


def test_rows_are_signed_with_the_configured_key_only(app):
    seed(app, per_workspace=1)
    row = app.auditor.table
    with app.engine.connect() as c:
        stored = c.execute(select(row)).mappings().first()
    assert stored["row_hash"] == Signer(KEY).row_hash(stored) != Signer("other").row_hash(stored)
    other = app.auditor.store.integrity()
    other.signer = Signer("other")
    assert {p.kind for p in other.verify(seal_first=False).problems} == {"altered"}


WRITERS = 8


def test_eight_concurrent_writers_and_two_sealers_leave_a_verifiable_trail(app):
    """Writers never wait on the chain (they only hash their own rows); sealers racing for the same digest
    number lose cleanly; the result verifies with every event sealed exactly once."""
    per_writer = 15
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(n: int) -> None:
        try:
            with in_workspace(f"ws_{n % 3}"):
                for i in range(per_writer):
                    with app.Session() as session:
                        warehouse = app.Warehouse(name=f"w{n}-{i}")
                        session.add(warehouse)
                        session.commit()
                        warehouse.enabled = False
                        session.commit()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def sealer() -> None:
        try:
            while not done.is_set():
                app.auditor.seal(delay=timedelta(seconds=2))
                time.sleep(0.05)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    sealers = [threading.Thread(target=sealer) for _ in range(2)]
    for thread in threads + sealers:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in sealers:
        thread.join()
    assert not errors, errors
    report = verify(app)
    assert report.ok, report.problems[:3]
    assert report.events == report.sealed == WRITERS * per_writer * 2


def test_append_only_guard_on_postgresql(app, backend):
    if backend != "postgresql":
        pytest.skip("the append-only guard is a PostgreSQL trigger")
    from sqlalchemy.exc import DBAPIError

    now = datetime.now(timezone.utc)
    app.auditor.store.append([AuditEvent(new_event_id(), now - timedelta(days=d), "Warehouse Created",
                                         "Warehouses", "created", Actor.system("seed")) for d in (120, 1)])
    app.auditor.store.integrity().install_append_only_guard()
    with pytest.raises(DBAPIError, match="append-only: UPDATE refused"), app.engine.begin() as c:
        c.execute(text("UPDATE audit_events SET event = 'Warehouse Deleted'"))
    with pytest.raises(DBAPIError, match="append-only: DELETE refused"), app.engine.begin() as c:
        c.execute(text("DELETE FROM audit_events"))
    assert app.auditor.purge() == 1
    assert verify(app).ok


def test_an_untouched_trail_of_100000_events_verifies(app, backend):
    if backend != "sqlite":
        pytest.skip("100,000 rows once is enough: SQLite, the slowest to read back")
    start = datetime.now(timezone.utc) - timedelta(days=1)
    store = app.auditor.store
    for batch in range(20):
        store.append([
            AuditEvent(new_event_id(), start + timedelta(milliseconds=batch * 5000 + i), "Warehouse Modified",
                       "Warehouses", "modified", Actor.user(str(i % 50), f"user{i % 50}@example.com"),
                       "Warehouse", str(i % 700), f"w{i % 700}", f"ws_{i % 4}", {"schedule": ["hourly", "daily"]},
                       {"ip": "203.0.113.9", "request_id": f"r{batch}-{i}"})
            for i in range(5000)
        ])
    report = verify(app)
    assert report.ok, report.problems[:3]
    assert (report.events, report.sealed, report.workspaces) == (100_000, 100_000, 4)
    assert report.digests == 100  # 25,000 events per workspace, 1,000 per digest


def test_saved_chain_heads_catch_the_newest_digests_removed_with_their_events(app, database_url, tmp_path, capsys):
    """Removing the newest digest together with the events it sealed leaves a consistent, shorter chain;
    only a copy of the chain heads kept outside the database shows it."""
    heads = tmp_path / "heads.json"
    seed(app, per_workspace=3)
    assert main(["verify", "--database-url", database_url, "--seal-delay", "0", "--heads", str(heads)]) == 0
    with app.Session() as session, in_workspace("ws_1"):
        session.add(app.Warehouse(name="newest"))
        session.commit()
    assert main(["verify", "--database-url", database_url, "--seal-delay", "0", "--heads", str(heads)]) == 0
    newest = ws1(app)[-1]
    digests = app.auditor.store.integrity().digests_table
    with app.engine.begin() as c:
        c.execute(digests.delete().where(digests.c.workspace_id == "ws_1", digests.c.seq == 2))
        c.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": newest.id})
    assert verify(app).ok  # from the inside, the shorter chain is consistent
    capsys.readouterr()
    assert main(["verify", "--database-url", database_url, "--seal-delay", "0", "--heads", str(heads)]) == 1
    assert "digest #2 saved as this chain's head earlier is gone" in capsys.readouterr().out


def test_a_rotated_key_keeps_older_rows_verifiable_through_previous_keys(app, monkeypatch):
    seed(app, per_workspace=2)
    app.auditor.seal(delay=NOW)
    monkeypatch.setenv("AUDIT_PREVIOUS_SIGNING_KEYS", f"some-older-key {KEY}")
    rotated = make_app(str(app.engine.url.render_as_string(hide_password=False)), signing_key="new-key")
    try:
        with rotated.Session() as session, in_workspace("ws_1"):
            session.add(rotated.Warehouse(name="after rotation"))
            session.commit()
        newest = ws1(rotated)[-1]
        with rotated.engine.connect() as c:
            row = c.execute(select(rotated.auditor.table).where(rotated.auditor.table.c.id == newest.id)).mappings().one()
        assert row["row_hash"] == Signer("new-key").row_hash(row)
        assert rotated.auditor.verify(delay=NOW).ok
        monkeypatch.delenv("AUDIT_PREVIOUS_SIGNING_KEYS")
        without_old = rotated.auditor.store.integrity()
        without_old.signer = Signer("new-key")
        assert {p.kind for p in without_old.verify(seal_first=False).problems} == {"altered", "digest"}
    finally:
        rotated.auditor.remove()
        rotated.engine.dispose()
